"""Benchmark: the segment engine on PostgreSQL. Prints a 6-condition rule's refresh time (attributes, a tag, a card
spend aggregate over 90 days, a nested any/not) against the same rule hand-written in SQL (and their ratio), the time to refresh 100 segments, preview time and the worker's peak memory.

    .venv/bin/python bench/bench_segments.py --profiles 1000000

It uses its own database (default cdp_bench_segments on the local server; dropped and created again) and fills
it with synthetic profiles by one INSERT … SELECT from generate_series.
"""
import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchdb import SERVER, fresh_database  # noqa: E402

CITIES = ["北京市", "上海市", "广州市", "深圳市", "杭州市", "成都市", "南京市", "武汉市"]

RULE = {"all": [
    {"field": "gender", "op": "eq", "value": "F"},
    {"field": "birth_date", "op": "between", "value": [{"years_ago": 60}, {"years_ago": 25}]},
    {"field": "city", "op": "in", "value": ["上海市", "北京市", "深圳市"]},
    {"tag": "vip"},
    {"any": [{"field": "record_count", "op": "gte", "value": 2}, {"not": {"field": "email", "op": "is_null"}}]},
    {"activity": {"kind": "card_transactions", "within_days": 90, "agg": "sum", "field": "amount", "op": "gte",
                  "value": 5000}},
]}

# What an engineer would write by hand: the profile conditions first, then the 90-day spend of those profiles only
# (through the card transactions' (source, customer, time) index).
HAND_SQL = """
WITH candidates AS (
  SELECT p.id FROM profiles_customerprofile p
  WHERE p.status = 'active' AND p.gender = 'F'
    AND p.birth_date BETWEEN %(born_from)s AND %(born_to)s
    AND p.city IN ('上海市', '北京市', '深圳市')
    AND EXISTS (SELECT 1 FROM tags_tagassignment a WHERE a.profile_id = p.id AND a.tag_id = %(tag)s
                AND (a.expires_at IS NULL OR a.expires_at > now()))
    AND (p.record_count >= 2 OR (p.email IS NOT NULL AND p.email <> ''))
)
SELECT r.profile_id AS id FROM candidates k
JOIN profiles_sourcerecord r ON r.profile_id = k.id
JOIN profiles_cardtransaction c ON c.source_id = r.source_id AND c.customer_key = r.customer_key
WHERE c.occurred_at >= %(since)s AND c.occurred_at <= %(now)s
GROUP BY r.profile_id
HAVING SUM(CASE WHEN c.currency = 'CNY' THEN c.amount ELSE c.amount * (
    SELECT f.rate_to_cny FROM profiles_fxrate f WHERE f.currency = c.currency
      AND f.as_of <= (c.occurred_at AT TIME ZONE %(tz)s)::date ORDER BY f.as_of DESC LIMIT 1) END) >= 5000
"""


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="cdp_bench_segments")
    args = parser.parse_args()

    fresh_database(args.database, args.server)
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from segments.models import Segment
    from segments.rules import RuleContext, rule_queryset
    from segments.selectors import rule_preview
    from segments.services import segment_refresh, segment_save, segments_refresh_all
    from tags.models import TagDefinition

    started = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("""
            INSERT INTO profiles_customerprofile (public_id, status, full_name, gender, birth_date, city, email,
                                                  phone, record_count, created_at, updated_at)
            SELECT 'B' || lpad(g::text, 15, '0'), 'active', 'name ' || g, (ARRAY['M','F','U'])[(1 + g %% 3)::int],
                   DATE '1940-01-01' + (g * 7919 %% 25000)::int, (%s::text[])[(1 + g * 31 %% 8)::int],
                   CASE WHEN g %% 4 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
                   '+86138' || lpad((g %% 100000000)::text, 8, '0'), 1 + g %% 3,
                   now() - ((g * 13 %% 900) || ' days')::interval, now()
            FROM generate_series(1::bigint, %s) g""", [CITIES, args.profiles])
        vip = TagDefinition.objects.create(code="vip", name="VIP")
        cur.execute("""INSERT INTO tags_tagassignment (profile_id, tag_id, source, assigned_at, assigned_by)
                       SELECT id, %s, 'manual', now(), 'bench' FROM profiles_customerprofile WHERE id %% 5 = 0""",
                    [vip.pk])
        # Card activity: a card record for two profiles in three, each with 6 purchases spread over 180 days.
        cur.execute("""INSERT INTO profiles_feedbatch (source_id, kind, file_name, file_sha256, status, error,
                           rows_read, rows_created, rows_updated, rows_unchanged, rows_rejected, warnings, started_at)
                       SELECT id, 'customers', 'bench', '', 'succeeded', '', 0, 0, 0, 0, 0, '{}', now()
                       FROM profiles_source WHERE code = 'card' RETURNING id, source_id""")
        batch_id, card_source = cur.fetchone()
        cur.execute("""INSERT INTO profiles_sourcerecord (source_id, customer_key, profile_id, gender, id_valid,
                           attributes, row_digest, first_batch_id, last_batch_id, needs_resolution, loaded_at)
                       SELECT %s, 'K' || id, id, 'U', false, '{}', 'x', %s, %s, false, now()
                       FROM profiles_customerprofile WHERE id %% 3 <> 0""", [card_source, batch_id, batch_id])
        cur.execute("""INSERT INTO profiles_cardtransaction (source_id, customer_key, row_digest, last_batch_id,
                           txn_key, card_token, occurred_at, amount, currency, mcc, merchant_category, channel,
                           installments)
                       SELECT r.source_id, r.customer_key, 'x', %s, r.customer_key || '-' || n, 'tok', 
                              now() - ((r.profile_id * 7 + n * 31) %% 180 || ' days')::interval,
                              ((r.profile_id * 17 + n * 101) %% 3000) + 0.5, 'CNY', '5812', 'dining', 'pos', 0
                       FROM profiles_sourcerecord r, generate_series(1, 6) n WHERE r.source_id = %s""",
                    [batch_id, card_source])
        cards = cur.rowcount
        cur.execute("ANALYZE")
    print(f"profiles: {args.profiles:,}, card transactions: {cards:,} (filled in "
          f"{time.perf_counter() - started:.1f}s), VIP tags: {args.profiles // 5:,}")

    ctx = RuleContext()
    hand_params = {"born_from": ctx.today.replace(year=ctx.today.year - 60),
                   "born_to": ctx.today.replace(year=ctx.today.year - 25), "tag": vip.pk, "tz": settings.TIME_ZONE,
                   "since": ctx.now - timezone.timedelta(days=90), "now": ctx.now}

    def hand_written():
        with connection.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE hand AS {HAND_SQL}", hand_params)
            cur.execute("SELECT count(*) FROM hand")
            count = cur.fetchone()[0]
            cur.execute("DROP TABLE hand")
        return count

    def compiled():
        select_sql, params = rule_queryset(RULE, ctx).values("id").query.sql_with_params()
        with connection.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE compiled AS {select_sql}", params)
            cur.execute("SELECT count(*) FROM compiled")
            count = cur.fetchone()[0]
            cur.execute("DROP TABLE compiled")
        return count

    with connection.cursor() as cur:
        cur.execute("SET jit = off")  # as the engine does in its own transactions (segments.sql.rule_query_settings)
        cur.execute("SET work_mem = %s", [settings.CDP_BULK_WORK_MEM])
    hand_written(), compiled()  # warm the cache for both
    hand_seconds, hand_count = min(timed(hand_written) for _ in range(3))
    compiled_seconds, compiled_count = min(timed(compiled) for _ in range(3))
    assert hand_count == compiled_count, (hand_count, compiled_count)
    segment = segment_save(segment=Segment(name="Six conditions", slug="six", rule=RULE, holdout_percent=10))
    first_seconds, first = timed(lambda: segment_refresh(segment=segment))
    again_seconds, again = min((timed(lambda: segment_refresh(segment=segment)) for _ in range(3)),
                               key=lambda t: t[0])
    assert first.member_count == hand_count
    print(f"6-condition rule: {hand_count:,} members")
    print(f"  hand-written SQL (select into a table)      {hand_seconds:.3f}s")
    print(f"  compiled rule    (select into a table)      {compiled_seconds:.3f}s  "
          f"ratio {compiled_seconds / hand_seconds:.2f}x")
    print(f"  full refresh, first (all enter)              {first_seconds:.3f}s  "
          f"ratio {first_seconds / hand_seconds:.2f}x")
    print(f"  full refresh, again (diff, {again.entered + again.exited} changes)   {again_seconds:.3f}s  "
          f"ratio {again_seconds / hand_seconds:.2f}x")

    preview_seconds, preview = min(
        (timed(lambda: rule_preview(rule=RULE)) for _ in range(3)),
        key=lambda t: t[0])
    print(f"preview of an unsaved rule (count + 20): {preview_seconds:.3f}s ({preview['count']:,} profiles)")

    for i in range(args.segments - 1):
        segment_save(segment=Segment(name=f"S{i}", slug=f"s{i}", rule={"all": [
            {"field": "city", "op": "eq", "value": CITIES[i % len(CITIES)]},
            {"field": "birth_date", "op": "gte", "value": {"years_ago": 20 + i % 50}},
            {"any": [{"tag": "vip"}, {"field": "gender", "op": "eq", "value": "MFU"[i % 3]}]},
        ]}))
    all_seconds, summary = timed(segments_refresh_all)
    members = sum(j.member_count or 0 for j in summary.jobs)
    print(f"{len(summary.jobs)} segments refreshed in {all_seconds:.1f}s ({members:,} memberships written)")
    print(f"worker peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
