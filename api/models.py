"""API keys for client apps, and the audit trail of unmasked personal data returned by the API."""
from django.conf import settings
from django.db import models

from .rates import validate_rate


class Scope(models.TextChoices):
    PROFILES_READ = "profiles:read"
    PROFILES_READ_PII = "profiles:read_pii"
    PROFILES_WRITE = "profiles:write"
    SEGMENTS_READ = "segments:read"
    SEGMENTS_WRITE = "segments:write"
    FEEDS_WRITE = "feeds:write"
    JOBS_READ = "jobs:read"


class ApiKey(models.Model):
    """A client app's key. Only a SHA-256 of the key is stored: the key itself is shown once, at creation.

    The key is `cdp_<prefix>_<secret>`; the prefix is public (shown in the admin and logs) and finds the row,
    the hash of the whole key proves it. The secret has 256 bits of entropy, so a plain hash is enough
    (no password stretching: it would cost milliseconds on every request).
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="Scopes granted, e.g. [\"profiles:read\"]")
    rate = models.CharField(max_length=20, blank=True, validators=[validate_rate],
                            help_text="Rate limit of this key, e.g. 500/s; empty: the CDP_API_RATE setting")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class AuditRecord(models.Model):
    """A response that returned unmasked personal data of a profile: who, which fields, when, which request."""

    # No constraint in the database (PROTECT is the ORM's): its check at each audited response's commit took a
    # shared lock on the key's row, which every call with that key then contended for.
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                db_constraint=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="+", db_constraint=False)
    # The public id as the caller saw it: kept even if the profile is later merged away.
    profile_public_id = models.CharField(max_length=26)
    fields = models.JSONField(default=list)
    at = models.DateTimeField(auto_now_add=True)
    request_id = models.CharField(max_length=64)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["profile_public_id", "at"], name="audit_profile_time")]

    def __str__(self) -> str:
        return f"{self.profile_public_id} @ {self.at:%Y-%m-%d %H:%M:%S}"
