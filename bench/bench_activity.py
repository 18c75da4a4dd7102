"""Activity benchmark on PostgreSQL: transaction feed load rates against plain SQL on the same rows, a reload, BRIN
against B-tree on occurred_at, and the metrics recomputation (full, and after a delta touching 1% of profiles).

The loads and their baselines:
- a first load into the empty table, against COPY of the same file into a plain table, and against COPY into a table
  shaped like the transaction table followed by a build of its indexes (what the loader does on a first load);
- an incremental load of new rows into the loaded table, against INSERT ... SELECT of the same rows into a copy of
  the table with its indexes (the floor of any load into an indexed table);
- a reload of the first file, which writes nothing.

    .venv/bin/python bench/bench_activity.py --rows 2000000 --profiles 100000

Own database (default cdp_bench_activity; dropped and created again). The transactions file is written first; its
customers get core source records and profiles set-based, so every row reaches a profile.
"""
import argparse
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchdb import SERVER, fresh_database  # noqa: E402

HEADER = "txn_key,customer_key,account_key,occurred_at,amount,currency,kind,channel,counterparty_category\n"
KINDS = ("payment", "payment", "transfer_out", "transfer_in", "fee", "interest")


def write_transactions(path: Path, rows: int, profiles: int, first_key: int = 0) -> None:
    rnd = random.Random(7 + first_key)
    start = datetime(2026, 11, 22, 12, 0) - timedelta(days=400)
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as fh:
        fh.write(HEADER)
        lines = []
        for i in range(first_key, first_key + rows):
            customer = i % profiles
            when = start + timedelta(seconds=(i - first_key) * 400 * 86400 // rows)  # in time order, as exported
            kind = "salary_credit" if i % 31 == 0 else KINDS[i % len(KINDS)]
            amount = rnd.randrange(100, 2_000_000) / 100 * (1 if kind in ("salary_credit", "transfer_in") else -1)
            lines.append(f"T{i},C{customer},A{customer},{when:%Y-%m-%dT%H:%M:%S}+08:00,{amount:.2f},CNY,{kind},"
                         f"{'app' if i % 3 else 'pos'},retail\n")
            if len(lines) == 100_000:
                fh.writelines(lines)
                lines = []
        fh.writelines(lines)


FILE_COLUMNS = ("txn_key text, customer_key text, account_key text, occurred_at timestamptz, amount numeric(18, 2), "
                "currency text, kind text, channel text, counterparty_category text")


def copy_file(cur, table: str, path: Path, columns: str | None = None) -> float:
    """Seconds for PostgreSQL's COPY of the CSV file into `table` (optionally into the named columns)."""
    started = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        cur.copy_expert(f"COPY {table} {f'({columns})' if columns else ''} FROM STDIN WITH (FORMAT csv, HEADER true)",
                        fh)
    return time.perf_counter() - started


def build_indexes_like(cur, table: str, model_table: str) -> float:
    """Seconds to build on `table` every index `model_table` has."""
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [model_table])
    started = time.perf_counter()
    for name, definition in cur.fetchall():
        cur.execute(definition.replace(f"INDEX {name} ON public.{model_table} ", f"INDEX {name}_baseline ON {table} "))
    return time.perf_counter() - started


def timed_load(path: Path):
    """(batch, seconds) of the core transactions load of the file."""
    from profiles.activity import activity_feed_load

    started = time.perf_counter()
    batch = activity_feed_load(source="core", kind="transactions", path=path)
    return batch, time.perf_counter() - started


def report(label: str, seconds: float, rows: int, extra: str = "") -> None:
    print(f"{label:<50}{seconds:7.1f}s  {rows / seconds:>10,.0f} rows/s{extra}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="cdp_bench_activity")
    args = parser.parse_args()

    fresh_database(args.database, args.server)
    from django.conf import settings
    from django.db import connection

    from profiles.metrics import profile_metrics_recompute

    with connection.cursor() as cur:
        cur.execute("""INSERT INTO profiles_feedbatch (source_id, kind, file_name, file_sha256, status, error,
                           rows_read, rows_created, rows_updated, rows_unchanged, rows_rejected, warnings, started_at)
                       SELECT id, 'customers', 'bench', '', 'succeeded', '', 0, 0, 0, 0, 0, '{}', now()
                       FROM profiles_source WHERE code = 'core' RETURNING id, source_id""")
        batch_id, core = cur.fetchone()
        cur.execute("""INSERT INTO profiles_customerprofile (public_id, status, record_count, created_at, updated_at,
                           birth_date)
                       SELECT 'B' || lpad(g::text, 15, '0'), 'active', 1, now(), now(), DATE '1950-01-01' + g %% 20000
                       FROM generate_series(0, %s - 1) g""", [args.profiles])
        cur.execute("""INSERT INTO profiles_sourcerecord (source_id, customer_key, profile_id, gender, id_valid,
                           attributes, row_digest, first_batch_id, last_batch_id, needs_resolution, loaded_at)
                       SELECT %s, 'C' || (substr(public_id, 2)::int), id, 'U', false, '{}', 'x', %s, %s, false, now()
                       FROM profiles_customerprofile""", [core, batch_id, batch_id])
        cur.execute("""INSERT INTO profiles_account (source_id, customer_key, row_digest, last_batch_id, account_key,
                           product_type, currency, balance, opened_at, status, as_of)
                       SELECT %s, customer_key, 'x', %s, 'A' || substr(customer_key, 2), 'savings', 'CNY',
                              (profile_id * 7919) %% 1000000, DATE '2020-01-01', 'active', DATE '2026-11-22'
                       FROM profiles_sourcerecord""", [core, batch_id])
        cur.execute("ANALYZE")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transactions.csv"
        started = time.perf_counter()
        write_transactions(path, args.rows, args.profiles)
        size_mb = path.stat().st_size / 1e6
        print(f"{args.rows:,} transactions for {args.profiles:,} profiles ({size_mb:.0f} MB written in "
              f"{time.perf_counter() - started:.1f}s)")

        with connection.cursor() as cur:
            cur.execute("SELECT set_config('maintenance_work_mem', %s, false)", [settings.CDP_BULK_WORK_MEM])
            cur.execute(f"CREATE UNLOGGED TABLE copy_baseline ({FILE_COLUMNS})")
            copy_seconds = copy_file(cur, "copy_baseline", path)
            cur.execute("DROP TABLE copy_baseline")
            # What a first load does, in plain SQL: the rows into a table without indexes, then each index built.
            cur.execute("CREATE TABLE shaped_baseline (LIKE profiles_transaction INCLUDING DEFAULTS INCLUDING IDENTITY)")
            cur.execute("ALTER TABLE shaped_baseline ALTER COLUMN source_id SET DEFAULT 1, "
                        "ALTER COLUMN row_digest SET DEFAULT '', ALTER COLUMN last_batch_id SET DEFAULT 1")
            first_floor = copy_file(cur, "shaped_baseline", path, HEADER.strip()) + build_indexes_like(
                cur, "shaped_baseline", "profiles_transaction")
            cur.execute("DROP TABLE shaped_baseline")
        report("  PostgreSQL COPY into a plain table", copy_seconds, args.rows)
        report("  COPY into the table shape, then its indexes", first_floor, args.rows)

        batch, load_seconds = timed_load(path)
        assert batch.status == "succeeded" and batch.rows_created == args.rows, (batch.status, batch.error)
        report("  first load (validate, stage, write, index)", load_seconds, args.rows,
               f"  ratio to COPY {load_seconds / copy_seconds:.1f}x, to COPY + index builds "
               f"{load_seconds / first_floor:.1f}x")

        increment = max(args.rows // 10, 1)
        later = Path(tmp) / "later_transactions.csv"
        write_transactions(later, increment, args.profiles, first_key=args.rows)
        with connection.cursor() as cur:
            # The floor of a load into an indexed table: the new rows written once into a copy of it.
            cur.execute(f"CREATE UNLOGGED TABLE copy_baseline ({FILE_COLUMNS})")
            copy_later = copy_file(cur, "copy_baseline", later)
            cur.execute("CREATE TABLE indexed_baseline (LIKE profiles_transaction INCLUDING ALL)")
            cur.execute("INSERT INTO indexed_baseline SELECT * FROM profiles_transaction")
            cur.execute("SELECT setval(pg_get_serial_sequence('indexed_baseline', 'id'), MAX(id)) FROM indexed_baseline")
            cur.execute("CHECKPOINT")
            started = time.perf_counter()
            cur.execute("""INSERT INTO indexed_baseline (source_id, customer_key, row_digest, last_batch_id, txn_key,
                               account_key, occurred_at, amount, currency, kind, channel, counterparty_category)
                           SELECT 1, customer_key, md5(txn_key), 1, txn_key, account_key, occurred_at, amount,
                                  currency, kind, channel, counterparty_category FROM copy_baseline""")
            indexed_floor = copy_later + time.perf_counter() - started
            cur.execute("DROP TABLE copy_baseline, indexed_baseline")
            cur.execute("CHECKPOINT")
        batch, later_seconds = timed_load(later)
        assert batch.status == "succeeded" and batch.rows_created == increment, (batch.status, batch.error)
        print(f"  {increment:,} new rows into the {args.rows:,}-row table:")
        report("    COPY + INSERT ... SELECT into a copy of it", indexed_floor, increment)
        report("    incremental load (validate, stage, upsert)", later_seconds, increment,
               f"  ratio to COPY + INSERT {later_seconds / indexed_floor:.1f}x")

        again, reload_seconds = timed_load(path)
        assert again.rows_unchanged == args.rows
        report("  reload of the first file (nothing written)", reload_seconds, args.rows)

    with connection.cursor() as cur:
        cur.execute("SELECT pg_relation_size('profiles_transaction_occurred_at_brin'), "
                    "pg_relation_size('profiles_transaction')")
        brin_size, table_size = cur.fetchone()
        started = time.perf_counter()
        cur.execute("CREATE INDEX bench_occurred_btree ON profiles_transaction (occurred_at)")
        btree_build = time.perf_counter() - started
        cur.execute("SELECT pg_relation_size('bench_occurred_btree')")
        btree_size = cur.fetchone()[0]
        query = ("SELECT count(*), sum(amount) FROM profiles_transaction "
                 "WHERE occurred_at >= TIMESTAMPTZ '2026-11-22' - interval '90 days'")
        timings = {}
        for name, setting in (("b-tree", "on"), ("brin", "off")):
            cur.execute(f"SET enable_indexscan = {setting}")
            if name == "brin":
                cur.execute("DROP INDEX bench_occurred_btree")
            cur.execute(query)  # warm
            started = time.perf_counter()
            for _ in range(5):
                cur.execute(query)
            timings[name] = (time.perf_counter() - started) / 5
        cur.execute("SET enable_indexscan = on")
    print(f"occurred_at index on {table_size / 1e6:.0f} MB of transactions: BRIN {brin_size / 1e3:.0f} kB, "
          f"B-tree {btree_size / 1e6:.0f} MB (built in {btree_build:.1f}s); last-90-days aggregate: "
          f"B-tree {timings['b-tree'] * 1000:.0f} ms, BRIN {timings['brin'] * 1000:.0f} ms")

    full = profile_metrics_recompute()
    full = min((profile_metrics_recompute() for _ in range(2)), key=lambda r: r.seconds)
    delta_ids = list(range(1, args.profiles + 1, 100))
    delta = min((profile_metrics_recompute(profile_ids=delta_ids) for _ in range(3)), key=lambda r: r.seconds)
    print(f"metrics and derived attributes: full {full.profiles:,} profiles {full.seconds:.1f}s; "
          f"delta {delta.profiles:,} profiles (1%) {delta.seconds:.2f}s")


if __name__ == "__main__":
    main()
