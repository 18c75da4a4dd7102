"""Reads of segments shared by the admin, the API, commands and services: members, history, preview, diff."""
import datetime as dt

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Window
from django.utils import timezone

from privacy.audit import audit_clear_read
from privacy.policy import MASKED_VIEWER, Viewer
from profiles.models import Consent, CustomerProfile

from . import sql
from .models import Segment, SegmentEvent, SegmentMember
from .rules import RuleContext, explained_personal_fields, rule_explain, rule_queryset, rule_validate

SAMPLE_SIZE = 20


def _current_members(segment: Segment) -> QuerySet:
    # The version is read in the same query as the members: a switch between two reads cannot mix versions.
    return SegmentMember.objects.filter(segment_id=segment.pk, version=F("segment__current_version"))


def segment_members(*, segment: Segment, include_holdout: bool = True) -> QuerySet:
    """The segment's current members as profiles, each with `in_holdout` (its control-group flag)."""
    members = _current_members(segment).filter(profile=OuterRef("pk"))
    profiles = CustomerProfile.objects.filter(Exists(members)).annotate(
        in_holdout=Subquery(members.values("in_holdout")[:1]))
    return profiles if include_holdout else profiles.filter(in_holdout=False)


def segment_members_for_channel(*, segment: Segment, channel: str) -> QuerySet:
    """Members a campaign on `channel` may contact: marketing consent granted for it at the moment the query runs
    (the current state derived from the consent history), and not in the holdout group."""
    if channel not in Consent.Channel.values:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(Consent.Channel.values)}")
    granted = Consent.objects.filter(profile=OuterRef("pk"), channel=channel, purpose=Consent.Purpose.MARKETING,
                                     granted=True)
    return segment_members(segment=segment, include_holdout=False).filter(Exists(granted)).order_by("pk")


def segment_members_on(*, segment: Segment, day: dt.date) -> QuerySet:
    """Profiles that were members at the end of `day` (local time), from the entered/exited history."""
    end = timezone.make_aware(dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min))
    # Entries and exits of a profile alternate, so it was in when it had entered more often than it had left.
    inside = (SegmentEvent.objects.filter(segment_id=segment.pk, at__lt=end).values("profile_id")
              .annotate(entered=Count("id", filter=Q(kind=SegmentEvent.Kind.ENTERED)),
                        exited=Count("id", filter=Q(kind=SegmentEvent.Kind.EXITED)))
              .filter(entered__gt=F("exited")).values("profile_id"))
    return CustomerProfile.objects.filter(pk__in=inside)


def segment_history(*, segment: Segment, profile: CustomerProfile | None = None) -> QuerySet:
    events = SegmentEvent.objects.filter(segment_id=segment.pk).order_by("at", "id")
    return events.filter(profile=profile) if profile else events


def rule_preview(*, rule: dict, slug: str | None = None, now=None) -> dict:
    """Count and a sample of the profiles an unsaved rule selects (validated first: RuleError names the node)."""
    ctx = RuleContext(now=now or timezone.now(), segment_slug=slug)
    rule_validate(rule, ctx)
    matching = rule_queryset(rule, ctx)
    with transaction.atomic():
        sql.rule_query_settings()
        # One evaluation of the rule for both: the count is a window over the whole result, then the first rows.
        rows = list(matching.annotate(total=Window(Count("pk"))).order_by("pk").values(
            "public_id", "full_name", "gender", "birth_date", "city", "total")[:SAMPLE_SIZE])
    return {"count": rows[0].pop("total") if rows else 0,
            "sample": [{k: v for k, v in row.items() if k != "total"} for row in rows]}


def rule_diff(*, segment: Segment, rule: dict, now=None) -> dict:
    """Before saving a changed rule: how many current members would leave and how many profiles would enter."""
    ctx = RuleContext(now=now or timezone.now(), segment_slug=segment.slug)
    rule_validate(rule, ctx)
    matching = rule_queryset(rule, ctx)
    current = _current_members(segment).values("profile_id")
    with transaction.atomic():
        sql.rule_query_settings()
        return {
            "would_enter": matching.exclude(pk__in=current).count(),
            "would_leave": _current_members(segment).exclude(profile_id__in=matching.values("pk")).count(),
            "would_stay": matching.filter(pk__in=current).count(),
        }


def segment_explain(*, segment: Segment, profile: CustomerProfile, viewer: Viewer = MASKED_VIEWER,
                    now=None) -> dict:
    """Every node of the segment's rule for the profile. The values of personal fields are masked unless the viewer
    sees them clear; then the read is audited before the explanation is returned. Without a viewer: masked."""
    ctx = RuleContext(now=now or timezone.now(), segment_slug=segment.slug)
    membership = _current_members(segment).filter(profile=profile).values("in_holdout").first()
    explained = rule_explain(segment.rule, profile=profile, ctx=ctx, sees_clear=viewer.sees_clear) \
        if segment.rule else None
    if explained and viewer.sees_clear:
        audit_clear_read(viewer=viewer, fields_by_profile={profile.public_id: explained_personal_fields(explained)})
    return {
        "segment": segment.slug,
        "profile": profile.public_id,
        "member": membership is not None,
        "in_holdout": bool(membership and membership["in_holdout"]),
        "rule": explained,
    }


def segment_sizes(*, segment: Segment, limit: int = 500) -> list[tuple[dt.datetime, int]]:
    """The latest `limit` (time, members) points of the segment, one per refresh, oldest first."""
    latest = segment.sizes.order_by("-at").values_list("at", "member_count")[:limit]
    return list(reversed(latest))


def segment_member_profile_ids(*, slug: str) -> QuerySet:
    """Ids of the current members of a segment, as a subquery (for filters); holdout members included."""
    return SegmentMember.objects.filter(segment__slug=slug, version=F("segment__current_version")).values("profile_id")


def profile_segments(*, profile: CustomerProfile) -> QuerySet:
    """The segments a profile is a current member of, with its holdout flag; one query."""
    return (SegmentMember.objects.filter(profile=profile, version=F("segment__current_version"))
            .select_related("segment").order_by("segment__slug"))
