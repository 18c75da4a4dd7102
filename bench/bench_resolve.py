"""Benchmark: identity resolution alone, from a template database that holds the three loaded customer feeds.

    .venv/bin/python bench/bench_resolve.py --customers 1000000 --prepare   # load once into the template
    .venv/bin/python bench/bench_resolve.py --customers 1000000             # clone, resolve, then a 1% delta

A run clones the template (CREATE DATABASE ... TEMPLATE, seconds), resolves the first load and prints the steps,
the commit and precision/recall against the generator's ground truth; then it loads a delta (1% of the core
records with a new phone, 0.5% new card records: a second card of a known customer) and resolves it.
"""
import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_identity import FEEDS, _print_quality  # noqa: E402
from bench.benchdb import SERVER, fresh_database, recreate_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=str(ROOT / "var" / "bench"))
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--template", default="cdp_resolve_template")
    parser.add_argument("--database", default="cdp_resolve_run")
    parser.add_argument("--prepare", action="store_true", help="load the feeds into the template database")
    parser.add_argument("--no-delta", action="store_true")
    args = parser.parse_args()
    data = Path(args.data) / f"{args.customers}-{args.seed}"

    if args.prepare:
        fresh_database(args.template, args.server)
        from profiles.feeds import feed_load_all
        from profiles.sample_data import generate_sample_feeds

        if not (data / "ground_truth.csv").exists():
            generate_sample_feeds(out_dir=data, customers=args.customers, seed=args.seed)
        started = time.perf_counter()
        for batch in feed_load_all([(source, data / name) for source, name in FEEDS]):  # at once, as bench_identity
            assert batch.status == "succeeded", batch.error
            print(f"  load {batch.source.code:<7} {batch.rows_read:>9,} rows")
        print(f"  loaded in {time.perf_counter() - started:.1f}s")
        return

    recreate_database(args.database, args.server, template=args.template)
    os.environ["DATABASE_URL"] = f"{args.server}/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)  # the template may predate a migration of this branch
    report, commit = _resolve()
    print(f"first resolve in {report.seconds + commit:.1f}s (commit {commit:.1f}s): {report.steps}")
    print(f"  {report.records_resolved:,} records, {report.profiles_created:,} profiles, "
          f"{report.probabilistic_candidates:,} probabilistic candidates, {report.probabilistic_links:,} "
          f"probabilistic links, {report.possible_duplicates:,} for review, {report.constrained_clusters:,} "
          f"constrained clusters")
    _print_quality(connection, data / "ground_truth.csv")
    if args.no_delta:
        return

    from profiles.feeds import feed_load

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for source, path in _delta_feeds(data, Path(tmp)):
            batch = feed_load(source=source, path=path)
            assert batch.status == "succeeded", batch.error
        loaded = time.perf_counter() - started
    report, commit = _resolve()
    print(f"delta (loaded in {loaded:.1f}s) resolve in {report.seconds + commit:.1f}s (commit {commit:.1f}s): "
          f"{report.steps}")
    print(f"  {report.records_resolved:,} records, scope {report.scope_records:,}, {report.profiles_created:,} "
          f"new profiles, {report.profiles_merged:,} merged, {report.probabilistic_candidates:,} candidates, "
          f"{report.probabilistic_links:,} probabilistic links")
    with connection.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM profiles_sourcerecord WHERE needs_resolution")
        assert cur.fetchone()[0] == 0


def _resolve():
    """identity_resolve() with the commit timed apart from the steps."""
    from django.db import transaction

    from profiles.resolution import identity_resolve

    with transaction.atomic():
        report = identity_resolve()
        started = time.perf_counter()
    return report, time.perf_counter() - started


def _delta_feeds(data: Path, out: Path) -> list[tuple[str, Path]]:
    """Every 100th core record with a new phone and a later update time; every 200th card record again under a
    new key (a second card of the same customer)."""
    feeds = []
    for source, name, every, change in (("core", "core_customers.csv", 100, _new_phone),
                                        ("card", "card_customers.csv", 200, _new_card)):
        with open(data / name, encoding="utf-8", newline="") as fh, open(out / name, "w", encoding="utf-8",
                                                                          newline="") as delta:
            reader = csv.DictReader(fh)
            writer = csv.DictWriter(delta, fieldnames=reader.fieldnames)
            writer.writeheader()
            for n, row in enumerate(reader):
                if n % every == 0:
                    writer.writerow(change(row, n))
        feeds.append((source, out / name))
    return feeds


def _new_phone(row: dict, n: int) -> dict:
    return {**row, "phone": f"139{n % 100_000_000:08d}", "updated_at": "2026-01-15T09:00:00"}


def _new_card(row: dict, n: int) -> dict:
    return {**row, "customer_key": f"{row['customer_key']}-2", "pan": "", "updated_at": "2026-01-15T09:00:00"}


if __name__ == "__main__":
    main()
