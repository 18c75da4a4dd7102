"""Tag definitions under /api/v1/tags/ (manual tags on a profile are set under /profiles/{id}/tags/)."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from segments.rules import rule_personal_fields
from segments.services import tag_definition_delete, tag_definition_save
from tags.models import TagDefinition

from .audit import personal_data_viewer
from .models import Scope
from .parsers import FormParser, MultiPartParser, RuleJSONParser
from .permissions import require_personal_data_scope
from .segments.serializers import RuleField, RuleMaskedMixin

_CODE = OpenApiParameter("code", OpenApiTypes.STR, OpenApiParameter.PATH)


class TagDefinitionSerializer(RuleMaskedMixin, serializers.ModelSerializer):
    rule = RuleField(required=False, allow_null=True)

    class Meta:
        model = TagDefinition
        fields = ["code", "name", "category", "description", "kind", "rule", "last_refreshed_at", "last_error"]
        read_only_fields = ["last_refreshed_at", "last_error"]


@extend_schema_view(
    list=extend_schema(summary="Tag definitions"),
    retrieve=extend_schema(summary="A tag definition", parameters=[_CODE]),
    create=extend_schema(summary="Define a tag (a rule tag's rule is validated; errors name the node)"),
    update=extend_schema(summary="Replace a tag definition", parameters=[_CODE]),
    partial_update=extend_schema(summary="Change a tag definition", parameters=[_CODE]),
    destroy=extend_schema(summary="Delete a tag no rule uses, with its assignments", parameters=[_CODE]),
)
class TagDefinitionViewSet(viewsets.ModelViewSet):
    """Tags: manual (set by people and the API), rule (computed by the segment engine) and system (derived)."""

    queryset = TagDefinition.objects.order_by("pk")
    serializer_class = TagDefinitionSerializer
    lookup_field = "code"
    lookup_value_regex = "[A-Za-z0-9_-]+"
    filterset_fields = ["kind", "category"]
    parser_classes = [RuleJSONParser, FormParser, MultiPartParser]
    # Tags are what segments are built from: the segment scopes govern them.
    required_scopes = {"list": Scope.SEGMENTS_READ.value, "retrieve": Scope.SEGMENTS_READ.value,
                       "create": Scope.SEGMENTS_WRITE.value, "update": Scope.SEGMENTS_WRITE.value,
                       "partial_update": Scope.SEGMENTS_WRITE.value, "destroy": Scope.SEGMENTS_WRITE.value}

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "viewer": personal_data_viewer(self.request)}

    def perform_create(self, serializer):
        self._check_rule(serializer.validated_data)
        serializer.instance = tag_definition_save(tag=TagDefinition(**serializer.validated_data))

    def perform_update(self, serializer):
        self._check_rule(serializer.validated_data)
        tag = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(tag, name, value)
        serializer.instance = tag_definition_save(tag=tag)

    def perform_destroy(self, instance):
        tag_definition_delete(tag=instance)

    def _check_rule(self, data: dict) -> None:
        require_personal_data_scope(self.request, rule_personal_fields(data.get("rule")), "A rule")
