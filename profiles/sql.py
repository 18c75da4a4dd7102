"""Set-based SQL helpers for the profiles domain: staging tables, bulk copy and id allocation.

PostgreSQL is production and gets COPY; SQLite (the embedded default) gets executemany. Every statement
that carries values uses parameters; table and column names come from model metadata, never from input.
"""
import contextlib
import csv
import hashlib
import io
import queue
import threading
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq import encoders as pgpq_encoders
from pgpq import schema as pgpq_schema


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def create_temp_table(name: str, columns_sql: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {quote(name)}")
        cur.execute(f"CREATE TEMP TABLE {quote(name)} ({columns_sql})")


def analyze(table: str) -> None:
    """Give the planner real row counts for a temp table just filled: autovacuum never analyses temp tables,
    and a guess of a few thousand rows for a million-row table picks nested loops."""
    if is_postgres():
        execute(f"ANALYZE {quote(table)}")


# Rows written by one statement from which the table's planner statistics are refreshed at once: autovacuum
# analyses only after the transaction, too late for the statements of the same load or resolution that need them.
BULK_ANALYZE_ROWS = 50_000


# ... and only when they are this share of the table or more: a few percent more rows leave its statistics good
# enough, and analysing a ten-million-row table costs a third of a second.
BULK_ANALYZE_SHARE = 0.1


def analyze_after_bulk_write(table: str, rows_written: int) -> None:
    if rows_written < BULK_ANALYZE_ROWS or not is_postgres():
        return
    # reltuples: the row count of the last ANALYZE or VACUUM (-1 or 0 if the table never had one).
    known_rows = fetch_all("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])[0][0]
    if rows_written >= BULK_ANALYZE_SHARE * known_rows:
        analyze(table)


def set_work_mem() -> None:
    """Raise work_mem for the current transaction so the big sorts and hash joins of a resolution or load stay
    in memory (the server default of 4MB spills them to disk)."""
    if is_postgres():
        execute("SELECT set_config('work_mem', %s, true)", [settings.CDP_BULK_WORK_MEM])


def prefer_index_scans() -> None:
    """Lower random_page_cost for the current transaction: tables read from memory or SSD cost about the same
    per page in any order, and with the default of 4 the planner scans a ten-million-row table to find the few
    thousand rows an index would give."""
    if is_postgres():
        execute("SELECT set_config('random_page_cost', '1.1', true)")


def drop_temp_table(name: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {quote(name)}")


def _copy_value(value) -> str:
    if value is None:
        return r"\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


class _CsvRowStream(io.TextIOBase):
    """A file-like object that renders rows as COPY CSV lazily, so a million rows never sit in one string."""

    def __init__(self, rows: Iterable[Sequence], chunk_rows: int = 5000):
        self._rows = iter(rows)
        self._chunk_rows = chunk_rows
        self._buffer = ""

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        wrote = 0
        for row in self._rows:
            writer.writerow([_copy_value(v) for v in row])
            wrote += 1
            if wrote >= self._chunk_rows:
                break
        self._buffer += out.getvalue()
        return wrote > 0

    def read(self, size: int = -1) -> str:
        while size < 0 or len(self._buffer) < size:
            if not self._fill():
                break
        if size < 0:
            data, self._buffer = self._buffer, ""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    readline = read


def bulk_insert(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Insert many rows: COPY on PostgreSQL, executemany elsewhere. Values None mean NULL."""
    cols = ", ".join(quote(c) for c in columns)
    with connection.cursor() as cur:
        if is_postgres():
            sql = f"COPY {quote(table)} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
            cur.cursor.copy_expert(sql, _CsvRowStream(rows), size=1 << 16)
            return
        placeholders = ", ".join(["%s"] * len(columns))
        batch: list[Sequence] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= 10_000:
                cur.executemany(f"INSERT INTO {quote(table)} ({cols}) VALUES ({placeholders})", batch)
                batch.clear()
        if batch:
            cur.executemany(f"INSERT INTO {quote(table)} ({cols}) VALUES ({placeholders})", batch)


# Arrow integer types by the PostgreSQL column they are copied into: binary COPY takes a value of exactly the
# column's width.
_ARROW_INTEGER_FOR = {"smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64()}
# Bytes per piece that psycopg2 hands to the server during a COPY FROM STDIN (its default is 8 kB).
_COPY_SEND_BYTES = 1 << 20


def _column_types(cursor, table: str) -> dict[str, str]:
    cursor.execute("SELECT attname, format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = %s::regclass "
                   "AND attnum > 0 AND NOT attisdropped", [quote(table)])
    return dict(cursor.fetchall())


def _binary_payload(data: pa.Table, column_types: dict[str, str]) -> bytes:
    """The rows in PostgreSQL's binary COPY format (pgpq encodes it) for columns of these types: the server reads
    numbers, dates and timestamps as they are instead of parsing text, about three times less work than CSV for
    the server and for us."""
    data = pa.table([
        column.cast(_ARROW_INTEGER_FOR[column_types[name]])
        if pa.types.is_integer(column.type) and column_types[name] in _ARROW_INTEGER_FOR else column
        for name, column in zip(data.column_names, data.columns)
    ], names=data.column_names)
    encoders = {
        field.name: pgpq_encoders.StringEncoderBuilder.new_with_output(field, pgpq_schema.Jsonb())
        if column_types[field.name] == "jsonb" else ArrowToPostgresBinaryEncoder.infer_encoder(field)
        for field in data.schema
    }
    encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(data.schema, encoders)
    return b"".join([encoder.write_header(), *(encoder.write_batch(b) for b in data.to_batches()), encoder.finish()])


def _copy_binary(cursor, table: str, columns: Sequence[str], payload: bytes) -> None:
    cols = ", ".join(quote(c) for c in columns)
    cursor.copy_expert(f"COPY {quote(table)} ({cols}) FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload),
                       size=_COPY_SEND_BYTES)


def _copy_arrow(cursor, table: str, data: pa.Table) -> None:
    """COPY the rows of an Arrow table through a psycopg2 cursor in the binary format."""
    _copy_binary(cursor, table, data.column_names, _binary_payload(data, _column_types(cursor, table)))


@dataclass(frozen=True)
class EncodedRows:
    """Rows of an Arrow table made ready for bulk_insert_encoded: in the binary COPY format on PostgreSQL, as they
    are elsewhere. Encoding touches no database, so a worker thread can do it while the connection is busy."""

    columns: list[str]
    rows: bytes | pa.Table


def column_types(table: str) -> dict[str, str] | None:
    """A table's column types, for encode_rows (None elsewhere than PostgreSQL, where nothing is encoded)."""
    if not is_postgres():
        return None
    with connection.cursor() as cur:
        return _column_types(cur.cursor, table)


def encode_rows(data: pa.Table, column_types: dict[str, str] | None) -> EncodedRows:
    return EncodedRows(data.column_names, data if column_types is None else _binary_payload(data, column_types))


def bulk_insert_encoded(table: str, encoded: EncodedRows) -> None:
    if isinstance(encoded.rows, pa.Table):
        bulk_insert_arrow(table, encoded.rows)
        return
    with connection.cursor() as cur:
        _copy_binary(cur.cursor, table, encoded.columns, encoded.rows)


def bulk_insert_arrow(table: str, data: pa.Table) -> None:
    """Insert the rows of an Arrow table (its column names are the target's): COPY on PostgreSQL, executemany
    elsewhere."""
    if data.num_rows == 0:
        return
    if is_postgres():
        with connection.cursor() as cur:
            _copy_arrow(cur.cursor, table, data)
        return
    ops = connection.ops
    adapt = {pa.types.is_timestamp: ops.adapt_datetimefield_value, pa.types.is_date: ops.adapt_datefield_value,
             pa.types.is_decimal: str}
    converters = [next((f for test, f in adapt.items() if test(field.type)), None) for field in data.schema]
    rows = ([v if convert is None or v is None else convert(v) for v, convert in zip(row, converters)]
            for row in zip(*(column.to_pylist() for column in data.columns)))
    bulk_insert(table, data.column_names, rows)


class CopyPipeline:
    """Writes Arrow tables from a background thread on PostgreSQL, so that a loader prepares its next chunk while
    the server ingests this one (two cores at work instead of one); inserts at once elsewhere.

    The thread uses this connection's own psycopg2 connection, in its transaction; the caller runs no other query
    until `drain()` or the end of the `with` block, which wait for every write and raise the first error one met.
    """

    def __init__(self):
        self._background = is_postgres()
        self._error: BaseException | None = None
        if self._background:
            connection.ensure_connection()
            self._raw = connection.connection
            self._queue: queue.Queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._run, name="copy-pipeline", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    with self._raw.cursor() as cursor:
                        _copy_arrow(cursor, *item)
            except BaseException as exc:  # raised again in the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        if not self._background:
            bulk_insert_arrow(table, data)
            return
        self._raise()
        self._queue.put((table, data))

    def drain(self) -> None:
        """Wait until every table put so far is written."""
        if self._background:
            self._queue.join()
            self._raise()

    def __enter__(self) -> "CopyPipeline":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._background:
            self._queue.put(None)
            self._thread.join()
        if exc_type is None:
            self._raise()


def allocate_ids(model, count: int) -> list[int]:
    """Reserve `count` primary keys of `model` so rows can be bulk-inserted with known ids."""
    if count == 0:
        return []
    table = model._meta.db_table
    with connection.cursor() as cur:
        if is_postgres():
            cur.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [id_sequence(table), count])
            return [r[0] for r in cur.fetchall()]
        # SQLite serialises writers, so max(id) cannot move under us inside the transaction.
        cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {quote(table)}")
        start = cur.fetchone()[0] + 1
        return list(range(start, start + count))


# Per backend operations object (one per connection), per model: each concrete field with its column expression and
# the converters the ORM would apply to it.
_CONVERTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _field_converters(model) -> list[tuple[str, object, list]]:
    by_model = _CONVERTERS.setdefault(connection.ops, {})
    if model not in by_model:
        table = model._meta.db_table
        by_model[model] = [
            (field.attname, col, connection.ops.get_db_converters(col) + field.get_db_converters(connection))
            for field in model._meta.concrete_fields  # from_db takes the values in the model's field order
            for col in [field.get_col(table)]
        ]
    return by_model[model]


def fetch_instance(model, query: str, params: Sequence = ()):
    """The first row of `query` as a `model` instance (columns named like the model's fields become its fields,
    any other column an attribute), or None. For the hot API paths: Model.objects.raw() compiles converters and
    column maps on every call, which costs more than the query itself.

    The fields get the values the ORM would read: through the backend's converters (SQLite returns date-times
    naive, in UTC, and booleans and decimals as numbers) and the field's own (JSON arrives as text)."""
    with connection.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
        if row is None:
            return None
        names = [d[0] for d in cur.description]
    columns = dict(zip(names, row))
    loaded, values = [], []
    for attname, col, converters in _field_converters(model):
        if attname not in columns:
            continue
        value = columns.pop(attname)
        for convert in converters:
            value = convert(value, col, connection)
        loaded.append(attname)
        values.append(value)
    instance = model.from_db(connection.alias, loaded, values)
    for name, value in columns.items():
        setattr(instance, name, value)
    return instance


def fetch_all(sql: str, params: Sequence = ()) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def execute(sql: str, params: Sequence = ()) -> int:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.rowcount


def advisory_lock_key(namespace: str, value: int) -> int:
    """A stable 64-bit key for pg_advisory_lock."""
    digest = hashlib.blake2b(f"{namespace}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def fetch_columns(query: str, params: Sequence = ()) -> dict[str, np.ndarray]:
    """Run a query returning only integer columns (NULLs COALESCEd away) and return one numpy array per column.

    On PostgreSQL the result streams through COPY and pyarrow's CSV reader, far faster than row tuples.
    """
    with connection.cursor() as cur:
        if is_postgres():
            rendered = cur.cursor.mogrify(query, params).decode()
            buffer = io.BytesIO()
            cur.cursor.copy_expert(f"COPY ({rendered}) TO STDOUT WITH (FORMAT csv, HEADER true)", buffer)
            buffer.seek(0)
            table = pacsv.read_csv(buffer)
            return {name: table.column(name).to_numpy().astype(np.int64) for name in table.column_names}
        cur.execute(query, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    if not rows:
        return {name: np.empty(0, dtype=np.int64) for name in names}
    matrix = np.array(rows, dtype=np.int64)
    return {name: matrix[:, i] for i, name in enumerate(names)}


def fetch_arrow(query: str, schema: pa.Schema, params: Sequence = ()) -> pa.Table:
    """Run a query and return its rows as an Arrow table of `schema` (column names and types, in query order).

    On PostgreSQL the rows stream through COPY and pyarrow's CSV reader instead of a Python tuple per row.
    """
    with connection.cursor() as cur:
        if is_postgres():
            rendered = cur.cursor.mogrify(query, params).decode()
            buffer = io.BytesIO()
            cur.cursor.copy_expert(f"COPY ({rendered}) TO STDOUT WITH (FORMAT csv)", buffer)
            if not buffer.tell():  # no rows: the CSV reader refuses an empty file
                return schema.empty_table()
            buffer.seek(0)
            return pacsv.read_csv(
                buffer,
                read_options=pacsv.ReadOptions(column_names=schema.names),
                # COPY writes NULL unquoted and an empty string quoted: only the first is null.
                convert_options=pacsv.ConvertOptions(
                    column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False,
                    true_values=["t"], false_values=["f"],
                ),
            )
        cur.execute(query, params)
        rows = cur.fetchall()
    columns = list(zip(*rows)) if rows else [[] for _ in schema.names]
    arrays = [
        pa.array([None if v is None else bool(v) for v in c] if f.type == pa.bool_() else list(c), type=f.type)
        for c, f in zip(columns, schema)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def fetch_arrow_at_once(queries: Sequence[str], schema: pa.Schema) -> list[pa.Table]:
    """fetch_arrow of each query, all at once: the first on this connection, each other on a connection of its own,
    in a thread. Those see committed data only: the caller makes sure that is what this connection would see too."""

    def on_own_connection(query: str) -> pa.Table:
        try:
            return fetch_arrow(query, schema)
        finally:
            connection.close()  # the thread's own connection

    with ThreadPoolExecutor(max_workers=max(len(queries) - 1, 1), thread_name_prefix="fetch") as pool:
        others = [pool.submit(on_own_connection, query) for query in queries[1:]]
        first = fetch_arrow(queries[0], schema)
        return [first, *(other.result() for other in others)]


def transaction_has_written() -> bool:
    """Whether the current transaction has written anything yet (PostgreSQL; one that has has a transaction id)."""
    return fetch_all("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")[0][0]


def adapt_now():
    """The current time in the form the backend's raw SQL expects for a DateTimeField."""
    return connection.ops.adapt_datetimefield_value(timezone.now())


# --- binary COPY of integer columns (PostgreSQL), for the arrays of identity resolution ---------------------
# A row of the binary COPY format is a 16-bit field count, then per field a 32-bit length and the value, all
# big-endian; the file has a 19-byte header (signature, flags, extension length 0) and a 16-bit -1 trailer.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
# Rows per COPY statement when writing, so the encoded rows stay a bounded buffer.
_COPY_CHUNK_ROWS = 1_000_000


def _binary_row_dtype(fields: Sequence[tuple[str, np.dtype]]) -> np.dtype:
    layout = [("field_count", ">i2")]
    for name, dtype in fields:
        layout += [(f"{name}__length", ">i4"), (name, dtype)]
    return np.dtype(layout)


def fetch_int64_columns(query: str, params: Sequence = ()) -> dict[str, np.ndarray]:
    """Like fetch_columns (integer columns, NULLs COALESCEd away), through binary COPY on PostgreSQL: the values
    are never rendered as text or parsed again, which matters at millions of rows."""
    if not is_postgres():
        return fetch_columns(query, params)
    with connection.cursor() as cur:
        cur.execute(f"SELECT * FROM ({query}) q LIMIT 0", params)
        names = [d[0] for d in cur.description]
        casts = ", ".join(f"CAST(q.{quote(name)} AS BIGINT)" for name in names)
        rendered = cur.cursor.mogrify(f"SELECT {casts} FROM ({query}) q", params).decode()
        buffer = io.BytesIO()
        cur.cursor.copy_expert(f"COPY ({rendered}) TO STDOUT WITH (FORMAT binary)", buffer)
    rows = np.frombuffer(buffer.getbuffer()[len(_COPY_SIGNATURE):-len(_COPY_TRAILER)],
                         dtype=_binary_row_dtype([(name, ">i8") for name in names]))
    if len(rows) and any((rows[f"{name}__length"] != 8).any() for name in names):
        raise ValueError("fetch_int64_columns: a column has NULLs; COALESCE them in the query")
    return {name: rows[name].astype(np.int64) for name in names}


def bulk_insert_arrays(table: str, columns: dict[str, np.ndarray]) -> None:
    """Insert rows given as equal-length numpy arrays, one per column: int64 arrays (BIGINT columns) or
    fixed-width bytes (dtype S<n>, text columns). Binary COPY on PostgreSQL, executemany elsewhere."""
    names = list(columns)
    if not is_postgres():
        arrays = [a.astype(str) if a.dtype.kind == "S" else a for a in (columns[n] for n in names)]
        bulk_insert(table, names, zip(*(a.tolist() for a in arrays)))
        return
    fields = [(name, ">i8" if columns[name].dtype.kind in "iu" else columns[name].dtype) for name in names]
    dtype = _binary_row_dtype(fields)
    count = len(columns[names[0]]) if names else 0
    cols = ", ".join(quote(n) for n in names)
    with connection.cursor() as cur:
        for start in range(0, count, _COPY_CHUNK_ROWS):
            stop = min(start + _COPY_CHUNK_ROWS, count)
            rows = np.empty(stop - start, dtype=dtype)
            rows["field_count"] = len(names)
            for name, field_dtype in fields:
                rows[f"{name}__length"] = np.dtype(field_dtype).itemsize
                rows[name] = columns[name][start:stop]
            data = io.BytesIO(_COPY_SIGNATURE + rows.tobytes() + _COPY_TRAILER)
            cur.cursor.copy_expert(f"COPY {quote(table)} ({cols}) FROM STDIN WITH (FORMAT binary)", data,
                                   size=_COPY_SEND_BYTES)


def datetime_order_key(expression: str) -> str:
    """SQL for an integer that sorts like the datetime `expression` among the rows of one query: epoch
    microseconds on PostgreSQL, the dense rank on SQLite (which stores datetimes as ISO text)."""
    if is_postgres():
        # date_part's double holds epoch microseconds exactly until 2255 and costs half of EXTRACT's numeric.
        return f"CAST(date_part('epoch', {expression}) * 1000000 AS BIGINT)"
    return f"DENSE_RANK() OVER (ORDER BY {expression})"


def truncate(table: str) -> None:
    """Empty a table that is rebuilt whole: TRUNCATE on PostgreSQL (a DELETE of millions of rows writes each one
    as dead), DELETE elsewhere. TRUNCATE takes an exclusive lock on the table until the transaction ends."""
    execute(f"{'TRUNCATE' if is_postgres() else 'DELETE FROM'} {quote(table)}")


def lock_if_empty(table: str) -> bool:
    """On PostgreSQL, whether the table is empty and now locked against every other reader and writer until the
    transaction ends, so that a first load can drop its indexes (indexes_rebuilt) and the table stays empty for that
    load meanwhile. False when it holds rows, when anyone else holds a lock on it (two first loads each waiting to
    take the other's lock would deadlock), and elsewhere than PostgreSQL (SQLite, whose indexes stay)."""
    if not is_postgres():
        return False
    empty = f"SELECT NOT EXISTS (SELECT 1 FROM {quote(table)})"
    if not fetch_all(empty)[0][0]:
        return False
    try:
        with transaction.atomic():  # a savepoint: only the LOCK fails if the lock is not free at once
            execute(f"LOCK TABLE {quote(table)} IN ACCESS EXCLUSIVE MODE NOWAIT")
    except OperationalError:
        return False
    return fetch_all(empty)[0][0]


def prepare_index_builds() -> None:
    """Before building indexes in a transaction: run the deferred foreign-key checks pending (PostgreSQL builds no
    index, and rewrites no table, that has some) and give the sorts the bulk memory."""
    execute("SET CONSTRAINTS ALL IMMEDIATE")
    execute("SET CONSTRAINTS ALL DEFERRED")
    execute("SELECT set_config('maintenance_work_mem', %s, true)", [settings.CDP_BULK_WORK_MEM])


@contextlib.contextmanager
def indexes_rebuilt(table: str):
    """Drop the table's indexes for a bulk write and build them again after it: one sorted build per index is
    several times faster than inserting millions of entries one by one. Primary key and unique constraints are
    dropped and added again, except those a foreign key references (they stay). PostgreSQL only (elsewhere
    nothing happens); the table is locked exclusively until the transaction ends."""
    if not is_postgres():
        yield
        return
    indexes = fetch_all(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname, pg_get_constraintdef(c.oid) "
        "FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
        "AND c.contype IN ('p', 'u') WHERE i.indrelid = %s::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = i.indexrelid)",
        [table],
    )
    for name, _, constraint, _ in indexes:
        execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(constraint)}" if constraint else f"DROP INDEX {name}")
    yield
    prepare_index_builds()
    for _, definition, constraint, constraint_definition in indexes:
        execute(f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(constraint)} {constraint_definition}"
                if constraint else definition)


def allocate_id_array(model, count: int) -> np.ndarray:
    """allocate_ids as a numpy array, fetched through binary COPY: a million ids in a fraction of the time."""
    if not is_postgres():
        return np.array(allocate_ids(model, count), dtype=np.int64)
    return fetch_int64_columns(
        "SELECT nextval(%s::regclass) AS id FROM generate_series(1, %s)", [id_sequence(model._meta.db_table), count],
    )["id"]


def id_sequence(table: str) -> str:
    """The name of the sequence behind the table's id, to pass to nextval as a constant: nextval of an expression
    (pg_get_serial_sequence per row) is ten times slower."""
    return fetch_all("SELECT pg_get_serial_sequence(%s, 'id')", [table])[0][0]
