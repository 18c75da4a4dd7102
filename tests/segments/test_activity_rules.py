"""The activity node and the metric fields of the rule language, against hand-computed answers."""
import datetime as dt
from decimal import Decimal

import pytest

from profiles.models import ProfileMetrics
from segments.rules import RuleContext, RuleError, rule_explain, rule_inputs, rule_is_time_relative, rule_queryset, \
    rule_validate
from tests.profiles.test_metrics import Bank, profile

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
CTX = RuleContext(now=NOW)
TRAVEL = {"field": "merchant_category", "op": "eq", "value": "travel"}


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def people():
    bank = Bank()
    from profiles.models import FxRate
    FxRate.objects.create(currency="USD", rate_to_cny=Decimal("7"), as_of=dt.date(2026, 1, 1), row_digest="x",
                          source=bank.batch["core"].source, last_batch=bank.batch["core"])
    ann, bob, cai, dee = (profile(full_name=n) for n in ("Ann", "Bob", "Cai", "Dee"))
    for p, key in ((ann, "A"), (bob, "B"), (cai, "C"), (dee, "D")):
        bank.customer(p, "card", f"K{key}")
        bank.customer(p, "core", f"C{key}")
    bank.card("KA", ago(10), "3000")
    bank.card("KA", ago(89), "300", currency="USD")  # 2,100 CNY: Ann's travel spend is 5,100
    bank.card("KA", ago(5), "999")  # dining, not travel
    bank.card("KB", ago(20), "4900")
    bank.card("KC", ago(100), "6000")  # outside 90 days
    for key, days in (("CA", 10), ("CB", 40)):
        bank.txn(key, ago(days), "12000", "salary_credit", channel="system")
    from profiles.models import CardTransaction
    CardTransaction.objects.exclude(amount=Decimal("999")).update(merchant_category="travel")
    CardTransaction.objects.filter(amount=Decimal("999")).update(merchant_category="dining")
    return {"ann": ann, "bob": bob, "cai": cai, "dee": dee}


def names(rule) -> set[str]:
    rule_validate(rule, CTX)
    return set(rule_queryset(rule, CTX).values_list("full_name", flat=True))


def spend(op, value, agg="sum", days=90):
    return {"activity": {"kind": "card_transactions", "where": [TRAVEL], "within_days": days, "agg": agg,
                         "field": "amount", "op": op, "value": value}}


def test_travel_spend_over_90_days_in_cny(people):
    assert names(spend("gte", 5000)) == {"Ann"}  # 3,000 + 300 USD at 7
    assert names(spend("between", [4000, 5000])) == {"Bob"}
    assert names(spend("gte", 5000, days=120)) == {"Ann", "Cai"}
    assert names(spend("lt", 100)) == {"Cai", "Dee"}  # no travel in 90 days sums to 0
    assert names(spend("gte", 2, agg="count")) == {"Ann"}
    assert names(spend("gt", 4000, agg="max")) == {"Bob"}
    assert names(spend("lt", 3000, agg="min")) == {"Ann"}  # min ignores profiles with no rows


def test_average_travel_spend_in_cny(people):
    # Ann: 3,000 and 300 USD at 7 (2,100): 2,550 on average; unconverted it would be 1,650. Bob: one of 4,900.
    assert names(spend("gte", 2550, agg="avg")) == {"Ann", "Bob"}
    assert names(spend("gt", 2550, agg="avg")) == {"Bob"}
    assert names(spend("between", [2500, 2600], agg="avg")) == {"Ann"}
    # Without a row in the window the average is unknown, not 0: Cai and Dee pass neither "lt" nor "ne".
    assert names(spend("lt", 3000, agg="avg")) == {"Ann"}
    assert names(spend("ne", 4900, agg="avg")) == {"Ann"}
    assert names(spend("gte", 5000, agg="avg", days=120)) == {"Cai"}  # her 6,000 of 100 days ago
    assert rule_explain(spend("gte", 2550, agg="avg"), profile=people["ann"], ctx=CTX)["value"] == {"avg": 2550.0}
    assert rule_explain(spend("gte", 2550, agg="avg"), profile=people["dee"], ctx=CTX)["value"] == {"avg": None}


def test_did_not_and_did(people):
    salary = {"kind": "transactions", "where": [{"field": "kind", "op": "eq", "value": "salary_credit"}],
              "within_days": 35}
    assert names({"activity": salary}) == {"Ann"}
    assert names({"activity": {**salary, "exists": False}}) == {"Bob", "Cai", "Dee"}
    assert names({"activity": {**salary, "agg": "count", "op": "lt", "value": 1}}) == {"Bob", "Cai", "Dee"}
    # combined with other nodes in one query
    assert names({"all": [{"activity": salary}, {"not": spend("gte", 5000)}]}) == set()


def test_explain_shows_the_aggregate_seen(people):
    explained = rule_explain(spend("gte", 5000), profile=people["ann"], ctx=CTX)
    assert explained["result"] is True and explained["value"] == {"sum": 5100.0}
    assert rule_explain(spend("gte", 5000), profile=people["dee"], ctx=CTX)["value"] == {"sum": 0}


@pytest.mark.parametrize("rule, path", [
    ({"activity": {"kind": "loans"}}, "activity.kind"),
    ({"all": [{"activity": {"kind": "card_transactions", "where": [{"field": "pan", "op": "eq", "value": "x"}]}}]},
     "all[0].activity.where[0].field"),
    ({"activity": {"kind": "transactions", "within_days": 0}}, "activity.within_days"),
    ({"activity": {"kind": "transactions", "agg": "median", "op": "gt", "value": 1}}, "activity.agg"),
    ({"activity": {"kind": "transactions", "agg": "sum", "field": "kind", "op": "gt", "value": 1}},
     "activity.field"),
    ({"activity": {"kind": "transactions", "agg": "count", "op": "gt", "value": "many"}}, "activity.value"),
    ({"activity": {"kind": "transactions", "agg": "count", "op": "gt", "value": 1, "exists": False}},
     "activity.exists"),
])
def test_bad_activity_nodes_are_refused_with_their_path(rule, path):
    with pytest.raises(RuleError) as error:
        rule_validate(rule, CTX)
    assert error.value.path == path


def test_inputs_and_daily_refresh():
    rule = {"any": [spend("gte", 1), {"field": "value_tier", "op": "eq", "value": "high"}]}
    assert rule_inputs(rule) == {"activity:card_transactions", "metrics"}
    assert rule_is_time_relative(rule)
    assert not rule_is_time_relative({"field": "city", "op": "eq", "value": "x"})


def test_metric_fields(people):
    for p, stage, aum in ((people["ann"], "dormant", 600000), (people["bob"], "active", 10)):
        ProfileMetrics.objects.create(profile=p, as_of=NOW.date(), lifecycle_stage=stage, value_tier="low",
                                      aum=aum, computed_at=NOW)
    assert names({"field": "lifecycle_stage", "op": "eq", "value": "dormant"}) == {"Ann"}
    assert names({"field": "aum", "op": "gte", "value": 500000}) == {"Ann"}
    assert names({"field": "lifecycle_stage", "op": "is_null"}) == {"Cai", "Dee"}  # never computed
    with pytest.raises(RuleError) as error:
        rule_validate({"field": "value_tier", "op": "eq", "value": "platinum"}, CTX)
    assert error.value.path == "value"


def test_an_activity_load_refreshes_the_segments_that_use_that_kind(people, write_feed):
    from profiles.tasks import load_feed_task
    from segments.models import RefreshJob, Segment
    from segments.services import segment_save
    travellers = segment_save(segment=Segment(name="Any card use", slug="card-users", rule={
        "activity": {"kind": "card_transactions", "where": [{"field": "mcc", "op": "eq", "value": "4722"}]}}))
    by_city = segment_save(segment=Segment(name="Shanghai", slug="sh", rule={"field": "city", "op": "eq",
                                                                              "value": "上海市"}))
    feed = write_feed([{"txn_key": "N1", "customer_key": "KD", "card_token": "t", "occurred_at": NOW.isoformat(),
                        "amount": "10", "currency": "CNY", "mcc": "4722", "channel": "pos"}],
                      header=["txn_key", "customer_key", "card_token", "occurred_at", "amount", "currency", "mcc",
                              "channel"])
    load_feed_task("card", str(feed), kind="card_transactions")  # tasks run in-process here
    travellers.refresh_from_db()
    assert travellers.member_count == 1  # Dee
    assert RefreshJob.objects.filter(segment=travellers, trigger="feed_load").count() == 1
    assert not RefreshJob.objects.filter(segment=by_city).exists()  # its inputs did not change


def test_activity_under_all_groups_aggregates_only_what_its_siblings_allow(people):
    # Inside `all`, an activity node is evaluated only for the profiles its siblings let through; the answers must
    # be the same as on its own, wherever it sits (directly, under `not`, under `any`), also where "no rows" passes.
    not_bob = {"not": {"field": "full_name", "op": "eq", "value": "Bob"}}
    not_ann = {"not": {"field": "full_name", "op": "eq", "value": "Ann"}}
    assert names({"all": [not_bob, spend("gte", 4000)]}) == {"Ann"}
    assert names({"all": [not_ann, spend("lt", 100)]}) == {"Cai", "Dee"}  # sums over no rows are 0
    assert names({"all": [not_ann, {"not": spend("gte", 4000)}]}) == {"Cai", "Dee"}
    assert names({"all": [not_bob, {"any": [spend("gte", 5000), {"field": "full_name", "op": "eq", "value": "Dee"}]}]}) \
        == {"Ann", "Dee"}
    assert names({"all": [not_bob, not_ann, {"all": [spend("lt", 100), spend("lt", 1, agg="count")]}]}) \
        == {"Cai", "Dee"}
    assert names({"all": [spend("gte", 4000), spend("lt", 5000)]}) == {"Bob"}  # two activity siblings
