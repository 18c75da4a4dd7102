"""Segments, their versioned membership, the history of who entered and left, and refresh jobs."""
from django.conf import settings
from django.db import models

from profiles.models import CustomerProfile


class Segment(models.Model):
    class Kind(models.TextChoices):
        RULE = "rule"
        STATIC = "static"  # members come from an uploaded list

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.RULE)
    rule = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    refresh_every_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Interval schedule; leave empty to use the cron schedule or refresh on demand")
    refresh_cron = models.CharField(
        max_length=100, blank=True, help_text="Cron schedule, five fields: minute hour day-of-month month day-of-week")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    holdout_percent = models.DecimalField(max_digits=5, decimal_places=2, default=0,
                                          help_text="Share of members kept as a control group, 0-100")

    # Derived from the rule when it is saved (segments.services.segment_save): what a refresh depends on.
    inputs = models.JSONField(default=list, blank=True, editable=False)
    is_time_relative = models.BooleanField(default=False, editable=False)

    # The versioned result (STYLE.md, Jobs): readers use current_version only.
    current_version = models.PositiveIntegerField(default=0, editable=False)
    pending_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    is_calculating = models.BooleanField(default=False, editable=False)
    member_count = models.PositiveIntegerField(default=0, editable=False)
    holdout_count = models.PositiveIntegerField(default=0, editable=False)
    last_refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    error_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SegmentMember(models.Model):
    """One profile in one version of a segment's result; only rows of the segment's current_version count."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    version = models.PositiveIntegerField()
    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    in_holdout = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "version", "profile"], name="uniq_segment_member")]
        indexes = [models.Index(fields=["profile"], name="segment_member_profile")]


class SegmentEvent(models.Model):
    """A profile entered or left a segment: the history that answers "who was in X on date D"."""

    class Kind(models.TextChoices):
        ENTERED = "entered"
        EXITED = "exited"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="events", db_index=False,
                                db_constraint=False)
    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    at = models.DateTimeField()
    job = models.ForeignKey("RefreshJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                            db_index=False, db_constraint=False)

    class Meta:
        indexes = [models.Index(fields=["segment", "profile", "at"], name="segment_event_lookup"),
                   models.Index(fields=["segment", "at"], name="segment_event_time")]


class StaticSegmentEntry(models.Model):
    """A profile on a static segment's uploaded list."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="static_entries", db_index=False)
    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="+", db_index=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "profile"], name="uniq_static_segment_entry")]


class SegmentSize(models.Model):
    """Members after each refresh, changed or not, for the size-over-time chart."""

    # A point per refresh adds up: the chart reads a segment's latest points through (segment, at).
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sizes", db_index=False)
    at = models.DateTimeField()
    member_count = models.PositiveIntegerField()

    class Meta:
        ordering = ["segment", "at"]
        indexes = [models.Index(fields=["segment", "at"], name="segment_size_time")]


class RefreshJob(models.Model):
    """One run of a refresh of a segment or a rule tag."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"  # another refresh already produced a newer result

    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    tag = models.ForeignKey("tags.TagDefinition", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    trigger = models.CharField(max_length=32, default="manual")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    version = models.PositiveIntegerField(null=True, blank=True)
    entered = models.PositiveIntegerField(default=0)
    exited = models.PositiveIntegerField(default=0)
    member_count = models.PositiveIntegerField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]

    def __str__(self) -> str:
        return f"refresh #{self.pk} ({self.status})"
