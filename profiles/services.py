"""Writes on profiles that people decide: review of possible duplicates, unmerge, the identity-map export."""
from datetime import datetime
from itertools import product
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from privacy.csv_safe import SafeCsvWriter

from . import sql
from .models import (
    Consent, ConsentEvent, CustomerProfile, DoNotLink, PossibleDuplicate, RecordLink, Source, SourceRecord,
)
from .resolution import T_KEY, T_RECORD, ResolutionReport, identity_resolve


def _ordered(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _mark_for_resolution(record_ids) -> None:
    SourceRecord.objects.filter(pk__in=list(record_ids)).update(needs_resolution=True)


@transaction.atomic
def possible_duplicate_accept(*, duplicate: PossibleDuplicate, decided_by: str) -> ResolutionReport:
    """A reviewer says the pair is one customer: link the records and resolve their profiles together."""
    a, b = _ordered(duplicate.record_a_id, duplicate.record_b_id)
    RecordLink.objects.update_or_create(
        record_a_id=a, record_b_id=b,
        defaults={"kind": RecordLink.Kind.MANUAL, "probability": duplicate.probability,
                  "evidence": {"accepted_duplicate": duplicate.pk, **duplicate.evidence}, "created_by": decided_by},
    )
    DoNotLink.objects.filter(record_a_id=a, record_b_id=b).delete()
    PossibleDuplicate.objects.filter(pk=duplicate.pk).update(
        status=PossibleDuplicate.Status.ACCEPTED, decided_at=timezone.now(), decided_by=decided_by
    )
    _mark_for_resolution((a, b))
    return identity_resolve()


@transaction.atomic
def possible_duplicate_reject(*, duplicate: PossibleDuplicate, decided_by: str) -> ResolutionReport:
    """A reviewer says the pair are different customers: they must never be linked again."""
    a, b = _ordered(duplicate.record_a_id, duplicate.record_b_id)
    DoNotLink.objects.get_or_create(
        record_a_id=a, record_b_id=b, defaults={"reason": f"rejected duplicate #{duplicate.pk}", "created_by": decided_by}
    )
    RecordLink.objects.filter(record_a_id=a, record_b_id=b).delete()
    PossibleDuplicate.objects.filter(pk=duplicate.pk).update(
        status=PossibleDuplicate.Status.REJECTED, decided_at=timezone.now(), decided_by=decided_by
    )
    _mark_for_resolution((a, b))
    return identity_resolve()


def _deterministic_pieces(record_ids: list[int]) -> list[set[int]]:
    """Split records into the groups that deterministic rules alone connect (no probabilistic or manual link)."""
    parent = {r: r for r in record_ids}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    placeholders = ", ".join(["%s"] * len(record_ids))
    pairs = sql.fetch_all(
        f"SELECT a.record_id, b.record_id FROM {T_KEY} a JOIN {T_KEY} b ON b.key_hi = a.key_hi AND b.key_lo = a.key_lo "
        f"AND b.rule_id = a.rule_id "
        f"AND b.record_id > a.record_id WHERE a.record_id IN ({placeholders}) AND b.record_id IN ({placeholders})",
        record_ids + record_ids,
    )
    for x, y in pairs:
        parent[find(x)] = find(y)
    pieces: dict[int, set[int]] = {}
    for r in record_ids:
        pieces.setdefault(find(r), set()).add(r)
    return list(pieces.values())


@transaction.atomic
def profile_unmerge(*, profile: CustomerProfile, split_off: list[int] | None = None, decided_by: str) -> ResolutionReport:
    """Split a profile back apart and keep the parts apart on every later load.

    With `split_off` (source record ids), those records leave the profile; without it, the profile splits into
    the groups its records' deterministic rules support, undoing probabilistic and reviewer links.
    """
    record_ids = sorted(profile.records.values_list("pk", flat=True))
    if split_off:
        off = set(split_off) & set(record_ids)
        pieces = [off, set(record_ids) - off]
    else:
        pieces = _deterministic_pieces(record_ids)
    pieces = [p for p in pieces if p]
    if len(pieces) < 2:
        return ResolutionReport()
    pairs = {
        _ordered(x, y)
        for i, first in enumerate(pieces) for second in pieces[i + 1:] for x, y in product(first, second)
    }
    DoNotLink.objects.bulk_create(
        [DoNotLink(record_a_id=a, record_b_id=b, reason=f"unmerge of {profile.public_id}", created_by=decided_by)
         for a, b in pairs],
        ignore_conflicts=True,
    )
    links_across = [
        link_id for link_id, a, b in RecordLink.objects.filter(record_a_id__in=record_ids, record_b_id__in=record_ids)
        .values_list("pk", "record_a_id", "record_b_id") if (a, b) in pairs
    ]
    RecordLink.objects.filter(pk__in=links_across).delete()
    _mark_for_resolution(record_ids)
    return identity_resolve()


def identity_map_export(*, path: Path | str) -> int:
    """Write the crosswalk profile_id,source,customer_key that downstream systems consume; returns rows written."""
    rows = sql.fetch_all(
        f"SELECT p.public_id, s.code, r.customer_key FROM {T_RECORD} r "
        f"JOIN {CustomerProfile._meta.db_table} p ON p.id = r.profile_id "
        f"JOIN {Source._meta.db_table} s ON s.id = r.source_id ORDER BY p.public_id, s.code, r.customer_key"
    )
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = SafeCsvWriter(fh)
        writer.writerow(["profile_id", "source", "customer_key"])
        writer.writerows(rows)
    return len(rows)


@transaction.atomic
def consent_set(*, profile: CustomerProfile, channel: str, granted: bool, source: str,
                purpose: str = Consent.Purpose.MARKETING, at: datetime | None = None) -> Consent:
    """Record the customer's decision for one channel and purpose in the history, and return the current state it
    derives: the latest decision by the time it was taken (a decision older than the latest one is kept in the
    history but changes nothing)."""
    if channel not in Consent.Channel.values:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(Consent.Channel.values)}")
    if purpose not in Consent.Purpose.values:
        raise ValueError(f"unknown purpose {purpose!r}; one of {', '.join(Consent.Purpose.values)}")
    ConsentEvent.objects.create(profile=profile, channel=channel, purpose=purpose, granted=granted,
                                source=source[:32], at=at or timezone.now())
    return _consent_derive(profile_id=profile.pk, channel=channel, purpose=purpose)


def _consent_derive(*, profile_id: int, channel: str, purpose: str) -> Consent:
    """The current state of one (profile, channel, purpose) from its history: the latest event wins."""
    latest = ConsentEvent.objects.filter(profile_id=profile_id, channel=channel, purpose=purpose).latest("at", "id")
    consent, _ = Consent.objects.select_for_update().update_or_create(
        profile_id=profile_id, channel=channel, purpose=purpose,
        defaults={"granted": latest.granted, "source": latest.source, "updated_at": latest.at},
    )
    return consent
