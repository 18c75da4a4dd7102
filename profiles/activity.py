"""Loading activity feeds: accounts, transactions, card transactions, holdings, risk assessments and FX rates.

The contract is the customer feed's (profiles.feeds): one FeedBatch per file with read/created/updated/unchanged/
rejected counts, rejects kept with their row number and reason, a file that is not a feed fails the batch and
changes nothing, one transaction per file, and a reload of unchanged rows writes nothing.

Files are read in chunks (Arrow's CSV reader, or read_feed), each chunk parsed column by column
(profiles.activity_columnar, with the row parsers of profiles.activity_kinds for what it cannot parse) and staged in
a temp table (COPY on PostgreSQL); everything after that is set-based: duplicates inside the file, the
created/updated/unchanged counts, and one INSERT ... SELECT ... ON CONFLICT DO UPDATE that only rewrites rows whose
digest changed.
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import transaction
from django.utils import timezone

from . import sql
from .activity_columnar import parse_chunk
from .activity_kinds import KINDS, ActivityKind, text_field
from .columnar import KeyedHasher
from .feeds import FeedFormatError, RawChunk, batch_start, row_digests, stage_chunks
from .models import CustomerProfile, FeedBatch, FxRate, RejectedRow, Source, SourceRecord
from .normalize import RowRejected, redact_raw_row

__all__ = ["KINDS", "activity_batch_profile_ids", "activity_feed_load"]

def _stage_columns(spec: ActivityKind) -> tuple[str, ...]:
    head = ("source_id", "customer_key") if spec.per_customer else ("source_id",)
    body = tuple(c for c in spec.columns if c not in head)
    return head + body + ("row_digest", "last_batch_id")


@dataclass
class _Staged:
    rejected: list[tuple[int, str, dict]] = field(default_factory=list)
    warnings: Counter = field(default_factory=Counter)
    rows_read: int = 0


class _Stager:
    """Parses chunks of one activity feed into the temp table activity_stage (with `row_number`)."""

    def __init__(self, *, spec: ActivityKind, kind: str, source: Source, batch_id: int, known_currencies: set[str],
                 writer: sql.CopyPipeline):
        self.writer = writer
        self.spec, self.kind, self.source, self.batch_id = spec, kind, source, batch_id
        self.known_currencies = pa.array(sorted(known_currencies), pa.string())
        self.hasher = KeyedHasher()
        self.time_zone = timezone.get_current_timezone_name()
        self.state = _Staged()

    def add(self, chunk: RawChunk) -> None:
        state, spec = self.state, self.spec
        table = chunk.table
        if not spec.per_customer:
            # read_feed insists on a customer_key column; FX rates are keyed by currency, which stands in for it.
            table = table.rename_columns(["currency" if c == "customer_key" else c for c in table.column_names])
        if state.rows_read == 0:
            missing = [c for c in spec.required if c not in table.column_names]
            if missing:
                raise FeedFormatError(f"not a {self.kind} feed: required column(s) {', '.join(missing)} missing")
        state.rows_read += table.num_rows + len(chunk.unreadable)
        state.rejected.extend((number, reason, {}) for number, reason in chunk.unreadable)
        if table.num_rows == 0:
            return
        parsed = parse_chunk(self.kind, table, hasher=self.hasher, time_zone=self.time_zone)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[parsed.rejected] = False
        numbers = table.column("rn").combine_chunks()
        accepted: list[tuple[int, tuple]] = []
        # Rows a column parser rejected: the row parser gives the reason (or, rarely, accepts the row).
        for position in parsed.rejected:
            row = {c: table.column(c)[int(position)].as_py() for c in table.column_names if c != "rn"}
            try:
                customer_key = text_field(row, "customer_key", max_len=64) if spec.per_customer else None
                values = spec.parse(row)
            except RowRejected as exc:
                state.rejected.append((numbers[int(position)].as_py(), str(exc), redact_raw_row(row)))
                continue
            accepted.append((int(position), (customer_key, *values)))
        mask = pa.array(keep)
        columns = {name: array.filter(mask) for name, array in parsed.columns.items()}
        if spec.per_customer:
            columns["customer_key"] = parsed.customer_key.filter(mask)
        positions = np.flatnonzero(keep)
        if accepted:
            names = (["customer_key"] if spec.per_customer else [None]) + list(spec.columns)
            for index, name in enumerate(names):
                if name is not None:
                    extra = pa.array([values[index] for _, values in accepted], columns[name].type)
                    columns[name] = pa.concat_arrays([columns[name], extra])
            positions = np.concatenate([positions, np.array([p for p, _ in accepted], dtype=np.int64)])
        if spec.per_customer and "currency" in columns:
            unknown = ~pc.is_in(columns["currency"], value_set=self.known_currencies).to_numpy(zero_copy_only=False)
            if unknown.any():
                state.warnings["currency_without_fx_rate"] += int(unknown.sum())
        rows = len(positions)
        taken = pa.array(positions)
        columns.update(
            row_number=numbers.take(taken).cast(pa.int64()),
            source_id=pa.array(np.full(rows, self.source.pk, dtype=np.int64)),
            row_digest=row_digests(table, self.hasher).take(taken),
            last_batch_id=pa.array(np.full(rows, self.batch_id, dtype=np.int64)),
        )
        order = ("row_number", *_stage_columns(spec))
        self.writer.put("activity_stage", pa.table({name: columns[name] for name in order}))


def _reject_duplicates(spec: ActivityKind, state: _Staged) -> None:
    """A key seen twice in one file: the first row loads, later ones are rejected (set-based, any file size)."""
    key = spec.key
    keys = ", ".join(sql.quote(c) for c in key)
    join = " AND ".join(f"s.{sql.quote(c)} = f.{sql.quote(c)}" for c in key)
    shown = [c for c in spec.key if c != "source_id"]
    duplicates = sql.fetch_all(
        f"SELECT s.row_number, f.first_row, {', '.join('s.' + sql.quote(c) for c in shown)} FROM activity_stage s "
        f"JOIN (SELECT {keys}, MIN(row_number) AS first_row FROM activity_stage GROUP BY {keys} HAVING COUNT(*) > 1) f "
        f"ON {join} WHERE s.row_number > f.first_row"
    )
    if not duplicates:
        return
    sql.create_temp_table("activity_duplicate", "row_number BIGINT PRIMARY KEY")
    sql.bulk_insert("activity_duplicate", ("row_number",), ((n,) for n, *_ in duplicates))
    sql.execute("DELETE FROM activity_stage WHERE row_number IN (SELECT row_number FROM activity_duplicate)")
    sql.drop_temp_table("activity_duplicate")
    for row_number, first_row, *key_values in duplicates:
        state.rejected.append((row_number, f"{shown[-1]}: duplicate of row {first_row}",
                               dict(zip(shown, map(str, key_values)))))


def _count_and_upsert(spec: ActivityKind, state: _Staged) -> tuple[int, int, int]:
    """Write the created and changed staged rows; (created, updated, unchanged)."""
    table = sql.quote(spec.model._meta.db_table)
    key = spec.key
    columns = _stage_columns(spec)
    cols = ", ".join(sql.quote(c) for c in columns)
    updates = ", ".join(f"{sql.quote(c)} = excluded.{sql.quote(c)}" for c in columns if c not in key)
    changed = f"{table}.row_digest <> excluded.row_digest"
    match = " AND ".join(f"t.{sql.quote(c)} = s.{sql.quote(c)}" for c in key)
    if spec.snapshot_date:
        snapshot = sql.quote(spec.snapshot_date)
        changed += f" AND excluded.{snapshot} >= {table}.{snapshot}"
        stale = sql.fetch_all(f"SELECT COUNT(*) FROM activity_stage s JOIN {table} t ON {match} "
                              f"WHERE s.{snapshot} < t.{snapshot}")[0][0]
        if stale:
            state.warnings["older_snapshot_ignored"] += stale
    # WHERE 1 = 1 keeps SQLite from reading ON CONFLICT as a join clause of the SELECT.
    upsert = (f"INSERT INTO {table} ({cols}) SELECT {cols} FROM activity_stage WHERE 1 = 1 "
              f"ON CONFLICT ({', '.join(sql.quote(c) for c in key)}) DO UPDATE SET {updates} WHERE {changed}")
    staged = sql.fetch_all("SELECT COUNT(*) FROM activity_stage")[0][0]
    if sql.is_postgres():
        # One pass: a row the upsert inserted has no deleting transaction (xmax 0), one it updated has.
        created, written = sql.fetch_all(
            f"WITH w AS ({upsert} RETURNING (xmax = 0) AS inserted) "
            f"SELECT COUNT(*) FILTER (WHERE inserted), COUNT(*) FROM w")[0]
        return int(created), int(written - created), int(staged - written)
    stale_guard = f" AND s.{sql.quote(spec.snapshot_date)} >= t.{sql.quote(spec.snapshot_date)}" if spec.snapshot_date else ""
    created, updated = sql.fetch_all(
        f"SELECT COALESCE(SUM(CASE WHEN t.row_digest IS NULL THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN t.row_digest <> s.row_digest{stale_guard} THEN 1 ELSE 0 END), 0) "
        f"FROM activity_stage s LEFT JOIN {table} t ON {match}"
    )[0]
    sql.execute(upsert)
    return int(created), int(updated), int(staged - created - updated)


def _lock(source: Source, kind: str) -> None:
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_lock(%s)", [sql.advisory_lock_key(f"activity:{kind}", source.pk)])
    FeedBatch.objects.filter(source=source, kind=kind, status=FeedBatch.Status.RUNNING).update(
        status=FeedBatch.Status.FAILED, error="interrupted before it finished; nothing of it was kept",
        finished_at=timezone.now(),
    )


def _unlock(source: Source, kind: str) -> None:
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_unlock(%s)", [sql.advisory_lock_key(f"activity:{kind}", source.pk)])


def _create_stage(spec: ActivityKind) -> None:
    columns = _stage_columns(spec)
    sql.drop_temp_table("activity_stage")
    sql.execute(
        f"CREATE TEMP TABLE activity_stage AS SELECT {', '.join(sql.quote(c) for c in columns)} "
        f"FROM {sql.quote(spec.model._meta.db_table)} WHERE 1 = 0"
    )
    sql.execute("ALTER TABLE activity_stage ADD COLUMN row_number BIGINT")


def _stage_file(path: Path, *, spec: ActivityKind, kind: str, source: Source, encoding: str, batch_id: int,
                known_currencies: set[str], progress: bool) -> _Staged:
    """Read and parse every row of the file into activity_stage; the rows read, rejects and warnings."""
    mapping = dict(source.column_mapping)
    if not spec.per_customer:
        mapping["currency"] = "customer_key"
    _create_stage(spec)
    with sql.CopyPipeline() as writer:
        stager = _Stager(spec=spec, kind=kind, source=source, batch_id=batch_id, known_currencies=known_currencies,
                         writer=writer)

        def restart() -> None:
            writer.drain()
            _create_stage(spec)
            stager.state = _Staged()

        stage_chunks(path, mapping=mapping, encoding=encoding, add=stager.add, restart=restart, progress=progress,
                     desc=kind)
    return stager.state


def activity_feed_load(*, source: Source | str, kind: str, path: Path | str, encoding: str = "utf-8-sig",
                       progress: bool = False, batch: FeedBatch | None = None) -> FeedBatch:
    """Load one activity feed file of `kind` (see KINDS) for `source`; returns its batch (`batch`: a queued one to
    run this load as)."""
    if kind not in KINDS:
        raise ValueError(f"unknown feed kind {kind!r}: one of customers, {', '.join(KINDS)}")
    spec = KINDS[kind]
    if isinstance(source, str):
        source = Source.objects.get(code=source)
    path = Path(path)
    _lock(source, kind)
    try:
        batch = batch_start(batch, source=source, kind=kind, file_name=str(path))
        known_currencies = {"CNY", *FxRate.objects.values_list("currency", flat=True).distinct()}
        try:
            with transaction.atomic():
                sql.set_work_mem()
                state = _stage_file(path, spec=spec, kind=kind, source=source, encoding=encoding, batch_id=batch.pk,
                                    known_currencies=known_currencies, progress=progress)
                sql.analyze("activity_stage")
                _reject_duplicates(spec, state)
                created, updated, unchanged = _count_and_upsert(spec, state)
                sql.drop_temp_table("activity_stage")
                RejectedRow.objects.bulk_create(
                    [RejectedRow(batch=batch, row_number=n, reason=reason, raw=raw) for n, reason, raw in state.rejected],
                    batch_size=5000,
                )
                FeedBatch.objects.filter(pk=batch.pk).update(
                    status=FeedBatch.Status.SUCCEEDED, rows_read=state.rows_read, rows_created=created,
                    rows_updated=updated, rows_unchanged=unchanged, rows_rejected=len(state.rejected),
                    warnings=dict(state.warnings), finished_at=timezone.now(),
                )
        except FeedFormatError as exc:
            FeedBatch.objects.filter(pk=batch.pk).update(
                status=FeedBatch.Status.FAILED, error=str(exc), finished_at=timezone.now())
        except Exception as exc:
            FeedBatch.objects.filter(pk=batch.pk).update(
                status=FeedBatch.Status.FAILED, error=f"load failed, nothing of it was kept: {exc!r}",
                finished_at=timezone.now())
            raise
        batch.refresh_from_db()
        return batch
    finally:
        _unlock(source, kind)


def activity_batch_profile_ids(*, batch: FeedBatch) -> list[int]:
    """Profiles whose activity a batch wrote (created or changed rows); FX rates touch every profile."""
    spec = KINDS[batch.kind]
    if not spec.per_customer:
        return list(CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE).values_list("pk", flat=True))
    rows = sql.fetch_all(
        f"SELECT DISTINCT r.profile_id FROM {sql.quote(spec.model._meta.db_table)} a "
        f"JOIN {sql.quote(SourceRecord._meta.db_table)} r ON r.source_id = a.source_id "
        f"AND r.customer_key = a.customer_key WHERE a.last_batch_id = %s AND r.profile_id IS NOT NULL",
        [batch.pk],
    )
    return [r[0] for r in rows]
