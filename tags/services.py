"""Writes on tags: manual assignment (one profile, or in bulk from an uploaded list), removal.

Rule tags are computed by the segment engine (`segments.services.tag_rule_refresh`); system tags by the platform.
"""
import csv
import io
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from profiles.models import CustomerProfile

from .models import TagAssignment, TagDefinition
from .selectors import CHUNK, profile_ids_for_keys, profile_ids_for_public_ids


class TagError(Exception):
    pass


@dataclass
class BulkAssignResult:
    assigned: int = 0
    already_tagged: int = 0
    unknown: list = field(default_factory=list)


def _ensure_settable(tag: TagDefinition) -> None:
    if tag.kind != TagDefinition.Kind.MANUAL:
        raise TagError(f"tag {tag.code!r} is a {tag.kind} tag: the platform sets it, people cannot")


def _assign(*, tag: TagDefinition, profile_ids: set[int], source: str, assigned_by: str,
            expires_at: datetime | None) -> int:
    """Assign the tag to the profiles that lack it; returns how many gained it. Existing assignments stay."""
    now = timezone.now()
    ids = sorted(profile_ids)
    before = TagAssignment.objects.filter(tag=tag).count()
    for start in range(0, len(ids), CHUNK):
        TagAssignment.objects.bulk_create(
            [TagAssignment(profile_id=pid, tag=tag, source=source, assigned_at=now, assigned_by=assigned_by,
                           expires_at=expires_at) for pid in ids[start:start + CHUNK]],
            ignore_conflicts=True,
        )
    return TagAssignment.objects.filter(tag=tag).count() - before


@transaction.atomic
def tag_add(*, tag: TagDefinition, profile: CustomerProfile, assigned_by: str,
            source: str = TagAssignment.Source.MANUAL, expires_at: datetime | None = None) -> bool:
    """Tag one profile; False if it already had the tag."""
    _ensure_settable(tag)
    return _assign(tag=tag, profile_ids={profile.pk}, source=source, assigned_by=assigned_by,
                   expires_at=expires_at) == 1


@transaction.atomic
def tag_remove(*, tag: TagDefinition, profile: CustomerProfile) -> bool:
    _ensure_settable(tag)
    deleted, _ = TagAssignment.objects.filter(tag=tag, profile=profile).delete()
    return deleted > 0


@transaction.atomic
def tags_bulk_assign(*, tag: TagDefinition, assigned_by: str, customer_keys=(), public_ids=(),
                     source: str = TagAssignment.Source.MANUAL, expires_at: datetime | None = None) -> BulkAssignResult:
    """Tag every profile named by (source, customer key) pairs or profile public ids, a chunk at a time."""
    _ensure_settable(tag)
    by_key, unknown_keys = profile_ids_for_keys(customer_keys=customer_keys)
    by_public_id, unknown_ids = profile_ids_for_public_ids(public_ids=public_ids)
    profile_ids = by_key | by_public_id
    assigned = _assign(tag=tag, profile_ids=profile_ids, source=source, assigned_by=assigned_by,
                       expires_at=expires_at)
    return BulkAssignResult(assigned=assigned, already_tagged=len(profile_ids) - assigned,
                            unknown=[f"{s}:{k}" for s, k in unknown_keys] + unknown_ids)


def parse_profile_list(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """An uploaded list: CSV with a `profile_id` column, or `source` and `customer_key` columns."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = set(reader.fieldnames or ())
    if "profile_id" in columns:
        return [], [row["profile_id"] for row in reader if row.get("profile_id")]
    if {"source", "customer_key"} <= columns:
        return [(row["source"], row["customer_key"]) for row in reader if row.get("customer_key")], []
    raise TagError("the list needs a profile_id column, or source and customer_key columns")


# Derived attributes mirrored as system tags, so a rule can say {"tag": "lifecycle-dormant"} like any other tag.
SYSTEM_TAG_ATTRIBUTES = {
    "lifecycle": ("lifecycle_stage", "Lifecycle stage",
                  ("prospect", "new", "active", "growing", "declining", "dormant", "churned")),
    "value": ("value_tier", "Value tier", ("high", "mid", "low")),
}


def system_tags_sync() -> set[str]:
    """Make each profile's system tags match its current derived attributes, set-based: one DELETE and one
    INSERT … SELECT per tag. Returns the codes of the tags whose holders changed."""
    from profiles.models import ProfileMetrics  # profiles owns the attributes; tags only mirrors them

    now = timezone.now()
    changed = set()
    for prefix, (attribute, label, values) in SYSTEM_TAG_ATTRIBUTES.items():
        for value in values:
            tag, _ = TagDefinition.objects.get_or_create(
                code=f"{prefix}-{value}",
                defaults={"name": f"{label}: {value}", "category": label, "kind": TagDefinition.Kind.SYSTEM,
                          "description": f"Set by the platform while the profile's {attribute} is {value}."})
            holders = ProfileMetrics.objects.filter(**{attribute: value}).values("profile_id")
            with transaction.atomic():
                removed, _ = TagAssignment.objects.filter(tag=tag).exclude(profile_id__in=holders).delete()
                missing = holders.exclude(profile_id__in=TagAssignment.objects.filter(tag=tag).values("profile_id"))
                added = _insert_select(tag=tag, profile_ids=missing, at=now)
            if removed or added:
                changed.add(tag.code)
    return changed


def _insert_select(*, tag: TagDefinition, profile_ids, at) -> int:
    from django.db import connection

    select_sql, params = profile_ids.query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {TagAssignment._meta.db_table} (profile_id, tag_id, source, assigned_at, assigned_by) "
            f"SELECT s.profile_id, %s, %s, %s, %s FROM ({select_sql}) s",
            [tag.pk, TagAssignment.Source.SYSTEM, at, "system", *params])
        return cur.rowcount
