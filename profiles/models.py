"""Sources, feed batches, source records and the unified customer profiles built from them.

Foreign keys of the tables that loads, resolution and refreshes write by the million carry
`db_constraint=False`: PostgreSQL checks a foreign key with a trigger per written row, deferred to the
commit, which cost minutes on a million-record load. Those rows are written by set-based statements that
take their ids from the referenced tables in the same transaction, and deletions cascade in the ORM.
"""
import secrets
import time

from django.core.exceptions import ValidationError
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

    # code -> (id, expiry), per process: the API's lookup by source key then reads one table, not three (planning
    # the join with this table cost as much as running the query). Saving or deleting a source forgets it here.
    _ids_by_code: dict[str, tuple[int, float]] = {}
    ID_CACHE_SECONDS = 60

    @classmethod
    def id_for_code(cls, code: str) -> int | None:
        now = time.monotonic()
        cached = cls._ids_by_code.get(code)
        if cached and cached[1] > now:
            return cached[0]
        source_id = cls.objects.filter(code=code).values_list("pk", flat=True).first()
        if source_id is not None:
            cls._ids_by_code[code] = (source_id, now + cls.ID_CACHE_SECONDS)
        return source_id

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        Source._ids_by_code.clear()

    def delete(self, *args, **kwargs):
        Source._ids_by_code.clear()
        return super().delete(*args, **kwargs)


class FeedBatch(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # accepted (an upload), waiting for a worker
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="batches")
    kind = models.CharField(max_length=32, default="customers")
    file_name = models.CharField(max_length=500, help_text="The file's base name, never the folder it is stored in")
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
    # The identity resolution that first followed the batch, and the probabilistic model it scored with.
    resolved_at = models.DateTimeField(null=True, blank=True)
    scored_by = models.ForeignKey("ProbabilisticModel", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    # A database default too: the benchmarks and bulk tools insert batches in plain SQL.
    model_use = models.CharField(max_length=8, blank=True, db_default="",
                                 help_text="prior, stored or trained; empty: none scored")

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name_plural = "feed batches"

    def __str__(self) -> str:
        return f"{self.source.code}/{self.kind} #{self.pk} ({self.status})"


class RejectedRow(models.Model):
    batch = models.ForeignKey(FeedBatch, on_delete=models.CASCADE, related_name="rejected_rows")
    row_number = models.PositiveIntegerField(help_text="1-based data row; the header is row 0")
    reason = models.TextField()
    raw = models.JSONField(default=dict, help_text="The row as read, its personal fields masked "
                                                   "(privacy.policy.mask_raw_row): never stored in clear")

    class Meta:
        ordering = ["batch", "row_number"]
        indexes = [models.Index(fields=["batch", "row_number"])]


def _lineage_record():
    # Records are never deleted by the platform; a profile's lineage is rewritten whenever it is resolved.
    return models.ForeignKey("SourceRecord", null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+",
                             db_index=False, db_constraint=False)


def _lineage_batch():
    return models.ForeignKey(FeedBatch, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+",
                             db_index=False, db_constraint=False)


class CustomerProfile(models.Model):
    """One customer, one view: the golden record of the source records that resolve to it."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        MERGED = "merged"

    # Unique by a constraint, not unique=True: that would add a second index for LIKE prefix searches (varchar
    # pattern ops) that no query makes, built again on every first load and kept up on every new profile.
    public_id = models.CharField(max_length=26, editable=False)
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

    # Lineage: per survivorship group, the source record and the batch that supplied its golden values (written
    # with them, in the same row; see profiles.selectors.profile_lineage).
    name_record = _lineage_record()
    name_batch = _lineage_batch()
    gender_record = _lineage_record()
    gender_batch = _lineage_batch()
    birth_date_record = _lineage_record()
    birth_date_batch = _lineage_batch()
    id_number_record = _lineage_record()
    id_number_batch = _lineage_batch()
    phone_record = _lineage_record()
    phone_batch = _lineage_batch()
    email_record = _lineage_record()
    email_batch = _lineage_batch()
    address_record = _lineage_record()
    address_batch = _lineage_batch()

    record_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    # Golden attributes chosen by survivorship, in the order they are shown.
    GOLDEN_FIELDS = (
        "full_name", "family_name", "given_name", "gender", "birth_date", "id_type",
        "id_number_hash", "id_number_masked", "phone", "email", "address", "city", "postcode",
    )
    # The survivorship groups whose lineage the profile keeps (`<group>_record`, `<group>_batch`).
    LINEAGE_GROUPS = ("name", "gender", "birth_date", "id_number", "phone", "email", "address")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["public_id"], name="profile_public_id_unique")]
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

    @staticmethod
    def new_public_ids(count: int) -> list[str]:
        """`count` ids of the form of new_public_id, from one draw of the random source instead of one per id."""
        digits = secrets.token_hex(8 * count).upper()
        return ["P" + digits[i:i + 16] for i in range(0, 16 * count, 16)]


class SourceRecord(models.Model):
    """A customer as one source system knows it, normalised; never deleted by a merge."""

    # Indexed through uniq_source_customer_key, whose first column it is.
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="records", db_index=False,
                               db_constraint=False)
    customer_key = models.CharField(max_length=64)
    profile = models.ForeignKey(CustomerProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="records",
                                db_constraint=False)

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
    first_batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False,
                                    db_constraint=False)
    last_batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False,
                                   db_constraint=False)
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

    def field_errors(self) -> list[str]:
        """What is wrong with `fields`: a rule naming an unknown identifier ("birth_dat") would otherwise match on
        the others alone, so "phone + birth_dat" would merge every household sharing a phone."""
        fields = self.fields
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
            return [f"a non-empty list of identifiers, from: {', '.join(self.FIELDS)}"]
        unknown = [f for f in fields if f not in self.FIELDS]
        errors = [f"unknown identifier {f!r}; known: {', '.join(self.FIELDS)}" for f in unknown]
        if len(set(fields)) != len(fields):
            errors.append("an identifier is named twice")
        return errors

    def clean(self) -> None:
        errors = self.field_errors()
        if errors:
            raise ValidationError({"fields": errors})


class MatchKey(models.Model):
    """The key a record has under a rule; records sharing (rule, key) are linked.

    The key is the MD5 digest of the rule's identifiers joined by "|", kept as two 64-bit halves: 16 bytes
    instead of up to 400 characters, compared as two integers. At 128 bits, two different identifier
    combinations sharing a digest by chance is out of reach (about 1e-25 at ten million keys).
    """

    pk = models.CompositePrimaryKey("record_id", "rule_id")
    # Indexed through the primary key, whose first column it is.
    record = models.ForeignKey(SourceRecord, on_delete=models.CASCADE, related_name="match_keys", db_index=False,
                               db_constraint=False)
    rule = models.ForeignKey(MatchRule, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False)
    key_hi = models.BigIntegerField()
    key_lo = models.BigIntegerField()

    class Meta:
        # Looking a key up by its first half finds its records; the second half and the rule are checked on them.
        indexes = [models.Index(fields=["key_hi"], name="matchkey_key_hi")]


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


class ProbabilisticModel(models.Model):
    """Parameters of the probabilistic tier and what they were estimated from (see profiles/identity_model.py)."""

    class Kind(models.TextChoices):
        TRAINED = "trained"  # m estimated by EM from the records
        PRIOR = "prior"  # no EM possible: documented prior m, lambda and u still from the records

    class Reason(models.TextChoices):
        FIRST_LOAD = "first_load", "first load (no model yet)"
        NEW_DATA = "new_data", "records grew by the retraining share since the model"
        NEW_SOURCE = "new_source", "a source the model never saw"
        ON_DEMAND = "on_demand", "on demand"

    parameters = models.JSONField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TRAINED)
    reason = models.CharField(max_length=16, choices=Reason.choices, default=Reason.FIRST_LOAD)
    trained_on_records = models.PositiveIntegerField()
    # {"sources": {code: {"records": n, "last_batch": id}}, "digest": of the records' compared values}
    training_data = models.JSONField(default=dict, blank=True)
    # Warnings of the training run, e.g. levels never observed (their m or u is not estimated).
    warnings = models.JSONField(default=list, blank=True)
    training_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} model {self.pk}"


class Consent(models.Model):
    """A customer's current consent for one channel and purpose: derived from the latest ConsentEvent of that
    channel and purpose (profiles.services.consent_set keeps it so), read by exports at the moment they run."""

    class Channel(models.TextChoices):
        SMS = "sms"
        EMAIL = "email"
        PUSH = "push"
        PHONE = "phone"

    class Purpose(models.TextChoices):
        MARKETING = "marketing"  # campaigns and offers: what exports and deliveries check
        PROFILING = "profiling"  # personalised analysis of the customer's data
        THIRD_PARTY = "third_party"  # sharing with a third party (PIPL art. 23 asks a separate consent)

    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="consents", db_index=False)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.MARKETING)
    granted = models.BooleanField()
    source = models.CharField(max_length=32, help_text="Where the decision came from: a source system, api, admin")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "channel", "purpose"],
                                               name="uniq_profile_channel_purpose_consent")]


class ConsentEvent(models.Model):
    """One consent decision as it was taken: the history that Consent is derived from; never updated."""

    profile = models.ForeignKey(CustomerProfile, on_delete=models.CASCADE, related_name="consent_events",
                                db_index=False)
    channel = models.CharField(max_length=8, choices=Consent.Channel.choices)
    purpose = models.CharField(max_length=16, choices=Consent.Purpose.choices, default=Consent.Purpose.MARKETING)
    granted = models.BooleanField(help_text="True: granted; False: withdrawn")
    source = models.CharField(max_length=32, help_text="Where the decision came from: a source system, api, admin")
    # When the customer decided (a feed may deliver a decision later than a newer one), and when it was recorded.
    at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["profile", "channel", "purpose", "at"], name="consent_event_lookup")]


# --- Activity: accounts, transactions, card transactions, holdings, risk assessments, FX rates -------------------
# Activity rows carry the source's customer_key, not a profile: a row whose customer has not arrived yet is simply
# held, and reaches its profile through SourceRecord(source, customer_key) once the customer is loaded and resolved.
# Monetary amounts keep their own currency; aggregates convert with FxRate.


class ActivityRow(models.Model):
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    customer_key = models.CharField(max_length=64)
    # Digest of the raw row: a reload recognises unchanged rows and rewrites nothing.
    row_digest = models.CharField(max_length=32)
    # Unindexed by Django; the transaction tables get a BRIN index on it (migration 0004) for "rows of batch N".
    last_batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False,
                                   db_constraint=False)
    # The source record of the same (source, customer_key), if the customer has arrived: a join for queries
    # (`record__profile_id`), no column and no constraint, so rows may arrive before their customer.
    record = models.ForeignObject(SourceRecord, on_delete=models.DO_NOTHING, from_fields=["source", "customer_key"],
                                  to_fields=["source", "customer_key"], related_name="+", null=True)

    class Meta:
        abstract = True


class Account(ActivityRow):
    class ProductType(models.TextChoices):
        CURRENT = "current"
        SAVINGS = "savings"
        TIME_DEPOSIT = "time_deposit"
        MORTGAGE = "mortgage"
        CONSUMER_LOAN = "consumer_loan"

    account_key = models.CharField(max_length=64)
    product_type = models.CharField(max_length=16, choices=ProductType.choices)
    currency = models.CharField(max_length=3)
    # Deposits positive; a loan's balance is what the customer owes, also positive.
    balance = models.DecimalField(max_digits=18, decimal_places=2)
    opened_at = models.DateField()
    closed_at = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16)
    as_of = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "account_key"], name="uniq_account_key")]
        indexes = [models.Index(fields=["source", "customer_key"], name="account_customer")]


class Transaction(ActivityRow):
    """A core-banking transaction. Hundreds of millions of rows: see migration 0004 and the README for indexing."""

    txn_key = models.CharField(max_length=64)
    account_key = models.CharField(max_length=64)
    occurred_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=18, decimal_places=2, help_text="Signed: credits positive")
    currency = models.CharField(max_length=3)
    kind = models.CharField(max_length=24)
    channel = models.CharField(max_length=8)
    counterparty_category = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "txn_key"], name="uniq_txn_key")]
        # Covering: a recomputation reads a customer's transactions from the index alone, not from heap pages
        # spread over the table's whole time order (one page per row).
        indexes = [models.Index(fields=["source", "customer_key", "occurred_at"], name="txn_customer_covering",
                                include=["kind", "channel", "currency", "amount"])]


class CardTransaction(ActivityRow):
    txn_key = models.CharField(max_length=64)
    # Keyed token of the card number (or the source's own token); the full number is never stored.
    card_token = models.CharField(max_length=64)
    pan_bin = models.CharField(max_length=6, null=True, blank=True)
    pan_last4 = models.CharField(max_length=4, null=True, blank=True)
    occurred_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=18, decimal_places=2, help_text="Purchases positive, refunds negative")
    currency = models.CharField(max_length=3)
    mcc = models.CharField(max_length=4, blank=True)
    merchant_category = models.CharField(max_length=32, blank=True)
    channel = models.CharField(max_length=8)
    installments = models.PositiveSmallIntegerField(default=0, help_text="0: not paid in installments")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "txn_key"], name="uniq_card_txn_key")]
        indexes = [models.Index(fields=["source", "customer_key", "occurred_at"], name="card_txn_customer_covering",
                                include=["currency", "amount"])]


class Holding(ActivityRow):
    class ProductType(models.TextChoices):
        FUND = "fund"
        INSURANCE = "insurance"
        BOND = "bond"
        STRUCTURED = "structured"
        DEPOSIT_LIKE = "deposit_like"

    holding_key = models.CharField(max_length=64)
    product_code = models.CharField(max_length=32)
    product_type = models.CharField(max_length=16, choices=ProductType.choices)
    market_value = models.DecimalField(max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3)
    as_of = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "holding_key"], name="uniq_holding_key")]
        indexes = [models.Index(fields=["source", "customer_key"], name="holding_customer")]


class RiskAssessment(ActivityRow):
    risk_level = models.CharField(max_length=2)
    assessed_at = models.DateField()
    expires_at = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "customer_key", "assessed_at"], name="uniq_risk_assessment"),
        ]


class FxRate(models.Model):
    currency = models.CharField(max_length=3)
    rate_to_cny = models.DecimalField(max_digits=18, decimal_places=8)
    as_of = models.DateField()
    row_digest = models.CharField(max_length=32)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="+", db_index=False)
    last_batch = models.ForeignKey(FeedBatch, on_delete=models.PROTECT, related_name="+", db_index=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["currency", "as_of"], name="uniq_fx_rate")]


class MetricsConfig(models.Model):
    """The thresholds and weights of the derived attributes; one row, edited in the admin (see README)."""

    new_days = models.PositiveIntegerField(default=90, help_text="new: first product opened within this many days")
    dormant_days = models.PositiveIntegerField(default=180, help_text="dormant: no customer-initiated activity for this long")
    churned_days = models.PositiveIntegerField(default=365, help_text="churned: no open product, or no activity this long")
    change_share = models.DecimalField(
        max_digits=4, decimal_places=2, default=0.30,
        help_text="declining/growing: activity or balances down/up by this share against the prior 90 days")
    high_value_cny = models.DecimalField(max_digits=18, decimal_places=2, default=500_000)
    mid_value_cny = models.DecimalField(max_digits=18, decimal_places=2, default=50_000)
    deposit_margin = models.DecimalField(max_digits=6, decimal_places=4, default=0.0150)
    aum_margin = models.DecimalField(max_digits=6, decimal_places=4, default=0.0080)
    loan_margin = models.DecimalField(max_digits=6, decimal_places=4, default=0.0200)
    card_margin = models.DecimalField(max_digits=6, decimal_places=4, default=0.0060, help_text="on card spend")
    retention_rate = models.DecimalField(max_digits=4, decimal_places=2, default=0.85)
    discount_rate = models.DecimalField(max_digits=4, decimal_places=2, default=0.08)
    clv_horizon_years = models.PositiveSmallIntegerField(default=10)
    churn_weight_activity_drop = models.PositiveSmallIntegerField(default=30)
    churn_weight_balance_outflow = models.PositiveSmallIntegerField(default=25)
    churn_weight_salary_stopped = models.PositiveSmallIntegerField(default=30)
    churn_weight_product_closed = models.PositiveSmallIntegerField(default=15)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "metrics configuration"
        verbose_name_plural = "metrics configuration"

    def __str__(self) -> str:
        return "metrics configuration"


class ProfileMetrics(models.Model):
    """A profile's financial picture and derived attributes as of a date; amounts in CNY. Stored with half of each
    page free on PostgreSQL (migration 0011), as every recomputation rewrites its rows."""

    profile = models.OneToOneField(CustomerProfile, on_delete=models.CASCADE, primary_key=True, related_name="metrics",
                                   db_constraint=False)
    as_of = models.DateField()
    total_deposits = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    aum = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    loan_balance = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    card_limit = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    card_utilisation = models.DecimalField(max_digits=7, decimal_places=4, null=True, blank=True,
                                           help_text="card spend in the last 30 days / card limit")
    card_spend_30d = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    card_spend_90d = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    card_spend_365d = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    txn_counts_90d = models.JSONField(default=dict, blank=True, help_text="core transactions by kind, last 90 days")
    activity_90d = models.PositiveIntegerField(default=0)
    activity_prior_90d = models.PositiveIntegerField(default=0)
    net_flow_90d = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    salary_credited = models.BooleanField(default=False)
    salary_monthly = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    salary_last_at = models.DateTimeField(null=True, blank=True)
    product_types = models.JSONField(default=list, blank=True)
    open_products = models.PositiveIntegerField(default=0)
    closed_accounts_90d = models.PositiveIntegerField(default=0)
    first_product_on = models.DateField(null=True, blank=True)
    tenure_months = models.PositiveIntegerField(null=True, blank=True)
    age = models.PositiveSmallIntegerField(null=True, blank=True)
    risk_level = models.CharField(max_length=2, blank=True)

    lifecycle_stage = models.CharField(max_length=10)
    value_tier = models.CharField(max_length=4)
    clv = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    churn_risk = models.PositiveSmallIntegerField(default=0)
    churn_signals = models.JSONField(default=dict, blank=True)
    next_best_products = models.JSONField(default=list, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "profile metrics"
        indexes = [models.Index(fields=["lifecycle_stage"]), models.Index(fields=["value_tier"])]


class PiiKeyState(models.Model):
    """Under which chain of keys the stored keyed hashes are (profiles.pii_keys): its fingerprint, never a key.

    One row, written by the first load and by each rotation; a load whose settings name another chain refuses to
    write hashes that would match nothing already stored."""

    fingerprint = models.CharField(max_length=32)
    key_count = models.PositiveSmallIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "keyed-hash key state"
