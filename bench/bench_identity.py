"""Benchmark: load and resolve the three customer feeds on PostgreSQL, then reload them; print rates, the plain
COPY rate for the same files, and precision/recall against the generator's ground truth; then the quality on data
the generator's default mode does not make (bench/bench_quality.py: FEBRL sets 1 and 2, the generator's hard mode).

    .venv/bin/python bench/bench_identity.py --customers 1000000 [--no-quality]

It uses its own databases (default cdp_bench, and cdp_bench_quality for the quality runs, on the local server;
dropped and created again).
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchdb import SERVER, fresh_database  # noqa: E402

FEEDS = (("core", "core_customers.csv"), ("card", "card_customers.csv"), ("wealth", "wealth_customers.csv"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=str(ROOT / "var" / "bench"))
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="cdp_bench")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality on FEBRL and the hard mode")
    parser.add_argument("--hard-customers", type=int, default=5000, help="people in the hard mode's quality run")
    args = parser.parse_args()

    fresh_database(args.database, args.server)
    from django.db import connection

    from profiles.feeds import feed_load_all
    from profiles.resolution import identity_resolve
    from profiles.sample_data import generate_sample_feeds

    data = Path(args.data) / f"{args.customers}-{args.seed}"
    if not (data / "ground_truth.csv").exists():
        started = time.perf_counter()
        generate_sample_feeds(out_dir=data, customers=args.customers, seed=args.seed)
        print(f"generated {args.customers:,} people in {time.perf_counter() - started:.1f}s -> {data}")

    records = sum(_count_rows(data / name) for _, name in FEEDS)
    copy_seconds = _plain_copy_seconds(connection, data)
    print(f"records: {records:,}")
    print(f"baseline  PostgreSQL COPY of the same files into text tables: {copy_seconds:.1f}s "
          f"= {records / copy_seconds:,.0f} records/s")

    started = time.perf_counter()
    # As `load_feed core=... card=... wealth=...` loads them: the three feeds at once, a process each.
    for batch in feed_load_all([(source, data / name) for source, name in FEEDS]):
        assert batch.status == "succeeded", batch.error
        print(f"  load {batch.source.code:<7} {batch.rows_read:>9,} rows in "
              f"{(batch.finished_at - batch.started_at).total_seconds():6.1f}s (created {batch.rows_created:,}, "
              f"rejected {batch.rows_rejected:,}, warnings {batch.warnings})")
    loaded = time.perf_counter() - started
    report = identity_resolve()
    first = time.perf_counter() - started
    print(f"  resolve in {report.seconds:.1f}s: {report.steps}")
    print(f"  {report.profiles_created:,} profiles, {report.probabilistic_candidates:,} probabilistic candidates, "
          f"{report.probabilistic_links:,} probabilistic links, {report.possible_duplicates:,} for review, "
          f"{report.constrained_clusters:,} constrained clusters")
    print(f"first load + resolve: {first:.1f}s = {records / first:,.0f} records/s end to end "
          f"(load {loaded:.1f}s for the three at once, resolve {report.seconds:.1f}s); ratio to plain COPY: {first / copy_seconds:.1f}x")

    started = time.perf_counter()
    for batch in feed_load_all([(source, data / name) for source, name in FEEDS]):
        assert batch.rows_unchanged + batch.rows_rejected == batch.rows_read, "reload changed rows"
    report = identity_resolve()
    again = time.perf_counter() - started
    print(f"reload of the same files + resolve: {again:.1f}s = {records / again:,.0f} records/s "
          f"(records resolved: {report.records_resolved}); ratio to plain COPY: {again / copy_seconds:.2f}x")

    _print_quality(connection, data / "ground_truth.csv")
    if not args.no_quality:
        _print_other_quality(args)


def _count_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh) - 1


def _plain_copy_seconds(connection, data: Path) -> float:
    total = 0.0
    with connection.cursor() as cur:
        for _, name in FEEDS:
            with open(data / name, encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
                cur.execute("DROP TABLE IF EXISTS bench_copy")
                cur.execute(f"CREATE UNLOGGED TABLE bench_copy ({', '.join(f'c{i} text' for i in range(len(header)))})")
                fh.seek(0)
                started = time.perf_counter()
                cur.cursor.copy_expert("COPY bench_copy FROM STDIN WITH (FORMAT csv, HEADER true)", fh)
                total += time.perf_counter() - started
        cur.execute("DROP TABLE bench_copy")
    return total


def _print_quality(connection, truth: Path) -> None:
    """Pair- and cluster-level precision and recall of the profiles against the ground truth."""
    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE truth (source text, customer_key text, person_id text)")
        with open(truth, encoding="utf-8") as fh:
            cur.cursor.copy_expert("COPY truth FROM STDIN WITH (FORMAT csv, HEADER true)", fh)
        cur.execute(
            "CREATE TEMP TABLE assigned AS SELECT t.person_id, r.profile_id FROM truth t "
            "JOIN profiles_source s ON s.code = t.source "
            "JOIN profiles_sourcerecord r ON r.source_id = s.id AND r.customer_key = t.customer_key"
        )
        cur.execute(
            "SELECT "
            " (SELECT SUM(n * (n - 1) / 2) FROM (SELECT COUNT(*) n FROM assigned GROUP BY person_id, profile_id) x),"
            " (SELECT SUM(n * (n - 1) / 2) FROM (SELECT COUNT(*) n FROM assigned GROUP BY profile_id) x),"
            " (SELECT SUM(n * (n - 1) / 2) FROM (SELECT COUNT(*) n FROM assigned GROUP BY person_id) x)"
        )
        true_pos, predicted, actual = (float(v or 0) for v in cur.fetchone())
        # A cluster is right when a profile holds exactly one person's records.
        cur.execute(
            "WITH pp AS (SELECT person_id, profile_id, COUNT(*) n FROM assigned GROUP BY person_id, profile_id),"
            " per_person AS (SELECT person_id, COUNT(*) n FROM assigned GROUP BY person_id),"
            " per_profile AS (SELECT profile_id, COUNT(*) n FROM assigned GROUP BY profile_id) "
            "SELECT COUNT(*) FROM pp JOIN per_person a USING (person_id) JOIN per_profile b USING (profile_id) "
            "WHERE pp.n = a.n AND pp.n = b.n"
        )
        exact = cur.fetchone()[0]
        cur.execute("SELECT (SELECT COUNT(DISTINCT person_id) FROM assigned), (SELECT COUNT(DISTINCT profile_id) FROM assigned)")
        persons, profiles = cur.fetchone()
    print(f"pairs:    precision {true_pos / predicted:.4f}  recall {true_pos / actual:.4f}  "
          f"({int(true_pos):,} right of {int(predicted):,} linked, {int(actual):,} true pairs)")
    print(f"clusters: precision {exact / profiles:.4f}  recall {exact / persons:.4f}  "
          f"({exact:,} exact; {profiles:,} profiles, {persons:,} people)")


def _print_other_quality(args) -> None:
    """bench/bench_quality.py in a process of its own (it works in databases of its own); its log goes to a file."""
    log = Path(args.data) / "quality.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"quality on data the default generator does not make (log: {log}):", flush=True)
    with open(log, "w") as fh:
        subprocess.run([sys.executable, str(ROOT / "bench" / "bench_quality.py"), "--server", args.server,
                        "--hard-customers", str(args.hard_customers), "--seed", str(args.seed)],
                       stderr=fh, check=True)


if __name__ == "__main__":
    main()
