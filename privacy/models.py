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


class ErasureLog(models.Model):
    """One erasure of a person under PIPL: who ran it, when, why, and how many rows of each kind went.

    Holds no personal data: not the profile's id, not its source keys; `reason` is the operator's reference (a
    request or ticket number), which they must not fill with the customer's details."""

    erased_at = models.DateTimeField(auto_now_add=True)
    erased_by = models.CharField(max_length=150)
    reason = models.TextField()
    # {"source_records": 3, "transactions": 120, ...}: rows deleted per kind.
    counts = models.JSONField(default=dict)

    class Meta:
        ordering = ["-erased_at", "-id"]
        # The rights a person needs in the admin; an API key needs the privacy:rights scope instead.
        permissions = [("subject_access", "Can export everything held on a customer (subject access)"),
                       ("erase_subject", "Can erase a customer (right to deletion)")]

    def __str__(self) -> str:
        return f"erasure #{self.pk} @ {self.erased_at:%Y-%m-%d %H:%M:%S}"


class ErasedIdentifier(models.Model):
    """A do-not-reload marker: the keyed hash of an identifier of an erased person. A feed row whose identifier
    hashes to a marker is skipped (counted as `skipped_erased`), so the next load does not bring the person back.

    source_key: HMAC of the customer key with the purpose `erased_key:<source id>` (rows of that source);
    id_number: the keyed hash of a valid id number, as the feeds compute it (rows of any source);
    contact: HMAC of "phone|email", both normalised (rows of any source; households share either alone)."""

    class Kind(models.TextChoices):
        SOURCE_KEY = "source_key"
        ID_NUMBER = "id_number"
        CONTACT = "contact"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    digest = models.CharField(max_length=32)
    # Set for source_key markers: a load reads the markers of its own source only.
    source = models.ForeignKey("profiles.Source", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    erasure = models.ForeignKey(ErasureLog, on_delete=models.CASCADE, related_name="markers")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "digest"], name="uniq_erased_identifier")]
        indexes = [models.Index(fields=["source", "kind"], name="erased_identifier_source")]


class PersonalDataAccess(models.Model):
    """No table: the holder of the permissions a person needs to read personal data clear or to export members.

    `privacy.view_pii` shows names, phone, e-mail, address and birth date clear in the admin, the browsable API
    and exports (each clear read audited); `privacy.export_members` allows a member export at all.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_pii", "Can see personal data in clear (each read audited)"),
            ("export_members", "Can export segment members to CSV"),
        ]
