"""The audit trail of clear reads of personal data."""
from django.conf import settings
from django.db import models


class AuditRecord(models.Model):
    """A clear read of a profile's personal data by a key or a person: who, which fields, when, which request."""

    # No constraint in the database (PROTECT is the ORM's): its check at each audited response's commit took a
    # shared lock on the key's row, which every call with that key then contended for.
    api_key = models.ForeignKey("api.ApiKey", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
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
        # Created by the api app before the privacy app existed; the table keeps its name.
        db_table = "api_auditrecord"
        ordering = ["-at", "-id"]
        # By time alone: retention deletes the oldest records (and the admin lists the newest first).
        indexes = [models.Index(fields=["profile_public_id", "at"], name="audit_profile_time"),
                   models.Index(fields=["at"], name="audit_time")]

    def __str__(self) -> str:
        return f"{self.profile_public_id} @ {self.at:%Y-%m-%d %H:%M:%S}"
