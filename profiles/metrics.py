"""Profile metrics and derived attributes, recomputed set-based for all profiles or a given set.

Activity rows reach a profile through SourceRecord(source, customer_key) -> profile, so rows that arrived before
their customer are picked up by the first recomputation after the customer is resolved. Every amount is
converted to CNY with the latest FX rate on or before `as_of`, a balance or a holding's value (a stock) at the
latest rate on or before its snapshot date; an amount in a currency without a rate is left out of the aggregates
(the load counted it as a warning).

Time windows end at the end of the `as_of` day in the configured time zone: "last 30 days" is the 30 calendar
days as_of-29 .. as_of. The rules and thresholds of the derived attributes are in MetricsConfig and the README.
Every date, window and threshold goes into a one-row temp table, `metrics_params`, that the statements join:
the SQL stays free of interpolated values and of long positional parameter lists. The windows of the activity
scans are bound by name instead, since a scan that joins a temp table cannot run in parallel workers.
"""
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time

from django.db import connection, transaction
from django.utils import timezone

from . import sql
from .models import (
    Account, CardTransaction, CustomerProfile, FxRate, Holding, MetricsConfig, ProfileMetrics, RiskAssessment,
    SourceRecord, Transaction,
)

T_PROFILE = CustomerProfile._meta.db_table
T_RECORD = SourceRecord._meta.db_table
T_ACCOUNT = Account._meta.db_table
T_TXN = Transaction._meta.db_table
T_CARD = CardTransaction._meta.db_table
T_HOLDING = Holding._meta.db_table
T_RISK = RiskAssessment._meta.db_table
T_FX = FxRate._meta.db_table
T_METRICS = ProfileMetrics._meta.db_table

# Module constants spliced into SQL as literals (never input).
DEPOSIT_TYPES = "('current', 'savings', 'time_deposit')"
LOAN_TYPES = "('mortgage', 'consumer_loan')"
# Core postings the customer did not initiate: they neither keep a customer active nor count as activity.
NOT_CUSTOMER_INITIATED = "('salary_credit', 'transfer_in', 'interest', 'fee')"
SALARY_WINDOW_DAYS = 35  # a monthly salary, with a few days' slack for weekends and holidays
ACTIVITY_WINDOW_DAYS = 90  # activity and net flow are compared with the 90 days before

_TEMP_TABLES = ("metrics_params", "metrics_scope", "metrics_keys", "metrics_fx", "metrics_fx_stock", "metrics_acc",
                "metrics_hold", "metrics_txn_kind", "metrics_txn", "metrics_card", "metrics_limit", "metrics_risk")


@dataclass
class MetricsReport:
    profiles: int = 0
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step, to tell where the time goes

    def as_dict(self) -> dict:
        return asdict(self)


def clv_multiplier(config: MetricsConfig) -> float:
    """Sum over the horizon of the chance the customer is still here (retention^t), discounted: (r/(1+d))^t."""
    ratio = float(config.retention_rate) / (1 + float(config.discount_rate))
    return sum(ratio ** t for t in range(1, config.clv_horizon_years + 1))


def metrics_config_get() -> MetricsConfig:
    return MetricsConfig.objects.get_or_create(pk=1)[0]


def _vendor_sql() -> dict[str, str]:
    """The few expressions PostgreSQL and SQLite spell differently."""
    if sql.is_postgres():
        return {
            "credit_limit": "NULLIF(r.attributes->>'credit_limit', '')::numeric",
            "card_status": "UPPER(COALESCE(r.attributes->>'card_status', ''))",
            "kind_counts": "jsonb_object_agg(x.kind, x.n_90d)",
            "empty_object": "'{}'::jsonb",
            # Keeps the planner from pulling a subquery up into the query that reads it, where each column's
            # expression would be evaluated again at every use (building product_types six times per row).
            "fence": " OFFSET 0",
            "object": "jsonb_build_object",
            "non_null_list": "to_jsonb(array_remove(ARRAY[{items}]::text[], NULL))",
            "has_type": "b.product_types ? '{}'",
            "day": "CAST({} AS DATE)",
            "age": "EXTRACT(YEAR FROM age(m.as_of, p.birth_date))::int",
            "tenure": "(EXTRACT(YEAR FROM age(m.as_of, b.first_product_on)) * 12 "
                      "+ EXTRACT(MONTH FROM age(m.as_of, b.first_product_on)))::int",
            "params": "as_of DATE, salary_since TIMESTAMPTZ, dormant_since TIMESTAMPTZ, "
                      "churned_since TIMESTAMPTZ, new_since DATE, dormant_day DATE, churned_day DATE, "
                      "closed_since DATE, down NUMERIC, up NUMERIC, share NUMERIC, high_value NUMERIC, "
                      "mid_value NUMERIC, deposit_margin NUMERIC, aum_margin NUMERIC, loan_margin NUMERIC, "
                      "card_margin NUMERIC, clv_multiplier NUMERIC",
        }
    return {
        "credit_limit": "CAST(json_extract(r.attributes, '$.credit_limit') AS REAL)",
        "card_status": "UPPER(COALESCE(json_extract(r.attributes, '$.card_status'), ''))",
        "kind_counts": "json_group_object(x.kind, x.n_90d)",
        "empty_object": "'{}'",
        "fence": "",
        "object": "json_object",
        "non_null_list": "(SELECT json_group_array(value) FROM json_each(json_array({items})) WHERE value IS NOT NULL)",
        "has_type": "EXISTS (SELECT 1 FROM json_each(b.product_types) WHERE value = '{}')",
        "day": "date({})",
        "age": "(CAST(strftime('%%Y', m.as_of) AS INTEGER) - CAST(strftime('%%Y', p.birth_date) AS INTEGER) "
               "- (strftime('%%m-%%d', m.as_of) < strftime('%%m-%%d', p.birth_date)))",
        "tenure": "((CAST(strftime('%%Y', m.as_of) AS INTEGER) - CAST(strftime('%%Y', b.first_product_on) AS INTEGER)) "
                  "* 12 + CAST(strftime('%%m', m.as_of) AS INTEGER) - CAST(strftime('%%m', b.first_product_on) AS INTEGER) "
                  "- (CAST(strftime('%%d', m.as_of) AS INTEGER) < CAST(strftime('%%d', b.first_product_on) AS INTEGER)))",
        "params": "as_of, salary_since, dormant_since, churned_since, new_since, "
                  "dormant_day, churned_day, closed_since, down, up, share, high_value, mid_value, deposit_margin, "
                  "aum_margin, loan_margin, card_margin, clv_multiplier",
    }


def _build_params(as_of: date, config: MetricsConfig, v: dict[str, str]) -> dict[str, object]:
    """Fill metrics_params; returns the windows of the activity scans (day_end, t30, t90, t180, t365) to bind."""
    end = timezone.make_aware(datetime.combine(as_of + timedelta(days=1), dt_time.min))
    ops = connection.ops
    windows = {name: ops.adapt_datetimefield_value(end - timedelta(days=n)) for name, n in (
        ("day_end", 0), ("t30", 30), ("t90", ACTIVITY_WINDOW_DAYS), ("t180", 2 * ACTIVITY_WINDOW_DAYS),
        ("t365", 365))}
    instant = [ops.adapt_datetimefield_value(end - timedelta(days=n)) for n in (
        SALARY_WINDOW_DAYS, config.dormant_days, config.churned_days)]
    days = [ops.adapt_datefield_value(as_of - timedelta(days=n)) for n in (
        0, config.new_days, config.dormant_days, config.churned_days, ACTIVITY_WINDOW_DAYS)]
    share = config.change_share
    # Floats, not Decimals: SQLite compares an untyped column holding text as greater than any number.
    numbers = [float(n) for n in (1 - share, 1 + share, share, config.high_value_cny, config.mid_value_cny,
                                  config.deposit_margin, config.aum_margin, config.loan_margin, config.card_margin)]
    numbers.append(round(clv_multiplier(config), 6))
    sql.create_temp_table("metrics_params", v["params"])
    values = [days[0], *instant, *days[1:], *numbers]
    sql.execute(f"INSERT INTO metrics_params VALUES ({', '.join(['%s'] * len(values))})", values)
    sql.analyze("metrics_params")  # one row, not the planner's default guess of hundreds
    return windows


def _build_scope(profile_ids: list[int] | None) -> None:
    sql.create_temp_table("metrics_scope", "profile_id BIGINT PRIMARY KEY")
    if profile_ids is None:
        sql.execute(f"INSERT INTO metrics_scope (profile_id) SELECT id FROM {T_PROFILE} WHERE status = 'active'")
        sql.execute(f"DELETE FROM {T_METRICS} WHERE profile_id IN (SELECT id FROM {T_PROFILE} WHERE status <> 'active')")
    else:
        sql.create_temp_table("metrics_ids", "profile_id BIGINT PRIMARY KEY")
        sql.bulk_insert("metrics_ids", ("profile_id",), ((i,) for i in sorted(set(profile_ids))))
        # An absorbed profile's metrics give way to its survivor's.
        sql.execute(f"DELETE FROM {T_METRICS} WHERE profile_id IN (SELECT p.id FROM metrics_ids i "
                    f"JOIN {T_PROFILE} p ON p.id = i.profile_id WHERE p.status <> 'active')")
        sql.execute(
            f"INSERT INTO metrics_scope (profile_id) SELECT DISTINCT COALESCE(p.merged_into_id, p.id) "
            f"FROM metrics_ids i JOIN {T_PROFILE} p ON p.id = i.profile_id"
        )
        sql.drop_temp_table("metrics_ids")
    sql.analyze("metrics_scope")
    sql.create_temp_table("metrics_keys", "profile_id BIGINT, source_id BIGINT, customer_key VARCHAR(64)")
    sql.execute(
        f"INSERT INTO metrics_keys (profile_id, source_id, customer_key) SELECT r.profile_id, r.source_id, "
        f"r.customer_key FROM {T_RECORD} r JOIN metrics_scope s ON s.profile_id = r.profile_id"
    )
    if profile_ids is not None:
        # A delta looks its activity rows up by key; a whole run hash-joins and would only pay for building it.
        sql.execute("CREATE INDEX metrics_keys_key ON metrics_keys (source_id, customer_key)")
    sql.analyze("metrics_keys")


def _build_fx() -> None:
    sql.create_temp_table("metrics_fx", "currency VARCHAR(3) PRIMARY KEY, rate NUMERIC(18, 8)")
    sql.execute(
        f"INSERT INTO metrics_fx (currency, rate) SELECT f.currency, f.rate_to_cny FROM {T_FX} f "
        f"CROSS JOIN metrics_params m WHERE f.as_of = "
        f"(SELECT MAX(g.as_of) FROM {T_FX} g WHERE g.currency = f.currency AND g.as_of <= m.as_of)"
    )
    sql.execute("INSERT INTO metrics_fx (currency, rate) SELECT 'CNY', 1 WHERE NOT EXISTS "
                "(SELECT 1 FROM metrics_fx WHERE currency = 'CNY')")


def _create(table: str, select: str, steps: dict[str, float], *, analyze: bool = True,
            params: dict[str, object] | None = None) -> None:
    started = time.perf_counter()
    sql.drop_temp_table(table)
    sql.execute(f"CREATE TEMP TABLE {table} AS {select}", params or ())
    if analyze:
        sql.analyze(table)
    steps[table.removeprefix("metrics_")] = round(time.perf_counter() - started, 3)


def _joined(table: str, alias: str) -> str:
    return (f"FROM metrics_keys k JOIN {table} {alias} ON {alias}.source_id = k.source_id "
            f"AND {alias}.customer_key = k.customer_key CROSS JOIN metrics_params m")


def _in_scope(alias: str, full: bool) -> str:
    """For a delta, the condition that keeps an activity table's rows to the customer keys in scope (read through
    the (source, customer_key) index); a full run keeps every row, and the join to the keys drops the held ones."""
    if full:
        return ""
    return (f"AND EXISTS (SELECT 1 FROM metrics_keys k WHERE k.source_id = {alias}.source_id "
            f"AND k.customer_key = {alias}.customer_key)")


def _type_flags(alias: str, held: str, product_types) -> str:
    """One 0/1 column per product type, `has_<type>`: whether the profile holds one (`held` true for that row)."""
    return ", ".join(f"MAX(CASE WHEN {held} AND {alias}.product_type = '{t}' THEN 1 ELSE 0 END) AS has_{t}"
                     for t in product_types)


def _product_types(v: dict[str, str]) -> str:
    """The sorted list of product types held, from the has_<type> flags of metrics_acc and metrics_hold and from
    a card limit (credit_card)."""
    held = {t: f"a.has_{t} = 1" for t in Account.ProductType.values}
    held.update({t: f"h.has_{t} = 1" for t in Holding.ProductType.values})
    held["credit_card"] = "l.card_limit > 0"
    return v["non_null_list"].format(items=", ".join(f"CASE WHEN {held[t]} THEN '{t}' END" for t in sorted(held)))


def _stock_rates(steps: dict[str, float], full: bool) -> None:
    """`metrics_fx_stock`: the rate of each currency and snapshot date of the scope's foreign accounts and holdings.
    A balance or a market value is a stock, converted at the latest rate on or before its own snapshot date, as the
    rule language does; the few distinct dates make it a small table."""
    dates = " UNION ".join(
        f"SELECT {a}.currency, {a}.as_of FROM {table} {a} WHERE {a}.currency <> 'CNY' {_in_scope(a, full)}"
        for table, a in ((T_ACCOUNT, "a"), (T_HOLDING, "h")))
    _create("metrics_fx_stock", (
        f"SELECT d.currency, d.as_of, (SELECT f.rate_to_cny FROM {T_FX} f WHERE f.currency = d.currency "
        f"AND f.as_of <= d.as_of ORDER BY f.as_of DESC LIMIT 1) AS rate FROM ({dates}) d"
    ), steps)


def _stock_join(alias: str) -> str:
    return f"LEFT JOIN metrics_fx_stock fx ON fx.currency = {alias}.currency AND fx.as_of = {alias}.as_of"


def _aggregate(v: dict[str, str], windows: dict[str, object], steps: dict[str, float], full: bool) -> None:
    """One temp table per activity domain, each one pass over that domain's rows of the scope."""
    _stock_rates(steps, full)
    balance = "a.balance * CASE WHEN a.currency = 'CNY' THEN 1 ELSE fx.rate END"
    is_open = "(a.opened_at <= m.as_of AND (a.closed_at IS NULL OR a.closed_at > m.as_of) AND a.status <> 'closed')"
    _create("metrics_acc", (
        f"SELECT k.profile_id, "
        f"SUM(CASE WHEN {is_open} AND a.product_type IN {DEPOSIT_TYPES} THEN {balance} ELSE 0 END) AS deposits, "
        f"SUM(CASE WHEN {is_open} AND a.product_type IN {LOAN_TYPES} THEN {balance} ELSE 0 END) AS loans, "
        f"SUM(CASE WHEN {is_open} THEN 1 ELSE 0 END) AS open_accounts, "
        f"SUM(CASE WHEN a.closed_at > m.closed_since AND a.closed_at <= m.as_of THEN 1 ELSE 0 END) AS closed_90d, "
        f"MIN(a.opened_at) AS first_opened, "
        + _type_flags("a", is_open, Account.ProductType.values) +
        f" {_joined(T_ACCOUNT, 'a')} {_stock_join('a')} "
        f"WHERE a.opened_at <= m.as_of GROUP BY k.profile_id"
    ), steps)
    _create("metrics_hold", (
        f"SELECT k.profile_id, SUM(h.market_value * CASE WHEN h.currency = 'CNY' THEN 1 ELSE fx.rate END) AS aum, "
        f"SUM(CASE WHEN h.market_value > 0 THEN 1 ELSE 0 END) AS open_holdings, MIN(h.as_of) AS first_held, "
        + _type_flags("h", "h.market_value > 0", Holding.ProductType.values) +
        f" {_joined(T_HOLDING, 'h')} {_stock_join('h')} "
        f"WHERE h.as_of <= m.as_of GROUP BY k.profile_id"
    ), steps)
    # One pass over the transactions, by customer key, kind and currency (no join on the big table: a whole run
    # reads them all), then on to profiles and CNY: rate x sum(amount) is sum(rate x amount) exactly in NUMERIC.
    # Whether a kind is customer-initiated is decided per group, not per row. The per-profile figures and the
    # counts by kind are both rolled up from the far smaller result.
    by_customer = f"x.kind NOT IN {NOT_CUSTOMER_INITIATED}"
    _create("metrics_txn_kind", (
        f"SELECT k.profile_id, x.kind, SUM(CASE WHEN {by_customer} THEN x.activity_90d ELSE 0 END) AS activity_90d, "
        f"SUM(CASE WHEN {by_customer} THEN x.activity_prior_90d ELSE 0 END) AS activity_prior_90d, "
        f"MAX(CASE WHEN {by_customer} THEN x.last_activity_at END) AS last_activity_at, "
        f"SUM(x.flow_90d * fx.rate) AS net_flow_90d, SUM(x.n_90d) AS n_90d, MAX(x.last_at) AS last_at FROM ("
        f"SELECT t.source_id, t.customer_key, t.kind, t.currency, "
        f"COUNT(*) FILTER (WHERE t.channel <> 'system' AND t.occurred_at >= %(t90)s) AS activity_90d, "
        f"COUNT(*) FILTER (WHERE t.channel <> 'system' AND t.occurred_at >= %(t180)s AND t.occurred_at < %(t90)s) "
        f"AS activity_prior_90d, "
        f"MAX(t.occurred_at) FILTER (WHERE t.channel <> 'system') AS last_activity_at, "
        f"SUM(CASE WHEN t.occurred_at >= %(t90)s THEN t.amount ELSE 0 END) AS flow_90d, "
        f"COUNT(*) FILTER (WHERE t.occurred_at >= %(t90)s) AS n_90d, MAX(t.occurred_at) AS last_at "
        f"FROM {T_TXN} t WHERE t.occurred_at < %(day_end)s {_in_scope('t', full)} "
        f"GROUP BY t.source_id, t.customer_key, t.kind, t.currency) x "
        f"JOIN metrics_keys k ON k.source_id = x.source_id AND k.customer_key = x.customer_key "
        f"LEFT JOIN metrics_fx fx ON fx.currency = x.currency GROUP BY k.profile_id, x.kind"
    ), steps, params=windows)
    _create("metrics_txn", (
        "SELECT x.profile_id, SUM(x.activity_90d) AS activity_90d, SUM(x.activity_prior_90d) AS activity_prior_90d, "
        "MAX(x.last_activity_at) AS last_activity_at, SUM(x.net_flow_90d) AS net_flow_90d, "
        "MAX(CASE WHEN x.kind = 'salary_credit' THEN x.last_at END) AS salary_last_at, "
        "SUM(CASE WHEN x.kind = 'salary_credit' THEN x.net_flow_90d ELSE 0 END) AS salary_90d, "
        f"{v['kind_counts']} FILTER (WHERE x.n_90d > 0) AS kind_counts "
        "FROM metrics_txn_kind x GROUP BY x.profile_id"
    ), steps)
    _create("metrics_card", (
        f"SELECT k.profile_id, SUM(x.spend_30d * fx.rate) AS spend_30d, SUM(x.spend_90d * fx.rate) AS spend_90d, "
        f"SUM(x.spend_365d * fx.rate) AS spend_365d, SUM(x.activity_90d) AS activity_90d, "
        f"SUM(x.activity_prior_90d) AS activity_prior_90d, MAX(x.last_activity_at) AS last_activity_at, "
        f"MIN(x.first_at) AS first_at FROM ("
        f"SELECT c.source_id, c.customer_key, c.currency, "
        f"SUM(c.amount) FILTER (WHERE c.occurred_at >= %(t30)s) AS spend_30d, "
        f"SUM(c.amount) FILTER (WHERE c.occurred_at >= %(t90)s) AS spend_90d, "
        f"SUM(c.amount) FILTER (WHERE c.occurred_at >= %(t365)s) AS spend_365d, "
        f"COUNT(*) FILTER (WHERE c.amount > 0 AND c.occurred_at >= %(t90)s) AS activity_90d, "
        f"COUNT(*) FILTER (WHERE c.amount > 0 AND c.occurred_at >= %(t180)s AND c.occurred_at < %(t90)s) "
        f"AS activity_prior_90d, "
        f"MAX(c.occurred_at) FILTER (WHERE c.amount > 0) AS last_activity_at, MIN(c.occurred_at) AS first_at "
        f"FROM {T_CARD} c WHERE c.occurred_at < %(day_end)s {_in_scope('c', full)} "
        f"GROUP BY c.source_id, c.customer_key, c.currency) x "
        f"JOIN metrics_keys k ON k.source_id = x.source_id AND k.customer_key = x.customer_key "
        f"LEFT JOIN metrics_fx fx ON fx.currency = x.currency GROUP BY k.profile_id"
    ), steps, params=windows)
    # Card limits come with the card source's customer records (credit_limit, card_status), in CNY.
    _create("metrics_limit", (
        f"SELECT k.profile_id, SUM({v['credit_limit']}) AS card_limit FROM metrics_keys k JOIN {T_RECORD} r "
        f"ON r.source_id = k.source_id AND r.customer_key = k.customer_key "
        f"WHERE {v['credit_limit']} > 0 AND {v['card_status']} <> 'CLOSED' GROUP BY k.profile_id"
    ), steps)
    # The latest assessment on or before as_of, if it has not expired.
    _create("metrics_risk", (
        f"SELECT k.profile_id, MAX(ra.risk_level) AS risk_level {_joined(T_RISK, 'ra')} "
        f"WHERE ra.assessed_at <= m.as_of AND (ra.expires_at IS NULL OR ra.expires_at >= m.as_of) "
        f"AND ra.assessed_at = (SELECT MAX(r2.assessed_at) FROM {T_RISK} r2 WHERE r2.source_id = ra.source_id "
        f"AND r2.customer_key = ra.customer_key AND r2.assessed_at <= m.as_of) GROUP BY k.profile_id"
    ), steps)


def _later(a: str, b: str) -> str:
    """The later of two nullable values (SQLite's two-argument MAX is NULL when either is)."""
    return f"CASE WHEN {a} IS NULL THEN {b} WHEN {b} IS NULL THEN {a} WHEN {a} > {b} THEN {a} ELSE {b} END"


def _earliest(first: str, *others: str) -> str:
    expr = first
    for other in others:
        expr = (f"CASE WHEN {expr} IS NULL THEN {other} WHEN {other} IS NULL THEN {expr} "
                f"WHEN {other} < {expr} THEN {other} ELSE {expr} END")
    return expr


def _base_select(v: dict[str, str]) -> str:
    """The metrics of each profile in scope, before derivation: read once, by the upsert, so never stored."""
    first_card_day = v["day"].format("c.first_at")
    return (
        f"SELECT s.profile_id, "
        f"ROUND(COALESCE(a.deposits, 0), 2) AS total_deposits, ROUND(COALESCE(h.aum, 0), 2) AS aum, "
        f"ROUND(COALESCE(a.loans, 0), 2) AS loan_balance, ROUND(COALESCE(l.card_limit, 0), 2) AS card_limit, "
        f"ROUND(COALESCE(c.spend_30d, 0), 2) AS card_spend_30d, ROUND(COALESCE(c.spend_90d, 0), 2) AS card_spend_90d, "
        f"ROUND(COALESCE(c.spend_365d, 0), 2) AS card_spend_365d, "
        f"COALESCE(t.kind_counts, {v['empty_object']}) AS txn_counts_90d, "
        f"COALESCE(t.activity_90d, 0) + COALESCE(c.activity_90d, 0) AS activity_90d, "
        f"COALESCE(t.activity_prior_90d, 0) + COALESCE(c.activity_prior_90d, 0) AS activity_prior_90d, "
        f"ROUND(COALESCE(t.net_flow_90d, 0), 2) AS net_flow_90d, "
        f"{_later('t.last_activity_at', 'c.last_activity_at')} AS last_activity_at, "
        f"t.salary_last_at, ROUND(COALESCE(t.salary_90d, 0) / 3, 2) AS salary_monthly, "
        f"{_product_types(v)} AS product_types, "
        f"COALESCE(a.open_accounts, 0) + COALESCE(h.open_holdings, 0) "
        f"+ CASE WHEN l.card_limit > 0 THEN 1 ELSE 0 END AS open_products, "
        f"COALESCE(a.closed_90d, 0) AS closed_accounts_90d, "
        f"{_earliest('a.first_opened', 'h.first_held', first_card_day)} AS first_product_on, "
        f"{v['age']} AS age, COALESCE(rk.risk_level, '') AS risk_level "
        f"FROM metrics_scope s JOIN {T_PROFILE} p ON p.id = s.profile_id CROSS JOIN metrics_params m "
        f"LEFT JOIN metrics_acc a ON a.profile_id = s.profile_id "
        f"LEFT JOIN metrics_hold h ON h.profile_id = s.profile_id "
        f"LEFT JOIN metrics_txn t ON t.profile_id = s.profile_id "
        f"LEFT JOIN metrics_card c ON c.profile_id = s.profile_id "
        f"LEFT JOIN metrics_limit l ON l.profile_id = s.profile_id "
        f"LEFT JOIN metrics_risk rk ON rk.profile_id = s.profile_id"
    )


_METRIC_COLUMNS = (
    "total_deposits", "aum", "loan_balance", "card_limit", "card_spend_30d", "card_spend_90d", "card_spend_365d",
    "txn_counts_90d", "activity_90d", "activity_prior_90d", "net_flow_90d", "last_activity_at", "salary_monthly",
    "salary_last_at", "product_types", "open_products", "closed_accounts_90d", "first_product_on", "age", "risk_level",
)


def _derive_and_upsert(config: MetricsConfig, v: dict[str, str]) -> int:
    """Derived attributes from the base metrics (rules in the README), then one upsert into ProfileMetrics."""
    salary_credited = "(b.salary_last_at >= m.salary_since)"
    activity_drop = "(b.activity_prior_90d > 0 AND b.activity_90d <= b.activity_prior_90d * m.down)"
    # Deposits 90 days ago are estimated as today's less the net flow since: no balance history is kept.
    outflow = "(b.net_flow_90d < 0 AND -b.net_flow_90d >= m.share * (b.total_deposits - b.net_flow_90d))"
    inflow = "(b.net_flow_90d > 0 AND b.net_flow_90d >= m.share * (b.total_deposits - b.net_flow_90d))"
    signals = {
        "activity_drop": (activity_drop, config.churn_weight_activity_drop),
        "balance_outflow": (outflow, config.churn_weight_balance_outflow),
        "salary_stopped": ("(b.salary_last_at < m.salary_since)", config.churn_weight_salary_stopped),
        "product_closed": ("(b.closed_accounts_90d > 0)", config.churn_weight_product_closed),
    }
    points = {name: f"CASE WHEN {cond} THEN {int(weight)} ELSE 0 END" for name, (cond, weight) in signals.items()}
    total = " + ".join(points.values())
    churn_risk = f"CASE WHEN {total} > 100 THEN 100 ELSE {total} END"
    churn_signals = f"{v['object']}({', '.join(f'{chr(39)}{n}{chr(39)}, {e}' for n, e in points.items())})"
    lifecycle = (
        "CASE WHEN b.first_product_on IS NULL THEN 'prospect' "
        "WHEN b.open_products = 0 OR b.last_activity_at < m.churned_since "
        "OR (b.last_activity_at IS NULL AND b.first_product_on <= m.churned_day) THEN 'churned' "
        "WHEN b.first_product_on > m.new_since THEN 'new' "
        "WHEN b.last_activity_at < m.dormant_since "
        "OR (b.last_activity_at IS NULL AND b.first_product_on <= m.dormant_day) THEN 'dormant' "
        f"WHEN {activity_drop} OR {outflow} THEN 'declining' "
        f"WHEN (b.activity_prior_90d > 0 AND b.activity_90d >= b.activity_prior_90d * m.up) OR {inflow} THEN 'growing' "
        "ELSE 'active' END"
    )
    tier = ("CASE WHEN b.total_deposits + b.aum >= m.high_value THEN 'high' "
            "WHEN b.total_deposits + b.aum >= m.mid_value THEN 'mid' ELSE 'low' END")
    clv = ("ROUND((b.total_deposits * m.deposit_margin + b.aum * m.aum_margin + b.loan_balance * m.loan_margin "
           "+ b.card_spend_365d * m.card_margin) * m.clv_multiplier, 2)")
    has = v["has_type"].format
    wealth = " OR ".join(has(t) for t in Holding.ProductType.values)
    candidates = [
        f"CASE WHEN {salary_credited} AND NOT ({wealth}) THEN 'fund' END",
        f"CASE WHEN ({has('mortgage')} OR {salary_credited}) AND b.card_limit = 0 THEN 'credit_card' END",
        f"CASE WHEN b.total_deposits >= m.mid_value AND NOT {has('time_deposit')} THEN 'time_deposit' END",
        f"CASE WHEN {has('mortgage')} AND NOT {has('insurance')} THEN 'insurance' END",
    ]
    columns = (*_METRIC_COLUMNS, "profile_id", "as_of", "card_utilisation", "salary_credited", "tenure_months",
               "lifecycle_stage", "value_tier", "clv", "churn_risk", "churn_signals", "next_best_products",
               "computed_at")
    select = (
        f"{', '.join('b.' + c for c in _METRIC_COLUMNS)}, b.profile_id, m.as_of, "
        "CASE WHEN b.card_limit > 0 THEN ROUND(b.card_spend_30d / b.card_limit, 4) END, "
        f"CASE WHEN {salary_credited} THEN TRUE ELSE FALSE END, "
        f"CASE WHEN b.first_product_on IS NOT NULL THEN {v['tenure']} END, "
        f"{lifecycle}, {tier}, {clv}, {churn_risk}, {churn_signals}, "
        f"{v['non_null_list'].format(items=', '.join(candidates))}, %s"
    )
    cols = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "profile_id")
    # WHERE 1 = 1 keeps SQLite from reading ON CONFLICT as part of the join.
    return sql.execute(
        f"INSERT INTO {T_METRICS} ({cols}) SELECT {select} FROM ({_base_select(v)}{v['fence']}) b "
        f"CROSS JOIN metrics_params m "
        f"WHERE 1 = 1 ON CONFLICT (profile_id) DO UPDATE SET {updates}",
        [sql.adapt_now()],
    )


def profile_metrics_recompute(*, as_of: date | None = None, profile_ids: list[int] | None = None) -> MetricsReport:
    """Recompute metrics and derived attributes of every active profile, or of `profile_ids` (absorbed ids count
    as their survivor), as of the end of `as_of` (default: today)."""
    started = time.perf_counter()
    as_of = as_of or timezone.localdate()
    config = metrics_config_get()
    v = _vendor_sql()
    report = MetricsReport()
    with transaction.atomic():
        if sql.is_postgres():
            # One recomputation at a time: a delta and the nightly run would race on the same rows.
            sql.execute("SELECT pg_advisory_xact_lock(%s)", [sql.advisory_lock_key("metrics", 0)])
            # JIT compiling these wide CASE expressions costs more than it saves (0.7 s of a 1.1 s upsert at 20k).
            sql.execute("SELECT set_config('jit', 'off', true)")
            if profile_ids is None:
                # A whole run aggregates every transaction by customer key, a million and more groups. Room for the
                # hash table, or the planner sorts the 20M rows of the benchmark instead (28 s against 16 s). Each
                # parallel worker meets nearly every customer, so its partial groups are as many as the final ones:
                # the leader does better merging them than scanning too (10.7 s against 14.9 s with two workers).
                sql.execute("SELECT set_config('hash_mem_multiplier', '4', true)")
                sql.execute("SELECT set_config('parallel_leader_participation', 'off', true)")
        sql.set_work_mem()
        if profile_ids is not None:
            # A delta reads a few rows per profile: through the (source, customer_key) indexes, not whole tables.
            sql.prefer_index_scans()
        steps = report.steps
        windows = _build_params(as_of, config, v)
        mark = time.perf_counter()
        _build_scope(profile_ids)
        _build_fx()
        steps["scope"] = round(time.perf_counter() - mark, 3)
        _aggregate(v, windows, steps, full=profile_ids is None)
        mark = time.perf_counter()
        report.profiles = _derive_and_upsert(config, v)
        steps["upsert"] = round(time.perf_counter() - mark, 3)
        for table in _TEMP_TABLES:
            sql.drop_temp_table(table)
    report.seconds = round(time.perf_counter() - started, 3)
    return report
