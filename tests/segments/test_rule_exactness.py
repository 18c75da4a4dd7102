"""Issue 23: the rule language answers exactly what the README says, on hand-built edge values.

Numbers are the decimals they are written as, also on integer columns and at any magnitude; a comparison with a
missing value is false; a sum over unknown amounts is 0; date windows count local days; balances convert at their
snapshot date; a rule matching nobody refreshes to nothing; a value the language cannot hold is a RuleError naming
the node (400 in the API and the admin), never a crash.
"""
import datetime as dt
import json
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from api.keys import api_key_create
from profiles.models import Account, CustomerProfile, FxRate, ProfileMetrics
from segments import sql
from segments.models import RefreshJob, Segment
from segments.rules import RuleContext, RuleError, rule_explain, rule_queryset, rule_validate
from segments.services import segment_refresh, segment_save, tag_definition_save, tag_rule_refresh
from tags.models import TagAssignment, TagDefinition
from tests.profiles.test_metrics import Bank

from .conftest import NOW

pytestmark = pytest.mark.django_db

CTX = RuleContext(now=NOW)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def names(rule, ctx=CTX) -> set[str]:
    rule_validate(rule, ctx)
    return set(rule_queryset(rule, ctx).values_list("full_name", flat=True))


def field(name, op, value):
    return {"field": name, "op": op, "value": value}


def metrics(profile, **values):
    ProfileMetrics.objects.create(profile=profile, as_of=NOW.date(), computed_at=NOW, lifecycle_stage="active",
                                  value_tier="low", **values)


@pytest.fixture
def measured(people):
    """Ann holds exactly 5,539,518.26 and is 30; Bob 5,539,518.25 and 31; Cai has no age nor tenure; Dee has no
    metrics at all. The merged Eve is never selected."""
    metrics(people["ann"], total_deposits=Decimal("5539518.26"), age=30, tenure_months=0)
    metrics(people["bob"], total_deposits=Decimal("5539518.25"), age=31, tenure_months=12)
    metrics(people["cai"], total_deposits=Decimal("0.10"))
    return people


@pytest.fixture
def bank(people):
    """Source records for Ann (A), Bob (B) and Cai (C) in the core, card and wealth sources."""
    bank = Bank()
    for name, key in (("ann", "A"), ("bob", "B"), ("cai", "C")):
        for source in ("core", "card", "wealth"):
            bank.customer(people[name], source, f"{source}-{key}")
    return bank


def card_spend(op, value, agg="sum", where=()):
    return {"activity": {"kind": "card_transactions", "where": list(where), "agg": agg, "field": "amount", "op": op,
                         "value": value}}


def test_1_numbers_are_the_decimals_they_are_written_as(measured, bank):
    assert names(field("total_deposits", "eq", 5539518.26)) == {"Ann Lee"}
    assert names(field("total_deposits", "between", [5000000, 5539518.26])) == {"Ann Lee", "Bob Wu"}
    assert names(field("total_deposits", "gt", 5539518.25)) == {"Ann Lee"}
    assert names(field("total_deposits", "in", [0.1, 5539518.26])) == {"Ann Lee", "Cai Xu"}
    bank.card("card-A", NOW - dt.timedelta(days=1), "100.10")
    bank.card("card-A", NOW - dt.timedelta(days=2), "0.20")
    bank.card("card-B", NOW - dt.timedelta(days=1), "100.30")
    assert names(card_spend("eq", 100.3)) == {"Ann Lee", "Bob Wu"}  # 100.10 + 0.20 and 100.30
    assert names(card_spend("lte", 100.1, agg="max")) == {"Ann Lee"}
    assert names(card_spend("eq", 150.2, agg="avg")) == set()
    assert names(card_spend("gte", 1, agg="count", where=[field("amount", "eq", 100.1)])) == {"Ann Lee"}


def test_2_a_fraction_on_an_integer_field_is_compared_exactly(measured, bank):
    assert names(field("age", "eq", 30.5)) == set()
    assert names(field("age", "lt", 30.5)) == {"Ann Lee"}
    assert names(field("age", "gt", 30.5)) == {"Bob Wu"}
    assert names(field("age", "between", [29.5, 30.5])) == {"Ann Lee"}
    assert names(field("age", "in", [30.5, 31])) == {"Bob Wu"}
    assert names(field("age", "ne", 30.5)) == {"Ann Lee", "Bob Wu"}
    for key in ("wealth-A", "wealth-A", "wealth-B"):
        bank.holding(key, "fund", "1000")
    holdings = {"activity": {"kind": "holdings", "agg": "count", "op": "eq", "value": 2.5}}
    assert names(holdings) == set()
    assert names({"activity": {**holdings["activity"], "op": "lt", "value": 1.5}}) == {"Bob Wu", "Cai Xu", "Dee"}
    bank.card("card-A", NOW - dt.timedelta(days=1), "500")  # installments 0
    installments = card_spend("gte", 1, agg="count", where=[field("installments", "between", [0.01, 0.25])])
    assert names(installments) == set()


def test_3_any_finite_magnitude_keeps_the_condition_false_on_a_missing_value(measured):
    assert names(field("tenure_months", "gt", -1)) == {"Ann Lee", "Bob Wu"}
    assert names(field("age", "lte", 1e30)) == {"Ann Lee", "Bob Wu"}
    assert names({"any": [field("age", "lte", 1e30), field("gender", "eq", "F")]}) == {"Ann Lee", "Bob Wu", "Cai Xu"}
    assert names(field("age", "ne", 1e30)) == {"Ann Lee", "Bob Wu"}
    assert names(field("age", "gte", -1e30)) == {"Ann Lee", "Bob Wu"}
    assert names(field("age", "gt", 1e30)) == set()
    assert names({"not": field("age", "gt", 1e30)}) == {"Ann Lee", "Bob Wu", "Cai Xu", "Dee"}
    assert names(field("total_deposits", "lt", 1e30)) == {"Ann Lee", "Bob Wu", "Cai Xu"}


def test_4_a_refresh_of_a_rule_that_matches_nobody_is_an_empty_segment(measured, bank):
    bank.holding("wealth-A", "fund", "1000")
    for slug, rule in (("under-zero", field("age", "lt", -1)),
                       ("countless", {"activity": {"kind": "holdings", "agg": "count", "op": "gte", "value": 1e30}})):
        segment = segment_save(segment=Segment(name=slug, slug=slug, rule=rule))
        job = segment_refresh(segment=segment)
        segment.refresh_from_db()
        assert (job.status, job.member_count, segment.member_count) == (RefreshJob.Status.SUCCEEDED, 0, 0)
    tag = tag_definition_save(tag=TagDefinition(code="none", name="None", kind=TagDefinition.Kind.RULE,
                                                rule=field("record_count", "eq", -1)))
    job = tag_rule_refresh(tag=tag)
    assert (job.status, job.member_count) == (RefreshJob.Status.SUCCEEDED, 0)


def test_4_a_result_the_orm_knows_to_be_empty_writes_no_rows(measured):
    segment = segment_save(segment=Segment(name="Ann", slug="ann", rule=field("age", "eq", 30)))
    nobody = CustomerProfile.objects.none()
    assert sql.insert_members(queryset=nobody, segment_id=segment.pk, version=1, holdout_basis_points=0) == 0
    tag = TagDefinition.objects.create(code="t", name="T", kind=TagDefinition.Kind.RULE, rule={"tag": "x"})
    assert sql.insert_rule_tag_assignments(queryset=nobody, tag_id=tag.pk, at=timezone.now()) == 0
    assert not TagAssignment.objects.exists()


def test_5_a_sum_over_unknown_amounts_is_zero(people, bank):
    bank.card("card-A", NOW - dt.timedelta(days=1), "500", currency="XYZ")  # no rate: unknown
    bank.card("card-B", NOW - dt.timedelta(days=1), "500")
    assert names(card_spend("lt", 100)) == {"Ann Lee", "Cai Xu", "Dee"}
    assert names(card_spend("eq", 0)) == {"Ann Lee", "Cai Xu", "Dee"}
    assert names(card_spend("gte", 1, agg="count")) == {"Ann Lee", "Bob Wu"}  # her row counts, its amount is unknown
    assert names(card_spend("lt", 100, agg="max")) == set()  # no known amount: missing
    assert rule_explain(card_spend("lt", 100), profile=people["ann"], ctx=CTX)["value"] == {"sum": 0.0}


@pytest.mark.parametrize("kind", ["accounts", "holdings"])
def test_6_within_days_on_dates_counts_local_days_at_any_hour(people, bank, kind):
    for days, key in ((7, "A"), (8, "B")):
        day = NOW.date() - dt.timedelta(days=days)
        if kind == "accounts":
            bank.account(f"core-{key}", "savings", "100", day)
        else:
            bank.holding(f"wealth-{key}", "fund", "100", as_of=day)
    rule = {"activity": {"kind": kind, "within_days": 7}}
    for local in (dt.time(0, 0, 30), dt.time(7, 59), dt.time(12, 0), dt.time(23, 59)):
        now = dt.datetime.combine(NOW.date(), local, tzinfo=SHANGHAI).astimezone(dt.timezone.utc)
        assert names(rule, RuleContext(now=now)) == {"Ann Lee"}, local


@pytest.mark.parametrize("value, path", [
    ({"years_ago": 5000}, "all[1].value.years_ago"),
    ({"years_ago": -36500}, "all[1].value.years_ago"),
    ({"days_ago": 36500}, None),  # 1926: fine
])
def test_7_a_relative_date_outside_the_calendar_is_refused_with_its_path(people, value, path):
    rule = {"all": [field("gender", "eq", "F"), field("birth_date", "lte", value)]}
    if path is None:
        assert names(rule) == set()
        return
    with pytest.raises(RuleError) as error:
        rule_validate(rule, CTX)
    assert error.value.path == path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), True, "5", None])
def test_7_a_number_that_is_not_a_finite_number_is_refused_with_its_path(people, value):
    for rule, path in ((field("age", "gt", value), "value"),
                       ({"all": [field("age", "between", [1, value])]}, "all[0].value[1]"),
                       (card_spend("gt", value), "activity.value")):
        with pytest.raises(RuleError) as error:
            rule_validate(rule, CTX)
        assert error.value.path == path


@pytest.mark.parametrize("raw, path", [
    ('{"rule": {"all": [{"field": "age", "op": "gt", "value": NaN}]}}', "all[0].value"),
    ('{"rule": {"all": [{"field": "age", "op": "gt", "value": 1e999}]}}', "all[0].value"),
    ('{"rule": {"all": [{"field": "birth_date", "op": "lt", "value": {"years_ago": 5000}}]}}',
     "all[0].value.years_ago"),
])
def test_7_previews_answer_400_naming_the_node(people, admin_client, raw, path):
    admin = admin_client.post(reverse("admin:segments_segment_preview"), raw, content_type="application/json")
    assert (admin.status_code, admin.json()["path"]) == (400, path)
    client = APIClient()
    # profiles:read_pii: a rule on birth_date is a search by a personal field (README, "Personal data").
    key = api_key_create(name="k", scopes=["segments:read", "profiles:read_pii"])[1]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    api = client.post("/api/v1/segments/preview/", raw, content_type="application/json")
    assert api.status_code == 400 and api.json()["details"]["path"] == path
    form = {"name": "Bad", "slug": "bad", "description": "", "kind": "rule", "status": "active",
            "refresh_every_minutes": "", "refresh_cron": "", "owner": "", "holdout_percent": "0",
            "rule": json.dumps(json.loads(raw)["rule"])}
    page = admin_client.post(reverse("admin:segments_segment_add"), form)
    assert page.status_code == 200 and f"{path}: " in page.content.decode()
    assert not Segment.objects.exists()


def test_9_a_balance_converts_at_its_snapshot_date_as_in_the_metrics(people, bank):
    from profiles.metrics import profile_metrics_recompute

    batch = bank.batch["core"]
    for rate, day in (("7", dt.date(2025, 1, 1)), ("8", dt.date(2026, 1, 9))):
        FxRate.objects.create(currency="USD", rate_to_cny=Decimal(rate), as_of=day, row_digest="x",
                              source=batch.source, last_batch=batch)
    # Opened before the first rate; the snapshot of 2026-01-08 converts at 7 (the 8 came a day later).
    bank.account("core-A", "time_deposit", "1000", dt.date(2020, 1, 1), currency="USD")
    Account.objects.update(as_of=dt.date(2026, 1, 8))
    deposits = {"activity": {"kind": "accounts", "agg": "sum", "field": "amount", "op": "eq", "value": 7000}}
    assert names(deposits) == {"Ann Lee"}
    profile_metrics_recompute(as_of=NOW.date())
    assert ProfileMetrics.objects.get(profile=people["ann"]).total_deposits == Decimal("7000")
    assert names(field("total_deposits", "eq", 7000)) == {"Ann Lee"}


def test_not_and_any_over_metric_conditions_keep_profiles_without_metrics(measured):
    """Found by the reference evaluator: Dee has no metrics row, so each comparison on a metric is false for her,
    and its negation true; through the outer join a comparison gave SQL NULL, which NOT and OR kept NULL."""
    assert "Dee" in names({"field": "aum", "op": "is_null"})
    assert "Dee" in names({"any": [field("aum", "ne", 5), {"not": field("clv", "eq", 5)}]})
    assert "Dee" in names({"not": {"all": [{"field": "aum", "op": "is_null"}, field("clv", "eq", 0)]}})
    assert "Dee" in names({"not": {"all": [{"not": field("card_utilisation", "gt", 1)},
                                              field("salary_monthly", "lt", -1)]}})


def test_a_window_whose_relative_end_passed_the_fixed_one_selects_nobody_instead_of_failing(people):
    """Valid when saved on 10 January; a month later its relative low end lies after its fixed high end."""
    window = {"field": "created_at", "op": "between", "value": [{"days_ago": 30}, "2026-01-05"]}
    assert names(window) == {"Bob Wu"}
    later = RuleContext(now=NOW + dt.timedelta(days=40))
    assert names(window, later) == set()
    with pytest.raises(RuleError) as refused:
        rule_validate({"field": "created_at", "op": "between", "value": ["2026-01-05", "2025-12-01"]}, CTX)
    assert refused.value.path == "value"
