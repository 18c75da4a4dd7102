"""Property test of the rule language: rules generated from the catalogue, compiled and refreshed in PostgreSQL,
give exactly the profiles the reference evaluator (tests/segments/reference_rules.py) gives over the same world.

The world is small and hand-built around the edges the semantics name: missing values (NULL and empty strings),
exact decimal boundaries (5539518.26 and its neighbours), integers against fractions, amounts in currencies without
a rate (before the first rate, or none ever), rows around local midnight in Asia/Shanghai (where the UTC date is the
day before), accounts and holdings dated exactly N and N+1 local days ago, tags expiring at the very instants the
rules are evaluated, a profile absorbed by a merge, activity of customers who have no profile.
"""
import datetime as dt
import itertools
import math
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.utils import timezone
from hypothesis import HealthCheck, given, note, settings as hypothesis_settings, strategies as st

from profiles.models import (
    Account, CardTransaction, CustomerProfile, FeedBatch, FxRate, Holding, ProfileMetrics, Source, SourceRecord,
    Transaction,
)
from segments.models import Segment, SegmentMember
from segments.rules import RuleContext, RuleError, activity_catalogue, catalogue, rule_queryset, rule_validate
from segments.services import segment_refresh, tag_rule_refresh
from tags.models import TagAssignment, TagDefinition
from tests.segments import reference_rules as ref

pytestmark = pytest.mark.django_db

TZ = ZoneInfo(settings.TIME_ZONE)
D = dt.date(2026, 3, 15)  # the local day most evaluations happen on


def day(offset: int) -> dt.date:
    return D + dt.timedelta(days=offset)


def at(offset: int, hh: int = 12, mm: int = 0, ss: int = 0) -> dt.datetime:
    """An instant of local day D+offset."""
    return dt.datetime.combine(day(offset), dt.time(hh, mm, ss), TZ)


# Evaluation instants: around local midnight (00:00-08:00 local is the day before in UTC), noon, the last second,
# the next day, and 29 February of a leap year (years_ago lands on 28 February). In UTC, as timezone.now() gives them.
NOWS = tuple(moment.astimezone(dt.timezone.utc) for moment in (
    at(0, 0, 0, 0), at(0, 0, 0, 30), at(0, 7, 59, 59), at(0, 8), at(0, 12), at(0, 23, 59, 59), at(1, 0, 0, 30),
    dt.datetime(2028, 2, 29, 0, 0, 30, tzinfo=TZ), dt.datetime(2028, 2, 29, 12, tzinfo=TZ)))

METRIC_DEFAULTS = {"lifecycle_stage": "active", "value_tier": "low", "total_deposits": Decimal("0"),
                   "aum": Decimal("0"), "loan_balance": Decimal("0"), "card_limit": Decimal("0"),
                   "card_utilisation": None, "card_spend_30d": Decimal("0"), "card_spend_90d": Decimal("0"),
                   "card_spend_365d": Decimal("0"), "salary_monthly": Decimal("0"), "last_activity_at": None,
                   "tenure_months": None, "age": None, "risk_level": "", "clv": Decimal("0"), "churn_risk": 0}
GOLDEN = ("full_name", "family_name", "given_name", "gender", "birth_date", "id_type", "phone", "email", "address",
          "city", "postcode")

# name: (golden attributes, metrics (None: never computed), first seen)
PROFILES = {
    "ann": (dict(full_name="Ann Lee", family_name="Lee", given_name="Ann", gender="F", birth_date=dt.date(1966, 3, 15),
                 id_type="CN_RESIDENT", phone="+8613800001111", email="ann@qq.com", address="朝阳区1号",
                 city="Shanghai", postcode="200000", record_count=3),
            dict(total_deposits=Decimal("5539518.26"), age=60, tenure_months=24, value_tier="high", risk_level="C3",
                 card_utilisation=Decimal("0.8000"), last_activity_at=at(-1, 23, 59, 59), churn_risk=60,
                 aum=Decimal("500000.00"), clv=Decimal("10000.5")),
            at(-30, 0, 0, 0)),
    "bob": (dict(full_name="Bob Wu", family_name="Wu", given_name="Bob", gender="M", birth_date=dt.date(1966, 3, 16),
                 id_type="PASSPORT", phone="+8613912345678", email="BOB@163.COM", address="Nanjing Rd 5",
                 city="shanghai", postcode="200001", record_count=1),
            dict(total_deposits=Decimal("5539518.25"), age=30, tenure_months=0, lifecycle_stage="dormant",
                 card_utilisation=Decimal("0.0001"), last_activity_at=at(0, 0, 0, 0), churn_risk=100,
                 loan_balance=Decimal("500000.00"), card_limit=Decimal("20000.00")),
            at(-30, 23, 59, 59)),
    "cai": (dict(full_name="蔡明", family_name="蔡", given_name="明", gender="", birth_date=dt.date(1966, 3, 14),
                 id_type="OTHER", phone="", email="cai@qq.com", address="", city="上海市", postcode="",
                 record_count=2),
            dict(total_deposits=Decimal("5539518.27"), age=31, tenure_months=1, value_tier="mid", risk_level="C5",
                 last_activity_at=at(-180, 7, 59, 59), card_spend_30d=Decimal("3000.00"), clv=Decimal("-0.01")),
            at(-31, 7, 59, 59)),
    "dee": (dict(record_count=0), None, at(0, 0, 0, 0)),
    "eve": (dict(full_name="", family_name="", given_name="", gender="", id_type="", phone="", email="", address="",
                 city="", postcode="", record_count=1),
            dict(age=0, tenure_months=0, card_utilisation=Decimal("1.2345"), lifecycle_stage="prospect"),
            at(0, 7, 59, 59)),
    "fay": (dict(full_name="李安", family_name="李", given_name="安", gender="F", birth_date=dt.date(1968, 2, 29),
                 address="50%_off 路", city="北京", postcode="100020", email="Fay.Li@QQ.com", record_count=2),
            dict(total_deposits=Decimal("0.01"), age=29, tenure_months=360, value_tier="mid",
                 salary_monthly=Decimal("10000.00"), card_spend_90d=Decimal("5000.00"), risk_level="C1"),
            at(-365, 8, 0, 0)),
    "gus": (dict(full_name="Gus", gender="M", birth_date=dt.date(1968, 2, 28), city="Beijing", record_count=4),
            dict(total_deposits=Decimal("9999999999999999.99"), age=120, clv=Decimal("123456.78"), churn_risk=0,
                 card_spend_365d=Decimal("20000.00"), lifecycle_stage="churned"),
            at(-1, 23, 59, 59)),
    "hal": (dict(full_name="Hal Ho", gender="U", birth_date=dt.date(1968, 3, 1), city="Shanghai", record_count=1),
            dict(lifecycle_stage="new", value_tier="low"), at(-7, 0, 0, 0)),
    "ivy": (dict(full_name="ivy chen", family_name="Chen", given_name="Ivy", gender="F",
                 birth_date=dt.date(1990, 6, 15), id_type="CN_RESIDENT", city="Shanghai", email="ivy@163.com",
                 record_count=2),
            dict(total_deposits=Decimal("-0.01"), loan_balance=Decimal("5539518.26"), age=35, tenure_months=23,
                 card_utilisation=Decimal("0.0000"), risk_level="C3", churn_risk=25),
            at(-8, 12, 0, 0)),
    "jon": (dict(full_name="Jon", gender="M", birth_date=dt.date(2026, 3, 15), phone="+8613800001111",
                 record_count=2),
            dict(age=0, tenure_months=12, aum=Decimal("0.01"), card_limit=Decimal("5539518.26")), at(-400)),
    # Absorbed by a merge into ann: matches much, never selected.
    "zed": (dict(full_name="Zed Merged", gender="F", birth_date=dt.date(1966, 3, 15), city="Shanghai",
                 email="zed@qq.com", record_count=1),
            dict(total_deposits=Decimal("5539518.26"), age=60), at(-30, 0, 0, 0)),
}
# Plainer profiles, for numbers on each side of the others.
for _i in range(16):
    PROFILES[f"p{_i}"] = (
        dict(full_name=f"Person {_i}", gender="MFU"[_i % 3], birth_date=dt.date(1950 + 3 * _i, 1 + _i % 12, 1),
             city=("Shanghai", "Beijing", "上海市", None)[_i % 4], record_count=_i % 4),
        None if _i % 5 == 4 else dict(age=18 + 4 * _i, tenure_months=_i * 7,
                                      total_deposits=Decimal(f"{_i * 1234.5:.2f}"), churn_risk=_i * 8),
        at(-_i * 13, _i * 2 % 24, 0, 0))

# Rates: USD from D-30, a second from D-10; EUR from D-5; JPY never. Account and holding snapshots are D-1 or D,
# after every last rate, so converting a stock at its snapshot date or at the day of evaluation is the same.
RATES = (("USD", day(-30), Decimal("7.12345678")), ("USD", day(-10), Decimal("7.20000000")),
         ("EUR", day(-5), Decimal("7.80000000")))

# (owner, occurred_at, amount, currency, kind, channel, counterparty_category); owner "?" has no source record,
# "unresolved" a record without a profile.
TRANSACTIONS = (
    ("ann", at(-7, 0, 0, 0), "100.00", "CNY", "payment", "app", "utilities"),
    ("ann", at(-7, 12, 0, 0), "99.99", "CNY", "payment", "pos", ""),
    ("ann", at(-8, 23, 59, 59), "5539518.26", "CNY", "salary_credit", "system", "employer"),
    ("bob", at(-30, 7, 59, 59), "1000.00", "USD", "transfer_in", "online", ""),  # rated on its local day only
    ("bob", at(-31, 23, 59, 59), "10.00", "USD", "payment", "app", "utilities"),  # before the first rate
    ("cai", at(-3, 10), "50.00", "JPY", "payment", "app", "shops"),  # every amount of cai's is unknown
    ("cai", at(-40, 10), "20.00", "JPY", "payment", "app", "shops"),
    ("dee", at(0, 0, 0, 0), "0.01", "CNY", "fee", "system", ""),
    ("eve", at(0, 0, 0, 15), "-200.00", "CNY", "payment", "atm", "cash"),
    ("fay", at(-5, 0, 0, 0), "100.00", "EUR", "transfer_out", "branch", "family"),
    ("fay", at(-6, 23, 59, 59), "100.00", "EUR", "transfer_out", "branch", "family"),
    ("gus", at(2, 0, 0, 0), "500.00", "CNY", "payment", "online", "shops"),
    ("hal", at(-90, 0, 0, 0), "0.00", "CNY", "interest", "system", ""),
    ("hal", at(-90, 12, 0, 0), "5.00", "CNY", "salary_credit", "system", "employer"),
    ("hal", at(-365, 12, 0, 0), "5539518.26", "CNY", "salary_credit", "system", "employer"),
    ("ivy", at(-1, 23, 59, 59), "0.25", "CNY", "payment", "app", "Utilities"),
    ("ivy", at(-1, 8, 0, 0), "0.50", "CNY", "payment", "app", "utilities"),
    ("ivy", at(-2, 8, 0, 0), "0.25", "CNY", "payment", "app", "utilities"),
    ("p1", at(-20, 9), "42.00", "CNY", "payment", "app", "shops"),
    ("p2", at(-20, 9), "42.00", "USD", "payment", "app", "shops"),
    ("p3", at(-89, 0, 0, 0), "1234.50", "CNY", "salary_credit", "system", "employer"),
    ("?", at(-1, 12), "1000000.00", "CNY", "payment", "app", "shops"),
    ("unresolved", at(-1, 12), "1000000.00", "CNY", "payment", "app", "shops"),
)
# (owner, occurred_at, amount, currency, merchant_category, mcc, channel, installments)
CARD_TRANSACTIONS = (
    ("ann", at(-10, 9), "3000.00", "CNY", "travel", "4511", "pos", 0),
    ("ann", at(-20, 9), "300.00", "USD", "travel", "4511", "online", 3),
    ("ann", at(-5, 9), "999.00", "CNY", "dining", "5812", "pos", 12),
    ("bob", at(-20, 9), "4900.00", "CNY", "travel", "", "pos", 2),
    ("bob", at(-1, 23, 59, 59), "0.01", "CNY", "", "", "online", 0),
    ("cai", at(-100, 9), "6000.00", "CNY", "travel", "4511", "pos", 0),
    ("cai", at(-2, 9), "100.00", "JPY", "dining", "5812", "pos", 0),
    ("eve", at(-30, 12, 0, 0), "-50.00", "CNY", "dining", "5812", "pos", 0),
    ("fay", at(-4, 7, 59, 59), "200.00", "EUR", "travel", "4722", "online", 0),
    ("fay", at(-5, 7, 59, 59), "200.00", "EUR", "travel", "4722", "online", 6),  # UTC date D-6: before the rate
    ("ivy", at(-7, 12, 0, 0), "5539518.26", "CNY", "Travel", "4511", "pos", 3),
    ("jon", at(-90, 12, 0, 0), "0.00", "CNY", "travel", "", "pos", 0),
    ("p4", at(-15, 0, 0, 0), "100.00", "CNY", "dining", "5812", "pos", 1),
    ("?", at(-1, 12), "99999.00", "CNY", "travel", "4511", "pos", 0),
)
# (owner, product_type, balance, currency, opened_at, status, snapshot date)
ACCOUNTS = (
    ("ann", "savings", "5539518.26", "CNY", day(-7), "active", day(-1)),
    ("ann", "time_deposit", "1000.00", "USD", day(-400), "active", day(-1)),  # opened before the first rate
    ("bob", "current", "100.00", "CNY", day(-8), "active", day(-1)),
    ("bob", "mortgage", "500000.00", "CNY", day(-6), "active", day(0)),
    ("cai", "savings", "50.00", "JPY", day(-1), "active", day(-1)),
    ("fay", "savings", "100.00", "EUR", day(0), "active", day(0)),
    ("fay", "time_deposit", "100.00", "EUR", day(-30), "active", day(-1)),  # opened before the first rate
    ("gus", "current", "0.00", "CNY", day(1), "active", day(0)),
    ("hal", "consumer_loan", "99.99", "CNY", day(-31), "closed", day(-1)),
    ("hal", "savings", "0.01", "CNY", day(-30), "active", day(-1)),
    ("ivy", "savings", "0.01", "CNY", day(-8), "", day(-1)),
    ("p5", "current", "2.50", "CNY", day(-365), "active", day(-1)),
    ("?", "savings", "1.00", "CNY", day(-1), "active", day(-1)),
)
# (owner, product_type, product_code, market_value, currency, holding date)
HOLDINGS = (
    ("ann", "fund", "FU123", "200000.00", "CNY", day(-7)),
    ("ann", "bond", "BD1", "1000.00", "USD", day(-8)),
    ("bob", "insurance", "IN9", "0.01", "CNY", day(0)),
    ("cai", "fund", "FU124", "10.00", "JPY", day(-1)),
    ("fay", "structured", "ST1", "100.00", "EUR", day(-4)),
    ("gus", "deposit_like", "DL1", "5539518.26", "CNY", day(1)),
    ("ivy", "fund", "fu123", "0.00", "CNY", day(-30)),
    ("p6", "fund", "FU123", "2.50", "CNY", day(-31)),
    ("p7", "bond", "BD2", "10.00", "CNY", day(-8)),  # p7 and p8 hold only this: 7 days ago or 8
    ("p8", "bond", "BD2", "10.00", "CNY", day(-7)),
)
# tag code -> kind, and the assignments: (owner, expires_at)
TAGS = {
    "vip": ("manual", (("ann", None), ("zed", None), ("cai", at(-1)), ("bob", at(0, 0, 0, 0)), ("fay", at(0, 8)))),
    "promo": ("manual", (("dee", None), ("eve", at(1, 0, 0, 0)), ("gus", at(0, 0, 0, 30)))),
    "lifecycle-dormant": ("system", (("hal", None), ("jon", at(0, 12)))),
    "big-holder": ("rule", (("ann", None),)),
}
# Another segment's members: current version 2 (with the absorbed profile), and a stale version 1.
SEGMENT_MEMBERS = {2: ("ann", "bob", "zed", "p0"), 1: ("cai", "dee")}
WITHIN_DAYS = (1, 4, 5, 6, 7, 8, 30, 31, 89, 90, 365, 3660)


def _build_world() -> ref.World:
    """The world in the database and, from the same lists, as the reference evaluator's objects."""
    world = ref.World(tz=TZ, field_types={f["name"]: f["type"] for f in catalogue()},
                      activity_types={k: {f["name"]: f["type"] for f in v} for k, v in activity_catalogue().items()})
    batch = {code: FeedBatch.objects.create(source=Source.objects.get(code=code), file_name="property",
                                            status=FeedBatch.Status.SUCCEEDED) for code in ("core", "card", "wealth")}
    ids = {}
    for n, (name, (golden, metrics, first_seen)) in enumerate(PROFILES.items()):
        merged_into = ids["ann"] if name == "zed" else None
        profile = CustomerProfile.objects.create(
            public_id=f"PR{n:08d}", status="merged" if merged_into else "active", merged_into_id=merged_into,
            **golden)
        CustomerProfile.objects.filter(pk=profile.pk).update(created_at=first_seen)
        ids[name] = profile.pk
        values = {f: golden.get(f) for f in GOLDEN} | {"record_count": golden["record_count"], "created_at": first_seen}
        if metrics is not None:
            metrics = METRIC_DEFAULTS | metrics
            ProfileMetrics.objects.create(profile=profile, as_of=day(-1), computed_at=at(-1), **metrics)
        values |= metrics if metrics is not None else dict.fromkeys(METRIC_DEFAULTS)
        world.profiles[profile.pk] = ref.Profile(id=profile.pk, live=not merged_into, values=values)
        if not merged_into:
            for code in ("core", "card", "wealth"):
                _record(batch[code], f"{name}-{code}", profile)
    for code in ("core", "card", "wealth"):
        _record(batch[code], f"unresolved-{code}", None)
    ids["?"] = ids["unresolved"] = None

    for currency, as_of, rate in RATES:
        FxRate.objects.create(currency=currency, rate_to_cny=rate, as_of=as_of, row_digest="x",
                              source=batch["core"].source, last_batch=batch["core"])
        world.rates.setdefault(currency, []).append((as_of, rate))

    serial = itertools.count()

    def row(code: str, owner: str) -> dict:
        return {"source": batch[code].source, "customer_key": f"{owner}-{code}", "row_digest": "x",
                "last_batch": batch[code]}

    for owner, when, amount, currency, kind, channel, category in TRANSACTIONS:
        Transaction.objects.create(**row("core", owner), txn_key=f"T{next(serial)}", account_key="A",
                                   occurred_at=when, amount=Decimal(amount), currency=currency, kind=kind,
                                   channel=channel, counterparty_category=category)
        world.rows.append(ref.Row("transactions", ids[owner], when, None, Decimal(amount), currency,
                                  {"kind": kind, "channel": channel, "counterparty_category": category,
                                   "currency": currency}))
    for owner, when, amount, currency, category, mcc, channel, installments in CARD_TRANSACTIONS:
        CardTransaction.objects.create(**row("card", owner), txn_key=f"K{next(serial)}", card_token="tok",
                                       occurred_at=when, amount=Decimal(amount), currency=currency, mcc=mcc,
                                       merchant_category=category, channel=channel, installments=installments)
        world.rows.append(ref.Row("card_transactions", ids[owner], when, None, Decimal(amount), currency,
                                  {"merchant_category": category, "mcc": mcc, "channel": channel,
                                   "installments": installments, "currency": currency}))
    for owner, product_type, balance, currency, opened, status, snapshot in ACCOUNTS:
        Account.objects.create(**row("core", owner), account_key=f"A{next(serial)}", product_type=product_type,
                               currency=currency, balance=Decimal(balance), opened_at=opened, status=status,
                               as_of=snapshot)
        world.rows.append(ref.Row("accounts", ids[owner], opened, snapshot, Decimal(balance), currency,
                                  {"product_type": product_type, "status": status}))
    for owner, product_type, code, value, currency, as_of in HOLDINGS:
        Holding.objects.create(**row("wealth", owner), holding_key=f"H{next(serial)}", product_code=code,
                               product_type=product_type, market_value=Decimal(value), currency=currency, as_of=as_of)
        world.rows.append(ref.Row("holdings", ids[owner], as_of, as_of, Decimal(value), currency,
                                  {"product_type": product_type, "product_code": code}))

    for code, (kind, assignments) in TAGS.items():
        tag = TagDefinition.objects.create(code=code, name=code, kind=kind,
                                           rule={"field": "aum", "op": "gt", "value": 0} if kind == "rule" else None)
        for owner, expires_at in assignments:
            TagAssignment.objects.create(profile_id=ids[owner], tag=tag, source=kind, assigned_at=at(-60),
                                         expires_at=expires_at)
            world.tags.append((ids[owner], code, expires_at))

    other = Segment.objects.create(name="others", slug="others", rule={"tag": "vip"}, current_version=2)
    for version, owners in SEGMENT_MEMBERS.items():
        SegmentMember.objects.bulk_create(SegmentMember(segment=other, version=version, profile_id=ids[owner])
                                          for owner in owners)
    world.segments["others"] = {ids[owner] for owner in SEGMENT_MEMBERS[2]}
    return world


def _record(batch: FeedBatch, key: str, profile) -> None:
    SourceRecord.objects.create(source=batch.source, customer_key=key, profile=profile, row_digest="x",
                                first_batch=batch, last_batch=batch, loaded_at=timezone.now(), needs_resolution=False)


# --- values a rule may compare with: every stored value, its neighbours, and the awkward ones ------------------

def _number_pool(stored) -> list:
    pool = {0, -1, 1, 2, 0.5, 2.5, 30.5, 0.01, -0.01, 5539518.26, 5539518.25, 5539518.27, 1e30, -1e30, 1e-30,
            9999999999999999.99, 10 ** 20}
    for value in stored:
        if value is None or value == "":
            continue
        value = Decimal(value)
        for near in (value, value - Decimal("0.01"), value + Decimal("0.01"), value + Decimal("0.5")):
            pool.add(float(near))
        if value == value.to_integral_value():
            pool.add(int(value))
    return sorted(pool, key=lambda v: (float(v), repr(v)))


def _string_pool(stored, examples=()) -> list:
    pool = {"zzz", "%", "_", "a"} | {str(e) for e in examples if isinstance(e, str)}
    for value in stored:
        if value:
            pool |= {value, value.upper(), value.lower(), value[:1], value[:2], value[1:3]}
    return sorted(p for p in pool if p)


def _date_pool(stored: list[dt.date]) -> list:
    pool = {"2028-02-28", "2028-02-29", "1968-02-28"}
    for value in stored:
        for offset in (-1, 0, 1):
            pool.add((value + dt.timedelta(days=offset)).isoformat())
    relative = [{"days_ago": n} for n in (0, 1, 7, 8, 29, 30, 31, 32, 180, 181, 365, 366, 400, 728)]
    relative += [{"years_ago": n} for n in (0, 1, 35, 36, 57, 58, 59, 60, 61, 62, 120)]
    return sorted(pool) + relative


def _pools(world: ref.World) -> tuple[dict, dict, dict]:
    fields = {}
    for f in catalogue():
        stored = [p.values[f["name"]] for p in world.profiles.values()]
        if f["type"] == "number":
            fields[f["name"]] = _number_pool(stored)
        elif f["type"] in ("date", "datetime"):
            dates = [v if f["type"] == "date" else world.local_date(v) for v in stored if v is not None]
            fields[f["name"]] = _date_pool(dates)
        elif f["type"] == "choice":
            fields[f["name"]] = sorted(set(f["choices"]) | {v for v in stored if v})
        else:
            fields[f["name"]] = _string_pool(stored, f["examples"])
    activity = {}
    aggregates = {}
    for kind, kind_fields in activity_catalogue().items():
        rows = [r for r in world.rows if r.kind == kind]
        amounts = [world.amount_cny(r) for r in rows]
        activity[kind] = {}
        for f in kind_fields:
            stored = amounts if f["name"] == "amount" else [r.values[f["name"]] for r in rows]
            if f["type"] == "number":
                activity[kind][f["name"]] = _number_pool(stored)
            elif f["type"] == "choice":
                activity[kind][f["name"]] = sorted(set(f["choices"]) | {v for v in stored if v})
            else:
                activity[kind][f["name"]] = _string_pool(stored)
        # Sums of each profile's known amounts, on top of the single amounts.
        sums = {}
        for r, amount in zip(rows, amounts):
            if amount is not None:
                sums[r.owner] = sums.get(r.owner, Decimal(0)) + amount
        aggregates[kind] = _number_pool([*amounts, *sums.values()])
    return fields, activity, aggregates


# --- rules ---------------------------------------------------------------------------------------------------

def _comparison(draw, op: str, pool: list, kind: str, world: ref.World, today: dt.date):
    if op == "between":  # [low, high]: drawn in either order, given in order
        ends = [draw(st.sampled_from(pool)), draw(st.sampled_from(pool))]
        return sorted(ends, key=lambda v: ref.relative_date(v, today) if kind in ("date", "datetime")
                      else ref.number(v) if kind == "number" else v)
    if op in ("in", "not_in"):
        return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    return draw(st.sampled_from(pool))


def _condition(draw, name: str, spec: dict, pool: list, world: ref.World, today: dt.date) -> dict:
    op = draw(st.sampled_from(spec["ops"]))
    node = {"field": name, "op": op}
    if op not in ("is_null", "is_not_null"):
        node["value"] = _comparison(draw, op, pool, spec["type"], world, today)
    return node


def scenarios(world: ref.World, depth: int = 3):
    """(now, rule): a rule from the catalogue, nested up to `depth` groups deep, and the instant it is evaluated at."""
    fields, activity_pools, aggregate_pools = _pools(world)
    field_specs = {f["name"]: f for f in catalogue()}
    activity_specs = {k: {f["name"]: f for f in v} for k, v in activity_catalogue().items()}
    tags = sorted(TAGS)

    def field_leaf(draw, today):
        name = draw(st.sampled_from(sorted(field_specs)))
        return _condition(draw, name, field_specs[name], fields[name], world, today)

    def activity_leaf(draw, today):
        kind = draw(st.sampled_from(sorted(activity_specs)))
        specs = activity_specs[kind]
        body = {"kind": kind}
        where = draw(st.lists(st.sampled_from(sorted(specs)), max_size=2))
        if where:
            body["where"] = [_condition(draw, name, specs[name], activity_pools[kind][name], world, today)
                             for name in where]
        within = draw(st.none() | st.sampled_from(WITHIN_DAYS))
        if within is not None:
            body["within_days"] = within
        agg = draw(st.sampled_from(("exists", "count", "sum", "avg", "min", "max")))
        if agg == "exists":
            body["exists"] = draw(st.booleans())
            return {"activity": body}
        body["agg"] = agg
        if agg == "count":
            pool = [0, 1, 2, 3, 0.5, 2.5, -1, 1e30]
        else:
            number_fields = sorted(n for n, s in specs.items() if s["type"] == "number")
            body["field"] = draw(st.sampled_from(number_fields))
            pool = aggregate_pools[kind] if body["field"] == "amount" else activity_pools[kind][body["field"]]
        body["op"] = draw(st.sampled_from(("eq", "ne", "lt", "lte", "gt", "gte", "between")))
        body["value"] = _comparison(draw, body["op"], pool, "number", world, today)
        return {"activity": body}

    def node(draw, today, depth: int):
        shape = draw(st.sampled_from(("field", "activity", "tag", "segment") + (("all", "any", "not") if depth else ())))
        if shape == "field":
            return field_leaf(draw, today)
        if shape == "activity":
            return activity_leaf(draw, today)
        if shape == "tag":
            return {"tag": draw(st.sampled_from(tags))}
        if shape == "segment":
            return {"segment": "others"}
        if shape == "not":
            return {"not": node(draw, today, depth - 1)}
        return {shape: [node(draw, today, depth - 1) for _ in range(draw(st.integers(1, 3)))]}

    @st.composite
    def scenario(draw):
        now = draw(st.sampled_from(NOWS))
        return now, node(draw, world.local_date(now), depth)

    return scenario()


def _refreshed(segment: Segment, rule: dict, now: dt.datetime) -> set[int]:
    Segment.objects.filter(pk=segment.pk).update(rule=rule)
    segment.refresh_from_db()
    job = segment_refresh(segment=segment, now=now)
    return set(SegmentMember.objects.filter(segment=segment, version=job.version)
               .values_list("profile_id", flat=True))


def _tagged(tag: TagDefinition, rule: dict, now: dt.datetime) -> set[int]:
    TagDefinition.objects.filter(pk=tag.pk).update(rule=rule)
    tag.refresh_from_db()
    tag_rule_refresh(tag=tag, now=now)
    return set(TagAssignment.objects.filter(tag=tag).values_list("profile_id", flat=True))


def _not_for_tags(rule) -> bool:
    """Whether the rule uses a segment or a rule tag, which a tag rule may not."""
    if isinstance(rule, dict):
        return ("segment" in rule or TAGS.get(rule.get("tag"), ("",))[0] == "rule"
                or any(_not_for_tags(v) for v in rule.values()))
    return isinstance(rule, list) and any(_not_for_tags(v) for v in rule)


def test_compiled_rules_select_what_the_reference_evaluator_selects():
    world = _build_world()
    names = dict(zip(world.profiles, PROFILES))
    segment = Segment.objects.create(name="property", slug="property", rule={"tag": "vip"})
    rule_tag = TagDefinition.objects.create(code="property", name="property", kind="rule", rule={"tag": "vip"})

    def differences(got: set[int], expected: set[int]) -> str:
        return (f"extra {sorted(names[i] for i in got - expected)}, "
                f"missing {sorted(names[i] for i in expected - got)}")

    @hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                         database=None)
    @given(scenario=scenarios(world))
    def check(scenario):
        now, rule = scenario
        note(f"now={now.astimezone(TZ).isoformat()} rule={rule!r}")
        ctx = RuleContext(now=now)
        expected = ref.evaluate(rule, world, now)
        rule_validate(rule, ctx)
        preview = set(rule_queryset(rule, ctx).values_list("id", flat=True))
        assert preview == expected, f"preview: {differences(preview, expected)}"
        refreshed = _refreshed(segment, rule, now)
        assert refreshed == expected, f"segment refresh: {differences(refreshed, expected)}"
        if _not_for_tags(rule):
            with pytest.raises(RuleError):
                _tagged(rule_tag, rule, now)
        else:
            tagged = _tagged(rule_tag, rule, now)
            assert tagged == expected, f"rule tag refresh: {differences(tagged, expected)}"

    check()


# --- invalid rules ---------------------------------------------------------------------------------------------

NOT_A_NUMBER = (math.nan, math.inf, -math.inf, float("1e999"), True, False, "30", None, [30], {"n": 30})
BAD_LEAVES = (
    *({"field": "age", "op": "eq", "value": v} for v in NOT_A_NUMBER),
    *({"field": "total_deposits", "op": "between", "value": [0, v]} for v in NOT_A_NUMBER),
    *({"field": "record_count", "op": "in", "value": [1, v]} for v in NOT_A_NUMBER),
    *({"activity": {"kind": "card_transactions", "agg": "sum", "field": "amount", "op": "gte", "value": v}}
      for v in NOT_A_NUMBER),
    *({"activity": {"kind": "holdings", "agg": "count", "op": "lt", "value": v}} for v in NOT_A_NUMBER),
    *({"activity": {"kind": "card_transactions", "where": [{"field": "installments", "op": "eq", "value": v}],
                    "exists": True}} for v in NOT_A_NUMBER),
    {"field": "age", "op": "in", "value": []},
    {"field": "city", "op": "not_in", "value": []},
    {"field": "age", "op": "in", "value": list(range(1001))},
    {"field": "age", "op": "between", "value": [1]},
    {"field": "age", "op": "between", "value": [1, 2, 3]},
    {"field": "age", "op": "between", "value": 5},
    {"field": "age", "op": "contains", "value": "3"},
    {"field": "city", "op": "lt", "value": "a"},
    {"field": "city", "op": "eq", "value": ""},
    {"field": "city", "op": "eq", "value": 5},
    {"field": "city", "op": "in", "value": ["Shanghai", ""]},
    {"field": "no_such_field", "op": "eq", "value": 1},
    {"field": "age", "op": "almost", "value": 1},
    {"field": "age", "op": "eq"},
    {"field": "birth_date", "op": "lt", "value": {"years_ago": 5000}},
    {"field": "birth_date", "op": "lt", "value": {"years_ago": -8000}},
    {"field": "birth_date", "op": "lt", "value": {"days_ago": 10 ** 6}},
    {"field": "birth_date", "op": "lt", "value": {"days_ago": 1e999}},
    {"field": "birth_date", "op": "lt", "value": {"days_ago": math.nan}},
    {"field": "birth_date", "op": "between", "value": ["2020-01-01", {"years_ago": 36500}]},
    {"field": "created_at", "op": "gte", "value": "2026-02-30"},
    {"field": "created_at", "op": "gte", "value": 20260101},
    {"tag": ""},
    {"tag": 5},
    {"activity": {"kind": "loans", "exists": True}},
    {"activity": {"kind": "transactions", "agg": "median", "field": "amount", "op": "gt", "value": 1}},
    {"activity": {"kind": "transactions", "agg": "sum", "field": "kind", "op": "gt", "value": 1}},
    {"activity": {"kind": "transactions", "agg": "sum", "field": "amount", "op": "contains", "value": 1}},
    {"activity": {"kind": "transactions", "within_days": -1, "exists": True}},
    {"activity": {"kind": "transactions", "within_days": 1e999, "exists": True}},
    {"activity": {"kind": "transactions", "exists": "yes"}},
    {"activity": {"kind": "transactions", "where": [{"field": "mcc", "op": "eq", "value": "4511"}], "exists": True}},
    {"activity": {"kind": "accounts", "where": [{"field": "amount", "op": "gt", "value": math.nan}],
                  "exists": True}},
    {"all": []},
    {"any": []},
    {"not": []},
    {"all": {"tag": "vip"}},
    {},
    [],
    "vip",
)


def _placed(leaf, shape: list[tuple[str, int]]) -> tuple[dict, str]:
    """The bad leaf at the bottom of a nesting of groups beside good siblings, and the path the README gives it."""
    rule, path = leaf, ""
    for group, position in reversed(shape):
        if group == "not":
            rule = {"not": rule}
        else:
            siblings = [{"field": "city", "op": "eq", "value": "Shanghai"}, {"field": "age", "op": "gte", "value": 18}]
            rule = {group: [*siblings[:position], rule, *siblings[position:]]}
    for group, position in shape:
        path = f"{path}.{group}" if path else group
        if group != "not":
            path += f"[{position}]"
    return rule, path


@hypothesis_settings(max_examples=300, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leaf=st.sampled_from(BAD_LEAVES),
       shape=st.lists(st.tuples(st.sampled_from(("all", "any", "not")), st.integers(0, 2)), max_size=3),
       now=st.sampled_from(NOWS))
def test_a_bad_rule_is_refused_with_the_path_of_its_node(db, leaf, shape, now):
    rule, path = _placed(leaf, shape)
    note(f"rule={rule!r}")
    ctx = RuleContext(now=now)
    with pytest.raises(RuleError) as refused:
        rule_validate(rule, ctx)
    assert refused.value.path.startswith(path), (refused.value.path, path)
    with pytest.raises(RuleError):
        list(rule_queryset(rule, ctx))
