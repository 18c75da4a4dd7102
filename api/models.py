"""API keys for client apps (the audit trail of clear personal data is privacy.models.AuditRecord)."""
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
    # Subject access and erasure (PIPL): everything on a person, and its deletion; implied by no other scope.
    PRIVACY_RIGHTS = "privacy:rights"


# The scopes whose purpose is to return personal data clear (each read audited).
PERSONAL_DATA_SCOPES = frozenset({Scope.PROFILES_READ_PII, Scope.PRIVACY_RIGHTS})


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
