"""A reference evaluator of the rule language in plain Python, written from the README's "Rule language" section
and the binding semantics of issue 23, not from `segments/rules.py`: the property test compares the compiled query
with it over the same hand-built world.

It is deliberately naive: every rule is evaluated profile by profile, every number is a `Decimal`, every date is a
local date. Only valid rules are given to it (the test checks refusals separately).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

TIMESTAMP_KINDS = {"transactions", "card_transactions"}  # the other kinds (accounts, holdings) have a date


@dataclass
class Profile:
    id: int
    live: bool
    values: dict  # catalogue field name -> stored value (None for a profile without metrics, for metric fields)


@dataclass
class Row:
    kind: str  # transactions, card_transactions, accounts, holdings
    owner: int | None  # the profile of the row's source record (None: no record, or a record without a profile)
    when: dt.datetime | dt.date  # occurred_at for timestamp kinds; opening date (accounts) or holding date
    snapshot: dt.date | None  # accounts and holdings: the date of the snapshot, whose rate converts the stock
    amount: Decimal
    currency: str
    values: dict  # the activity catalogue's other fields


@dataclass
class World:
    tz: dt.tzinfo
    field_types: dict[str, str]  # catalogue name -> string, choice, number, date, datetime
    activity_types: dict[str, dict[str, str]]  # kind -> field name -> type
    profiles: dict[int, Profile] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    rates: dict[str, list[tuple[dt.date, Decimal]]] = field(default_factory=dict)  # currency -> (as_of, rate)
    tags: list[tuple[int, str, dt.datetime | None]] = field(default_factory=list)  # (profile, code, expires_at)
    segments: dict[str, set[int]] = field(default_factory=dict)  # slug -> the profiles of its current version

    def live(self) -> set[int]:
        return {p.id for p in self.profiles.values() if p.live}

    def local_date(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(self.tz).date()

    def amount_cny(self, row: Row) -> Decimal | None:
        """CNY as is; else the latest rate on or before the row's local day (a flow) or its snapshot (a stock)."""
        if row.currency == "CNY":
            return row.amount
        day = self.local_date(row.when) if row.kind in TIMESTAMP_KINDS else row.snapshot
        known = [(as_of, rate) for as_of, rate in self.rates.get(row.currency, []) if as_of <= day]
        if not known:
            return None
        return row.amount * max(known)[1]


def number(value) -> Decimal:
    """A JSON number is the decimal it is written as: a float by its shortest repr."""
    assert not isinstance(value, bool)
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def relative_date(value, today: dt.date) -> dt.date:
    if isinstance(value, str):
        return dt.date.fromisoformat(value)
    if "days_ago" in value:
        return today - dt.timedelta(days=value["days_ago"])
    year = today.year - value["years_ago"]
    try:
        return today.replace(year=year)
    except ValueError:  # 29 February in a year without one
        return dt.date(year, 2, 28)


def _target(value, kind: str, today: dt.date):
    if kind == "number":
        return number(value)
    if kind in ("date", "datetime"):
        return relative_date(value, today)
    return value


def missing(value) -> bool:
    return value is None or value == ""


def compare(stored, op: str, value, kind: str, world: World, today: dt.date) -> bool:
    """One comparison of a stored value (or an aggregate) with a rule's value; missing never compares."""
    if op == "is_null":
        return missing(stored)
    if op == "is_not_null":
        return not missing(stored)
    if missing(stored):
        return False
    if kind == "datetime":
        stored = world.local_date(stored)
    if op in ("in", "not_in"):
        found = stored in [_target(v, kind, today) for v in value]
        return found if op == "in" else not found
    if op == "between":
        low, high = (_target(v, kind, today) for v in value)
        return low <= stored <= high
    target = _target(value, kind, today)
    if op == "contains":
        return target.lower() in stored.lower()
    if op == "startswith":
        return stored.lower().startswith(target.lower())
    return {"eq": stored == target, "ne": stored != target, "lt": stored < target, "lte": stored <= target,
            "gt": stored > target, "gte": stored >= target}[op]


def evaluate(rule: dict, world: World, now: dt.datetime) -> set[int]:
    """The ids of the live profiles the rule selects at `now`."""
    today = world.local_date(now)
    live = world.live()
    if "all" in rule:
        result = set(live)
        for child in rule["all"]:
            result &= evaluate(child, world, now)
        return result
    if "any" in rule:
        result = set()
        for child in rule["any"]:
            result |= evaluate(child, world, now)
        return result
    if "not" in rule:
        return live - evaluate(rule["not"], world, now)
    if "tag" in rule:
        return {pid for pid, code, expires_at in world.tags
                if code == rule["tag"] and (expires_at is None or expires_at > now)} & live
    if "segment" in rule:
        return world.segments[rule["segment"]] & live
    if "field" in rule:
        kind = world.field_types[rule["field"]]
        return {pid for pid in live
                if compare(world.profiles[pid].values[rule["field"]], rule["op"], rule.get("value"), kind, world,
                           today)}
    if "activity" in rule:
        return _activity(rule["activity"], world, now, today, live)
    raise AssertionError(f"the reference evaluator does not know {rule!r}")


def _row_value(row: Row, name: str, world: World):
    return world.amount_cny(row) if name == "amount" else row.values[name]


def _activity(body: dict, world: World, now: dt.datetime, today: dt.date, live: set[int]) -> set[int]:
    kind = body["kind"]
    types = world.activity_types[kind]
    rows = [r for r in world.rows if r.kind == kind and r.owner in live]
    if "within_days" in body:
        days = body["within_days"]
        if kind in TIMESTAMP_KINDS:
            rows = [r for r in rows if now - dt.timedelta(days=days) <= r.when <= now]
        else:
            rows = [r for r in rows if today - dt.timedelta(days=days) <= r.when <= today]
    for cond in body.get("where", []):
        rows = [r for r in rows if compare(_row_value(r, cond["field"], world), cond["op"], cond.get("value"),
                                           types[cond["field"]], world, today)]
    by_profile: dict[int, list[Row]] = {pid: [] for pid in live}
    for r in rows:
        by_profile[r.owner].append(r)
    if "agg" not in body:
        having = {pid for pid, own in by_profile.items() if own}
        return having if body.get("exists", True) else live - having
    selected = set()
    for pid, own in by_profile.items():
        if body["agg"] == "count":
            result = Decimal(len(own))
        else:
            known = [v for v in (_row_value(r, body["field"], world) for r in own) if v is not None]
            if body["agg"] == "sum":
                result = sum(known, Decimal(0))
            elif not known:
                result = None
            elif body["agg"] == "avg":
                with localcontext() as ctx:
                    ctx.prec = 60
                    result = sum(known, Decimal(0)) / len(known)
            else:
                result = min(known) if body["agg"] == "min" else max(known)
        if compare(result, body["op"], body["value"], "number", world, today):
            selected.add(pid)
    return selected
