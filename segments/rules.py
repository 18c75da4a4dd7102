"""The rule language: field catalogue, validation with paths, compilation to one ORM query, explain.

A rule is JSON: groups {"all": [...]}, {"any": [...]}, {"not": {...}}; leaves {"field", "op", "value"},
{"tag": code}, {"segment": slug}, {"activity": {kind, where, within_days, agg, field, op, value | exists}}. Every node type is one entry of NODE_TYPES (validate, compile, explain,
inputs) and every queryable attribute one entry of FIELDS, so a new node type (activity) or new catalogue fields
(derived metrics) are added in one place each. Values reach SQL only as query parameters, through the ORM.
"""
from __future__ import annotations

import calendar
import datetime as dt
import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from decimal import Decimal

from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.db.models import (
    Avg, Case, Count, DecimalField, Exists, ExpressionWrapper, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum,
    Value, When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from privacy.policy import is_personal, mask_value
from profiles.models import CustomerProfile
from tags.models import TagAssignment, TagDefinition

MAX_LIST = 1000
MAX_DEPTH = 12
# Groups, negations and leaves (an activity's `where` conditions included): a rule past this is refused before
# anything of it is looked up or compiled, so no request can make one query of thousands of conditions.
MAX_RULE_NODES = 500


class RuleError(Exception):
    """A rule that cannot be used; `path` names the bad node, e.g. `all[2].value`."""

    def __init__(self, message: str, path: str = ""):
        self.message = message
        self.path = path or "rule"
        super().__init__(f"{self.path}: {message}")


# --- the field catalogue ---------------------------------------------------------------------------------------

STRING_OPS = ("eq", "ne", "in", "not_in", "contains", "startswith", "is_null", "is_not_null")
CHOICE_OPS = ("eq", "ne", "in", "not_in", "is_null", "is_not_null")
ORDERED_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "is_null", "is_not_null")
DATE_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "is_null", "is_not_null")
TYPE_OPS = {"string": STRING_OPS, "choice": CHOICE_OPS, "number": ORDERED_OPS, "date": DATE_OPS,
            "datetime": DATE_OPS}
ALL_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "contains", "startswith", "is_null",
           "is_not_null")


@dataclass(frozen=True)
class CatalogueField:
    name: str
    label: str
    type: str  # string, choice, number, date, datetime
    path: str  # ORM path from CustomerProfile
    examples: tuple = ()
    choices: tuple = ()
    # What a refresh depends on: "profiles" for golden attributes; e.g. "activity:card_transactions" later.
    input: str = "profiles"

    @property
    def ops(self) -> tuple[str, ...]:
        return TYPE_OPS[self.type]

    @property
    def personal(self) -> bool:
        """Whether the privacy policy counts the field as personal: rules testing it need the right to see it."""
        return self.input == "profiles" and is_personal(self.name)

    def as_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "type": self.type, "ops": list(self.ops),
                "examples": list(self.examples), "choices": list(self.choices), "personal": self.personal}


FIELDS: dict[str, CatalogueField] = {}


def register_field(catalogue_field: CatalogueField) -> None:
    FIELDS[catalogue_field.name] = catalogue_field


for _f in (
    CatalogueField("full_name", "Full name", "string", "full_name", ("张伟", "Li Na")),
    CatalogueField("family_name", "Family name", "string", "family_name", ("王", "Chen")),
    CatalogueField("given_name", "Given name", "string", "given_name", ("芳",)),
    CatalogueField("gender", "Gender", "choice", "gender", ("F",), choices=("M", "F", "U")),
    CatalogueField("birth_date", "Birth date", "date", "birth_date", ("1980-05-01", {"years_ago": 60})),
    CatalogueField("id_type", "Id document type", "choice", "id_type", ("CN_RESIDENT",),
                   choices=("CN_RESIDENT", "PASSPORT", "OTHER")),
    CatalogueField("phone", "Mobile phone (E.164)", "string", "phone", ("+86138",)),
    CatalogueField("email", "Email", "string", "email", ("@qq.com",)),
    CatalogueField("address", "Address", "string", "address", ("朝阳区",)),
    CatalogueField("city", "City", "string", "city", ("Shanghai", "北京")),
    CatalogueField("postcode", "Postcode", "string", "postcode", ("100020",)),
    CatalogueField("record_count", "Source records", "number", "record_count", (2,)),
    CatalogueField("created_at", "First seen", "datetime", "created_at", ({"days_ago": 30}, "2025-01-01")),
):
    register_field(_f)

# Metrics and derived attributes (profiles.metrics), through the profile's metrics row; a profile whose metrics
# were never computed has no value for them. They move with the calendar, so rules using them refresh daily.
for _f in (
    CatalogueField("lifecycle_stage", "Lifecycle stage", "choice", "metrics__lifecycle_stage", ("dormant",),
                   choices=("prospect", "new", "active", "growing", "declining", "dormant", "churned"),
                   input="metrics"),
    CatalogueField("value_tier", "Value tier", "choice", "metrics__value_tier", ("high",),
                   choices=("high", "mid", "low"), input="metrics"),
    CatalogueField("total_deposits", "Total deposits (CNY)", "number", "metrics__total_deposits", (100000,),
                   input="metrics"),
    CatalogueField("aum", "Assets under management (CNY)", "number", "metrics__aum", (500000,), input="metrics"),
    CatalogueField("loan_balance", "Loan balance (CNY)", "number", "metrics__loan_balance", (0,), input="metrics"),
    CatalogueField("card_limit", "Card limit (CNY)", "number", "metrics__card_limit", (20000,), input="metrics"),
    CatalogueField("card_utilisation", "Card utilisation (share of limit)", "number", "metrics__card_utilisation",
                   (0.8,), input="metrics"),
    CatalogueField("card_spend_30d", "Card spend, 30 days (CNY)", "number", "metrics__card_spend_30d", (3000,),
                   input="metrics"),
    CatalogueField("card_spend_90d", "Card spend, 90 days (CNY)", "number", "metrics__card_spend_90d", (5000,),
                   input="metrics"),
    CatalogueField("card_spend_365d", "Card spend, 365 days (CNY)", "number", "metrics__card_spend_365d",
                   (20000,), input="metrics"),
    CatalogueField("salary_monthly", "Monthly salary credited (CNY)", "number", "metrics__salary_monthly",
                   (10000,), input="metrics"),
    CatalogueField("last_activity_at", "Last customer-initiated activity", "datetime",
                   "metrics__last_activity_at", ({"days_ago": 180},), input="metrics"),
    CatalogueField("tenure_months", "Tenure (months)", "number", "metrics__tenure_months", (24,), input="metrics"),
    CatalogueField("age", "Age (years)", "number", "metrics__age", (60,), input="metrics"),
    CatalogueField("risk_level", "Wealth risk level", "choice", "metrics__risk_level", ("C3",),
                   choices=("C1", "C2", "C3", "C4", "C5"), input="metrics"),
    CatalogueField("clv", "Customer lifetime value (CNY)", "number", "metrics__clv", (10000,), input="metrics"),
    CatalogueField("churn_risk", "Churn risk (0-100)", "number", "metrics__churn_risk", (60,), input="metrics"),
):
    register_field(_f)


def catalogue() -> list[dict]:
    return [f.as_dict() for f in FIELDS.values()]


# --- context ---------------------------------------------------------------------------------------------------

@dataclass
class RuleContext:
    """What a rule is checked and evaluated against: the clock (relative dates) and where it is used."""

    now: dt.datetime = dc_field(default_factory=timezone.now)
    segment_slug: str | None = None  # the segment being defined: it must not refer back to itself
    allow_segments: bool = True  # tag rules may not use segments (tags feed segments, not the other way)
    segment_rules: Callable[[str], tuple[bool, dict | None]] | None = None  # slug -> (exists, rule)
    # While compiling inside `all` groups: what the node's siblings require (the profiles the whole group can select
    # are among them). An activity node aggregates only their rows instead of every profile's.
    candidates: Q | None = None
    # Tag code -> (id, kind), or None for an unknown code: every tag of a rule looked up in one query
    # (_tags_look_up), shared by the copies of the context made while compiling.
    tags: dict[str, tuple[int, str] | None] = dc_field(default_factory=dict)

    @property
    def today(self) -> dt.date:
        return timezone.localtime(self.now).date()


def _segment_lookup(slug: str) -> tuple[bool, dict | None]:
    from .models import Segment  # the model module imports nothing from here; kept local to avoid a cycle
    row = Segment.objects.filter(slug=slug).values_list("rule", flat=True)
    return (True, row[0]) if row else (False, None)


# --- node types ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeType:
    key: str
    validate: Callable[[dict, str, RuleContext, tuple], None]
    compile: Callable[[dict, RuleContext], Q]
    explain_value: Callable[[dict, RuleContext, CustomerProfile], object]
    inputs: Callable[[dict], set[str]]
    children: Callable[[dict, str], list[tuple[dict, str]]] = lambda node, path: []


NODE_TYPES: dict[str, NodeType] = {}


def register_node_type(node_type: NodeType) -> None:
    NODE_TYPES[node_type.key] = node_type


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path and not part.startswith("[") else f"{path}{part}"


def _node_type(node, path: str) -> NodeType:
    if not isinstance(node, dict):
        raise RuleError("a rule node must be an object", path)
    keys = [k for k in node if k in NODE_TYPES]
    if len(keys) != 1:
        raise RuleError(f"a rule node needs exactly one of {', '.join(NODE_TYPES)}", path)
    return NODE_TYPES[keys[0]]


def _only_keys(node: dict, allowed: set[str], path: str) -> None:
    extra = sorted(set(node) - allowed)
    if extra:
        raise RuleError(f"unknown key {extra[0]!r}", _join(path, extra[0]))


def _rule_nodes(rule):
    """Every node of a rule, however malformed (validation says what is wrong), without recursion."""
    stack = [rule]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node
        for key in ("all", "any"):
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        if "not" in node:
            stack.append(node["not"])
        activity = node.get("activity")
        if isinstance(activity, dict) and isinstance(activity.get("where"), list):
            stack.extend(activity["where"])


# PostgreSQL cannot store or compare a NUL; a lone surrogate cannot be encoded to reach the database at all.
_UNUSABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def _check_strings(node: dict, path: str) -> None:
    """Refuse a NUL or a lone surrogate in any key or string of the node, its child nodes aside (validated in their
    turn). The API refuses them at its edge; this covers the admin and rules stored past it."""
    stack = [(key, value) for key, value in node.items() if key not in ("all", "any", "not")]
    while stack:
        key, value = stack.pop()
        if any(isinstance(text, str) and _UNUSABLE_CHARACTERS.search(text) for text in (key, value)):
            raise RuleError("holds a NUL character or a lone surrogate", path)
        if isinstance(value, dict):
            stack.extend(value.items())
        elif isinstance(value, list):
            stack.extend((key, item) for item in value)


def _check_size(rule) -> list[str]:
    """Refuse a rule of more than MAX_RULE_NODES nodes; the tag codes it names."""
    codes = []
    for count, node in enumerate(_rule_nodes(rule), start=1):
        if count > MAX_RULE_NODES:
            raise RuleError(f"a rule has at most {MAX_RULE_NODES} conditions and groups")
        if isinstance(node.get("tag"), str) and not _UNUSABLE_CHARACTERS.search(node["tag"]):
            codes.append(node["tag"])  # one with unusable characters is refused when its node is validated
    return codes


def _tags_look_up(codes, ctx: RuleContext) -> None:
    missing = set(codes) - set(ctx.tags)
    if missing:
        ctx.tags.update(dict.fromkeys(missing))
        ctx.tags.update((code, (pk, kind)) for code, pk, kind in
                        TagDefinition.objects.filter(code__in=missing).values_list("code", "pk", "kind"))


def _tag(code: str, ctx: RuleContext) -> tuple[int, str] | None:
    _tags_look_up([code], ctx)
    return ctx.tags[code]


def _validate(node, path: str, ctx: RuleContext, seen: tuple, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise RuleError(f"rules nest at most {MAX_DEPTH} levels", path)
    node_type = _node_type(node, path)
    _check_strings(node, path)
    node_type.validate(node, path, ctx, seen)
    for child, child_path in node_type.children(node, path):
        _validate(child, child_path, ctx, seen, depth + 1)


# groups

def _group_children(key: str):
    def children(node: dict, path: str) -> list[tuple[dict, str]]:
        return [(child, _join(path, f"{key}[{i}]")) for i, child in enumerate(node[key])]
    return children


def _validate_group(key: str):
    def validate(node: dict, path: str, ctx: RuleContext, seen: tuple) -> None:
        _only_keys(node, {key}, path)
        if not isinstance(node[key], list) or not node[key]:
            raise RuleError("needs a non-empty list of conditions", _join(path, key))
    return validate


def _has_activity(node) -> bool:
    if isinstance(node, dict):
        return "activity" in node or any(_has_activity(v) for v in node.values())
    return isinstance(node, list) and any(_has_activity(v) for v in node)


def _compile_group(key: str):
    def compile_group(node: dict, ctx: RuleContext) -> Q:
        children = node[key]
        cheap = {i: compile_node(child, ctx) for i, child in enumerate(children) if not _has_activity(child)}
        # An activity child that only profiles with rows can pass drives the group: its aggregate, restricted to the
        # profiles that pass the other children, is the whole group's answer for them (evaluated once, not twice).
        driver = next((i for i, child in enumerate(children) if key == "all" and cheap
                       and _activity_needs_rows(child)), None)
        result = Q()
        for i, child in enumerate(children):
            if i in cheap:
                if driver is not None:
                    continue
                child_q = cheap[i]
            elif key == "all":
                # A profile this group selects passes every sibling: the activity below need look at no other.
                candidates = ctx.candidates
                for j, q in cheap.items():
                    candidates = q if candidates is None else candidates & q
                child_q = compile_node(child, replace(ctx, candidates=candidates))
            else:
                child_q = compile_node(child, ctx)
            result = child_q if not result else (result & child_q if key == "all" else result | child_q)
        return result
    return compile_group


def _no_value(node, ctx, profile):
    return None


def _children_inputs(key: str):
    def inputs(node: dict) -> set[str]:
        children = node[key] if isinstance(node[key], list) else [node[key]]
        return set().union(*(rule_inputs(c) for c in children))
    return inputs


for _key in ("all", "any"):
    register_node_type(NodeType(_key, _validate_group(_key), _compile_group(_key), _no_value, _children_inputs(_key),
                                _group_children(_key)))


def _validate_not(node: dict, path: str, ctx: RuleContext, seen: tuple) -> None:
    _only_keys(node, {"not"}, path)


register_node_type(NodeType(
    "not", _validate_not, lambda node, ctx: ~compile_node(node["not"], ctx), _no_value, _children_inputs("not"),
    lambda node, path: [(node["not"], _join(path, "not"))],
))


# field leaves

def _relative_date(value: dict, path: str, today: dt.date | None) -> dt.date | None:
    if len(value) != 1 or next(iter(value)) not in ("days_ago", "years_ago"):
        raise RuleError('a relative date is {"days_ago": N} or {"years_ago": N}', path)
    unit, amount = next(iter(value.items()))
    if isinstance(amount, bool) or not isinstance(amount, int) or not -36500 <= amount <= 36500:
        raise RuleError(f"{unit} must be a whole number of {unit.split('_')[0]}", _join(path, unit))
    if today is None:
        return None
    try:
        if unit == "days_ago":
            return today - dt.timedelta(days=amount)
        year = today.year - amount
        if (today.month, today.day) == (2, 29) and 1 <= year <= 9999 and not calendar.isleap(year):
            return dt.date(year, 2, 28)
        return today.replace(year=year)
    except (ValueError, OverflowError):
        raise RuleError("falls outside the years 1 to 9999", _join(path, unit)) from None


def _number(value, path: str) -> Decimal:
    """A number of a rule as the exact decimal it is written as: a float from a JSON parser by its shortest repr."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise RuleError("expects a number", path)
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise RuleError("expects a finite number", path)
    return number


def _scalar(value, field: CatalogueField, path: str, today: dt.date | None):
    """Check one value against the field's type; with `today`, return what SQL compares with."""
    if field.type in ("date", "datetime"):
        if isinstance(value, dict):
            return _relative_date(value, path, today)
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                pass
        raise RuleError('expects a date "YYYY-MM-DD" or a relative date such as {"days_ago": 30}', path)
    if field.type == "number":
        return _number(value, path)
    if not isinstance(value, str) or not value:
        raise RuleError("expects a non-empty string", path)
    if field.type == "choice" and value not in field.choices:
        raise RuleError(f"expects one of {', '.join(field.choices)}", path)
    return value


def _leaf_values(node: dict, field: CatalogueField, path: str, today: dt.date | None):
    op, value_path = node["op"], _join(path, "value")
    value = node.get("value")
    if op in ("is_null", "is_not_null"):
        if value is not None:
            raise RuleError(f"{op} takes no value", value_path)
        return None
    if "value" not in node:
        raise RuleError(f"{op} needs a value", value_path)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > MAX_LIST:
            raise RuleError(f"{op} expects a list of 1 to {MAX_LIST} values", value_path)
        return [_scalar(v, field, _join(value_path, f"[{i}]"), today) for i, v in enumerate(value)]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RuleError("between expects a list [low, high]", value_path)
        low, high = (_scalar(v, field, _join(value_path, f"[{i}]"), today) for i, v in enumerate(value))
        # Fixed bounds in the wrong order are a mistake; a window with a relative end can pass the other end as
        # time goes on, and then selects nobody, so that a saved segment does not start failing its refreshes.
        if today is not None and low > high and not any(isinstance(v, dict) for v in value):
            raise RuleError("between expects low <= high", value_path)
        return [low, high]
    return _scalar(value, field, value_path, today)


def _validate_field(node: dict, path: str, ctx: RuleContext, seen: tuple) -> None:
    _validate_leaf(node, path, ctx, FIELDS, "the field catalogue")


def _validate_leaf(node, path: str, ctx: RuleContext, fields: dict[str, CatalogueField], where: str) -> None:
    if not isinstance(node, dict) or "field" not in node:
        raise RuleError('a condition is {"field": ..., "op": ..., "value": ...}', path)
    _only_keys(node, {"field", "op", "value"}, path)
    field = fields.get(node["field"]) if isinstance(node["field"], str) else None
    if field is None:
        raise RuleError(f"unknown field {node['field']!r}; see {where}", _join(path, "field"))
    op = node.get("op")
    if op not in field.ops:
        raise RuleError(f"{field.name} takes the operators {', '.join(field.ops)}", _join(path, "op"))
    _leaf_values(node, field, path, ctx.today)


def _compile_field(node: dict, ctx: RuleContext) -> Q:
    return _compile_leaf(node, FIELDS[node["field"]], ctx, CustomerProfile)


# Matches no row, and compiles to SQL (`id IS NULL`): an empty `in` list would make the ORM abandon the whole query
# (EmptyResultSet), and its negation must still be "every row".
NOTHING = Q(pk__isnull=True)

_INTEGER_TYPES = frozenset(("SmallIntegerField", "IntegerField", "BigIntegerField", "PositiveSmallIntegerField",
                            "PositiveIntegerField", "PositiveBigIntegerField"))


def _integer_range(model, path: str) -> tuple[int, int] | None:
    """The range of the integer column at `path` (an ORM path from `model`); None for a decimal column or an
    annotation (the CNY amounts)."""
    field = None
    for part in path.split("__"):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return None
        model = field.related_model
    internal = field.get_internal_type()
    return connection.ops.integer_field_range(internal) if internal in _INTEGER_TYPES else None


def _integer_bounds(op: str, value) -> tuple[Decimal | None, Decimal | None]:
    """The integers n with `n op value` as [low, high] (None: unbounded); low > high when there are none."""
    if op == "eq":
        return (value, value) if value == value.to_integral_value() else (Decimal(1), Decimal(0))
    if op == "between":
        return value[0].to_integral_value(rounding="ROUND_CEILING"), value[1].to_integral_value(rounding="ROUND_FLOOR")
    ceiling, floor = value.to_integral_value(rounding="ROUND_CEILING"), value.to_integral_value(rounding="ROUND_FLOOR")
    return {"lt": (None, ceiling - 1), "lte": (None, floor), "gt": (floor + 1, None), "gte": (ceiling, None)}[op]


def number_condition(path: str, op: str, value, integer_range: tuple[int, int] | None, has_value: Q) -> Q:
    """`path op value` compared exactly (value: a Decimal, or a list of them for between / in / not_in).

    An integer column is compared with the integers the value admits (age < 30.5 is age <= 30), clamped to the
    column's range: the ORM turns an out-of-range integer into "every row" or "no row", dropping the condition and
    with it "false on a missing value". A comparison holds only where the column has a value."""
    if op in ("ne", "not_in"):
        return has_value & ~number_condition(path, "eq" if op == "ne" else "in", value, integer_range, has_value)
    if integer_range is None:
        lookup = {"eq": "exact", "lt": "lt", "lte": "lte", "gt": "gt", "gte": "gte", "between": "range", "in": "in"}
        return Q(**{f"{path}__{lookup[op]}": value})
    smallest, largest = integer_range
    if op == "in":
        whole = sorted({int(v) for v in value if v == v.to_integral_value() and smallest <= v <= largest})
        return Q(**{f"{path}__in": whole}) if whole else NOTHING
    low, high = _integer_bounds(op, value)
    if (low is not None and low > largest) or (high is not None and high < smallest) or \
            (low is not None and high is not None and low > high):
        return NOTHING
    if low == high:
        return Q(**{path: int(low)})
    bounds = [Q(**{f"{path}__gte": int(low)})] if low is not None and low > smallest else []
    bounds += [Q(**{f"{path}__lte": int(high)})] if high is not None and high < largest else []
    # A bound is false on a missing value by itself; with none left, "has a value" is the whole condition.
    return functools.reduce(operator.and_, bounds) if bounds else has_value


def _compile_leaf(node: dict, field: CatalogueField, ctx: RuleContext, model) -> Q:
    op = node["op"]
    value = _leaf_values(node, field, "", ctx.today)
    path = f"{field.path}__date" if field.type == "datetime" else field.path
    has_value = Q(**{f"{field.path}__isnull": False})
    if field.type in ("string", "choice"):
        has_value &= ~Q(**{field.path: ""})
    if op == "is_null":
        return ~has_value
    if op == "is_not_null":
        return has_value
    if field.type == "number":
        condition = number_condition(path, op, value, _integer_range(model, field.path), has_value)
    else:
        # Comparisons are false on a missing value: SQL gives that for free, except for ne and not_in ("has a value
        # other than ..."), which say so explicitly. Values are never empty strings (validation), so an empty string
        # never compares equal either.
        lookup = {"eq": "exact", "lt": "lt", "lte": "lte", "gt": "gt", "gte": "gte", "between": "range", "in": "in",
                  "contains": "icontains", "startswith": "istartswith", "ne": "exact", "not_in": "in"}[op]
        condition = Q(**{f"{path}__{lookup}": value})
        condition = has_value & ~condition if op in ("ne", "not_in") else condition
    if "__" in field.path:
        # Across the outer join to a related row (the metrics) a comparison is NULL, not false, where the row is
        # missing, and NOT or OR above it keep the NULL: the profile would drop out of both a condition and its
        # negation. Its column may be NOT NULL, so the ORM adds no IS NOT NULL of its own.
        condition = has_value & condition
    return condition


def _explain_field(node: dict, ctx: RuleContext, profile: CustomerProfile):
    value = CustomerProfile.objects.filter(pk=profile.pk).values_list(FIELDS[node["field"]].path, flat=True).first()
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).isoformat()
    return value.isoformat() if isinstance(value, dt.date) else value


register_node_type(NodeType("field", _validate_field, _compile_field, _explain_field,
                            lambda node: {FIELDS[node["field"]].input}))


# tags

def _validate_tag(node: dict, path: str, ctx: RuleContext, seen: tuple) -> None:
    _only_keys(node, {"tag"}, path)
    code = node["tag"]
    row = _tag(code, ctx) if isinstance(code, str) else None
    if row is None:
        raise RuleError(f"unknown tag {code!r}", _join(path, "tag"))
    if not ctx.allow_segments and row[1] == TagDefinition.Kind.RULE:
        raise RuleError("a tag rule cannot use another rule tag", _join(path, "tag"))


def _tag_assignments(node: dict, ctx: RuleContext):
    # By the tag's id, looked up beforehand: joined to the definitions by code, the planner cannot tell how many
    # profiles hold the tag, misjudges the candidates of an activity node beside it and scans its activity table.
    row = _tag(node["tag"], ctx)
    tag_id = row and row[0]
    return TagAssignment.objects.filter(TagAssignment.active_q(ctx.now), tag_id=tag_id)


def _explain_tag(node: dict, ctx: RuleContext, profile: CustomerProfile):
    row = _tag_assignments(node, ctx).filter(profile=profile).values("source", "assigned_at", "expires_at").first()
    return {"source": row["source"], "assigned_at": row["assigned_at"].isoformat(),
            "expires_at": row["expires_at"] and row["expires_at"].isoformat()} if row else None


register_node_type(NodeType(
    "tag", _validate_tag,
    lambda node, ctx: Q(Exists(_tag_assignments(node, ctx).filter(profile=OuterRef("pk")))),
    _explain_tag, lambda node: {f"tag:{node['tag']}"},
))


# segments

def _validate_segment(node: dict, path: str, ctx: RuleContext, seen: tuple) -> None:
    _only_keys(node, {"segment"}, path)
    slug = node["segment"]
    if not ctx.allow_segments:
        raise RuleError("a tag rule cannot use segments", _join(path, "segment"))
    if not isinstance(slug, str):
        raise RuleError("expects a segment slug", _join(path, "segment"))
    chain = seen + (slug,)
    if slug == ctx.segment_slug or slug in seen:
        raise RuleError(f"segments refer to each other in a cycle: {' -> '.join((ctx.segment_slug or '?',) + chain)}",
                        _join(path, "segment"))
    exists, rule = (ctx.segment_rules or _segment_lookup)(slug)
    if not exists:
        raise RuleError(f"unknown segment {slug!r}", _join(path, "segment"))
    if rule:
        # Follow the referenced segment's own references: a cycle may be several segments long.
        for ref_slug in sorted(referenced_segments(rule)):
            _validate_segment({"segment": ref_slug}, path, ctx, chain)


def _segment_members(node: dict):
    from .models import SegmentMember
    return SegmentMember.objects.filter(segment__slug=node["segment"], version=F("segment__current_version"))


def _explain_segment(node: dict, ctx: RuleContext, profile: CustomerProfile):
    row = _segment_members(node).filter(profile=profile).values("in_holdout").first()
    return {"member": row is not None, "in_holdout": bool(row and row["in_holdout"])}


register_node_type(NodeType(
    "segment", _validate_segment,
    lambda node, ctx: Q(Exists(_segment_members(node).filter(profile=OuterRef("pk")))),
    _explain_segment, lambda node: {f"segment:{node['segment']}"},
))


# activity

@dataclass(frozen=True)
class ActivityKind:
    model: type
    time_field: str  # what within_days counts back on
    time_is_date: bool
    amount_field: str | None  # converted to CNY: the field `amount` of the activity catalogue
    # The day whose rate converts the amount: a flow's local day; a stock's (balance, value) snapshot date, as in
    # the metrics.
    rate_day: str
    fields: dict[str, CatalogueField]


def _activity_fields(*fields: CatalogueField) -> dict[str, CatalogueField]:
    return {f.name: f for f in fields}


_TEXT = ("eq", "ne", "in", "not_in", "is_null", "is_not_null")


def _activity_kinds() -> dict[str, ActivityKind]:
    from profiles.models import Account, CardTransaction, Holding, Transaction
    amount = CatalogueField("amount", "Amount (CNY)", "number", "amount_cny", (5000,))
    return {
        "transactions": ActivityKind(Transaction, "occurred_at", False, "amount", "occurred_at__date",
                                     _activity_fields(
            amount,
            CatalogueField("kind", "Kind", "string", "kind", ("salary_credit", "payment")),
            CatalogueField("channel", "Channel", "choice", "channel", ("app",),
                           choices=("app", "branch", "atm", "pos", "online", "system")),
            CatalogueField("counterparty_category", "Counterparty category", "string", "counterparty_category",
                           ("utilities",)),
            CatalogueField("currency", "Currency", "string", "currency", ("USD",)),
        )),
        "card_transactions": ActivityKind(CardTransaction, "occurred_at", False, "amount", "occurred_at__date",
                                                 _activity_fields(
            amount,
            CatalogueField("merchant_category", "Merchant category", "string", "merchant_category",
                           ("travel", "dining")),
            CatalogueField("mcc", "MCC", "string", "mcc", ("4511",)),
            CatalogueField("channel", "Channel", "string", "channel", ("pos", "online")),
            CatalogueField("installments", "Installments", "number", "installments", (3,)),
            CatalogueField("currency", "Currency", "string", "currency", ("USD",)),
        )),
        "accounts": ActivityKind(Account, "opened_at", True, "balance", "as_of", _activity_fields(
            CatalogueField("amount", "Balance (CNY)", "number", "amount_cny", (100000,)),
            CatalogueField("product_type", "Product type", "choice", "product_type", ("mortgage",),
                           choices=("current", "savings", "time_deposit", "mortgage", "consumer_loan")),
            CatalogueField("status", "Status", "string", "status", ("active",)),
        )),
        "holdings": ActivityKind(Holding, "as_of", True, "market_value", "as_of", _activity_fields(
            CatalogueField("amount", "Market value (CNY)", "number", "amount_cny", (100000,)),
            CatalogueField("product_type", "Product type", "choice", "product_type", ("fund",),
                           choices=("fund", "insurance", "bond", "structured", "deposit_like")),
            CatalogueField("product_code", "Product code", "string", "product_code", ("FU123",)),
        )),
    }


ACTIVITY_AGGREGATES = ("count", "sum", "avg", "min", "max")
ACTIVITY_COMPARE_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between")
MAX_WITHIN_DAYS = 3660


def activity_catalogue() -> dict[str, list[dict]]:
    """For each activity kind, the fields its `where` conditions and aggregates may use."""
    return {kind: [f.as_dict() for f in spec.fields.values()] for kind, spec in _activity_kinds().items()}


def _validate_activity(node: dict, path: str, ctx: RuleContext, seen: tuple) -> None:
    _only_keys(node, {"activity"}, path)
    body, path = node["activity"], _join(path, "activity")
    if not isinstance(body, dict):
        raise RuleError("expects an object with kind, where, within_days, agg, field, op, value or exists", path)
    _only_keys(body, {"kind", "where", "within_days", "agg", "field", "op", "value", "exists"}, path)
    kinds = _activity_kinds()
    spec = kinds.get(body.get("kind")) if isinstance(body.get("kind"), str) else None
    if spec is None:
        raise RuleError(f"kind must be one of {', '.join(kinds)}", _join(path, "kind"))
    where = body.get("where", [])
    if not isinstance(where, list) or len(where) > MAX_LIST:
        raise RuleError("where expects a list of conditions on the kind's fields", _join(path, "where"))
    for i, leaf in enumerate(where):
        _validate_leaf(leaf, _join(path, f"where[{i}]"), ctx, spec.fields, f"the {body['kind']} fields")
    days = body.get("within_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WITHIN_DAYS):
        raise RuleError(f"within_days expects a whole number of days, 1 to {MAX_WITHIN_DAYS}",
                        _join(path, "within_days"))
    if "agg" not in body:
        if set(body) & {"field", "op", "value"}:
            raise RuleError("field, op and value go with agg", _join(path, "agg"))
        if not isinstance(body.get("exists", True), bool):
            raise RuleError("exists expects true or false", _join(path, "exists"))
        return
    if "exists" in body:
        raise RuleError("exists does not go with agg; compare the count instead", _join(path, "exists"))
    agg = body["agg"]
    if agg not in ACTIVITY_AGGREGATES:
        raise RuleError(f"agg must be one of {', '.join(ACTIVITY_AGGREGATES)}", _join(path, "agg"))
    if agg != "count" and body.get("field") not in spec.fields:
        raise RuleError(f"{agg} needs a numeric field of {body['kind']}, e.g. amount", _join(path, "field"))
    if agg != "count" and spec.fields[body["field"]].type != "number":
        raise RuleError(f"{agg} needs a numeric field", _join(path, "field"))
    if body.get("op") not in ACTIVITY_COMPARE_OPS:
        raise RuleError(f"op must be one of {', '.join(ACTIVITY_COMPARE_OPS)}", _join(path, "op"))
    _leaf_values({"op": body["op"], **({"value": body["value"]} if "value" in body else {})},
                 CatalogueField("value", "value", "number", ""), path, ctx.today)


def _activity_rows(body: dict, ctx: RuleContext):
    """The kind's rows that reach a live profile, in the time window and matching `where`, amounts in CNY."""
    from profiles.models import FxRate
    spec = _activity_kinds()[body["kind"]]
    rows = spec.model.objects.filter(record__profile_id__isnull=False)
    if spec.amount_field:
        # The latest rate on or before the row's day; with none, the amount is unknown (NULL) and adds nothing.
        rate = FxRate.objects.filter(currency=OuterRef("currency"), as_of__lte=OuterRef(spec.rate_day)) \
            .order_by("-as_of")
        rows = rows.annotate(amount_cny=Case(
            When(currency="CNY", then=F(spec.amount_field)),
            default=ExpressionWrapper(F(spec.amount_field) * Subquery(rate.values("rate_to_cny")[:1]),
                                      output_field=DecimalField()),
            output_field=DecimalField(),
        ))
    if body.get("within_days"):
        # A date counts back in local days from today, a time in 24-hour days from now.
        days = dt.timedelta(days=body["within_days"])
        since, until = (ctx.today - days, ctx.today) if spec.time_is_date else (ctx.now - days, ctx.now)
        rows = rows.filter(**{f"{spec.time_field}__gte": since, f"{spec.time_field}__lte": until})
    for leaf in body.get("where", []):
        rows = rows.filter(_compile_leaf(leaf, spec.fields[leaf["field"]], ctx, spec.model))
    if ctx.candidates is not None:
        rows = rows.filter(record__profile_id__in=CustomerProfile.objects.filter(ctx.candidates).values("pk"))
    return rows


def _activity_aggregate(body: dict):
    """The aggregate, exact: a sum, average, minimum or maximum is a decimal whatever the column; a sum over no
    known amount is 0."""
    if body["agg"] == "count":
        return Count("pk")
    path = _activity_kinds()[body["kind"]].fields[body["field"]].path
    if body["agg"] == "sum":
        return Coalesce(Sum(path, output_field=DecimalField()), Value(Decimal(0)), output_field=DecimalField())
    return {"avg": Avg, "min": Min, "max": Max}[body["agg"]](path, output_field=DecimalField())


def _holds(value, op: str, target) -> bool:
    if op == "between":
        return target[0] <= value <= target[1]
    return {"eq": value == target, "ne": value != target, "lt": value < target, "lte": value <= target,
            "gt": value > target, "gte": value >= target}[op]


def _activity_needs_rows(node) -> bool:
    """Whether an activity node can only select profiles that have rows (not "did not", nor "sum below 100")."""
    if not isinstance(node, dict) or "activity" not in node:
        return False
    body = node["activity"]
    if "agg" not in body:
        return body.get("exists", True)
    if body["agg"] not in ("count", "sum"):
        return True  # a minimum, maximum or average over no rows is unknown and passes no comparison
    target = _leaf_values({"op": body["op"], "value": body["value"]}, CatalogueField("value", "", "number", ""),
                          "", None)
    return not _holds(0, body["op"], target)


def _compile_activity(node: dict, ctx: RuleContext) -> Q:
    """Set-based: the profiles whose rows (joined to their source record) pass, as one IN (… GROUP BY … HAVING)."""
    body = node["activity"]
    rows = _activity_rows(body, ctx)
    with_rows = rows.values("record__profile_id")
    if "agg" not in body:
        return Q(pk__in=with_rows) if body.get("exists", True) else ~Q(pk__in=with_rows)
    target = _leaf_values({"op": body["op"], "value": body["value"]}, CatalogueField("value", "", "number", ""),
                          "", ctx.today)
    counted = connection.ops.integer_field_range("IntegerField") if body["agg"] == "count" else None
    passing = (rows.values("record__profile_id").annotate(aggregate=_activity_aggregate(body))
               .filter(number_condition("aggregate", body["op"], target, counted, Q(aggregate__isnull=False))))
    matched = Q(pk__in=passing.values("record__profile_id"))
    # A count or a sum over no rows is 0: profiles without any row pass when 0 passes.
    if body["agg"] in ("count", "sum") and _holds(0, body["op"], target):
        matched |= ~Q(pk__in=with_rows)
    return matched


def _explain_activity(node: dict, ctx: RuleContext, profile: CustomerProfile):
    body = node["activity"]
    rows = _activity_rows(body, ctx).filter(record__profile_id=profile.pk)
    if "agg" not in body:
        return {"rows": rows.count()}
    value = rows.aggregate(value=_activity_aggregate(body))["value"]
    if value is None and body["agg"] in ("count", "sum"):
        value = 0
    return {body["agg"]: float(value) if value is not None else None}


register_node_type(NodeType("activity", _validate_activity, _compile_activity, _explain_activity,
                            lambda node: {f"activity:{node['activity']['kind']}"}))


# --- entry points ----------------------------------------------------------------------------------------------

def rule_validate(rule, ctx: RuleContext | None = None) -> None:
    """Refuse a bad rule (RuleError naming the node); its size is checked and its tags looked up (one query) first."""
    ctx = ctx or RuleContext()
    _tags_look_up(_check_size(rule), ctx)
    _validate(rule, "", ctx, ())


def compile_node(node: dict, ctx: RuleContext) -> Q:
    return _node_type(node, "").compile(node, ctx)


def rule_queryset(rule: dict, ctx: RuleContext | None = None) -> QuerySet:
    """The live profiles the rule selects: one SQL query. A bad rule raises RuleError: a stored rule may have been
    written past the validator (a migration, the shell), and compiling one would fail deep inside the ORM."""
    ctx = ctx or RuleContext()
    rule_validate(rule, ctx)
    return CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE).filter(compile_node(rule, ctx))


def rule_inputs(rule: dict) -> set[str]:
    return NODE_TYPES[next(k for k in rule if k in NODE_TYPES)].inputs(rule)


def referenced_segments(rule: dict) -> set[str]:
    return {i.split(":", 1)[1] for i in rule_inputs(rule) if i.startswith("segment:")}


def rule_is_time_relative(rule) -> bool:
    """Relative dates move with the clock and tags can expire: such rules need a refresh at least daily."""
    if isinstance(rule, dict):
        if "activity" in rule or (rule.get("field") in FIELDS and FIELDS[rule["field"]].input == "metrics"):
            return True  # windows move with the clock; metrics are recomputed nightly
        return any(k in ("days_ago", "years_ago", "tag") for k in rule) or any(
            rule_is_time_relative(v) for v in rule.values())
    if isinstance(rule, list):
        return any(rule_is_time_relative(v) for v in rule)
    return False


def _personal_leaf(node) -> CatalogueField | None:
    """The personal catalogue field a node tests, if it is a field leaf on one."""
    field = FIELDS.get(node.get("field")) if isinstance(node, dict) and isinstance(node.get("field"), str) else None
    return field if field is not None and field.personal else None


def rule_personal_fields(rule) -> list[str]:
    """The personal fields (privacy.policy) a rule's conditions test, sorted. Any JSON is walked, valid or not, without
    recursion (a request body may nest deeper than the interpreter's stack); activity bodies hold activity fields."""
    found, stack = set(), [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if field := _personal_leaf(node):
                found.add(field.name)
            stack.extend(value for key, value in node.items() if key != "activity")
    return sorted(found)


def rule_masked(rule):
    """A stored (validated) rule as a viewer without the right to personal data sees it: the values its conditions
    compare personal fields with are masked like the fields themselves."""
    if isinstance(rule, list):
        return [rule_masked(item) for item in rule]
    if not isinstance(rule, dict):
        return rule
    if field := _personal_leaf(rule):
        return {**rule, **({"value": mask_value(field.name, rule["value"])} if "value" in rule else {})}
    return {key: value if key == "activity" else rule_masked(value) for key, value in rule.items()}


def rule_explain(rule: dict, *, profile: CustomerProfile, ctx: RuleContext | None = None, path: str = "",
                 sees_clear: bool = False) -> dict:
    """Every node of the rule with whether it holds for the profile (evaluated by the same SQL) and the value seen;
    unless `sees_clear`, a personal field's value and the value compared with it are masked (privacy.policy)."""
    ctx = ctx or RuleContext()
    if not path:
        _tags_look_up(_check_size(rule), ctx)
    node_type = _node_type(rule, path)
    result = CustomerProfile.objects.filter(pk=profile.pk).filter(compile_node(rule, ctx)).exists()
    explained = {"path": path or "rule", "type": node_type.key, "result": result}
    if node_type.key in ("field", "tag", "segment", "activity"):
        value = node_type.explain_value(rule, ctx, profile)
        explained["node"], explained["value"] = (rule, value) if sees_clear or not _personal_leaf(rule) else \
            (rule_masked(rule), mask_value(rule["field"], value))
    children = node_type.children(rule, path)
    if children:
        explained["children"] = [rule_explain(c, profile=profile, ctx=ctx, path=p, sees_clear=sees_clear)
                                 for c, p in children]
    return explained


def explained_personal_fields(explained: dict) -> list[str]:
    """The personal fields whose value an explanation shows (what a clear read of it is audited for)."""
    found, stack = set(), [explained]
    while stack:
        node = stack.pop()
        stack.extend(node.get("children", ()))
        if node["type"] == "field" and node["value"] not in (None, "") and (field := _personal_leaf(node["node"])):
            found.add(field.name)
    return sorted(found)
