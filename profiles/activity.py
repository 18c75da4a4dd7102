"""Loading activity feeds: accounts, transactions, card transactions, holdings, risk assessments and FX rates.

The contract is the customer feed's (profiles.feeds): one FeedBatch per file with read/created/updated/unchanged/
rejected counts, rejects kept with their row number and reason, a file that is not a feed fails the batch and
changes nothing, one transaction per file, and a reload of unchanged rows writes nothing.

Files are read in chunks (Arrow's CSV reader, or read_feed), each chunk parsed column by column
(profiles.activity_columnar, with the row parsers of profiles.activity_kinds for what it cannot parse) and staged in
a temp table (COPY on PostgreSQL); everything after that is set-based: duplicates inside the file, the
created/updated/unchanged counts, and one INSERT ... SELECT ... ON CONFLICT DO UPDATE that only rewrites rows whose
digest changed. A first load into an empty table on PostgreSQL has nothing to match: its rows are copied straight
into the table with the table's indexes dropped, and each index is built once at the end (the table is locked
against readers until the load commits).
"""
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import transaction
from django.utils import timezone

from . import sql
from .activity_columnar import parse_chunk
from .activity_kinds import KINDS, ActivityKind, text_field
from .columnar import KeyedHasher
from .feeds import (
    SKIPPED_ERASED, ErasedRows, FeedFormatError, RawChunk, Rejects, batch_start, row_digests, stage_chunks,
)
from .models import CustomerProfile, FeedBatch, FxRate, Source, SourceRecord
from .normalize import RowRejected
from .pii_keys import pii_key_check

__all__ = ["KINDS", "activity_batch_profile_ids", "activity_feed_load", "source_loads_held"]

STAGE = "activity_stage"
# The kinds whose rows carry keyed hashes (card tokens from card numbers): their loads check the keys in use.
KEYED_KINDS = ("card_transactions",)


def _stage_columns(spec: ActivityKind) -> tuple[str, ...]:
    head = ("source_id", "customer_key") if spec.per_customer else ("source_id",)
    body = tuple(c for c in spec.columns if c not in head)
    return head + body + ("row_digest", "last_batch_id")


@dataclass
class _Staged:
    rejected: Rejects = field(default_factory=Rejects)
    warnings: Counter = field(default_factory=Counter)
    rows_read: int = 0
    rows_staged: int = 0
    # The key within the file (_file_key) and the row number of every staged row, chunk by chunk.
    keys: list[pa.Table] = field(default_factory=list)


class _Stager:
    """Parses chunks of one activity feed into `target`: the temp table activity_stage (with `row_number`), or on
    a first load the activity table itself (see sql.lock_if_empty)."""

    def __init__(self, *, spec: ActivityKind, kind: str, source: Source, batch_id: int, known_currencies: set[str],
                 writer: sql.CopyPipeline, target: str):
        self.writer, self.target = writer, target
        self.spec, self.kind, self.source, self.batch_id = spec, kind, source, batch_id
        self.known_currencies = pa.array(sorted(known_currencies), pa.string())
        self.hasher = KeyedHasher()
        self.time_zone = timezone.get_current_timezone_name()
        # Rows of erased people (PIPL) are skipped by their customer key, as in customer feeds.
        self.erased = ErasedRows(source) if spec.per_customer else None
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
        state.rejected.add_unreadable(chunk.unreadable)
        if self.erased is not None:
            read = table.num_rows
            table = self.erased.drop_by_key(table)
            if table.num_rows < read:
                state.warnings[SKIPPED_ERASED] += read - table.num_rows
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
                state.rejected.add(numbers[int(position)].as_py(), str(exc), row)
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
        staged = pa.table({name: columns[name] for name in ("row_number", *_stage_columns(spec))})
        if accepted:  # rows in file order, so a first load's ids follow it (see _reject_duplicates)
            staged = staged.sort_by("row_number")
        state.rows_staged += staged.num_rows
        state.keys.append(staged.select([*_file_key(spec), "row_number"]))
        self.writer.put(self.target, staged if self.target == STAGE else staged.drop_columns(["row_number"]))


def _file_key(spec: ActivityKind) -> list[str]:
    """The natural key less source_id, which is the same for every row of a file."""
    return [c for c in spec.key if c != "source_id"]


def _reject_duplicates(spec: ActivityKind, state: _Staged, target: str) -> int:
    """A key seen twice in one file: the first row loads, later ones are rejected and removed from `target`.
    Found in-process over the staged keys (DuckDB, one hash aggregate over the file's keys, kept in memory at about
    20 bytes a row); returns how many."""
    shown = _file_key(spec)
    if not state.keys:
        return 0
    keys = ", ".join(f'"{c}"' for c in shown)
    selected = ", ".join(f's."{c}"' for c in shown)
    with duckdb.connect() as duck:
        duck.register("staged_keys", pa.concat_tables(state.keys))
        duplicates = duck.execute(
            f"WITH repeated AS (SELECT {keys}, MIN(row_number) AS first_row FROM staged_keys GROUP BY {keys} "
            f"HAVING COUNT(*) > 1) SELECT s.row_number, r.first_row, {selected} "
            f"FROM staged_keys s JOIN repeated r USING ({keys}) WHERE s.row_number > r.first_row ORDER BY s.row_number"
        ).fetchall()
    state.keys = []
    if not duplicates:
        return 0
    if target == STAGE:
        sql.create_temp_table("activity_duplicate", "row_number BIGINT PRIMARY KEY")
        sql.bulk_insert("activity_duplicate", ("row_number",), ((n,) for n, *_ in duplicates))
        sql.execute("DELETE FROM activity_stage WHERE row_number IN (SELECT row_number FROM activity_duplicate)")
        sql.drop_temp_table("activity_duplicate")
    else:
        # The table held only this file's rows, written in file order: of each repeated key, the lowest id stays.
        table = sql.quote(target)
        columns = ", ".join(sql.quote(c) for c in shown)
        sql.drop_temp_table("activity_duplicate")
        sql.execute(f"CREATE TEMP TABLE activity_duplicate AS SELECT {columns} FROM {table} WHERE 1 = 0")
        sql.bulk_insert("activity_duplicate", shown, {tuple(values) for _, _, *values in duplicates})
        match = " AND ".join(f"t.{sql.quote(c)} = d.{sql.quote(c)}" for c in shown)
        sql.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM (SELECT t.id, ROW_NUMBER() OVER "
            f"(PARTITION BY {', '.join(f't.{sql.quote(c)}' for c in shown)} ORDER BY t.id) AS n FROM {table} t "
            f"JOIN activity_duplicate d ON {match}) x WHERE n > 1)"
        )
        sql.drop_temp_table("activity_duplicate")
    for row_number, first_row, *key_values in duplicates:
        state.rejected.add(row_number, f"{shown[-1]}: duplicate of row {first_row}",
                           dict(zip(shown, map(str, key_values))))
    return len(duplicates)


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
    staged = state.rows_staged
    # WHERE 1 = 1 keeps SQLite from reading ON CONFLICT as a join clause of the SELECT.
    upsert = (f"INSERT INTO {table} ({cols}) SELECT {cols} FROM activity_stage WHERE 1 = 1 "
              f"ON CONFLICT ({', '.join(sql.quote(c) for c in key)}) DO UPDATE SET {updates} WHERE {changed}")
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


@contextlib.contextmanager
def source_loads_held(source_ids: list[int]):
    """Wait for the running loads of these sources (customers and every activity kind) and hold off new ones until
    the block ends: an erasure must not interleave with a load that read the do-not-reload markers before it."""
    keys = sorted(sql.advisory_lock_key(namespace, source_id) for source_id in source_ids
                  for namespace in ("feed", *(f"activity:{kind}" for kind in KINDS))) if sql.is_postgres() else []
    for key in keys:
        sql.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        for key in reversed(keys):
            sql.execute("SELECT pg_advisory_unlock(%s)", [key])


def _create_stage(spec: ActivityKind, target: str) -> None:
    """An empty activity_stage, or (a first load) an empty activity table again."""
    if target != STAGE:
        sql.execute(f"DELETE FROM {sql.quote(target)}")
        return
    columns = _stage_columns(spec)
    sql.drop_temp_table("activity_stage")
    sql.execute(
        f"CREATE TEMP TABLE activity_stage AS SELECT {', '.join(sql.quote(c) for c in columns)} "
        f"FROM {sql.quote(spec.model._meta.db_table)} WHERE 1 = 0"
    )
    sql.execute("ALTER TABLE activity_stage ADD COLUMN row_number BIGINT")


def _stage_file(path: Path, *, spec: ActivityKind, kind: str, source: Source, encoding: str, batch_id: int,
                known_currencies: set[str], progress: bool, target: str) -> _Staged:
    """Read and parse every row of the file into `target`; the rows read, rejects and warnings."""
    mapping = dict(source.column_mapping)
    if not spec.per_customer:
        mapping["currency"] = "customer_key"
    _create_stage(spec, target)
    with sql.CopyPipeline() as writer:
        stager = _Stager(spec=spec, kind=kind, source=source, batch_id=batch_id, known_currencies=known_currencies,
                         writer=writer, target=target)

        def restart() -> None:
            writer.drain()
            _create_stage(spec, target)
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
        batch = batch_start(batch, source=source, kind=kind, file_name=path.name)
        known_currencies = {"CNY", *FxRate.objects.values_list("currency", flat=True).distinct()}
        try:
            if kind in KEYED_KINDS:
                pii_key_check()  # outside the transaction, as a customer load does
            with transaction.atomic():
                sql.set_work_mem()
                table = spec.model._meta.db_table
                # A first load (a backfill of millions of rows) writes straight into the table, and one sorted
                # build per index afterwards costs a fraction of inserting every row into every index.
                first_load = sql.lock_if_empty(table)
                target = table if first_load else STAGE
                with sql.indexes_rebuilt(table) if first_load else contextlib.nullcontext():
                    state = _stage_file(path, spec=spec, kind=kind, source=source, encoding=encoding,
                                        batch_id=batch.pk, known_currencies=known_currencies, progress=progress,
                                        target=target)
                    state.rows_staged -= _reject_duplicates(spec, state, target)
                if first_load:
                    created, updated, unchanged = state.rows_staged, 0, 0
                else:
                    sql.analyze(STAGE)
                    created, updated, unchanged = _count_and_upsert(spec, state)
                    sql.drop_temp_table(STAGE)
                state.rejected.save(batch)
                FeedBatch.objects.filter(pk=batch.pk).update(
                    status=FeedBatch.Status.SUCCEEDED, rows_read=state.rows_read, rows_created=created,
                    rows_updated=updated, rows_unchanged=unchanged, rows_rejected=state.rejected.count,
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
