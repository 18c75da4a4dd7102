"""Profile serializers. Personal fields are presented as the privacy policy says for the context's `viewer`
(masked when there is none)."""
import copy

from rest_framework import serializers

from profiles.models import Consent, ProfileMetrics, SourceRecord
from profiles.resolution import SURVIVORSHIP_GROUPS
from segments.models import SegmentMember
from tags.models import TagAssignment

from privacy.policy import MASKED_VIEWER, present

# Birth dates travel as text: masked, they are "1985-**-**", which is not a date.
_BIRTH_DATE_HELP = "YYYY-MM-DD; masked to the year (YYYY-**-**) without profiles:read_pii"


class MaskedMixin:
    def to_representation(self, instance):
        return present(super().to_representation(instance), self.context.get("viewer", MASKED_VIEWER))


# One field instance formats every profile's timestamps as DRF would (local time zone, ISO 8601).
_TIMESTAMP = serializers.DateTimeField()


class ProfileSerializer(serializers.Serializer):
    """A profile's golden record. The fields declare the schema; to_representation reads the attributes directly,
    because building and copying DRF fields per instance was the largest cost of a profile retrieve (0.6 ms)."""

    id = serializers.CharField(source="public_id", read_only=True)
    full_name = serializers.CharField(read_only=True, allow_null=True)
    family_name = serializers.CharField(read_only=True, allow_null=True)
    given_name = serializers.CharField(read_only=True, allow_null=True)
    gender = serializers.CharField(read_only=True, allow_null=True)
    birth_date = serializers.CharField(read_only=True, allow_null=True, help_text=_BIRTH_DATE_HELP)
    id_type = serializers.CharField(read_only=True, allow_null=True)
    id_number_masked = serializers.CharField(read_only=True, allow_null=True,
                                             help_text="Always masked: the number itself is never stored")
    phone = serializers.CharField(read_only=True, allow_null=True)
    email = serializers.CharField(read_only=True, allow_null=True)
    address = serializers.CharField(read_only=True, allow_null=True)
    city = serializers.CharField(read_only=True, allow_null=True)
    postcode = serializers.CharField(read_only=True, allow_null=True)
    # Annotated by the selectors (profiles_active, profile_resolve): null until metrics are computed.
    lifecycle_stage = serializers.CharField(read_only=True, allow_null=True)
    value_tier = serializers.CharField(read_only=True, allow_null=True)
    record_count = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    _TEXT_FIELDS = ("full_name", "family_name", "given_name", "gender", "birth_date", "id_type", "id_number_masked",
                    "phone", "email", "address", "city", "postcode", "lifecycle_stage", "value_tier")
    def to_representation(self, profile):
        data = {"id": profile.public_id}
        for name in self._TEXT_FIELDS:
            value = getattr(profile, name)
            data[name] = None if value is None else str(value)
        data["record_count"] = profile.record_count
        data["created_at"] = _TIMESTAMP.to_representation(profile.created_at)
        data["updated_at"] = _TIMESTAMP.to_representation(profile.updated_at)
        return present(data, self.context.get("viewer", MASKED_VIEWER))


class ProfileDetailSerializer(ProfileSerializer):
    resolved_from = serializers.CharField(
        read_only=True, allow_null=True,
        help_text="The absorbed id that was asked for, when it was merged into this profile; else null")

    def to_representation(self, profile):
        return {**super().to_representation(profile), "resolved_from": self.context.get("resolved_from")}


class ShallowFieldsMixin:
    """Fields copied shallowly for each instance, for a hot request serializer of flat fields: DRF's deep copy
    re-runs every field's __init__, and cost more than the rest of the validation (0.2 of 0.3 ms per request)."""

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}


class ProfileLookupSerializer(ShallowFieldsMixin, serializers.Serializer):
    """Find a profile by a source's customer key, or by phone, e-mail or id number (each normalised first)."""

    source = serializers.SlugField(required=False, help_text="Source code, with `key`")
    key = serializers.CharField(required=False, max_length=64, help_text="The source's customer key")
    phone = serializers.CharField(required=False, max_length=40)
    email = serializers.CharField(required=False, max_length=254)
    id_number = serializers.CharField(required=False, max_length=40)
    id_type = serializers.ChoiceField(required=False, choices=["CN_RESIDENT", "PASSPORT", "OTHER"])

    def validate(self, attrs):
        given = [name for name in ("key", "phone", "email", "id_number") if attrs.get(name)]
        if len(given) != 1:
            raise serializers.ValidationError("give exactly one of: source and key, phone, email, id_number")
        if bool(attrs.get("source")) != bool(attrs.get("key")):
            raise serializers.ValidationError("source and key go together")
        return attrs


class ProfileSourceRecordSerializer(MaskedMixin, serializers.ModelSerializer):
    source = serializers.CharField(source="source.code", read_only=True)
    birth_date = serializers.CharField(read_only=True, allow_null=True, help_text=_BIRTH_DATE_HELP)
    batch = serializers.IntegerField(source="last_batch_id", read_only=True, help_text="The batch that last wrote it")

    class Meta:
        model = SourceRecord
        fields = ["source", "customer_key", "full_name", "family_name", "given_name", "gender", "birth_date",
                  "id_type", "id_number_masked", "id_valid", "phone", "email", "address", "city", "postcode",
                  "core_cif", "pan_bin", "pan_last4", "attributes", "source_updated_at", "loaded_at", "batch"]
        read_only_fields = fields


class ProfileTagSerializer(serializers.ModelSerializer):
    code = serializers.CharField(source="tag.code", read_only=True)
    name = serializers.CharField(source="tag.name", read_only=True)
    kind = serializers.CharField(source="tag.kind", read_only=True)

    class Meta:
        model = TagAssignment
        fields = ["code", "name", "kind", "source", "assigned_at", "assigned_by", "expires_at"]
        read_only_fields = fields


class ProfileTagAddSerializer(serializers.Serializer):
    code = serializers.SlugField(max_length=64, help_text="A manual tag's code")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ProfileSegmentSerializer(serializers.ModelSerializer):
    slug = serializers.CharField(source="segment.slug", read_only=True)
    name = serializers.CharField(source="segment.name", read_only=True)

    class Meta:
        model = SegmentMember
        fields = ["slug", "name", "in_holdout"]
        read_only_fields = fields


class ProfileMetricsSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProfileMetrics
        exclude = ["profile"]
        read_only_fields = [f.name for f in ProfileMetrics._meta.fields if f.name != "profile"]


class ProfileTimelineQuerySerializer(serializers.Serializer):
    before = serializers.DateTimeField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class ProfileTimelineEventSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    event = serializers.ChoiceField(choices=["record_loaded", "account_opened", "account_closed", "transaction",
                                             "card_transaction", "holding", "risk_assessment", "profile_merged"])
    source = serializers.CharField(allow_null=True)
    reference = serializers.CharField(help_text="Customer, account, transaction or holding key; a merged profile id")
    amount = serializers.DecimalField(max_digits=18, decimal_places=2, allow_null=True)
    currency = serializers.CharField(allow_null=True)
    detail = serializers.CharField(allow_null=True, help_text="Product type, transaction kind, category or level")


class ProfileLineageSerializer(serializers.Serializer):
    """One survivorship group of a profile and where its golden values came from (profiles.selectors.AttributeSource)."""

    attribute = serializers.CharField(read_only=True, help_text="Survivorship group: name, gender, birth_date, "
                                                                "id_number, phone, email, address")
    golden_fields = serializers.SerializerMethodField(help_text="The golden fields the group supplies")
    source = serializers.CharField(source="record.source.code", read_only=True)
    customer_key = serializers.CharField(source="record.customer_key", read_only=True)
    batch = serializers.IntegerField(source="batch_id", read_only=True)
    batch_file_name = serializers.CharField(source="batch.file_name", read_only=True)
    loaded_at = serializers.DateTimeField(source="record.loaded_at", read_only=True)
    source_updated_at = serializers.DateTimeField(source="record.source_updated_at", read_only=True, allow_null=True)

    def get_golden_fields(self, obj) -> list[str]:
        return list(SURVIVORSHIP_GROUPS.get(obj.attribute, ("", ()))[1])


class ProfileConsentSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Consent.Channel.choices, read_only=True)
    granted = serializers.BooleanField(read_only=True, allow_null=True,
                                       help_text="null: the customer never decided for this channel")
    source = serializers.CharField(read_only=True, allow_null=True)
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)


class ProfileConsentUpdateSerializer(serializers.Serializer):
    granted = serializers.BooleanField()
    purpose = serializers.ChoiceField(choices=Consent.Purpose.choices, default=Consent.Purpose.MARKETING,
                                      help_text="What the consent is for; default marketing")
    source = serializers.CharField(required=False, max_length=32,
                                   help_text="Where the decision came from (a channel app, branch); default 'api'")
