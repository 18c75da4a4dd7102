"""Loading customer feeds: read, validate, normalise and upsert source records as one set.

A load is all-or-nothing for the file (one transaction), row-tolerant inside it (a bad row is rejected
with its row number and reason while the good rows load), and idempotent (a row whose content has not
changed since the last load is recognised by its digest and not written again).
"""
import codecs
import csv
import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

from . import sql
from .models import FeedBatch, RejectedRow, Source, SourceRecord
from .normalize import RowRejected, normalize_customer_row, redact_raw_row

CANONICAL_COLUMNS = frozenset({
    "customer_key", "full_name", "family_name", "given_name", "gender", "birth_date", "id_type", "id_number",
    "phone", "email", "address", "city", "postcode", "core_cif", "updated_at", "pan", "card_token",
    "pan_bin", "pan_last4",
})
REQUIRED_COLUMNS = ("customer_key",)
SNIFF_BYTES = 64 * 1024


class FeedFormatError(Exception):
    """The file is not a feed this loader can read; nothing was loaded."""


@dataclass
class _LoadState:
    staged: list[tuple] = field(default_factory=list)
    rejected: list[tuple[int, str, dict]] = field(default_factory=list)
    warnings: Counter = field(default_factory=Counter)
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def _open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _column_namer(mapping: dict[str, str]):
    """Source header name -> canonical column: the source's mapping first, then the name lower-cased."""
    lowered = {k.strip().lower(): v for k, v in mapping.items()}

    def canonical(name: str) -> str:
        clean = name.strip().lstrip("\ufeff")
        return mapping.get(clean) or lowered.get(clean.lower()) or clean.lower()

    return canonical


def _canonical_header(raw_header: list[str], mapping: dict[str, str]) -> list[str]:
    canonical = _column_namer(mapping)
    header = [canonical(name) for name in raw_header]
    duplicates = [name for name, n in Counter(header).items() if n > 1]
    if duplicates:
        raise FeedFormatError(f"column(s) {', '.join(sorted(duplicates))} appear more than once after mapping")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FeedFormatError(
            f"not a customer feed: required column {', '.join(missing)} is missing "
            f"(header was: {', '.join(raw_header)[:300]})"
        )
    return header


def _decoded_lines(binary, encoding: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    pending = ""
    while True:
        try:
            chunk = binary.read(1 << 20)
        except (OSError, EOFError) as exc:
            raise FeedFormatError(f"cannot read the file near byte {offset}: {exc}") from None
        if b"\x00" in chunk:
            raise FeedFormatError("not a text feed: the file contains binary (NUL) bytes")
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise FeedFormatError(
                f"cannot decode the file as {encoding} near byte {offset + exc.start}; "
                "pass the right --encoding (utf-8 or gb18030)"
            ) from None
        offset += len(chunk)
        pending += text
        lines = pending.splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        yield from lines
        if not chunk:
            if pending:
                yield pending
            return


def read_feed(path: Path, *, mapping: dict[str, str], encoding: str = "utf-8-sig") -> Iterator[tuple[int, dict | str]]:
    """Yield (row_number, row) with canonical keys, or (row_number, reason) for a row that cannot be read.

    Raises FeedFormatError for a file that is not a feed at all.
    """
    with _open_binary(path) as binary:
        try:
            head = binary.peek(SNIFF_BYTES)[:SNIFF_BYTES] if hasattr(binary, "peek") else b""
        except OSError as exc:
            raise FeedFormatError(f"cannot read the file: {exc}") from None
        if b"\x00" in head:
            raise FeedFormatError("not a text feed: the file contains binary (NUL) bytes")
        lines = _decoded_lines(binary, encoding)
        name = path.name.lower().removesuffix(".gz")
        is_jsonl = name.endswith((".jsonl", ".ndjson", ".json")) or head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{")
        if is_jsonl:
            yield from _read_jsonl(lines, mapping)
        else:
            yield from _read_csv(lines, mapping)


def _read_csv(lines: Iterator[str], mapping: dict[str, str]) -> Iterator[tuple[int, dict | str]]:
    reader = csv.reader(lines)
    try:
        raw_header = next(reader)
    except StopIteration:
        raise FeedFormatError("the file is empty: no header row") from None
    except csv.Error as exc:
        raise FeedFormatError(f"not a CSV feed: {exc}") from None
    header = _canonical_header(raw_header, mapping)
    width = len(header)
    row_number = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row_number += 1
            yield row_number, f"unreadable CSV row: {exc}"
            continue
        row_number += 1
        if not values:
            row_number -= 1
            continue
        if len(values) != width:
            yield row_number, f"expected {width} columns, found {len(values)}"
            continue
        yield row_number, dict(zip(header, values))


def _read_jsonl(lines: Iterator[str], mapping: dict[str, str]) -> Iterator[tuple[int, dict | str]]:
    canonical = _column_namer(mapping)
    row_number = 0
    for line in lines:
        if not line.strip():
            continue
        row_number += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if row_number == 1:
                raise FeedFormatError(f"not a JSON Lines feed: first line is not JSON ({exc.msg})") from None
            yield row_number, f"not valid JSON: {exc.msg}"
            continue
        if not isinstance(obj, dict):
            yield row_number, "not a JSON object"
            continue
        if row_number == 1:
            _canonical_header(list(obj), mapping)
        yield row_number, {canonical(k): "" if v is None else str(v) for k, v in obj.items()}


def row_digest(row: dict[str, str]) -> str:
    payload = "\x1f".join(f"{k}\x1e{v.strip()}" for k, v in sorted(row.items()) if v and v.strip())
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


# Columns written by a load, in staging order.
_RECORD_COLUMNS = (
    "source_id", "customer_key", "full_name", "family_name", "given_name", "name_key", "gender", "birth_date",
    "id_type", "id_number_hash", "id_number_masked", "id_valid", "phone", "email", "address", "city", "postcode",
    "core_cif", "cif_ref", "pan_token", "pan_bin", "pan_last4", "attributes", "source_updated_at", "row_digest",
    "first_batch_id", "last_batch_id", "needs_resolution", "loaded_at",
)
# Columns an update must not overwrite: the identity of the row and its history.
_KEEP_ON_UPDATE = {"source_id", "customer_key", "first_batch_id"}


def _staged_values(normalised: dict, *, source: Source, digest: str, batch_id: int, now) -> tuple:
    ops = connection.ops
    values = dict(normalised)
    values.pop("warnings", None)
    values.update(
        source_id=source.pk,
        cif_ref=normalised["customer_key"] if source.is_cif_authority else normalised["core_cif"],
        attributes=json.dumps(normalised["attributes"], ensure_ascii=False, sort_keys=True),
        birth_date=ops.adapt_datefield_value(normalised["birth_date"]),
        source_updated_at=ops.adapt_datetimefield_value(normalised["source_updated_at"]),
        row_digest=digest,
        first_batch_id=batch_id,
        last_batch_id=batch_id,
        needs_resolution=True,
        loaded_at=ops.adapt_datetimefield_value(now),
    )
    return tuple(values[c] for c in _RECORD_COLUMNS)


def _existing_digests(source: Source) -> dict[str, str]:
    rows = sql.fetch_all(
        f"SELECT customer_key, row_digest FROM {SourceRecord._meta.db_table} WHERE source_id = %s", [source.pk]
    )
    return dict(rows)


def _progress(total_hint: int | None, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total_hint, unit=" rows", unit_scale=True, dynamic_ncols=True)


def _read_and_stage(path: Path, *, source: Source, encoding: str, batch: FeedBatch, progress: bool) -> _LoadState:
    state = _LoadState()
    existing = _existing_digests(source)
    seen_in_file: dict[str, int] = {}
    now = timezone.now()
    bar = _progress(None, progress)
    try:
        for row_number, row in read_feed(path, mapping=source.column_mapping, encoding=encoding):
            state.rows_read += 1
            if bar is not None and state.rows_read % 5000 == 0:
                bar.update(5000)
            if isinstance(row, str):
                state.rejected.append((row_number, row, {}))
                continue
            key = row.get("customer_key", "").strip()
            if key in seen_in_file:
                state.rejected.append(
                    (row_number, f"customer_key: duplicate of row {seen_in_file[key]}", redact_raw_row(row))
                )
                continue
            if key:
                seen_in_file[key] = row_number
            digest = row_digest(row)
            if existing.get(key) == digest:
                state.unchanged += 1
                continue
            try:
                normalised = normalize_customer_row(row)
            except RowRejected as exc:
                state.rejected.append((row_number, str(exc), redact_raw_row(row)))
                continue
            state.warnings.update(normalised["warnings"])
            if key in existing:
                state.updated += 1
            else:
                state.created += 1
            state.staged.append(_staged_values(normalised, source=source, digest=digest, batch_id=batch.pk, now=now))
    finally:
        if bar is not None:
            bar.update(state.rows_read % 5000)
            bar.close()
    return state


def _upsert_staged(rows: list[tuple]) -> None:
    table = SourceRecord._meta.db_table
    cols = ", ".join(sql.quote(c) for c in _RECORD_COLUMNS)
    sql.drop_temp_table("feed_stage")
    sql.execute(f"CREATE TEMP TABLE feed_stage AS SELECT {cols} FROM {sql.quote(table)} WHERE 1 = 0")
    sql.bulk_insert("feed_stage", _RECORD_COLUMNS, rows)
    updates = ", ".join(f"{sql.quote(c)} = excluded.{sql.quote(c)}" for c in _RECORD_COLUMNS if c not in _KEEP_ON_UPDATE)
    sql.execute(
        f"INSERT INTO {sql.quote(table)} ({cols}) SELECT {cols} FROM feed_stage WHERE 1 = 1 "
        f"ON CONFLICT (source_id, customer_key) DO UPDATE SET {updates}"
    )
    sql.drop_temp_table("feed_stage")


def _lock_source(source: Source) -> None:
    """Serialise loads of one source; a batch still 'running' once we hold the lock was interrupted."""
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_lock(%s)", [sql.advisory_lock_key("feed", source.pk)])
    FeedBatch.objects.filter(source=source, status=FeedBatch.Status.RUNNING).update(
        status=FeedBatch.Status.FAILED, error="interrupted before it finished; nothing of it was kept",
        finished_at=timezone.now(),
    )


def _unlock_source(source: Source) -> None:
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_unlock(%s)", [sql.advisory_lock_key("feed", source.pk)])


def _fail_batch(batch: FeedBatch, error: str) -> None:
    FeedBatch.objects.filter(pk=batch.pk).update(status=FeedBatch.Status.FAILED, error=error, finished_at=timezone.now())


def feed_batch_queue(*, source: Source, kind: str, path: Path | str) -> FeedBatch:
    """The batch of a file accepted now and loaded later by a task: its id is what the caller polls."""
    return FeedBatch.objects.create(source=source, kind=kind, file_name=str(path), status=FeedBatch.Status.QUEUED)


def batch_start(queued: FeedBatch | None, **fields) -> FeedBatch:
    """A new running batch, or the queued one (feed_batch_queue) switched to running with these fields."""
    if queued is None:
        return FeedBatch.objects.create(**fields)
    FeedBatch.objects.filter(pk=queued.pk).update(status=FeedBatch.Status.RUNNING, started_at=timezone.now(), **fields)
    queued.refresh_from_db()
    return queued


def feed_load(*, source: Source | str, path: Path | str, encoding: str = "utf-8-sig", progress: bool = False,
              batch: FeedBatch | None = None) -> FeedBatch:
    """Load one customer feed file for `source`; returns its batch (succeeded or failed with the reason).

    `batch`: a queued batch (feed_batch_queue) to run this load as; by default a new one."""
    if isinstance(source, str):
        source = Source.objects.get(code=source)
    path = Path(path)
    if encoding.lower().replace("-", "") in {"utf8", "utf8sig"}:
        encoding = "utf-8-sig"
    _lock_source(source)
    try:
        batch = batch_start(batch, source=source, file_name=str(path), file_sha256=_file_sha256(path))
        try:
            with transaction.atomic():
                sql.set_work_mem()
                state = _read_and_stage(path, source=source, encoding=encoding, batch=batch, progress=progress)
                _upsert_staged(state.staged)
                sql.analyze_after_bulk_write(SourceRecord._meta.db_table, len(state.staged))
                RejectedRow.objects.bulk_create(
                    [RejectedRow(batch=batch, row_number=n, reason=reason, raw=raw) for n, reason, raw in state.rejected],
                    batch_size=5000,
                )
                FeedBatch.objects.filter(pk=batch.pk).update(
                    status=FeedBatch.Status.SUCCEEDED,
                    rows_read=state.rows_read,
                    rows_created=state.created,
                    rows_updated=state.updated,
                    rows_unchanged=state.unchanged,
                    rows_rejected=len(state.rejected),
                    warnings=dict(state.warnings),
                    finished_at=timezone.now(),
                )
        except FeedFormatError as exc:
            _fail_batch(batch, str(exc))
        except Exception as exc:
            _fail_batch(batch, f"load failed, nothing of it was kept: {exc!r}")
            raise
        batch.refresh_from_db()
        return batch
    finally:
        _unlock_source(source)
