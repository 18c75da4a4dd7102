"""Derived attributes and the remaining metric rules at their exact boundaries (as of 2026-06-30, Shanghai time):
value tier, lifecycle new/dormant/churned days, the 365-day card window, the 35-day salary window, missing FX
rates, thresholds edited in MetricsConfig, next-best products, and held activity attached through the Celery tasks."""
import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from profiles.metrics import metrics_config_get, profile_metrics_recompute
from profiles.models import Account, FxRate, ProfileMetrics
from tests.profiles.test_metrics import AS_OF, Bank, _snapshot, at, metrics_of, profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def bank():
    return Bank()


def _customer(bank, key: str, source: str = "core", **attributes):
    p = profile()
    bank.customer(p, source, key, **attributes)
    return p


def test_value_tier_at_its_thresholds(bank):
    tiers = {}
    for key, deposits, aum in (("V1", "300000", "200000"), ("V2", "300000", "199999.99"),
                               ("V3", "30000", "20000"), ("V4", "49999.99", "0")):
        p = _customer(bank, key)
        bank.customer(p, "wealth", f"W{key}")
        bank.account(key, "savings", deposits, dt.date(2020, 1, 1))
        if aum != "0":
            bank.holding(f"W{key}", "fund", aum)
        tiers[key] = p
    profile_metrics_recompute(as_of=AS_OF)
    assert {k: metrics_of(p).value_tier for k, p in tiers.items()} == {
        "V1": "high", "V2": "mid", "V3": "mid", "V4": "low"}


def test_missing_and_same_day_fx_rates(bank):
    p = _customer(bank, "F1")
    bank.account("F1", "savings", "10", dt.date(2020, 1, 1))
    bank.account("F1", "savings", "100", dt.date(2020, 1, 1), currency="EUR")  # no EUR rate at all: left out
    bank.account("F1", "savings", "100", dt.date(2020, 1, 1), currency="USD")
    bank.account("F1", "savings", "100", dt.date(2020, 1, 1), currency="GBP")
    batch = bank.batch["core"]
    for currency, rate, day in (("USD", "6.5", dt.date(2026, 1, 1)), ("USD", "7.0", dt.date(2026, 6, 1)),
                                ("USD", "7.2", dt.date(2026, 7, 1)),  # the day after as_of
                                ("GBP", "9.1", AS_OF)):  # dated as_of itself: used
        FxRate.objects.create(currency=currency, rate_to_cny=Decimal(rate), as_of=day, row_digest="x",
                              source=batch.source, last_batch=batch)
    profile_metrics_recompute(as_of=AS_OF)
    assert metrics_of(p).total_deposits == Decimal("10") + 100 * Decimal("7.0") + 100 * Decimal("9.1")
    # A balance converts at the rate of its own snapshot date (README): snapshots taken before the first USD rate
    # (2026-01-01) and the GBP one count only the CNY balance, whatever day the metrics are computed for.
    Account.objects.filter(customer_key="F1").update(as_of=dt.date(2025, 12, 31))
    profile_metrics_recompute(as_of=AS_OF)
    assert metrics_of(p).total_deposits == Decimal("10.00")


def test_card_spend_365_day_window_boundary(bank):
    p = _customer(bank, "K5", "card", credit_limit="10000", card_status="ACTIVE")
    bank.card("K5", at(2025, 7, 1, 0, 0), "400")  # first instant of the 365 days
    bank.card("K5", at(2025, 6, 30, 23, 59), "800")  # just before
    bank.card("K5", at(2026, 6, 30, 23, 59), "150")  # the last minute of as_of
    bank.card("K5", at(2026, 6, 30, 23, 59), "-50")  # a refund
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert (m.card_spend_30d, m.card_spend_90d, m.card_spend_365d) == (
        Decimal("100.00"), Decimal("100.00"), Decimal("500.00"))
    assert m.card_limit == Decimal("10000.00") and m.card_utilisation == Decimal("0.0100")
    assert m.product_types == ["credit_card"]


def test_a_closed_card_has_no_limit(bank):
    p = _customer(bank, "K6", "card", credit_limit="50000", card_status="closed")
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.card_limit == 0 and m.card_utilisation is None and m.lifecycle_stage == "prospect"


def test_new_dormant_and_churned_day_boundaries(bank):
    cases = {}

    def make(name, opened, last_payment=None):
        p = _customer(bank, name)
        bank.account(name, "savings", "1000", opened)
        if last_payment:
            bank.txn(name, last_payment, "-5", "payment")
        cases[name] = p

    make("new_last_day", dt.date(2026, 4, 2))  # 89 days before as_of: within the 90 days
    make("not_new", dt.date(2026, 4, 1))  # exactly 90 days before: no longer new
    make("quiet_180", dt.date(2026, 1, 1))  # no activity ever, first product exactly 180 days ago: dormant
    make("quiet_179", dt.date(2026, 1, 2))
    # The 365 days are 2025-07-01 .. as_of: activity (or, without any, a first product) before them is churned.
    make("seen_0701", dt.date(2020, 1, 1), at(2025, 7, 1, 0, 0))
    make("seen_0630", dt.date(2020, 1, 1), at(2025, 6, 30, 23, 59))
    make("unseen_0701", dt.date(2025, 7, 1))
    make("unseen_0630", dt.date(2025, 6, 30))
    profile_metrics_recompute(as_of=AS_OF)
    assert {k: metrics_of(p).lifecycle_stage for k, p in cases.items()} == {
        "new_last_day": "new", "not_new": "active", "quiet_180": "dormant", "quiet_179": "active",
        "seen_0701": "dormant", "seen_0630": "churned", "unseen_0701": "dormant", "unseen_0630": "churned"}
    assert metrics_of(cases["not_new"]).tenure_months == 2  # 2026-04-01 .. 2026-06-30: 2 months, 29 days
    assert metrics_of(cases["new_last_day"]).tenure_months == 2


def test_salary_window_and_next_best_products(bank):
    salaried = _customer(bank, "S1")
    bank.account("S1", "current", "1000", dt.date(2020, 1, 1))
    bank.txn("S1", at(2026, 5, 27, 0, 0), "9000", "salary_credit", channel="system")  # exactly 35 days before
    stopped = _customer(bank, "S2")
    bank.account("S2", "current", "1000", dt.date(2020, 1, 1))
    bank.txn("S2", at(2026, 5, 26, 23, 59), "9000", "salary_credit", channel="system")  # a minute earlier
    bank.txn("S2", at(2026, 6, 1), "-10", "payment")
    borrower = _customer(bank, "M1")
    bank.account("M1", "mortgage", "800000", dt.date(2020, 1, 1))
    bank.account("M1", "savings", "50000", dt.date(2020, 1, 1))
    profile_metrics_recompute(as_of=AS_OF)

    s1, s2, m1 = metrics_of(salaried), metrics_of(stopped), metrics_of(borrower)
    assert s1.salary_credited is True and s1.salary_monthly == Decimal("3000.00")
    assert s1.next_best_products == ["fund", "credit_card"]
    assert s1.churn_signals["salary_stopped"] == 0
    assert s2.salary_credited is False and s2.churn_risk == 30 and s2.churn_signals["salary_stopped"] == 30
    assert s2.next_best_products == []
    assert m1.next_best_products == ["credit_card", "time_deposit", "insurance"]
    assert m1.salary_credited is False and m1.churn_signals["salary_stopped"] == 0  # never salaried: no signal


def test_thresholds_edited_in_the_config_apply_and_churn_risk_is_capped(bank):
    p = _customer(bank, "E1")
    bank.account("E1", "savings", "60000", dt.date(2020, 1, 1))
    bank.account("E1", "current", "0", dt.date(2020, 1, 1), closed=dt.date(2026, 6, 1))
    bank.txn("E1", at(2026, 3, 1), "5000", "salary_credit", channel="system")
    bank.txn("E1", at(2026, 3, 2), "-1", "payment")
    bank.txn("E1", at(2026, 3, 3), "-1", "payment")
    bank.txn("E1", at(2026, 6, 1), "-40000", "transfer_out")  # deposits were 100,000
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.lifecycle_stage == "declining" and m.value_tier == "mid"
    assert m.churn_risk == 100  # 30 + 25 + 30 + 15
    assert m.churn_signals == {"activity_drop": 30, "balance_outflow": 25, "salary_stopped": 30, "product_closed": 15}

    config = metrics_config_get()
    config.high_value_cny = Decimal("60000")
    config.dormant_days = 29  # the last activity, 2026-06-01, is now 30 days back
    config.churn_weight_product_closed = 40
    config.retention_rate = Decimal("1.00")
    config.discount_rate = Decimal("0.00")
    config.clv_horizon_years = 1
    config.save()
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.value_tier == "high" and m.lifecycle_stage == "dormant"
    assert m.churn_risk == 100 and m.churn_signals["product_closed"] == 40  # 125 points, capped
    # One year, kept for certain, undiscounted: the CLV is exactly the annual margin.
    assert m.clv == Decimal("60000") * Decimal("0.015")


def test_held_activity_is_attached_through_the_tasks(write_feed):
    from profiles.tasks import load_feed_task

    when = timezone.now() - dt.timedelta(days=1)
    header = ["txn_key", "customer_key", "account_key", "occurred_at", "amount", "currency", "kind", "channel",
              "counterparty_category"]
    txns = write_feed([{"txn_key": "T1", "customer_key": "H1", "account_key": "A1",
                        "occurred_at": when.isoformat(), "amount": "-25", "currency": "CNY", "kind": "payment",
                        "channel": "app"}], header=header)
    load_feed_task("core", str(txns), kind="transactions")
    assert not ProfileMetrics.objects.exists()  # held: no customer yet

    # The customer feed's task resolves, then recomputes: the held payment now counts.
    load_feed_task("core", str(write_feed([{"customer_key": "H1", "full_name": "后到客户"}])))
    m = ProfileMetrics.objects.get(profile__records__customer_key="H1")
    assert m.txn_counts_90d == {"payment": 1} and abs(m.last_activity_at - when) < dt.timedelta(seconds=1)
    full = _snapshot()
    profile_metrics_recompute(profile_ids=[m.profile_id])
    assert _snapshot() == full
