"""Benchmark: how load, identity resolution and segment refresh grow with the number of customers, each beside a
plain-SQL baseline measured in the same run, so that the ratio (the platform's cost over the bare database's) is
visible at every size and the curve shows where it bends.

    .venv/bin/python bench/bench_growth.py                          # 100k, 300k and 1M customers
    .venv/bin/python bench/bench_growth.py --sizes 100000 300000

For each size it generates the three sample customer feeds (cached in var/bench/<customers>-<seed>, as
bench_identity.py does), migrates a fresh database (default cdp_bench_growth on the local server; dropped and
created again) and measures:
- load: the three feeds loaded at once (profiles.feeds.feed_load_all); baseline: PostgreSQL COPY of the same files
  into text tables;
- resolve: the first identity resolution of every record (profiles.resolution.identity_resolve); baseline: the
  same COPY (what it costs just to have the rows);
- refresh: the sample segments without activity conditions (segments/sample_data.py: attribute, relative date,
  tag-rule and segment-reference rules) refreshed in dependency order (segments_refresh_all); baseline: each of
  those rules hand-written in SQL, selected into a table.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_identity import FEEDS, _count_rows, _plain_copy_seconds  # noqa: E402
from bench.benchdb import SERVER, fresh_database, recreate_database  # noqa: E402

SEGMENTS = ("shanghai-women", "seniors", "seniors-several-systems")

# The same segments written by hand: the rule tag's members first (as the tag refresh does), then each segment.
HAND_SQL = (
    """CREATE TEMP TABLE hand_tag AS SELECT id FROM profiles_customerprofile
       WHERE status = 'active' AND record_count >= 2""",
    """CREATE TEMP TABLE hand_women AS SELECT id FROM profiles_customerprofile
       WHERE status = 'active' AND gender = 'F' AND upper(city) LIKE upper('上海%%')""",
    """CREATE TEMP TABLE hand_seniors AS SELECT id FROM profiles_customerprofile
       WHERE status = 'active' AND birth_date <= %(born_by)s""",
    """CREATE TEMP TABLE hand_reachable AS SELECT p.id FROM profiles_customerprofile p
       JOIN hand_seniors s ON s.id = p.id JOIN hand_tag t ON t.id = p.id
       WHERE p.phone IS NOT NULL AND p.phone <> ''""",
)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def measure(customers: int, args) -> dict:
    data = Path(args.data) / f"{customers}-{args.seed}"
    if not (data / "ground_truth.csv").exists():
        from profiles.sample_data import generate_sample_feeds

        generate_sample_feeds(out_dir=data, customers=customers, seed=args.seed)
    from django.core.management import call_command
    from django.db import connection, connections

    connections.close_all()
    recreate_database(args.database, args.server)
    call_command("migrate", verbosity=0)
    from profiles.feeds import feed_load_all
    from profiles.models import CustomerProfile
    from profiles.resolution import identity_resolve
    from segments.models import Segment
    from segments.rules import RuleContext
    from segments.sample_data import SAMPLE_SEGMENTS, SAMPLE_TAGS
    from segments.services import segment_save, segments_refresh_all
    from tags.models import TagDefinition

    row = {"customers": customers, "records": sum(_count_rows(data / name) for _, name in FEEDS)}
    row["copy"] = _plain_copy_seconds(connection, data)

    def load():
        for batch in feed_load_all([(source, data / name) for source, name in FEEDS]):
            assert batch.status == "succeeded", batch.error

    row["load"], _ = timed(load)
    row["resolve"], _ = timed(identity_resolve)
    row["profiles"] = CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE).count()

    for fields in SAMPLE_TAGS:
        TagDefinition.objects.update_or_create(code=fields["code"], defaults=fields)
    for fields in SAMPLE_SEGMENTS:
        if fields["slug"] in SEGMENTS:
            segment_save(segment=Segment(**fields))
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    # A worker refreshes in a task of its own, on a connection that did not just run the resolution.
    connections.close_all()
    row["refresh"], summary = timed(segments_refresh_all)
    assert all(job.status == "succeeded" for job in summary.jobs), [job.error for job in summary.jobs]
    row["refresh_jobs"] = ", ".join(f"{job.segment.slug if job.segment_id else 'tag ' + job.tag.code} "
                                    f"{job.duration_seconds:.2f}s" for job in summary.jobs)

    today = RuleContext().today
    params = {"born_by": today.replace(year=today.year - 60)}

    def hand_written():
        with connection.cursor() as cur:
            for statement in HAND_SQL:
                cur.execute(statement, params)
            cur.execute("SELECT count(*) FROM hand_reachable")
            count = cur.fetchone()[0]
            cur.execute("DROP TABLE hand_tag, hand_women, hand_seniors, hand_reachable")
        return count

    row["hand_sql"], reachable = timed(hand_written)
    expected = Segment.objects.get(slug="seniors-several-systems").member_count
    assert reachable == expected, (reachable, expected)
    connections.close_all()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=str(ROOT / "var" / "bench"))
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="cdp_bench_growth")
    args = parser.parse_args()

    fresh_database(args.database, args.server)
    header = (f"{'customers':>10} {'records':>10} {'profiles':>10} | {'COPY s':>7} {'load s':>7} {'x COPY':>7} | "
              f"{'resolve s':>9} {'x COPY':>7} | {'refresh s':>9} {'SQL s':>7} {'x SQL':>7}")
    print(header, flush=True)
    for customers in args.sizes:
        r = measure(customers, args)
        print(f"{r['customers']:>10,} {r['records']:>10,} {r['profiles']:>10,} | {r['copy']:>7.1f} {r['load']:>7.1f} "
              f"{r['load'] / r['copy']:>7.1f} | {r['resolve']:>9.1f} {r['resolve'] / r['copy']:>7.1f} | "
              f"{r['refresh']:>9.2f} {r['hand_sql']:>7.2f} {r['refresh'] / r['hand_sql']:>7.1f}", flush=True)
        print(f"{'':>10} refresh jobs: {r['refresh_jobs']}", flush=True)


if __name__ == "__main__":
    main()
