"""Benchmark: profile metrics and derived attributes on PostgreSQL. Prints the full recomputation time and the time
of a recomputation after a delta touching 1% of the profiles (a new transaction each).

    .venv/bin/python bench/bench_metrics.py --profiles 1000000 --transactions 20000000

Own database (default cdp_bench_metrics; dropped and created again), filled set-based from generate_series: per
profile a core record with two accounts (some in USD), a card record with a credit limit for two in three with card
transactions, a wealth record with a holding and a risk assessment for one in four; core transactions spread over
400 days in time order, as a core system exports them; then VACUUM ANALYZE and a checkpoint.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchdb import SERVER, fresh_database  # noqa: E402

KINDS = "ARRAY['payment','payment','transfer_out','transfer_in','fee','interest','salary_credit','payment']"
ACCOUNT_TYPES = "ARRAY['current','time_deposit','mortgage','consumer_loan','current']"


def fill(cur, profiles: int, transactions: int, card_per_profile: int) -> dict[str, int]:
    counts = {}
    cur.execute("""
        INSERT INTO profiles_customerprofile (public_id, status, full_name, gender, birth_date, city, record_count,
                                              created_at, updated_at)
        SELECT 'B' || lpad(g::text, 15, '0'), 'active', 'name ' || g, 'U', DATE '1940-01-01' + (g * 7919 %% 25000)::int,
               '上海市', 1, now(), now()
        FROM generate_series(1::bigint, %s) g""", [profiles])
    cur.execute("""INSERT INTO profiles_feedbatch (source_id, kind, file_name, file_sha256, status, error, rows_read,
                       rows_created, rows_updated, rows_unchanged, rows_rejected, warnings, started_at)
                   SELECT id, 'customers', 'bench', '', 'succeeded', '', 0, 0, 0, 0, 0, '{}', now()
                   FROM profiles_source WHERE code IN ('core', 'card', 'wealth') RETURNING id, source_id""")
    batch = {source: batch_id for batch_id, source in cur.fetchall()}
    cur.execute("SELECT code, id FROM profiles_source WHERE code IN ('core', 'card', 'wealth')")
    src = dict(cur.fetchall())
    core, card, wealth = src["core"], src["card"], src["wealth"]

    def records(source: int, prefix: str, where: str, attributes: str) -> None:
        cur.execute(f"""INSERT INTO profiles_sourcerecord (source_id, customer_key, profile_id, gender, id_valid,
                           attributes, row_digest, first_batch_id, last_batch_id, needs_resolution, loaded_at)
                        SELECT %s, '{prefix}' || id, id, 'U', false, {attributes}, 'x', %s, %s, false, now()
                        FROM profiles_customerprofile WHERE {where}""", [source, batch[source], batch[source]])
        counts[f"{prefix} records"] = cur.rowcount

    records(core, "C", "true", "'{}'")
    records(card, "K", "id %% 3 <> 0",
            "jsonb_build_object('credit_limit', (10000 + id %% 50 * 1000)::text, 'card_status', 'ACTIVE')")
    records(wealth, "W", "id %% 4 = 0", "'{}'")
    cur.execute(f"""
        INSERT INTO profiles_account (source_id, customer_key, row_digest, last_batch_id, account_key, product_type,
                                      currency, balance, opened_at, closed_at, status, as_of)
        SELECT %s, 'C' || p, 'x', %s, 'A' || p || '-' || n,
               CASE WHEN n = 1 THEN 'savings' ELSE ({ACCOUNT_TYPES})[1 + p %% 5] END,
               CASE WHEN p %% 20 = 0 THEN 'USD' ELSE 'CNY' END, (p * 7919 %% 900000) + 0.5,
               CURRENT_DATE - (p %% 3000)::int, CASE WHEN p %% 50 = 0 AND n = 2 THEN CURRENT_DATE - 30 END,
               CASE WHEN p %% 50 = 0 AND n = 2 THEN 'closed' ELSE 'active' END, CURRENT_DATE
        FROM generate_series(1::bigint, %s) p, generate_series(1, 2) n""", [core, batch[core], profiles])
    counts["accounts"] = cur.rowcount
    # Time order across the whole table (as loads append), customers interleaved.
    cur.execute(f"""
        INSERT INTO profiles_transaction (source_id, customer_key, row_digest, last_batch_id, txn_key, account_key,
                                          occurred_at, amount, currency, kind, channel, counterparty_category)
        SELECT %s, 'C' || (1 + g * 7919 %% %s), 'x', %s, 'T' || g, 'A', now() - interval '400 days'
               + (g::float8 / %s) * interval '400 days',
               (g %% 200000) / 100.0 * CASE WHEN g %% 8 IN (3, 6) THEN 1 ELSE -1 END,
               CASE WHEN g %% 97 = 0 THEN 'USD' ELSE 'CNY' END, ({KINDS})[1 + g %% 8],
               CASE WHEN g %% 8 IN (5, 6) THEN 'system' WHEN g %% 3 = 0 THEN 'pos' ELSE 'app' END, 'retail'
        FROM generate_series(1::bigint, %s) g""", [core, profiles, batch[core], transactions, transactions])
    counts["transactions"] = cur.rowcount
    cur.execute("""
        INSERT INTO profiles_cardtransaction (source_id, customer_key, row_digest, last_batch_id, txn_key, card_token,
                                              occurred_at, amount, currency, mcc, merchant_category, channel,
                                              installments)
        SELECT r.source_id, r.customer_key, 'x', %s, r.customer_key || '-' || n, 'tok',
               now() - ((r.profile_id * 7 + n * 31) %% 400 || ' days')::interval,
               ((r.profile_id * 17 + n * 101) %% 3000) + 0.5, 'CNY', '5812', 'dining', 'pos', 0
        FROM profiles_sourcerecord r, generate_series(1, %s) n WHERE r.source_id = %s""",
                [batch[card], card_per_profile, card])
    counts["card transactions"] = cur.rowcount
    cur.execute("""
        INSERT INTO profiles_holding (source_id, customer_key, row_digest, last_batch_id, holding_key, product_code,
                                      product_type, market_value, currency, as_of)
        SELECT source_id, customer_key, 'x', %s, 'H' || profile_id, 'F1',
               (ARRAY['fund','insurance','bond','structured','deposit_like'])[1 + profile_id %% 5],
               profile_id * 31 %% 2000000, 'CNY', CURRENT_DATE
        FROM profiles_sourcerecord WHERE source_id = %s""", [batch[wealth], wealth])
    counts["holdings"] = cur.rowcount
    cur.execute("""
        INSERT INTO profiles_riskassessment (source_id, customer_key, row_digest, last_batch_id, risk_level,
                                             assessed_at, expires_at)
        SELECT source_id, customer_key, 'x', %s, 'C' || (1 + profile_id %% 5), CURRENT_DATE - 100, CURRENT_DATE + 265
        FROM profiles_sourcerecord WHERE source_id = %s""", [batch[wealth], wealth])
    cur.execute("""INSERT INTO profiles_fxrate (currency, rate_to_cny, as_of, row_digest, source_id, last_batch_id)
                   SELECT 'USD', 7.1 + d %% 10 / 100.0, CURRENT_DATE - d, 'x', %s, %s
                   FROM generate_series(0, 400) d""", [core, batch[core]])
    # What autovacuum does after a bulk insert (this machine's server runs with it off): the visibility map it sets
    # lets a delta read its customers' transactions from the covering index alone.
    cur.execute("VACUUM ANALYZE")
    # The fill's writes (and the hint bits VACUUM sets on every page) flushed now, not during the timed runs.
    cur.execute("CHECKPOINT")
    return counts


def slowest(report, n: int = 5) -> str:
    steps = sorted(report.steps.items(), key=lambda item: -item[1])[:n]
    return "slowest steps: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=None, help="default: 20 per profile")
    parser.add_argument("--card-per-profile", type=int, default=6)
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="cdp_bench_metrics")
    args = parser.parse_args()
    transactions = args.transactions or 20 * args.profiles

    fresh_database(args.database, args.server)
    from django.db import connection

    from profiles.metrics import profile_metrics_recompute

    started = time.perf_counter()
    with connection.cursor() as cur:
        counts = fill(cur, args.profiles, transactions, args.card_per_profile)
    print(f"filled in {time.perf_counter() - started:.1f}s: "
          + ", ".join(f"{name} {n:,}" for name, n in counts.items()))

    full = profile_metrics_recompute()
    print(f"full recompute: {full.profiles:,} profiles in {full.seconds:.2f}s; {slowest(full)}")
    full = profile_metrics_recompute()  # the nightly case: every row already there, updated in place
    print(f"full recompute again (upsert over existing rows): {full.profiles:,} profiles in {full.seconds:.2f}s; "
          f"{slowest(full)}")

    with connection.cursor() as cur:
        # The delta: one new payment today for 1% of the profiles, as an activity load would leave it.
        cur.execute("""INSERT INTO profiles_transaction (source_id, customer_key, row_digest, last_batch_id, txn_key,
                           account_key, occurred_at, amount, currency, kind, channel, counterparty_category)
                       SELECT source_id, customer_key, 'x', last_batch_id, 'D' || profile_id, 'A', now(), -88.5,
                              'CNY', 'payment', 'app', 'retail'
                       FROM profiles_sourcerecord WHERE customer_key LIKE 'C%' AND profile_id % 100 = 7""")
        cur.execute("SELECT profile_id FROM profiles_sourcerecord WHERE customer_key LIKE 'C%' "
                    "AND profile_id % 100 = 7")
        touched = [r[0] for r in cur.fetchall()]
    delta = profile_metrics_recompute(profile_ids=touched)
    print(f"delta recompute (1% of profiles): {delta.profiles:,} profiles in {delta.seconds:.2f}s; {slowest(delta)}")


if __name__ == "__main__":
    main()
