"""Segment serializers: thin shapes over segments.models; validation of rules is the domain's (RuleError)."""
from rest_framework import serializers

from privacy.policy import MASKED_VIEWER
from segments.models import RefreshJob, Segment, SegmentEvent
from segments.rules import rule_masked


class RuleField(serializers.JSONField):
    """A rule as the request parsed it. Its values are the rule language's to check: NaN or 1e999 (inf once parsed)
    is a RuleError naming the node, not a field error without a path."""

    def to_internal_value(self, data):
        return data


class RuleMaskedMixin:
    """A rule comparing personal fields with values shows those values masked unless the context's viewer sees
    personal data clear (a rule such as `phone eq ...` names a customer)."""

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if data.get("rule") and not self.context.get("viewer", MASKED_VIEWER).sees_clear:
            data["rule"] = rule_masked(data["rule"])
        return data


class SegmentSerializer(RuleMaskedMixin, serializers.ModelSerializer):
    rule = RuleField(required=False, allow_null=True)
    # A relation, not "owner.username" with a default: a partial update skips a read-only field's default, so a
    # PATCH would answer without the owner that the schema requires.
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Segment
        fields = ["slug", "name", "description", "kind", "rule", "status", "refresh_every_minutes", "refresh_cron",
                  "holdout_percent", "owner", "inputs", "is_time_relative", "member_count", "holdout_count",
                  "last_refreshed_at", "is_calculating", "last_error", "created_at", "updated_at"]
        read_only_fields = ["inputs", "is_time_relative", "member_count", "holdout_count", "last_refreshed_at",
                            "is_calculating", "last_error", "created_at", "updated_at"]


class SegmentRuleSerializer(serializers.Serializer):
    rule = RuleField(help_text="A rule in the rule language (see the README and /segments/catalogue/)")


class SegmentPreviewSampleSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    city = serializers.CharField(allow_null=True)
    gender = serializers.CharField(allow_null=True)


class SegmentPreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sample = SegmentPreviewSampleSerializer(many=True)


class SegmentDiffSerializer(serializers.Serializer):
    would_enter = serializers.IntegerField()
    would_leave = serializers.IntegerField()
    would_stay = serializers.IntegerField()


class SegmentExplainSerializer(serializers.Serializer):
    segment = serializers.CharField()
    profile = serializers.CharField()
    member = serializers.BooleanField()
    in_holdout = serializers.BooleanField()
    rule = serializers.JSONField(allow_null=True, help_text="Every node with its result and the value seen")


class SegmentCatalogueFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    type = serializers.CharField()
    ops = serializers.ListField(child=serializers.CharField())
    examples = serializers.ListField(child=serializers.JSONField(), required=False)
    choices = serializers.ListField(child=serializers.CharField(), required=False)
    personal = serializers.BooleanField(
        help_text="A personal field (privacy policy): rules testing it need profiles:read_pii, and its values are "
                  "masked in explain and in rules without it")


class SegmentMemberSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    in_holdout = serializers.BooleanField()


class SegmentEventSerializer(serializers.ModelSerializer):
    profile = serializers.CharField(source="profile.public_id")

    class Meta:
        model = SegmentEvent
        fields = ["profile", "kind", "at", "job"]


class SegmentRefreshAcceptedSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    status = serializers.CharField()
    job_url = serializers.URLField()


class RefreshJobSerializer(serializers.ModelSerializer):
    segment = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True,
                                           help_text="null for a rule tag's job")
    tag = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True,
                                       help_text="null for a segment's job")

    class Meta:
        model = RefreshJob
        fields = ["id", "segment", "tag", "trigger", "status", "version", "entered", "exited", "member_count",
                  "queued_at", "started_at", "finished_at", "duration_seconds", "error"]


class SegmentSnapshotMemberSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
