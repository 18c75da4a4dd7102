"""Tag definitions and their assignments to customer profiles."""
from django.db import models
from django.db.models import Q

from profiles.models import CustomerProfile


class TagDefinition(models.Model):
    class Kind(models.TextChoices):
        MANUAL = "manual"  # set by people (admin, uploaded lists) and the API
        RULE = "rule"  # computed from `rule` by the segment engine
        SYSTEM = "system"  # mirrors a derived attribute, written by the platform

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    category = models.CharField(max_length=50, blank=True)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.MANUAL)
    rule = models.JSONField(null=True, blank=True, help_text="Rule tags: the rule (see README, rule language)")
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["category", "code"]

    def __str__(self) -> str:
        return self.code


class TagAssignment(models.Model):
    class Source(models.TextChoices):
        MANUAL = "manual"
        RULE = "rule"
        SYSTEM = "system"
        API = "api"

    # Indexed through uniq_profile_tag, whose first column it is.
    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="tag_assignments",
                                db_index=False, db_constraint=False)
    tag = models.ForeignKey(TagDefinition, on_delete=models.CASCADE, related_name="assignments", db_constraint=False)
    source = models.CharField(max_length=8, choices=Source.choices)
    assigned_at = models.DateTimeField()
    assigned_by = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "tag"], name="uniq_profile_tag")]

    def __str__(self) -> str:
        return f"{self.tag_id}@{self.profile_id}"

    @staticmethod
    def active_q(now) -> Q:
        """Assignments in force at `now`: an expired tag is as good as absent, without a cleanup job."""
        return Q(expires_at__isnull=True) | Q(expires_at__gt=now)
