"""Loading customer feeds: read, validate, normalise and upsert source records as one set.

A load is all-or-nothing for the file (one transaction), row-tolerant inside it (a bad row is rejected
with its row number and reason while the good rows load), and idempotent (a row whose content has not
changed since the last load is recognised by its digest and not written again).
"""
import codecs
import csv
import functools
import gzip
import hashlib
import io
import json
import logging
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from privacy.models import ErasedIdentifier
from privacy.policy import mask_raw_row

from . import columnar, sql
from .models import FeedBatch, RejectedRow, Source, SourceRecord
from .normalize import RowRejected, normalize_customer_row
from .pii_keys import pii_key_check

log = logging.getLogger(__name__)

CANONICAL_COLUMNS = frozenset({
    "customer_key", "full_name", "family_name", "given_name", "gender", "birth_date", "id_type", "id_number",
    "phone", "email", "address", "city", "postcode", "core_cif", "updated_at", "pan", "card_token",
    "pan_bin", "pan_last4",
})
REQUIRED_COLUMNS = ("customer_key",)
SNIFF_BYTES = 64 * 1024


class FeedFormatError(Exception):
    """The file is not a feed this loader can read; nothing was loaded."""


class Rejects:
    """A batch's rejected rows: every one counted, the first CDP_FEED_MAX_STORED_REJECTS kept for review with their
    raw values masked (privacy.policy.mask_raw_row), so a file of millions of bad rows costs neither memory nor
    a table of them."""

    def __init__(self):
        self.count = 0
        self.kept: list[tuple[int, str, dict]] = []
        self.limit = settings.CDP_FEED_MAX_STORED_REJECTS

    def add(self, row_number: int, reason: str, raw: dict | Callable[[], dict] | None = None) -> None:
        """`raw`: the row, or a function giving it (not called once the limit is reached)."""
        self.count += 1
        if len(self.kept) < self.limit:
            row = raw() if callable(raw) else raw
            self.kept.append((row_number, reason, mask_raw_row(row) if row else {}))

    def add_unreadable(self, unreadable: list[tuple[int, str]]) -> None:
        for row_number, reason in unreadable:
            self.add(row_number, reason)

    def save(self, batch: FeedBatch) -> None:
        RejectedRow.objects.bulk_create(
            [RejectedRow(batch=batch, row_number=n, reason=reason, raw=raw) for n, reason, raw in self.kept],
            batch_size=5000)


@dataclass
class _LoadState:
    rejected: Rejects = field(default_factory=Rejects)
    warnings: Counter = field(default_factory=Counter)
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def _too_large() -> FeedFormatError:
    return FeedFormatError(f"the file is larger than {settings.CDP_FEED_MAX_BYTES} bytes (once decompressed), "
                           "the most a feed may hold (CDP_FEED_MAX_BYTES)")


class _BoundedReader(io.RawIOBase):
    """The decompressed bytes of a gzipped feed, refused past CDP_FEED_MAX_BYTES: a few kilobytes of gzip can
    hold gigabytes."""

    def __init__(self, compressed):
        self.compressed = compressed
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.compressed.readinto(buffer)
        self.bytes_read += count or 0
        if self.bytes_read > settings.CDP_FEED_MAX_BYTES:
            raise _too_large()
        return count

    def close(self) -> None:
        self.compressed.close()
        super().close()


def _open_binary(path: Path):
    """The file's bytes, decompressed if it is gzipped; a file over CDP_FEED_MAX_BYTES fails (FeedFormatError)."""
    if _is_gzip(path):
        return io.BufferedReader(_BoundedReader(gzip.open(path, "rb")), buffer_size=1 << 20)
    if path.stat().st_size > settings.CDP_FEED_MAX_BYTES:
        raise _too_large()
    return open(path, "rb")


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


def _is_line_end(piece: str) -> bool:
    return piece.splitlines()[0] != piece


def _decoded_lines(binary, encoding: str) -> Iterator[str]:
    """The file's lines, as str.splitlines would cut the whole text. Only the newly read text is split (a long
    line is not rescanned at every read); a line longer than CDP_FEED_MAX_LINE_CHARS fails the file."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    max_line = settings.CDP_FEED_MAX_LINE_CHARS
    offset = 0
    lines_read = 0
    pending: list[str] = []  # the pieces of a line not ended yet
    pending_chars = 0
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
        lines = text.splitlines(keepends=True)
        unended = lines.pop() if lines and not _is_line_end(lines[-1]) else None
        if lines and pending:  # the first line ends the pieces read before: joined once, when it ends
            lines[0] = "".join(pending) + lines[0]
            pending, pending_chars = [], 0
        if unended is not None:
            pending.append(unended)
            pending_chars += len(unended)
        if pending_chars > max_line or any(len(line) > max_line for line in lines):
            raise FeedFormatError(f"line {lines_read + len(lines) + 1} or near it is longer than {max_line} "
                                  "characters, the most a feed line may hold (CDP_FEED_MAX_LINE_CHARS)")
        lines_read += len(lines)
        yield from lines
        if not chunk:
            if pending:
                yield "".join(pending)
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
        if _is_jsonl(path, head):
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
        except (json.JSONDecodeError, RecursionError) as exc:
            message = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
            if row_number == 1:
                raise FeedFormatError(f"not a JSON Lines feed: first line is not JSON ({message})") from None
            yield row_number, f"not valid JSON: {message}"
            continue
        if not isinstance(obj, dict):
            yield row_number, "not a JSON object"
            continue
        if row_number == 1:
            _canonical_header(list(obj), mapping)
        yield row_number, {canonical(k): "" if v is None else str(v) for k, v in obj.items()}


def row_digest(row: dict[str, str]) -> str:
    """MD5 of the raw row's non-empty values (trimmed) by column name: a reload recognises an unchanged row by it."""
    payload = "\x1f".join(f"{k}\x1e{v.strip()}" for k, v in sorted(row.items()) if v and v.strip())
    return hashlib.md5(payload.encode(), usedforsecurity=False).hexdigest()


# Columns written by a load, in staging order.
_RECORD_COLUMNS = (
    "source_id", "customer_key", "full_name", "family_name", "given_name", "name_key", "gender", "birth_date",
    "id_type", "id_number_hash", "id_number_masked", "id_valid", "phone", "email", "address", "city", "postcode",
    "core_cif", "cif_ref", "pan_token", "pan_bin", "pan_last4", "attributes", "source_updated_at", "row_digest",
    "first_batch_id", "last_batch_id", "needs_resolution", "loaded_at",
)
# Columns an update must not overwrite: the identity of the row and its history.
_KEEP_ON_UPDATE = {"source_id", "customer_key", "first_batch_id"}
# Rows normalised at once: large enough for the vectorised kernels, small enough to bound memory on any file.
CHUNK_ROWS = 200_000
# What Arrow's CSV reader parses at once (a chunk of ~100,000 customer rows).
ARROW_BLOCK_BYTES = 16 << 20


@dataclass
class RawChunk:
    """A stretch of a feed file: `table` has `rn` (row number) and one string column per canonical column
    ("" where a row has no value); `unreadable` are the rows of the stretch that could not be read."""

    table: pa.Table
    unreadable: list[tuple[int, str]]


class FastReadUnavailable(Exception):
    """Arrow's CSV reader cannot read this file as the row-by-row reader would; that one reads it instead."""


def _chunk_table(row_numbers: list[int], columns: list[str], rows: list[dict]) -> pa.Table:
    data = {"rn": pa.array(row_numbers, pa.int64())}
    for name in columns:
        data[name] = pa.array([row.get(name) or "" for row in rows], pa.string())
    return pa.table(data)


def _python_chunks(path: Path, *, mapping: dict[str, str], encoding: str) -> Iterator[RawChunk]:
    """Chunks from read_feed: any format it reads (CSV, JSON Lines, any encoding), row by row."""
    numbers: list[int] = []
    rows: list[dict] = []
    columns: dict[str, None] = {}
    unreadable: list[tuple[int, str]] = []
    for row_number, row in read_feed(path, mapping=mapping, encoding=encoding):
        if isinstance(row, str):
            unreadable.append((row_number, row))
            continue
        numbers.append(row_number)
        rows.append(row)
        columns.update(dict.fromkeys(row))
        if len(rows) == CHUNK_ROWS:
            yield RawChunk(_chunk_table(numbers, list(columns), rows), unreadable)
            numbers, rows, columns, unreadable = [], [], {}, []
    if rows or unreadable:
        yield RawChunk(_chunk_table(numbers, list(columns), rows), unreadable)


def _is_jsonl(path: Path, head: bytes) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".jsonl", ".ndjson", ".json")) or head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{")


def _csv_header(path: Path, encoding: str) -> list[str] | None:
    """The raw header of a CSV feed that Arrow's reader can take, or None for read_feed to read the file (JSON
    Lines, binary, a quoted header, no line end in the first 64 kB)."""
    with _open_binary(path) as binary:
        head = binary.read(SNIFF_BYTES)
    line_end = head.find(b"\n")
    if b"\x00" in head or _is_jsonl(path, head) or line_end < 0:
        return None
    try:
        first = head[:line_end].decode(encoding).lstrip("\ufeff").rstrip("\r")
    except UnicodeDecodeError:
        return None
    return None if '"' in first else first.split(",")


def _arrow_chunks(path: Path, *, raw_header: list[str], header: list[str], encoding: str) -> Iterator[RawChunk]:
    """Chunks read by Arrow's CSV reader, with the row numbers and rejects of read_feed's CSV reader."""
    positional = [f"c{i}" for i in range(len(raw_header))]
    reported: list[tuple[int, str]] = []

    def on_invalid_row(row) -> str:
        if row.number is None:
            raise FastReadUnavailable("no row number")
        # Arrow counts the header as row 1; read_feed counts data rows from 1.
        reported.append((row.number - 1, f"expected {row.expected_columns} columns, found {row.actual_columns}"))
        return "skip"

    stream = pa.PythonFile(_open_binary(path), mode="r") if _is_gzip(path) else pa.OSFile(str(path))
    arrow_encoding = "utf8" if encoding.lower().replace("-", "").replace("_", "") in {"utf8", "utf8sig"} else encoding
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, skip_rows=1, column_names=positional,
                                           block_size=ARROW_BLOCK_BYTES, encoding=arrow_encoding),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(positional, pa.string()),
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        next_number = 1
        skipped: set[int] = set()  # rows reported unreadable that numbering has not passed yet
        for batch in reader:
            table = pa.Table.from_batches([batch]).rename_columns(header)
            if any(pc.any(pc.match_substring(table.column(c), "\x00")).as_py() for c in header):
                raise FastReadUnavailable("NUL bytes")
            _check_row_lengths(table, next_number)
            unreadable, reported[:] = list(reported), []
            if any(number < next_number for number, _ in unreadable):
                raise FastReadUnavailable("a row was reported unreadable after later rows were numbered")
            skipped.update(number for number, _ in unreadable)
            if skipped:
                numbers = []
                while len(numbers) < table.num_rows:
                    if next_number in skipped:
                        skipped.discard(next_number)
                    else:
                        numbers.append(next_number)
                    next_number += 1
            else:  # no unreadable row ahead: the chunk's rows are numbered consecutively
                numbers = np.arange(next_number, next_number + table.num_rows, dtype=np.int64)
                next_number += table.num_rows
            yield RawChunk(table.add_column(0, "rn", pa.array(numbers, pa.int64())), unreadable)
        if reported:
            yield RawChunk(_chunk_table([], header, []), list(reported))
    except (pa.ArrowException, UnicodeError, OSError) as exc:
        raise FastReadUnavailable(str(exc)) from exc


def _check_row_lengths(table: pa.Table, first_number: int) -> None:
    """The line limit of _decoded_lines for rows read by Arrow: a row whose values together are longer fails."""
    max_line = settings.CDP_FEED_MAX_LINE_CHARS
    if table.num_rows == 0:
        return
    lengths = functools.reduce(pc.add, (pc.utf8_length(table.column(c)) for c in table.column_names))
    if pc.max(lengths).as_py() > max_line:
        position = pc.index(pc.greater(lengths, max_line), True).as_py()
        raise FeedFormatError(f"row {first_number + position} or near it is longer than {max_line} characters, the "
                              "most a feed line may hold (CDP_FEED_MAX_LINE_CHARS)")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def feed_chunks(path: Path, *, mapping: dict[str, str], encoding: str) -> tuple[Iterator[RawChunk], Iterator[RawChunk] | None]:
    """(chunks read by Arrow, or by read_feed when Arrow cannot read the file; read_feed's chunks to fall back to)."""
    python = _python_chunks(path, mapping=mapping, encoding=encoding)
    raw_header = _csv_header(path, encoding)
    if raw_header is None:
        return python, None
    header = _canonical_header(raw_header, mapping)
    return _arrow_chunks(path, raw_header=raw_header, header=header, encoding=encoding), python


def _dedup_keys(table: pa.Table) -> list[str]:
    """customer_key.strip() of every row, as the duplicate check compares them."""
    raw = table.column("customer_key").combine_chunks() if "customer_key" in table.column_names else pa.array(
        [""] * table.num_rows, pa.string())
    keys = pc.utf8_trim(raw, characters=" ").to_pylist()
    for position in np.flatnonzero(~columnar.is_plain(raw)):
        keys[position] = (raw[position].as_py() or "").strip()
    return keys


# --- Erased people (PIPL): their rows are skipped, not loaded ---------------------------------------------------
# privacy.rights.erase_subject keeps do-not-reload markers (privacy.models.ErasedIdentifier): keyed hashes of the
# erased person's identifiers. A row matching one is counted in the batch's warnings as `skipped_erased` and goes
# nowhere: not loaded, not kept as a rejected row.

SKIPPED_ERASED = "skipped_erased"
# The keyed-hash purpose of contact markers.
ERASED_CONTACT_PURPOSE = "erased_contact"


def erased_key_purpose(source_id: int) -> str:
    """The keyed-hash purpose of a source's customer keys in do-not-reload markers."""
    return f"erased_key:{source_id}"


def erased_contact_value(phone: str, email: str) -> str:
    """The value a contact marker hashes (ERASED_CONTACT_PURPOSE): the normalised phone and e-mail together."""
    return f"{phone}|{email}"


class ErasedRows:
    """The markers that concern one source's loads, and the rows they drop. Empty (and free) when nobody of
    this source was ever erased, which is the common case."""

    def __init__(self, source: Source):
        markers = ErasedIdentifier.objects.filter(Q(source=source) | Q(source__isnull=True))
        by_kind: dict[str, list[str]] = {}
        for kind, digest in markers.values_list("kind", "digest"):
            by_kind.setdefault(kind, []).append(digest)
        self.keys = pa.array(by_kind.get(ErasedIdentifier.Kind.SOURCE_KEY, []), pa.string())
        self.ids = pa.array(by_kind.get(ErasedIdentifier.Kind.ID_NUMBER, []), pa.string())
        self.contacts = pa.array(by_kind.get(ErasedIdentifier.Kind.CONTACT, []), pa.string())
        self.purpose = erased_key_purpose(source.pk)
        self.hasher = columnar.KeyedHasher() if by_kind else None

    @staticmethod
    def _drop(table: pa.Table, hit) -> pa.Table:
        hit = pc.fill_null(hit, False)
        return table.filter(pc.invert(hit)) if pc.any(hit).as_py() else table

    def drop_by_key(self, table: pa.Table) -> pa.Table:
        """Rows of a raw chunk whose customer key (trimmed, as loads store it) is an erased person's, dropped."""
        if not len(self.keys) or "customer_key" not in table.column_names or not table.num_rows:
            return table
        keys = pc.utf8_trim_whitespace(table.column("customer_key").combine_chunks())
        return self._drop(table, pc.is_in(self.hasher(keys, self.purpose), value_set=self.keys))

    def drop_by_identity(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """Normalised rows carrying an erased person's valid id number, or phone and e-mail, dropped; and the
        positions kept."""
        if not (len(self.ids) or len(self.contacts)) or not table.num_rows:
            return table, np.arange(table.num_rows)
        hit = pa.array(np.zeros(table.num_rows, dtype=bool))
        if len(self.ids):
            valid_id = pc.and_(table.column("id_valid"), pc.is_in(table.column("id_number_hash"), value_set=self.ids))
            hit = pc.or_(hit, pc.fill_null(valid_id, False))
        if len(self.contacts):
            contact = pc.binary_join_element_wise(table.column("phone"), table.column("email"), "|")
            hit = pc.or_(hit, pc.fill_null(pc.is_in(self.hasher(contact, ERASED_CONTACT_PURPOSE), value_set=self.contacts),
                                           False))
        kept = np.flatnonzero(~hit.to_numpy(zero_copy_only=False))
        return self._drop(table, hit), kept


def row_digests(table: pa.Table, hasher: columnar.KeyedHasher) -> pa.Array:
    """row_digest of every row of the chunk."""
    names = sorted(c for c in table.column_names if c != "rn")
    if not names:
        return pa.array([row_digest({})] * table.num_rows, pa.string())
    digests, python_rows = hasher.row_digests(table, names)
    if not python_rows.any():
        return digests
    exact = [row_digest({name: table.column(name)[int(position)].as_py() for name in names})
             for position in np.flatnonzero(python_rows)]
    return pc.replace_with_mask(digests, pa.array(python_rows), pa.array(exact, pa.string()))


def _python_row(table: pa.Table, position: int) -> dict[str, str]:
    return {name: table.column(name)[position].as_py() for name in table.column_names if name != "rn"}


def _normalised_rows(normalised: list[dict]) -> pa.Table:
    """Rows from normalize_customer_row as a table of columnar.NORMALISED_SCHEMA."""
    columns = {field.name: [] for field in columnar.NORMALISED_SCHEMA}
    for row in normalised:
        for name, values in columns.items():
            value = row[name]
            values.append(json.dumps(value, ensure_ascii=False, sort_keys=True) if name == "attributes" else value)
    return pa.table({name: pa.array(values, columnar.NORMALISED_SCHEMA.field(name).type)
                     for name, values in columns.items()})


class _Stager:
    """Turns chunks into staged source-record rows (temp table feed_stage), with the batch's counts and rejects.

    A chunk's new and changed rows are normalised in a worker thread while this thread reads and checks the
    next chunk (Arrow and DuckDB release the GIL); results are taken in file order. `finish()` waits for the last.
    """

    def __init__(self, *, source: Source, batch: FeedBatch, writer: sql.CopyPipeline, pool: ThreadPoolExecutor,
                 look_up_keys: bool):
        self.source = source
        self.writer = writer
        self.batch = batch
        self.pool = pool
        self.now = timezone.now()
        self.today = date.today()
        self.time_zone = timezone.get_current_timezone_name()
        self.hasher = columnar.KeyedHasher()
        self.worker_hasher = columnar.KeyedHasher()  # a DuckDB connection serves one thread at a time
        # The source's digests: all at once, or for a file small against the source, those of each chunk's keys.
        self.look_up_keys = look_up_keys
        self.existing = {} if look_up_keys else _existing_digests(source)
        self.pending: deque[tuple[Future, list[int], pa.Array, np.ndarray, pa.Table]] = deque()
        self.erased = ErasedRows(source)
        self.reset()

    def reset(self) -> None:
        """Start again from the first chunk: chunks still being normalised are waited for and dropped."""
        while self.pending:
            self.pending.popleft()[0].exception()
        if self.look_up_keys:
            self.existing = {}  # what was looked up may include records of this load, which a restart deleted
        self.state = _LoadState()
        self.seen: dict[str, int] = {}

    def add(self, chunk: RawChunk) -> None:
        state = self.state
        table = chunk.table
        state.rows_read += table.num_rows + len(chunk.unreadable)
        state.rejected.add_unreadable(chunk.unreadable)
        read = table.num_rows
        table = self.erased.drop_by_key(table)
        if table.num_rows < read:
            state.warnings[SKIPPED_ERASED] += read - table.num_rows
        if table.num_rows == 0:
            return
        numbers = table.column("rn").to_pylist()
        keys = _dedup_keys(table)
        digest_array = row_digests(table, self.hasher)
        digests = digest_array.to_pylist()
        if self.look_up_keys:
            self.writer.drain()  # the lookup needs the connection the writer uses
            self.existing.update(_existing_digests(self.source, keys=[key for key in keys if key]))
        fresh = []
        for position, (number, key, digest) in enumerate(zip(numbers, keys, digests)):
            if key:
                first = self.seen.setdefault(key, number)
                if first != number:
                    state.rejected.add(number, f"customer_key: duplicate of row {first}",
                                       lambda: _python_row(table, position))
                    continue
            if self.existing.get(key) == digest:
                state.unchanged += 1
            else:
                fresh.append(position)
        if not fresh:
            return
        rows = table.take(pa.array(fresh, pa.int64()))
        normalised = self.pool.submit(columnar.normalise_chunk, rows, hasher=self.worker_hasher, today=self.today,
                                      time_zone=self.time_zone)
        self.pending.append((normalised, numbers, digest_array, np.array(fresh, dtype=np.int64), rows))
        if len(self.pending) > 1:
            self._stage(*self.pending.popleft())

    def finish(self) -> None:
        """Stage every chunk still being normalised."""
        while self.pending:
            self._stage(*self.pending.popleft())

    def _stage(self, work: Future, numbers: list[int], digests: pa.Array, fresh: np.ndarray, rows: pa.Table) -> None:
        state = self.state
        result = work.result()
        state.warnings.update(result.warnings)
        keep = np.ones(rows.num_rows, dtype=bool)
        keep[result.rejected] = False
        staged = [result.table.filter(pa.array(keep))]
        positions = [np.flatnonzero(keep)]
        # The rows a column function rejected: the row-by-row function gives the reason (or, rarely, accepts).
        accepted, accepted_positions = [], []
        for position in result.rejected:
            row = _python_row(rows, int(position))
            try:
                normalised = normalize_customer_row(row)
            except RowRejected as exc:
                state.rejected.add(numbers[fresh[position]], str(exc), row)
                continue
            state.warnings.update(normalised["warnings"])
            accepted.append(normalised)
            accepted_positions.append(position)
        if accepted:
            staged.append(_normalised_rows(accepted))
            positions.append(np.array(accepted_positions, dtype=np.int64))
        staged_table, kept = self.erased.drop_by_identity(pa.concat_tables(staged))
        staged_positions = fresh[np.concatenate(positions)]
        if len(kept) < len(staged_positions):
            state.warnings[SKIPPED_ERASED] += len(staged_positions) - len(kept)
        staged_digests = pc.take(digests, staged_positions[kept])
        is_update = np.array([key in self.existing for key in staged_table.column("customer_key").to_pylist()],
                             dtype=bool) if self.existing else np.zeros(staged_table.num_rows, dtype=bool)
        state.updated += int(is_update.sum())
        state.created += int((~is_update).sum())
        # New records go straight into the table (COPY); changed ones through feed_stage and one upsert.
        for target, rows_mask in ((SourceRecord._meta.db_table, ~is_update), ("feed_stage", is_update)):
            if rows_mask.any():
                mask = pa.array(rows_mask)
                self._write(target, staged_table.filter(mask), staged_digests.filter(mask))

    def _write(self, target: str, normalised: pa.Table, digests: pa.Array) -> None:
        rows = normalised.num_rows
        constant = {"source_id": pa.array(np.full(rows, self.source.pk, dtype=np.int64)),
                    "first_batch_id": pa.array(np.full(rows, self.batch.pk, dtype=np.int64)),
                    "last_batch_id": pa.array(np.full(rows, self.batch.pk, dtype=np.int64)),
                    "needs_resolution": pa.array(np.ones(rows, dtype=bool)),
                    "loaded_at": pa.array([self.now] * rows, pa.timestamp("us", tz="UTC")),
                    "row_digest": digests}
        constant["cif_ref"] = normalised.column("customer_key" if self.source.is_cif_authority else "core_cif")
        table = pa.table({c: constant[c] if c in constant else normalised.column(c) for c in _RECORD_COLUMNS})
        self.writer.put(target, table)


def _existing_digests(source: Source, keys: list[str] | None = None) -> dict[str, str]:
    """customer_key -> row_digest of the source's records (of those with `keys` only, through the unique index)."""
    table = sql.fetch_arrow(
        f"SELECT customer_key, row_digest FROM {SourceRecord._meta.db_table} WHERE source_id = %s"
        + ("" if keys is None else " AND customer_key = ANY(%s)"),
        pa.schema([("customer_key", pa.string()), ("row_digest", pa.string())]),
        [source.pk] if keys is None else [source.pk, keys],
    )
    return dict(zip(table.column("customer_key").to_pylist(), table.column("row_digest").to_pylist()))


# A file with fewer rows than this share of its source's records looks its keys up instead of fetching the digests
# of every record: one index probe per row (~15 us) against ~2 us per record of the source.
LOOKUP_SHARE = 0.1


def _looks_up_keys(path: Path, source: Source) -> bool:
    """Whether a load of `path` should look up the digests of its keys (a delta) rather than fetch all of them."""
    if not sql.is_postgres() or _is_gzip(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    size = path.stat().st_size
    estimated_rows = head.count(b"\n") * size / max(len(head), 1)
    # Records the source's loads created: close enough to its record count, without counting a million rows.
    records = FeedBatch.objects.filter(source=source, status=FeedBatch.Status.SUCCEEDED).aggregate(
        n=Sum("rows_created"))["n"] or 0
    return estimated_rows < LOOKUP_SHARE * records


def _create_stage() -> None:
    cols = ", ".join(sql.quote(c) for c in _RECORD_COLUMNS)
    sql.drop_temp_table("feed_stage")
    sql.execute(f"CREATE TEMP TABLE feed_stage AS SELECT {cols} FROM {sql.quote(SourceRecord._meta.db_table)} "
                f"WHERE 1 = 0")


def stage_chunks(path: Path, *, mapping: dict[str, str], encoding: str, add: Callable[[RawChunk], None],
                 restart: Callable[[], None], progress: bool, desc: str | None = None) -> None:
    """Pass every chunk of the file to `add`; if Arrow's reader turns out unable to read the file as read_feed
    would, `restart()` and pass read_feed's chunks instead."""
    chunks, fallback = feed_chunks(path, mapping=mapping, encoding=encoding)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit=" rows", unit_scale=True, dynamic_ncols=True, desc=desc)
    try:
        try:
            for chunk in chunks:
                add(chunk)
                if bar is not None:
                    bar.update(chunk.table.num_rows + len(chunk.unreadable))
        except FastReadUnavailable as exc:
            log.info("feed %s read row by row: %s", path.name, exc)
            restart()
            for chunk in fallback:
                add(chunk)
    finally:
        if bar is not None:
            bar.close()


def _read_and_stage(path: Path, *, source: Source, encoding: str, batch: FeedBatch, progress: bool) -> _LoadState:
    """Read, check and normalise every row of the file into feed_stage; the counts and rejects of the load."""
    _create_stage()
    with sql.CopyPipeline() as writer, ThreadPoolExecutor(max_workers=1, thread_name_prefix="normalise") as pool:
        stager = _Stager(source=source, batch=batch, writer=writer, pool=pool,
                         look_up_keys=_looks_up_keys(path, source))

        def restart() -> None:
            writer.drain()
            # The reader gave up part way: what it staged and wrote goes, the file is read again from the start.
            sql.execute(f"DELETE FROM {sql.quote(SourceRecord._meta.db_table)} WHERE first_batch_id = %s "
                        f"AND last_batch_id = %s", [batch.pk, batch.pk])
            _create_stage()
            stager.reset()

        stage_chunks(path, mapping=source.column_mapping, encoding=encoding, add=stager.add, restart=restart,
                     progress=progress)
        stager.finish()
    return stager.state


def _upsert_staged() -> None:
    """Write the changed records staged in feed_stage."""
    table = SourceRecord._meta.db_table
    cols = ", ".join(sql.quote(c) for c in _RECORD_COLUMNS)
    sql.analyze("feed_stage")
    updates = ", ".join(f"{sql.quote(c)} = excluded.{sql.quote(c)}" for c in _RECORD_COLUMNS if c not in _KEEP_ON_UPDATE)
    sql.execute(
        f"INSERT INTO {sql.quote(table)} ({cols}) SELECT {cols} FROM feed_stage WHERE 1 = 1 "
        f"ON CONFLICT (source_id, customer_key) DO UPDATE SET {updates}"
    )
    sql.drop_temp_table("feed_stage")


BATCH_INTERRUPTED = "interrupted before it finished; nothing of it was kept"


def _lock_source(source: Source) -> None:
    """Serialise loads of one source; a batch still 'running' once we hold the lock was interrupted."""
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_lock(%s)", [sql.advisory_lock_key("feed", source.pk)])
    FeedBatch.objects.filter(source=source, status=FeedBatch.Status.RUNNING).update(
        status=FeedBatch.Status.FAILED, error=BATCH_INTERRUPTED, finished_at=timezone.now(),
    )


def feed_batches_reset_stuck(*, running_longer_than: float) -> int:
    """Fail the batches 'running' for longer than any load may run (`running_longer_than`, the hard time limit of
    the loads' tasks): their worker died, and no load of their source has started since (it would have failed them
    as above). Returns how many."""
    now = timezone.now()
    return FeedBatch.objects.filter(
        status=FeedBatch.Status.RUNNING, started_at__lt=now - timedelta(seconds=running_longer_than),
    ).update(status=FeedBatch.Status.FAILED, error=BATCH_INTERRUPTED, finished_at=now)


def _unlock_source(source: Source) -> None:
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_unlock(%s)", [sql.advisory_lock_key("feed", source.pk)])


def _fail_batch(batch: FeedBatch, error: str) -> None:
    FeedBatch.objects.filter(pk=batch.pk).update(status=FeedBatch.Status.FAILED, error=error, finished_at=timezone.now())


def feed_batch_queue(*, source: Source, kind: str, path: Path | str) -> FeedBatch:
    """The batch of a file accepted now and loaded later by a task: its id is what the caller polls."""
    return FeedBatch.objects.create(source=source, kind=kind, file_name=Path(path).name,
                                    status=FeedBatch.Status.QUEUED)


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
        batch = batch_start(batch, source=source, file_name=path.name, file_sha256=_file_sha256(path))
        try:
            # Outside the load's transaction: a first load records the keys at once, not holding up the others.
            pii_key_check()
            with transaction.atomic():
                sql.set_work_mem()
                state = _read_and_stage(path, source=source, encoding=encoding, batch=batch, progress=progress)
                _upsert_staged()
                sql.analyze_after_bulk_write(SourceRecord._meta.db_table, state.created + state.updated)
                state.rejected.save(batch)
                FeedBatch.objects.filter(pk=batch.pk).update(
                    status=FeedBatch.Status.SUCCEEDED,
                    rows_read=state.rows_read,
                    rows_created=state.created,
                    rows_updated=state.updated,
                    rows_unchanged=state.unchanged,
                    rows_rejected=state.rejected.count,
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


def feed_load_all(feeds: Sequence[tuple[str, Path | str]], *, encoding: str = "utf-8-sig") -> list[FeedBatch]:
    """Load several customer feeds (source code, file), each as its own batch; returns the batches in that order.

    A load keeps one core busy with its Python work, so on PostgreSQL the feeds of different sources load at once,
    in a process each (up to one per core): the nightly files of core, card and wealth in about the time of the
    largest instead of the sum. Feeds of one source load one after another in the order given (they would queue on
    the source's lock anyway). Inside a transaction, in a daemonic process or on SQLite (one writer at a time), all
    load here in turn.
    """
    by_source: dict[str, list[tuple[int, Path]]] = {}
    for position, (code, path) in enumerate(feeds):
        by_source.setdefault(code, []).append((position, Path(path)))
    groups = list(by_source.items())
    workers = min(len(groups), os.cpu_count() or 1)
    # A daemonic process (a Celery prefork worker) may not start processes of its own.
    if workers < 2 or not sql.is_postgres() or connection.in_atomic_block or multiprocessing.current_process().daemon:
        return [feed_load(source=code, path=path, encoding=encoding) for code, path in feeds]
    # Forked children start with no connection (each opens its own) and the parent's settings (tests' database too).
    connections.close_all()
    batch_ids: dict[int, int] = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        loads = [pool.submit(_load_one_source, code, group, encoding) for code, group in groups]
        failures = [load.exception() for load in loads if load.exception() is not None]
        for load in loads:
            if load.exception() is None:
                batch_ids.update(load.result())
    if failures:
        raise failures[0]
    batches = FeedBatch.objects.in_bulk(batch_ids.values())
    return [batches[batch_ids[position]] for position in range(len(feeds))]


def _load_one_source(code: str, group: list[tuple[int, Path]], encoding: str) -> dict[int, int]:
    """In a child process of feed_load_all: load one source's feeds; their positions -> batch ids."""
    try:
        return {position: feed_load(source=code, path=path, encoding=encoding).pk for position, path in group}
    finally:
        connections.close_all()
