"""The customer's rights under PIPL: access to everything held on them (art. 45) and its deletion (art. 47).

`subject_access` gathers what the platform holds on a person; `erase_subject` deletes it everywhere in one
transaction and keeps do-not-reload markers (privacy.models.ErasedIdentifier) so that the next feed does not bring
the person back (profiles.feeds.ErasedRows skips their rows). The admin, the API and the management commands call
these two functions and nothing else.
"""
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from profiles.activity import source_loads_held
from profiles.activity_kinds import KINDS
from profiles.feeds import ERASED_CONTACT_PURPOSE, erased_contact_value, erased_key_purpose
from profiles.models import (
    Consent, ConsentEvent, CustomerProfile, DoNotLink, MatchKey, PossibleDuplicate, ProfileMetrics, RecordLink,
    RejectedRow, SourceRecord,
)
from profiles.normalize import keyed_hash
from profiles.uploads import feed_uploads_of_sources_delete
from segments.models import Segment, SegmentEvent, SegmentMember, StaticSegmentEntry
from tags.models import TagAssignment

from .audit import audit_clear_read
from .models import AuditRecord, ErasedIdentifier, ErasureLog
from .policy import PII_FIELDS, Viewer

__all__ = ["SubjectEncoder", "erase_subject", "subject_access"]

PER_CUSTOMER_KINDS = {kind: spec for kind, spec in KINDS.items() if spec.per_customer}
_RECORD_RELATIONS = ((MatchKey, ("record",)), (RecordLink, ("record_a", "record_b")),
                     (DoNotLink, ("record_a", "record_b")), (PossibleDuplicate, ("record_a", "record_b")))


class SubjectEncoder(DjangoJSONEncoder):
    """Dates, times and decimals as ISO strings and exact decimal text."""


def _person(profile: CustomerProfile) -> tuple[CustomerProfile, list[int]]:
    """The live profile a (possibly absorbed) profile stands for, and the ids of it and every profile it absorbed."""
    if profile.merged_into_id is not None:
        profile = CustomerProfile.objects.get(pk=profile.merged_into_id)
    absorbed = list(CustomerProfile.objects.filter(merged_into_id=profile.pk).values_list("pk", flat=True))
    return profile, [profile.pk, *absorbed]


def _keys_by_source(records: list[dict]) -> dict[int, list[str]]:
    keys: dict[int, list[str]] = {}
    for record in records:
        keys.setdefault(record["source_id"], []).append(record["customer_key"])
    return keys


def _by_source_key(records: list[dict]) -> Q:
    """Rows of (source, customer_key) of these records: one condition per source."""
    condition = Q(pk__in=[])
    for source_id, customer_keys in _keys_by_source(records).items():
        condition |= Q(source_id=source_id, customer_key__in=customer_keys)
    return condition


def _rejected_rows(records: list[dict]):
    """Rejected rows that name one of these records' customer keys in a batch of its source (the rows where the
    person can be found: a reject's other values are masked or unparsed)."""
    condition = Q(pk__in=[])
    for source_id, customer_keys in _keys_by_source(records).items():
        condition |= Q(batch__source_id=source_id, raw__customer_key__in=customer_keys)
    return RejectedRow.objects.filter(condition)


def _records(profile_ids: list[int]) -> list[dict]:
    return list(SourceRecord.objects.filter(profile_id__in=profile_ids).order_by("source__priority", "customer_key")
                .values("pk", "source_id", "source__code", "customer_key", "id_number_hash", "id_valid", "phone",
                        "email"))


def _fields(model, *leave_out: str) -> list[str]:
    """The model's columns less internal ones (ids, digests, flags of the loader)."""
    return [f.attname for f in model._meta.concrete_fields if f.attname not in leave_out]


def subject_access(*, profile: CustomerProfile, viewer: Viewer) -> dict:
    """Everything the platform holds on the person of `profile` (an absorbed profile stands for its survivor), as
    JSON-ready data (encode with SubjectEncoder). The read is audited, for every personal field, before it is
    returned: it is a clear read by `viewer`."""
    profile, profile_ids = _person(profile)
    public_ids = list(CustomerProfile.objects.filter(pk__in=profile_ids).values_list("public_id", flat=True))
    golden = CustomerProfile.objects.filter(pk=profile.pk).values(
        "public_id", "status", *CustomerProfile.GOLDEN_FIELDS, "record_count", "created_at", "updated_at").get()
    audit_clear_read(viewer=viewer, fields_by_profile={profile.public_id: [f for f in PII_FIELDS if golden.get(f)]})
    records = _records(profile_ids)
    record_ids = [r["pk"] for r in records]
    source_rows = list(SourceRecord.objects.filter(pk__in=record_ids).order_by("source__priority", "customer_key")
                       .values("source__code", *_fields(SourceRecord, "id", "source_id", "profile_id", "row_digest",
                                                        "needs_resolution")))
    condition = _by_source_key(records)
    activity = {kind: list(spec.model.objects.filter(condition).order_by("pk").values(
                    "source__code", *_fields(spec.model, "id", "source_id", "row_digest", "last_batch_id")))
                for kind, spec in PER_CUSTOMER_KINDS.items()}
    segments = {s.pk: s for s in Segment.objects.filter(
        pk__in=SegmentMember.objects.filter(profile_id__in=profile_ids).values("segment_id"))}
    return {
        "generated_at": timezone.now(),
        "profile": golden,
        "absorbed_profile_ids": sorted(set(public_ids) - {profile.public_id}),
        "source_records": source_rows,
        "activity": activity,
        "metrics": ProfileMetrics.objects.filter(profile_id=profile.pk).values().first(),
        "tags": list(TagAssignment.objects.filter(profile_id__in=profile_ids).order_by("tag__code").values(
            "tag__code", "tag__name", "source", "assigned_at", "assigned_by", "expires_at")),
        "segments": [
            {"segment": segments[m["segment_id"]].slug, "name": segments[m["segment_id"]].name,
             "in_holdout": m["in_holdout"]}
            for m in SegmentMember.objects.filter(profile_id__in=profile_ids).values("segment_id", "version",
                                                                                     "in_holdout")
            if segments[m["segment_id"]].current_version == m["version"]
        ],
        "static_segments": list(StaticSegmentEntry.objects.filter(profile_id__in=profile_ids)
                                .values_list("segment__slug", flat=True)),
        "segment_history": list(SegmentEvent.objects.filter(profile_id__in=profile_ids).order_by("at", "pk")
                                .values("segment__slug", "kind", "at")),
        "consent": list(Consent.objects.filter(profile_id__in=profile_ids).order_by("purpose", "channel")
                        .values("channel", "purpose", "granted", "source", "updated_at")),
        "consent_history": list(ConsentEvent.objects.filter(profile_id__in=profile_ids).order_by("at", "pk")
                                .values("channel", "purpose", "granted", "source", "at", "recorded_at")),
        "identity_links": list(RecordLink.objects.filter(Q(record_a_id__in=record_ids) | Q(record_b_id__in=record_ids))
                               .values("kind", "probability", "created_at", "created_by")),
        "possible_duplicates": list(PossibleDuplicate.objects.filter(
            Q(record_a_id__in=record_ids) | Q(record_b_id__in=record_ids)).values("probability", "status",
                                                                                 "created_at", "decided_at")),
        "rejected_rows": list(_rejected_rows(records).order_by("pk").values("batch_id", "row_number", "reason",
                                                                             "raw")),
        # Who read the person's personal data clear, this access included.
        "audit": [
            {"at": a.at, "caller": str(a.api_key) if a.api_key_id else (a.user and a.user.get_username()),
             "fields": a.fields, "method": a.method, "path": a.path, "request_id": a.request_id}
            for a in AuditRecord.objects.filter(profile_public_id__in=public_ids).select_related("api_key", "user")
            .order_by("at", "pk")
        ],
    }


def _markers(records: list[dict]) -> list[tuple[str, str, int | None]]:
    """(kind, digest, source id) of every do-not-reload marker of these records."""
    markers = set()
    for record in records:
        markers.add((ErasedIdentifier.Kind.SOURCE_KEY,
                     keyed_hash(record["customer_key"], erased_key_purpose(record["source_id"])), record["source_id"]))
        if record["id_valid"] and record["id_number_hash"]:
            markers.add((ErasedIdentifier.Kind.ID_NUMBER, record["id_number_hash"], None))
        if record["phone"] and record["email"]:
            contact = erased_contact_value(record["phone"], record["email"])
            markers.add((ErasedIdentifier.Kind.CONTACT, keyed_hash(contact, ERASED_CONTACT_PURPOSE), None))
    return sorted(markers, key=lambda m: (m[0], m[1]))


def _delete(queryset) -> int:
    """Delete the rows (one statement each: what refers to them is deleted before); how many of the model."""
    return queryset.delete()[1].get(queryset.model._meta.label, 0)


def erase_subject(*, profile: CustomerProfile, reason: str, by: str) -> ErasureLog:
    """Delete the person of `profile` everywhere: their profiles (the live one and those it absorbed), source
    records in every source, activity, metrics, tags, segment memberships and history, consent and its history,
    identity links and pairs, rejected rows naming their keys, and kept uploads of their sources. Keeps
    do-not-reload markers and an erasure log (who, when, why, counts; no personal data). One transaction, with
    the loads of the person's sources held off until it commits."""
    if not reason.strip():
        raise ValueError("an erasure needs a reason (a request or ticket reference)")
    profile, profile_ids = _person(profile)
    source_ids = sorted(set(SourceRecord.objects.filter(profile_id__in=profile_ids).values_list("source_id",
                                                                                               flat=True)))
    with source_loads_held(source_ids), transaction.atomic():
        return _erase(profile_ids=profile_ids, reason=reason, by=by)


def _erase(*, profile_ids: list[int], reason: str, by: str) -> ErasureLog:
    records = _records(profile_ids)
    record_ids = [r["pk"] for r in records]
    log = ErasureLog.objects.create(erased_by=by[:150], reason=reason.strip())
    ErasedIdentifier.objects.bulk_create(
        [ErasedIdentifier(kind=kind, digest=digest, source_id=source_id, erasure=log)
         for kind, digest, source_id in _markers(records)], ignore_conflicts=True)
    counts: dict[str, int] = {}
    condition = _by_source_key(records)
    for kind, spec in PER_CUSTOMER_KINDS.items():
        counts[kind] = _delete(spec.model.objects.filter(condition))
    counts["rejected_rows"] = _delete(_rejected_rows(records))
    for model, fields in _RECORD_RELATIONS:
        match = Q(pk__in=[])
        for name in fields:
            match |= Q(**{f"{name}_id__in": record_ids})
        counts[model._meta.model_name] = _delete(model.objects.filter(match))
    # Members of a segment's current result leave its counts now, not at its next refresh.
    for member in SegmentMember.objects.filter(profile_id__in=profile_ids).values("segment_id", "version",
                                                                                  "in_holdout"):
        Segment.objects.filter(pk=member["segment_id"], current_version=member["version"]).update(
            member_count=F("member_count") - 1, holdout_count=F("holdout_count") - int(member["in_holdout"]))
    # Everything else that refers to a profile (tags, segments, consent, metrics, and whatever refers to one in
    # future): found through the model's relations, so that a new table holding profile ids is not forgotten.
    for relation in CustomerProfile._meta.related_objects:
        model = relation.related_model
        if model in (CustomerProfile, SourceRecord) or not relation.field.concrete:
            continue
        counts[model._meta.model_name] = counts.get(model._meta.model_name, 0) + _delete(
            model.objects.filter(**{f"{relation.field.attname}__in": profile_ids}))
    counts["source_records"] = _delete(SourceRecord.objects.filter(pk__in=record_ids))
    CustomerProfile.objects.filter(pk__in=profile_ids).update(merged_into=None)
    counts["profiles"] = _delete(CustomerProfile.objects.filter(pk__in=profile_ids))
    counts["uploads"] = feed_uploads_of_sources_delete(source_ids=sorted({r["source_id"] for r in records}))
    counts["markers"] = ErasedIdentifier.objects.filter(erasure=log).count()
    ErasureLog.objects.filter(pk=log.pk).update(counts={k: v for k, v in sorted(counts.items()) if v})
    log.refresh_from_db()
    return log
