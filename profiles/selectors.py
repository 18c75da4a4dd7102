"""Reads on profiles shared by the admin, the API and services."""
import math
from dataclasses import dataclass

from django.db import connection
from django.db.models import CharField, DateTimeField, DecimalField, F, Q, QuerySet, Value
from django.db.models.functions import Cast

from . import sql
from .models import (
    Account, CardTransaction, Consent, ConsentEvent, CustomerProfile, FeedBatch, Holding, ProbabilisticModel,
    ProfileMetrics, RiskAssessment, Source, SourceRecord, Transaction,
)
from .normalize import is_placeholder, keyed_hash, normalize_email, normalize_id_number, normalize_phone


def profile_get(*, public_id: str) -> tuple[CustomerProfile, bool]:
    """The profile for a public id and whether the id was absorbed by a merge (then the survivor is returned)."""
    profile = CustomerProfile.objects.select_related("merged_into").get(public_id=public_id)
    if profile.merged_into_id is None:
        return profile, False
    # merged_into always points at a live survivor: merges re-point older absorptions (resolution._absorb_profiles).
    return profile.merged_into, True


def _with_derived(queryset: QuerySet) -> QuerySet:
    """Lifecycle stage and value tier from the profile's metrics as plain columns (one LEFT JOIN, two columns)."""
    return queryset.annotate(lifecycle_stage=F("metrics__lifecycle_stage"), value_tier=F("metrics__value_tier"))


def profiles_active() -> QuerySet:
    """Live profiles (not absorbed by a merge), annotated with `lifecycle_stage` and `value_tier`."""
    return _with_derived(CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE))


# The hot paths of the profile API (retrieve, lookup by source key) as fixed SQL: compiling the same ORM query
# on every request cost more than running it (1.5 ms against 0.3 ms measured). Same columns as profiles_active().
_PROFILE_WITH_DERIVED = (
    f"SELECT p.*, m.lifecycle_stage, m.value_tier FROM {CustomerProfile._meta.db_table} p "
    f"LEFT JOIN {ProfileMetrics._meta.db_table} m ON m.profile_id = p.id WHERE p.id = "
)
_LIVE_BY_PUBLIC_ID = (
    _PROFILE_WITH_DERIVED
    + f"(SELECT COALESCE(merged_into_id, id) FROM {CustomerProfile._meta.db_table} WHERE public_id = %s)"
)
# A resolved record points at a live profile: a merge moves the absorbed profile's records to the survivor.
_BY_SOURCE_KEY = (
    _PROFILE_WITH_DERIVED
    + f"(SELECT profile_id FROM {SourceRecord._meta.db_table} WHERE source_id = %s AND customer_key = %s)"
)


def profile_resolve(*, public_id: str) -> tuple[CustomerProfile, str | None]:
    """Like profile_get in one narrow query: (the live profile, the absorbed id asked for or None).

    The profile is annotated like profiles_active(). Raises CustomerProfile.DoesNotExist for an unknown id.
    """
    profile = sql.fetch_instance(CustomerProfile, _LIVE_BY_PUBLIC_ID, [public_id])
    if profile is None:
        raise CustomerProfile.DoesNotExist(public_id)
    return profile, (public_id if profile.public_id != public_id else None)


def profile_get_by_source_key(*, source: str, customer_key: str) -> CustomerProfile | None:
    """The live profile of a source's customer key (None if unknown or not yet resolved); one query (two for a
    record left on an absorbed profile)."""
    source_id = Source.id_for_code(source)
    if source_id is None:
        return None
    profile = sql.fetch_instance(CustomerProfile, _BY_SOURCE_KEY, [source_id, customer_key])
    if profile is not None and profile.merged_into_id is not None:  # not left by resolution; followed all the same
        profile = sql.fetch_instance(CustomerProfile, _PROFILE_WITH_DERIVED + "%s", [profile.merged_into_id])
    return profile


def profiles_by_identifier(*, phone: str | None = None, email: str | None = None, id_number: str | None = None,
                           id_type: str | None = None, limit: int = 10) -> list[CustomerProfile]:
    """Live profiles whose golden phone, e-mail or id number equals the given one once normalised.

    The id number is compared through its keyed hash: it is never stored, and never needs to be.
    A value that normalises to nothing (malformed, placeholder) matches no one. At most `limit` + 1 profiles,
    so a caller can tell "several" from "exactly `limit`".
    """
    if phone is not None:
        value = normalize_phone(phone)
        condition = {"phone": value}
    elif email is not None:
        value = normalize_email(email)
        condition = {"email": value}
    elif id_number is not None:
        number, _valid = normalize_id_number(id_number, None)
        value = number and not is_placeholder("id_number", number) and keyed_hash(number, "id")
        condition = {"id_number_hash": value}
        if id_type:
            condition["id_type"] = id_type.strip().upper()
    else:
        raise ValueError("give a phone, an email or an id number")
    if not value:
        return []
    return list(profiles_active().filter(**condition).order_by("pk")[:limit + 1])


def profile_source_records(*, profile: CustomerProfile) -> QuerySet:
    return profile.records.select_related("source", "last_batch").order_by("source__priority", "customer_key")


@dataclass(frozen=True)
class AttributeSource:
    """Where a survivorship group's golden values came from: its attribute (group), the record and the batch."""

    attribute: str
    record: SourceRecord
    batch: FeedBatch | None

    @property
    def batch_id(self) -> int | None:
        return self.batch.pk if self.batch else None


def profile_lineage(*, profile: CustomerProfile) -> list[AttributeSource]:
    """Per survivorship group with a value, the record and batch that supplied it, by attribute; two queries."""
    sources = {group: (getattr(profile, f"{group}_record_id"), getattr(profile, f"{group}_batch_id"))
               for group in CustomerProfile.LINEAGE_GROUPS}
    records = SourceRecord.objects.select_related("source").in_bulk([r for r, _ in sources.values() if r])
    batches = FeedBatch.objects.in_bulk([b for _, b in sources.values() if b])
    return [AttributeSource(attribute=group, record=records[record_id], batch=batches.get(batch_id))
            for group, (record_id, batch_id) in sorted(sources.items()) if record_id in records]


def profile_consents(*, profile: CustomerProfile, purpose: str = Consent.Purpose.MARKETING) -> list[dict]:
    """Every channel's current consent for `purpose`, in a fixed order; `granted` is None where the customer never
    decided."""
    known = {c.channel: c for c in Consent.objects.filter(profile=profile, purpose=purpose)}
    return [
        {"channel": channel, "granted": known[channel].granted if channel in known else None,
         "source": known[channel].source if channel in known else None,
         "updated_at": known[channel].updated_at if channel in known else None}
        for channel in Consent.Channel.values
    ]


def profile_consent_history(*, profile: CustomerProfile) -> QuerySet:
    """Every consent decision of the profile, oldest first."""
    return ConsentEvent.objects.filter(profile=profile).order_by("at", "id")


def profile_metrics(*, profile: CustomerProfile) -> ProfileMetrics | None:
    return ProfileMetrics.objects.filter(profile=profile).first()


def _timeline_part(queryset: QuerySet, *, at, event: str, reference, amount=None, currency=None, detail=None):
    """One kind of event as (at, event, source, reference, amount, currency, detail) rows, ready for UNION ALL."""
    return queryset.annotate(
        t_at=at, t_event=Value(event), t_source=F("source__code"), t_reference=reference,
        t_amount=amount if amount is not None else Value(None, output_field=DecimalField()),
        t_currency=currency if currency is not None else Value(None, output_field=CharField()),
        t_detail=detail if detail is not None else Value(None, output_field=CharField()),
    ).values_list("t_at", "t_event", "t_source", "t_reference", "t_amount", "t_currency", "t_detail")


TIMELINE_COLUMNS = ("at", "event", "source", "reference", "amount", "currency", "detail")


def profile_timeline(*, profile: CustomerProfile, limit: int = 50, before=None) -> list[dict]:
    """The profile's events across all systems, newest first: records loaded, accounts opened and closed,
    transactions, card transactions, holdings, risk assessments and merges. `before` (a datetime) pages back.

    Two queries whatever the profile holds: its source keys, then one UNION ALL of every kind, each part using the
    (source, customer_key) index of its table and limited before the union is sorted.
    """
    keys = list(SourceRecord.objects.filter(profile=profile).values_list("source_id", "customer_key"))
    if not keys:
        return []
    of_profile = Q()
    for source_id, customer_key in keys:
        of_profile |= Q(source_id=source_id, customer_key=customer_key)
    day = lambda name: Cast(name, DateTimeField())  # noqa: E731 - dates sort among timestamps at their midnight
    accounts = Account.objects.filter(of_profile)
    parts = [
        _timeline_part(SourceRecord.objects.filter(profile=profile), at=F("loaded_at"), event="record_loaded",
                       reference=F("customer_key")),
        _timeline_part(accounts, at=day("opened_at"), event="account_opened", reference=F("account_key"),
                       amount=F("balance"), currency=F("currency"), detail=F("product_type")),
        _timeline_part(accounts.filter(closed_at__isnull=False), at=day("closed_at"), event="account_closed",
                       reference=F("account_key"), detail=F("product_type")),
        _timeline_part(Transaction.objects.filter(of_profile), at=F("occurred_at"), event="transaction",
                       reference=F("txn_key"), amount=F("amount"), currency=F("currency"), detail=F("kind")),
        _timeline_part(CardTransaction.objects.filter(of_profile), at=F("occurred_at"), event="card_transaction",
                       reference=F("txn_key"), amount=F("amount"), currency=F("currency"),
                       detail=F("merchant_category")),
        _timeline_part(Holding.objects.filter(of_profile), at=day("as_of"), event="holding",
                       reference=F("holding_key"), amount=F("market_value"), currency=F("currency"),
                       detail=F("product_type")),
        _timeline_part(RiskAssessment.objects.filter(of_profile), at=day("assessed_at"), event="risk_assessment",
                       reference=F("customer_key"), detail=F("risk_level")),
        CustomerProfile.objects.filter(merged_into=profile).annotate(
            t_at=F("merged_at"), t_event=Value("profile_merged"), t_source=Value(None, output_field=CharField()),
            t_reference=F("public_id"), t_amount=Value(None, output_field=DecimalField()),
            t_currency=Value(None, output_field=CharField()), t_detail=Value(None, output_field=CharField()),
        ).values_list("t_at", "t_event", "t_source", "t_reference", "t_amount", "t_currency", "t_detail"),
    ]
    if before is not None:
        parts = [part.filter(t_at__lt=before) for part in parts]
    if connection.features.supports_slicing_ordering_in_compound:  # PostgreSQL; SQLite sorts the whole union
        parts = [part.order_by("-t_at")[:limit] for part in parts]
    rows = parts[0].union(*parts[1:], all=True).order_by("-t_at")[:limit]
    return [dict(zip(TIMELINE_COLUMNS, row)) for row in rows]


@dataclass(frozen=True)
class ModelLevel:
    label: str
    m: float | None
    u: float | None
    term_frequency_adjusted: bool
    notes: tuple[str, ...]  # where m or u did not come from this model's estimation: "m: prior", "u: default"

    @property
    def match_weight(self) -> float | None:
        """log2(m / u): how much agreement at this level moves the odds of a match, in bits."""
        return math.log2(self.m / self.u) if self.m and self.u else None


@dataclass(frozen=True)
class ModelComparison:
    name: str
    description: str
    levels: list[ModelLevel]


def probabilistic_model_comparisons(*, model: ProbabilisticModel) -> list[ModelComparison]:
    """A stored model's comparisons, each with its levels (the null level excepted, which weighs nothing) in the
    order the model tries them, read from whatever comparisons the model holds."""
    training = model.parameters.get("training", {})
    # "comparison level" entries: no training pair reached the level (m: its weaker neighbour's weight), no random
    # pair reached it (u: from the value counts); a comparison with no values anywhere weighs nothing.
    merged = training.get("merged_levels", {})
    u_not_sampled = training.get("u_not_sampled", {})
    m_from_prior = set(training.get("m_from_prior", []))
    comparisons = []
    for comparison in model.parameters.get("splink_settings", {}).get("comparisons", []):
        name = comparison.get("output_column_name", "?")
        levels = []
        for level in comparison.get("comparison_levels", []):
            if level.get("is_null_level"):
                continue
            label = level.get("label_for_charts") or level.get("sql_condition", "?")
            notes = ()
            if training.get("prior") or name in m_from_prior:
                notes += ("m: prior",)
            elif f"{name} {label}" in merged:
                notes += (f"m: never observed, weight of {merged[f'{name} {label}']}",)
            if f"{name} {label}" in u_not_sampled:
                notes += ("u: not in the random sample, from the value counts",)
            elif u_not_sampled.get(name) == "no values":
                notes += ("no values to compare: weighs nothing",)
            levels.append(ModelLevel(label=label, m=level.get("m_probability"), u=level.get("u_probability"),
                                     term_frequency_adjusted=bool(level.get("tf_adjustment_column")), notes=notes))
        comparisons.append(ModelComparison(name=name, description=comparison.get("comparison_description", ""),
                                           levels=levels))
    return comparisons
