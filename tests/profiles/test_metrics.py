"""Profile metrics and derived attributes on hand-built profiles with known answers (as of 2026-06-30, Shanghai
time): windows, boundaries, currency conversion, survivorship of FX rates, lifecycle, tier, CLV, churn risk,
next-best products; held activity attached once its customer arrives; a delta recompute equals a full one."""
import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from profiles.activity import activity_feed_load
from profiles.feeds import feed_load
from profiles.metrics import profile_metrics_recompute
from profiles.models import (
    Account, CardTransaction, CustomerProfile, FeedBatch, FxRate, Holding, ProfileMetrics, RiskAssessment, Source,
    SourceRecord, Transaction,
)
from profiles.resolution import identity_resolve

pytestmark = pytest.mark.django_db

AS_OF = dt.date(2026, 6, 30)
SH = ZoneInfo("Asia/Shanghai")
_n = iter(range(1, 10_000))


def at(y, m, d, hh=12, mm=0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=SH)


class Bank:
    """Builds source records and activity rows straight in the tables, as a load would leave them."""

    def __init__(self):
        self.batch = {code: FeedBatch.objects.create(source=Source.objects.get(code=code), file_name="t",
                                                     status=FeedBatch.Status.SUCCEEDED)
                      for code in ("core", "card", "wealth")}

    def _row(self, source: str, key: str) -> dict:
        return {"source": self.batch[source].source, "customer_key": key, "row_digest": "x",
                "last_batch": self.batch[source]}

    def customer(self, profile, source: str, key: str, **attributes) -> None:
        SourceRecord.objects.create(source=self.batch[source].source, customer_key=key, profile=profile,
                                    row_digest="x", first_batch=self.batch[source], last_batch=self.batch[source],
                                    loaded_at=timezone.now(), needs_resolution=False, attributes=attributes)

    def account(self, key, product_type, balance, opened, currency="CNY", closed=None):
        Account.objects.create(**self._row("core", key), account_key=f"A{next(_n)}", product_type=product_type,
                               currency=currency, balance=Decimal(balance), opened_at=opened, closed_at=closed,
                               status="closed" if closed else "active", as_of=AS_OF)

    def txn(self, key, when, amount, kind, channel="app", currency="CNY"):
        Transaction.objects.create(**self._row("core", key), txn_key=f"T{next(_n)}", account_key="A", occurred_at=when,
                                   amount=Decimal(amount), currency=currency, kind=kind, channel=channel)

    def card(self, key, when, amount, currency="CNY"):
        CardTransaction.objects.create(**self._row("card", key), txn_key=f"K{next(_n)}", card_token="tok",
                                       occurred_at=when, amount=Decimal(amount), currency=currency, channel="pos")

    def holding(self, key, product_type, value, as_of=AS_OF, currency="CNY"):
        Holding.objects.create(**self._row("wealth", key), holding_key=f"H{next(_n)}", product_code="P",
                               product_type=product_type, market_value=Decimal(value), currency=currency, as_of=as_of)

    def risk(self, key, level, assessed, expires=None):
        RiskAssessment.objects.create(**self._row("wealth", key), risk_level=level, assessed_at=assessed,
                                      expires_at=expires)


def profile(**fields) -> CustomerProfile:
    return CustomerProfile.objects.create(public_id=f"PM{next(_n):06d}", **fields)


@pytest.fixture
def bank():
    bank = Bank()
    batch = bank.batch["core"]
    for rate, day in (("7.0", dt.date(2026, 6, 1)), ("6.5", dt.date(2026, 1, 1)),
                      ("7.2", dt.date(2026, 7, 15))):  # the last one is after as_of
        FxRate.objects.create(currency="USD", rate_to_cny=Decimal(rate), as_of=day, row_digest="x",
                              source=batch.source, last_batch=batch)
    return bank


@pytest.fixture
def ann(bank):
    """Salaried, a mortgage, a fund, a card; every window boundary has a row on each side."""
    ann = profile(full_name="李安", birth_date=dt.date(1980, 7, 1))  # 46 tomorrow
    bank.customer(ann, "core", "C1")
    bank.customer(ann, "card", "K1", credit_limit="20000", card_status="ACTIVE")
    bank.customer(ann, "wealth", "W1")
    bank.account("C1", "savings", "100000", dt.date(2020, 1, 1))
    bank.account("C1", "time_deposit", "1000", dt.date(2025, 1, 1), currency="USD")  # 7,000 CNY at 7.0
    bank.account("C1", "mortgage", "500000", dt.date(2019, 5, 10))
    bank.account("C1", "current", "0", dt.date(2018, 1, 1), closed=dt.date(2026, 5, 15))  # closed in 90 days
    bank.holding("W1", "fund", "200000")
    for month in (4, 5, 6):
        bank.txn("C1", at(2026, month, 10), "15000", "salary_credit", channel="system")
    bank.txn("C1", at(2026, 6, 20), "-200", "payment")
    bank.card("K1", at(2026, 6, 1, 0, 0), "1000")  # first instant of the 30 days
    bank.card("K1", at(2026, 5, 31, 23, 59), "500")  # just before: in 90 days, not in 30
    bank.card("K1", at(2026, 4, 2, 0, 0), "300", currency="USD")  # first instant of the 90 days: 2,100 CNY
    bank.card("K1", at(2026, 4, 1, 23, 0), "50")  # just before the 90 days
    bank.card("K1", at(2026, 7, 1, 0, 0), "9999")  # after as_of: ignored
    bank.risk("W1", "C3", dt.date(2025, 1, 1), expires=dt.date(2027, 1, 1))
    bank.risk("W1", "C5", dt.date(2026, 7, 10))  # after as_of
    return ann


def metrics_of(p) -> ProfileMetrics:
    return ProfileMetrics.objects.get(profile=p)


def test_balances_spend_windows_and_fx(ann):
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(ann)
    assert m.total_deposits == Decimal("107000.00")  # savings + 1,000 USD at 7.0; the closed account is out
    assert m.loan_balance == Decimal("500000.00")
    assert m.aum == Decimal("200000.00")
    assert m.card_limit == Decimal("20000.00")
    assert (m.card_spend_30d, m.card_spend_90d, m.card_spend_365d) == (
        Decimal("1000.00"), Decimal("3600.00"), Decimal("3650.00"))
    assert m.card_utilisation == Decimal("0.0500")
    assert m.txn_counts_90d == {"salary_credit": 3, "payment": 1}


def test_salary_activity_products_age_tenure_and_risk(ann):
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(ann)
    assert m.salary_credited is True and m.salary_monthly == Decimal("15000.00")
    assert timezone.localtime(m.salary_last_at) == at(2026, 6, 10)
    assert timezone.localtime(m.last_activity_at) == at(2026, 6, 20)  # the payment; salaries are not the customer's
    assert m.product_types == ["credit_card", "fund", "mortgage", "savings", "time_deposit"]
    assert m.age == 45  # the birthday is the day after as_of
    # Tenure runs from the first product ever opened, the current account closed since: 8 years, 5 months, 29 days.
    assert m.first_product_on == dt.date(2018, 1, 1) and m.tenure_months == 101
    assert m.risk_level == "C3"  # the later assessment is after as_of
    assert m.closed_accounts_90d == 1


def test_derived_attributes_with_their_reasons(ann):
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(ann)
    assert m.value_tier == "mid"  # 107,000 + 200,000 is between 50,000 and 500,000
    assert m.lifecycle_stage == "growing"  # 4 customer-initiated events in 90 days against 1 before
    assert m.churn_risk == 15
    assert m.churn_signals == {"activity_drop": 0, "balance_outflow": 0, "salary_stopped": 0, "product_closed": 15}
    assert m.next_best_products == ["insurance"]  # a mortgage and no insurance; has a fund, a card, a time deposit
    multiplier = sum((0.85 / 1.08) ** t for t in range(1, 11))
    margin = 107000 * 0.015 + 200000 * 0.008 + 500000 * 0.02 + 3650 * 0.006
    assert float(m.clv) == pytest.approx(margin * multiplier, abs=0.01)
    assert m.as_of == AS_OF and m.computed_at is not None


def test_lifecycle_stages_at_their_boundaries(bank):
    prospect = profile()
    bank.customer(prospect, "core", "P0")
    new = profile()
    bank.customer(new, "core", "N0")
    bank.account("N0", "current", "1000", dt.date(2026, 4, 2))  # within 90 days of as_of
    dormant = profile()
    bank.customer(dormant, "core", "D0")
    bank.account("D0", "savings", "60000", dt.date(2020, 1, 1))
    bank.txn("D0", at(2026, 1, 1, 23, 59), "-10", "payment")  # just over 180 days before the end of as_of
    bank.txn("D0", at(2025, 11, 10), "8000", "salary_credit", channel="system")
    declining = profile()
    bank.customer(declining, "core", "A0")
    bank.account("A0", "savings", "60000", dt.date(2020, 1, 1))
    bank.txn("A0", at(2026, 1, 2, 0, 0), "-10", "payment")  # exactly 180 days: not dormant, but less active
    steady = profile()
    bank.customer(steady, "core", "S0")
    bank.account("S0", "savings", "60000", dt.date(2020, 1, 1))
    for month in (2, 3, 5, 6):  # two payments in the last 90 days, two in the 90 before
        bank.txn("S0", at(2026, month, 15), "-10", "payment")
    churned = profile()
    bank.customer(churned, "core", "X0")
    bank.account("X0", "savings", "10", dt.date(2015, 1, 1), closed=dt.date(2024, 1, 1))

    profile_metrics_recompute(as_of=AS_OF)
    stages = {p: metrics_of(p).lifecycle_stage for p in (prospect, new, dormant, declining, steady, churned)}
    assert stages == {prospect: "prospect", new: "new", dormant: "dormant", declining: "declining",
                      steady: "active", churned: "churned"}
    d = metrics_of(dormant)
    assert d.churn_risk == 30 and d.churn_signals["salary_stopped"] == 30 and d.salary_credited is False
    assert d.value_tier == "mid" and metrics_of(new).value_tier == "low"
    assert metrics_of(new).next_best_products == []


def test_declining_from_an_outflow_of_deposits(bank):
    p = profile()
    bank.customer(p, "core", "O1")
    bank.account("O1", "savings", "50000", dt.date(2020, 1, 1))
    bank.txn("O1", at(2026, 6, 1), "-50000", "transfer_out")  # deposits were 100,000: half left
    bank.txn("O1", at(2026, 2, 1), "-1", "payment")
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.net_flow_90d == Decimal("-50000.00")
    assert m.lifecycle_stage == "declining" and m.churn_signals["balance_outflow"] == 25


def test_held_activity_counts_once_its_customer_arrives(write_feed):
    accounts = write_feed([{"account_key": "A1", "customer_key": "NEW1", "product_type": "savings",
                            "currency": "CNY", "balance": "88000", "opened_at": "2024-01-01", "status": "active",
                            "as_of": "2026-06-30"}],
                          header=["account_key", "customer_key", "product_type", "currency", "balance", "opened_at",
                                  "closed_at", "status", "as_of"])
    assert activity_feed_load(source="core", kind="accounts", path=accounts).rows_created == 1
    profile_metrics_recompute(as_of=AS_OF)
    assert not ProfileMetrics.objects.exists()  # nobody to attach it to yet

    feed_load(source="core", path=write_feed([{"customer_key": "NEW1", "full_name": "新客户"}]))
    identity_resolve()
    profile_metrics_recompute(as_of=AS_OF)
    m = ProfileMetrics.objects.get(profile__records__customer_key="NEW1")
    assert m.total_deposits == Decimal("88000.00") and m.value_tier == "mid"


def _snapshot() -> dict:
    fields = [f.name for f in ProfileMetrics._meta.fields if f.name not in ("id", "computed_at")]
    return {row["profile"]: row for row in ProfileMetrics.objects.values(*fields)}


def test_a_delta_recompute_equals_a_full_one(ann, bank):
    other = profile()
    bank.customer(other, "core", "C2")
    bank.account("C2", "savings", "5000", dt.date(2021, 1, 1))
    profile_metrics_recompute(as_of=AS_OF)

    bank.card("K1", at(2026, 6, 25), "700")
    bank.account("C2", "time_deposit", "90000", dt.date(2026, 6, 1))
    profile_metrics_recompute(as_of=AS_OF, profile_ids=[ann.pk, other.pk])
    delta = _snapshot()
    profile_metrics_recompute(as_of=AS_OF)
    assert delta == _snapshot()
    assert delta[ann.pk]["card_spend_30d"] == Decimal("1700.00")
    assert delta[other.pk]["total_deposits"] == Decimal("95000.00")


def test_an_absorbed_profile_gives_way_to_its_survivor(ann, bank):
    absorbed = profile()
    bank.customer(absorbed, "core", "C7")
    profile_metrics_recompute(as_of=AS_OF)
    assert ProfileMetrics.objects.filter(profile=absorbed).exists()
    CustomerProfile.objects.filter(pk=absorbed.pk).update(status="merged", merged_into=ann)
    SourceRecord.objects.filter(customer_key="C7").update(profile=ann)
    profile_metrics_recompute(as_of=AS_OF, profile_ids=[absorbed.pk])
    assert not ProfileMetrics.objects.filter(profile=absorbed).exists()
    assert ProfileMetrics.objects.filter(profile=ann).exists()


def test_the_command_and_the_task_after_an_activity_load(write_feed, bank, ann):
    from django.core.management import call_command

    from profiles.tasks import load_feed_task
    call_command("recompute_metrics", "--profile", ann.public_id)
    assert ProfileMetrics.objects.filter(profile=ann).exists()
    feed = write_feed([{"holding_key": "H9", "customer_key": "W1", "product_code": "F1", "product_type": "bond",
                        "market_value": "50000", "currency": "CNY", "as_of": timezone.localdate().isoformat()}],
                      header=["holding_key", "customer_key", "product_code", "product_type", "market_value",
                              "currency", "as_of"])
    load_feed_task("wealth", str(feed), kind="holdings")  # tasks run in-process in the tests
    assert "bond" in metrics_of(ann).product_types


def test_load_feed_command_loads_an_activity_kind_and_reports_rejects(write_feed, bank, ann, capsys):
    from django.core.management import call_command
    header = ["txn_key", "customer_key", "card_token", "occurred_at", "amount", "currency", "channel"]
    feed = write_feed([
        {"txn_key": "X1", "customer_key": "K1", "card_token": "t", "occurred_at": timezone.now().isoformat(),
         "amount": "88.50", "currency": "CNY", "channel": "pos"},
        {"txn_key": "X2", "customer_key": "K1", "card_token": "t", "occurred_at": "yesterday", "amount": "1",
         "currency": "CNY", "channel": "pos"},
    ], header=header)
    call_command("load_feed", str(feed), "--source", "card", "--kind", "card_transactions")
    out = capsys.readouterr().out
    assert "created 1" in out and "rejected 1" in out and "row 2: occurred_at" in out
    assert "metrics recomputed for 1 profiles" in out
    assert metrics_of(ann).card_spend_30d == Decimal("88.50")


# --- customer-initiated activity, growth by inflow, loans, AUM as of the day, counts at the 90-day boundary ------

def test_last_activity_ignores_what_the_customer_did_not_initiate(bank):
    p = profile()
    bank.customer(p, "core", "L1")
    bank.customer(p, "card", "LK1")
    bank.account("L1", "savings", "60000", dt.date(2020, 1, 1))
    bank.txn("L1", at(2026, 6, 1), "-300", "payment")  # the customer's last own action
    # Everything later is the bank's or someone else's doing: credits, interest, fees, system postings, refunds.
    bank.txn("L1", at(2026, 6, 10), "15000", "salary_credit", channel="app")
    bank.txn("L1", at(2026, 6, 12), "2000", "transfer_in", channel="app")
    bank.txn("L1", at(2026, 6, 20), "12", "interest", channel="system")
    bank.txn("L1", at(2026, 6, 25), "-5", "fee", channel="branch")
    bank.txn("L1", at(2026, 6, 28), "-800", "payment", channel="system")  # a standing order the system posted
    bank.card("LK1", at(2026, 6, 29), "-99")  # a refund: not a purchase
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert timezone.localtime(m.last_activity_at) == at(2026, 6, 1)
    assert m.activity_90d == 1
    # They still count as transactions, and their amounts as flows.
    assert m.txn_counts_90d == {"fee": 1, "interest": 1, "payment": 2, "salary_credit": 1, "transfer_in": 1}
    assert m.net_flow_90d == Decimal("15907.00")


def test_a_card_purchase_is_the_latest_activity(bank):
    p = profile()
    bank.customer(p, "core", "L2")
    bank.customer(p, "card", "LK2", credit_limit="10000", card_status="ACTIVE")
    bank.account("L2", "current", "1000", dt.date(2020, 1, 1))
    bank.txn("L2", at(2026, 6, 1), "-300", "payment")
    bank.txn("L2", at(2026, 6, 20), "8000", "salary_credit", channel="system")
    bank.card("LK2", at(2026, 6, 15, 9, 30), "188")
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert timezone.localtime(m.last_activity_at) == at(2026, 6, 15, 9, 30)
    assert m.activity_90d == 2  # the payment and the purchase


def test_growing_by_an_inflow_of_30_percent_of_deposits(bank):
    stages = {}
    for key, balance in (("G1", "130000"), ("G2", "130001")):
        p = profile()
        bank.customer(p, "core", key)
        bank.customer(p, "card", f"{key}K")
        bank.account(key, "savings", balance, dt.date(2020, 1, 1))
        # 30,000 came in over the 90 days: deposits were 100,000 (G1: exactly 30%) or 100,001 (G2: just under).
        bank.txn(key, at(2026, 6, 1), "30000", "transfer_in")
        # One purchase in each 90 days: activity neither up nor down.
        bank.card(f"{key}K", at(2026, 6, 10), "100")
        bank.card(f"{key}K", at(2026, 3, 1), "100")
        stages[key] = p
    profile_metrics_recompute(as_of=AS_OF)
    g1, g2 = metrics_of(stages["G1"]), metrics_of(stages["G2"])
    assert (g1.activity_90d, g1.activity_prior_90d, g1.net_flow_90d) == (1, 1, Decimal("30000.00"))
    assert g1.lifecycle_stage == "growing"
    assert g2.lifecycle_stage == "active"


def test_loan_balance_counts_open_mortgages_and_consumer_loans_only(bank):
    p = profile()
    bank.customer(p, "core", "B1")
    bank.account("B1", "mortgage", "500000", dt.date(2019, 5, 10))
    bank.account("B1", "consumer_loan", "20000", dt.date(2025, 3, 1))
    bank.account("B1", "consumer_loan", "1000", dt.date(2025, 9, 1), currency="USD")  # 7,000 CNY at 7.0
    bank.account("B1", "consumer_loan", "8000", dt.date(2024, 1, 1), closed=dt.date(2026, 3, 1))  # repaid
    bank.account("B1", "consumer_loan", "50000", dt.date(2026, 7, 2))  # opened after as_of
    bank.account("B1", "savings", "3000", dt.date(2020, 1, 1))  # deposits are not loans
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.loan_balance == Decimal("527000.00")
    assert m.total_deposits == Decimal("3000.00")
    assert m.product_types == ["consumer_loan", "mortgage", "savings"]


def _holdings_feed(write_feed, rows):
    return write_feed(rows, header=["holding_key", "customer_key", "product_code", "product_type", "market_value",
                                    "currency", "as_of"])


def _holding(key: str, value: str, as_of: str, product_type: str = "fund") -> dict:
    return {"holding_key": key, "customer_key": "WA", "product_code": "F1", "product_type": product_type,
            "market_value": value, "currency": "CNY", "as_of": as_of}


def test_aum_is_the_holdings_valued_on_or_before_the_day(bank, write_feed):
    p = profile()
    bank.customer(p, "wealth", "WA")
    bank.holding("WA", "fund", "100000", as_of=AS_OF)
    bank.holding("WA", "insurance", "20000", as_of=dt.date(2026, 5, 31))  # the last valuation the bank sent
    bank.holding("WA", "bond", "50000", as_of=dt.date(2026, 7, 1))  # valued the day after: not yet held
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.aum == Decimal("120000.00")
    assert m.product_types == ["fund", "insurance"]


def test_a_newer_snapshot_of_a_holding_replaces_the_older_one(bank, write_feed):
    p = profile()
    bank.customer(p, "wealth", "WA")
    activity_feed_load(source="wealth", kind="holdings",
                       path=_holdings_feed(write_feed, [_holding("H1", "80000", "2026-06-29")]))
    activity_feed_load(source="wealth", kind="holdings",
                       path=_holdings_feed(write_feed, [_holding("H1", "90000", "2026-06-30")]))
    profile_metrics_recompute(as_of=AS_OF)
    assert metrics_of(p).aum == Decimal("90000.00")  # one holding, at its newer value; not 170,000


def test_an_older_snapshot_loaded_late_does_not_replace_the_newer_one(bank, write_feed):
    p = profile()
    bank.customer(p, "wealth", "WA")
    activity_feed_load(source="wealth", kind="holdings",
                       path=_holdings_feed(write_feed, [_holding("H1", "90000", "2026-06-30")]))
    late = activity_feed_load(source="wealth", kind="holdings",
                              path=_holdings_feed(write_feed, [_holding("H1", "80000", "2026-06-29")]))  # re-sent
    profile_metrics_recompute(as_of=AS_OF)
    assert metrics_of(p).aum == Decimal("90000.00")
    assert (late.rows_updated, late.warnings) == (0, {"older_snapshot_ignored": 1})


def test_transaction_counts_by_kind_at_the_90_day_boundary(bank):
    p = profile()
    bank.customer(p, "core", "N1")
    bank.account("N1", "current", "1000", dt.date(2020, 1, 1))
    # The 90 days are 2026-04-02 00:00 .. 2026-06-30 24:00, Shanghai time.
    bank.txn("N1", at(2026, 4, 2, 0, 0), "-10", "payment")  # the first instant: in
    bank.txn("N1", at(2026, 4, 1, 23, 59), "-10", "payment")  # a minute before: out
    bank.txn("N1", at(2026, 4, 1, 23, 59), "3", "interest")  # a kind only seen before the window: absent
    bank.txn("N1", at(2026, 6, 30, 23, 59), "-500", "transfer_out")  # the last minute of as_of: in
    bank.txn("N1", at(2026, 7, 1, 0, 0), "-5", "fee")  # the next day: out
    profile_metrics_recompute(as_of=AS_OF)
    m = metrics_of(p)
    assert m.txn_counts_90d == {"payment": 1, "transfer_out": 1}
    assert m.net_flow_90d == Decimal("-510.00")
    assert m.activity_90d == 2 and m.activity_prior_90d == 1
