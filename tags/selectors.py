"""Reads on tags shared by the admin, the API and the segment engine."""
from collections import defaultdict
from collections.abc import Iterable

from django.db.models import F, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from profiles.models import CustomerProfile, SourceRecord

from .models import TagAssignment, TagDefinition

CHUNK = 5000


def _chunks(values: list, size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def profile_ids_for_keys(*, customer_keys: Iterable[tuple[str, str]]) -> tuple[set[int], list[tuple[str, str]]]:
    """Profile ids of (source code, customer key) pairs, one query per source and chunk; and the unknown pairs."""
    by_source: dict[str, set[str]] = defaultdict(set)
    for source, key in customer_keys:
        by_source[source.strip()].add(key.strip())
    found: set[int] = set()
    unknown: list[tuple[str, str]] = []
    for source, keys in by_source.items():
        seen: set[str] = set()
        for chunk in _chunks(sorted(keys)):
            rows = SourceRecord.objects.filter(source__code=source, customer_key__in=chunk, profile__isnull=False)
            for key, profile_id in rows.values_list("customer_key", "profile_id"):
                seen.add(key)
                found.add(profile_id)
        unknown.extend((source, key) for key in sorted(keys - seen))
    return found, unknown


def profile_ids_for_public_ids(*, public_ids: Iterable[str]) -> tuple[set[int], list[str]]:
    """Profile ids of public ids (an absorbed id gives its survivor); and the unknown ids."""
    wanted = sorted({p.strip() for p in public_ids if p.strip()})
    found: set[int] = set()
    seen: set[str] = set()
    for chunk in _chunks(wanted):
        rows = CustomerProfile.objects.filter(public_id__in=chunk).values_list(
            "public_id", Coalesce(F("merged_into_id"), F("id")))
        for public_id, profile_id in rows:
            seen.add(public_id)
            found.add(profile_id)
    return found, [p for p in wanted if p not in seen]


def profile_tags(*, profile: CustomerProfile) -> list[TagAssignment]:
    """A profile's tags in force now."""
    return list(TagAssignment.objects.filter(TagAssignment.active_q(timezone.now()), profile=profile)
                .select_related("tag").order_by("tag__code"))


def tagged_profile_ids(*, code: str) -> QuerySet:
    """Ids of the profiles holding the tag now, as a subquery (for filters)."""
    return (TagAssignment.objects.filter(TagAssignment.active_q(timezone.now()), tag__code=code)
            .values("profile_id"))


def tag_definition_get(*, code: str) -> TagDefinition | None:
    return TagDefinition.objects.filter(code=code).first()
