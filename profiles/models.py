"""Sources, feed batches, source records and the unified customer profiles built from them."""
import secrets

from django.db import models
from django.db.models import Q


class Source(models.Model):
    """A system of record that sends feeds (core banking, cards, wealth, ...)."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    # Lower wins in survivorship: a core-banking value beats a card value of the same age.
    priority = models.PositiveSmallIntegerField(default=100)
    # Maps the source's own header names to canonical columns, e.g. {"CUST_NO": "customer_key"}.
    column_mapping = models.JSONField(default=dict, blank=True)
    # The source whose customer_key is the core CIF that other sources cross-reference in `core_cif`.
    is_cif_authority = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "code"]

    def __str__(self) -> str:
        return self.code


class FeedBatch(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="batches")
    kind = models.CharField(max_length=32, default="customers")
    file_name = models.CharField(max_length=500)
    file_sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    rows_read = models.PositiveIntegerField(default=0)
    rows_created = models.PositiveIntegerField(default=0)
    rows_updated = models.PositiveIntegerField(default=0)
    rows_unchanged = models.PositiveIntegerField(default=0)
    rows_rejected = models.PositiveIntegerField(default=0)
    # Data-quality counts that do not reject a row, e.g. {"invalid_id_checksum": 3}.
    warnings = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name_plural = "feed batches"

    def __str__(self) -> str:
        return f"{self.source.code}/{self.kind} #{self.pk} ({self.status})"


class RejectedRow(models.Model):
    batch = models.ForeignKey(FeedBatch, on_delete=models.CASCADE, related_name="rejected_rows")
    row_number = models.PositiveIntegerField(help_text="1-based data row; the header is row 0")
    reason = models.TextField()
    # Card numbers and id numbers are masked before the row is kept.
    raw = models.JSONField(default=dict)

    class Meta:
        ordering = ["batch", "row_number"]
        indexes = [models.Index(fields=["batch", "row_number"])]


class CustomerProfile(models.Model):
    """One customer, one view: the golden record of the source records that resolve to it."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        MERGED = "merged"

    public_id = models.CharField(max_length=26, unique=True, editable=False)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    # An absorbed profile keeps resolving: it points at the profile that absorbed it.
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="absorbed")
    merged_at = models.DateTimeField(null=True, blank=True)

    full_name = models.CharField(max_length=200, null=True, blank=True)
    family_name = models.CharField(max_length=100, null=True, blank=True)
    given_name = models.CharField(max_length=100, null=True, blank=True)
    gender = models.CharField(max_length=1, null=True, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    id_type = models.CharField(max_length=16, null=True, blank=True)
    id_number_hash = models.CharField(max_length=32, null=True, blank=True)
    id_number_masked = models.CharField(max_length=40, null=True, blank=True)
    phone = models.CharField(max_length=20, null=True, blank=True)
    email = models.CharField(max_length=254, null=True, blank=True)
    address = models.CharField(max_length=300, null=True, blank=True)
    city = models.CharField(max_length=100, null=True, blank=True)
    postcode = models.CharField(max_length=10, null=True, blank=True)

    record_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    # Golden attributes chosen by survivorship, in the order they are shown.
    GOLDEN_FIELDS = (
        "full_name", "family_name", "given_name", "gender", "birth_date", "id_type",
        "id_number_hash", "id_number_masked", "phone", "email", "address", "city", "postcode",
    )

    class Meta:
        indexes = [
            models.Index(fields=["phone"]),
            models.Index(fields=["email"]),
            models.Index(fields=["id_number_hash"]),
        ]

    def __str__(self) -> str:
        return self.public_id

    @staticmethod
    def new_public_id() -> str:
        return "P" + secrets.token_hex(8).upper()


class SourceRecord(models.Model):
    """A customer as one source system knows it, normalised; never deleted by a merge."""

    # Indexed through uniq_source_customer_key, whose first column it is.
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="records", db_index=False)
    customer_key = models.CharField(max_length=64)
    profile = models.ForeignKey(CustomerProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="records")

    full_name = models.CharField(max_length=200, null=True, blank=True)
    family_name = models.CharField(max_length=100, null=True, blank=True)
    given_name = models.CharField(max_length=100, null=True, blank=True)
    name_key = models.CharField(max_length=200, null=True, blank=True)
    gender = models.CharField(max_length=1, default="U")
    birth_date = models.DateField(null=True, blank=True)
    id_type = models.CharField(max_length=16, null=True, blank=True)
    id_number_hash = models.CharField(max_length=32, null=True, blank=True)
    id_number_masked = models.CharField(max_length=40, null=True, blank=True)
    id_valid = models.BooleanField(default=False)
    phone = models.CharField(max_length=20, null=True, blank=True)
    email = models.CharField(max_length=254, null=True, blank=True)
    address = models.CharField(max_length=300, null=True, blank=True)
    city = models.CharField(max_length=100, null=True, blank=True)
    postcode = models.CharField(max_length=10, null=True, blank=True)
    core_cif = models.CharField(max_length=64, null=True, blank=True)
    # The CIF this record stands for: its own key in the CIF authority, else its core_cif reference.
    cif_ref = models.CharField(max_length=64, null=True, blank=True)
    pan_token = models.CharField(max_length=64, null=True, blank=True)
    pan_bin = models.CharField(max_length=6, null=True, blank=True)
    pan_last4 = models.CharField(max_length=4, null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    source_updated_at = models.DateTimeField(null=True, blank=True)

    # Digest of the raw row: a reload of an unchanged row is recognised without re-normalising it.
    row_digest = models.CharField(max_length=32)
    # Unindexed: batches are never deleted in bulk, and every index costs on a million-row load.
    first_batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False)
    last_batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False)
    # Set by a load, cleared by identity resolution: an interrupted resolution is finished by the next one.
    needs_resolution = models.BooleanField(default=True)
    loaded_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "customer_key"], name="uniq_source_customer_key")]
        indexes = [
            models.Index(fields=["needs_resolution"], condition=Q(needs_resolution=True), name="record_needs_resolution"),
        ]

    def __str__(self) -> str:
        return f"{self.source_id}:{self.customer_key}"


class MatchRule(models.Model):
    """A deterministic rule: records whose normalised identifiers all agree are the same customer."""

    FIELDS = ("id_number", "core_cif", "phone", "birth_date", "email", "name", "postcode", "city", "gender")

    name = models.CharField(max_length=100, unique=True)
    priority = models.PositiveSmallIntegerField(help_text="Rules are applied lowest first; stronger rules first.")
    fields = models.JSONField(help_text=f"Identifiers that must all match, from: {', '.join(FIELDS)}")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class MatchKey(models.Model):
    """The key a record has under a rule; records sharing (rule, key) are linked."""

    record = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="match_keys", db_index=False)
    rule = models.ForeignKey(MatchRule, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=400)

    class Meta:
        indexes = [models.Index(fields=["rule", "key"]), models.Index(fields=["record"])]


class SuppressedIdentifier(models.Model):
    """An identifier value shared by too many records of one source (a branch phone): never used to match.

    `value` is what matching compares: E.164 phone, lower-case email, CIF, or id type and keyed hash.
    """

    field = models.CharField(max_length=16)
    value = models.CharField(max_length=300)
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+")
    record_count = models.PositiveIntegerField()
    detected_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["field", "value", "source"], name="uniq_suppressed_identifier")]
        indexes = [models.Index(fields=["field", "value"])]


class RecordLink(models.Model):
    """A link that no deterministic rule makes: from the probabilistic tier or a reviewer's decision."""

    class Kind(models.TextChoices):
        PROBABILISTIC = "probabilistic"
        MANUAL = "manual"

    record_a = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    record_b = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    probability = models.FloatField(null=True, blank=True)
    # Per-comparison levels and weights, so the link can be explained.
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["record_a", "record_b"], name="uniq_record_link")]


class DoNotLink(models.Model):
    """Two records that must never resolve to the same profile (from an unmerge or a rejected duplicate)."""

    record_a = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    record_b = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["record_a", "record_b"], name="uniq_do_not_link")]
        verbose_name = "do-not-link pair"


class PossibleDuplicate(models.Model):
    """A pair the probabilistic tier was unsure about, waiting for a reviewer."""

    class Status(models.TextChoices):
        OPEN = "open"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    record_a = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    record_b = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    probability = models.FloatField()
    evidence = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["record_a", "record_b"], name="uniq_possible_duplicate")]
        indexes = [models.Index(fields=["status"])]


class AttributeLineage(models.Model):
    """Which source record and batch supplied a golden attribute of a profile."""

    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="lineage", db_index=False)
    attribute = models.CharField(max_length=32)
    record = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="+")
    batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "attribute"], name="uniq_profile_attribute")]


class ProbabilisticModel(models.Model):
    """Parameters of the probabilistic tier, estimated from the data of one resolution run."""

    parameters = models.JSONField()
    trained_on_records = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        get_latest_by = "created_at"


class Consent(models.Model):
    """A customer's marketing consent for one channel, with when and where it was given or withdrawn."""

    class Channel(models.TextChoices):
        SMS = "sms"
        EMAIL = "email"
        PUSH = "push"
        PHONE = "phone"

    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="consents", db_index=False)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    granted = models.BooleanField()
    source = models.CharField(max_length=32, help_text="Where the decision came from: a source system, api, admin")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "channel"], name="uniq_profile_channel_consent")]
