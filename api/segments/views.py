"""Segment endpoints under /api/v1/segments/: CRUD, catalogue, preview, diff, explain, refresh, members, export,
history and snapshot. Thin: segments.services writes, segments.selectors reads; RuleError becomes a 400 that names
the bad node (api.exceptions)."""
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from profiles.models import Consent, CustomerProfile
from profiles.selectors import profile_resolve
from segments.exports import segment_members_export_lines
from segments.models import Segment
from segments.rules import activity_catalogue, catalogue, rule_personal_fields
from segments.selectors import (
    rule_diff, rule_preview, segment_explain, segment_history, segment_members, segment_members_on,
)
from segments.services import segment_delete, segment_save
from segments.tasks import segment_refresh_enqueue

from ..audit import personal_data_viewer
from ..models import Scope
from ..parsers import FormParser, MultiPartParser, RuleJSONParser
from ..permissions import has_scope, may_export_members, require_personal_data_scope
from . import serializers as s

READ, WRITE = Scope.SEGMENTS_READ.value, Scope.SEGMENTS_WRITE.value
EXPORT_COLUMNS = ("id", "full_name", "phone", "email")
_SLUG = OpenApiParameter("slug", OpenApiTypes.STR, OpenApiParameter.PATH)
_ERRORS = {401: OpenApiResponse(description="Not authenticated"),
           403: OpenApiResponse(description="Missing scope"),
           404: OpenApiResponse(description="Unknown segment")}


def _save(segment: Segment) -> Segment:
    try:
        return segment_save(segment=segment)
    except ValueError as exc:  # holdout out of range, bad cron expression
        raise ValidationError({"detail": [str(exc)]}) from None


@extend_schema_view(
    list=extend_schema(summary="Segments"),
    retrieve=extend_schema(summary="A segment", parameters=[_SLUG]),
    create=extend_schema(summary="Create a segment (the rule is validated; errors name the node)"),
    update=extend_schema(summary="Replace a segment", parameters=[_SLUG]),
    partial_update=extend_schema(summary="Change a segment", parameters=[_SLUG]),
    destroy=extend_schema(summary="Delete a segment that no other segment uses", parameters=[_SLUG]),
)
class SegmentViewSet(viewsets.ModelViewSet):
    """Segments: a rule (or an uploaded list) refreshed into versioned membership with entered/exited history."""

    queryset = Segment.objects.select_related("owner").order_by("pk")
    serializer_class = s.SegmentSerializer
    lookup_field = "slug"
    lookup_value_regex = "[A-Za-z0-9_-]+"
    filterset_fields = ["status", "kind"]
    parser_classes = [RuleJSONParser, FormParser, MultiPartParser]
    required_scopes = {
        "list": READ, "retrieve": READ, "create": WRITE, "update": WRITE, "partial_update": WRITE,
        "destroy": WRITE, "catalogue": READ, "activity_catalogue": READ, "preview": READ, "diff": READ, "explain": READ, "refresh": WRITE,
        "members": READ, "export": READ, "history": READ, "snapshot": READ,
    }

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "viewer": personal_data_viewer(self.request)}

    def _check_rule(self, rule) -> None:
        """A rule testing personal fields needs the personal-data scope to be previewed, compared or saved; a saved
        one keeps refreshing (a refresh is a job, not a caller)."""
        require_personal_data_scope(self.request, rule_personal_fields(rule), "A rule")

    def perform_create(self, serializer):
        self._check_rule(serializer.validated_data.get("rule"))
        owner = self.request.user if getattr(self.request.user, "pk", None) else None
        serializer.instance = _save(Segment(**serializer.validated_data, owner=owner))

    def perform_update(self, serializer):
        self._check_rule(serializer.validated_data.get("rule"))
        segment = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(segment, name, value)
        serializer.instance = _save(segment)

    def perform_destroy(self, instance):
        segment_delete(segment=instance)

    @extend_schema(summary="The fields a rule may use, with their operators and examples",
                   responses={200: s.SegmentCatalogueFieldSerializer(many=True)})
    @action(detail=False, methods=["get"], pagination_class=None, filterset_fields=None)
    def catalogue(self, request):
        return Response(catalogue())

    @extend_schema(summary="For each activity kind, the fields its conditions and aggregates may use",
                   responses={200: {"type": "object", "additionalProperties": {
                       "type": "array", "items": {"$ref": "#/components/schemas/SegmentCatalogueField"}}}})
    @action(detail=False, methods=["get"], url_path="activity-catalogue", pagination_class=None,
            filterset_fields=None)
    def activity_catalogue(self, request):
        return Response(activity_catalogue())

    @extend_schema(summary="Count and 20 sample profiles of an unsaved rule", request=s.SegmentRuleSerializer,
                   responses={200: s.SegmentPreviewSerializer, 400: OpenApiResponse(description="Bad rule")})
    @action(detail=False, methods=["post"], pagination_class=None, filterset_fields=None)
    def preview(self, request):
        body = s.SegmentRuleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        self._check_rule(body.validated_data["rule"])
        return Response(s.SegmentPreviewSerializer(rule_preview(rule=body.validated_data["rule"])).data)

    @extend_schema(summary="How many would enter and leave if the segment's rule were changed to this one",
                   parameters=[_SLUG], request=s.SegmentRuleSerializer,
                   responses={200: s.SegmentDiffSerializer, 400: OpenApiResponse(description="Bad rule"), **_ERRORS})
    @action(detail=True, methods=["post"], pagination_class=None, filterset_fields=None)
    def diff(self, request, slug=None):
        body = s.SegmentRuleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        segment = self.get_object()
        self._check_rule(body.validated_data["rule"])
        return Response(rule_diff(segment=segment, rule=body.validated_data["rule"]))

    @extend_schema(summary="Every node of the rule for one profile: true or false, and the value seen",
                   description="Values of personal fields (the catalogue's `personal`), seen and compared with, are "
                               "masked without profiles:read_pii; with it they are clear and the read is audited.",
                   parameters=[_SLUG, OpenApiParameter("profile", OpenApiTypes.STR, required=True,
                                                       description="A profile's public id")],
                   responses={200: s.SegmentExplainSerializer, **_ERRORS})
    @action(detail=True, methods=["get"], pagination_class=None, filterset_fields=None)
    def explain(self, request, slug=None):
        segment = self.get_object()
        public_id = request.query_params.get("profile", "")
        if not public_id or "\x00" in public_id:
            raise ValidationError({"profile": ["give a profile's public id"]})
        try:
            profile, _ = profile_resolve(public_id=public_id)
        except CustomerProfile.DoesNotExist:
            raise Http404 from None
        return Response(segment_explain(segment=segment, profile=profile, viewer=personal_data_viewer(request)))

    @extend_schema(summary="Refresh now: queues a refresh job", parameters=[_SLUG], request=None,
                   responses={202: s.SegmentRefreshAcceptedSerializer, **_ERRORS})
    @action(detail=True, methods=["post"], pagination_class=None, filterset_fields=None)
    def refresh(self, request, slug=None):
        job = segment_refresh_enqueue(segment=self.get_object(), trigger="api")
        return Response({"job_id": job.pk, "status": job.status,
                         "job_url": reverse("refresh-job-detail", kwargs={"pk": job.pk}, request=request)},
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Current members (public id and holdout flag), cursor-paginated", parameters=[_SLUG],
                   responses={200: s.SegmentMemberSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], filterset_fields=None)
    def members(self, request, slug=None):
        members = segment_members(segment=self.get_object()).only("id", "public_id")
        page = self.paginate_queryset(members)
        return self.get_paginated_response(s.SegmentMemberSerializer(page, many=True).data)

    @extend_schema(
        summary="CSV of the members a campaign on a channel may contact (consent granted, not in the holdout)",
        description="Columns id, full_name, phone, email; personal fields masked without profiles:read_pii, "
                    "returned with it, each chunk of rows audited before it is sent. A cell a spreadsheet would read "
                    "as a formula (starting with =, +, -, @, tab or CR) has a single quote in front. A person "
                    "signed in also needs the permission privacy.export_members.",
        parameters=[_SLUG, OpenApiParameter("channel", OpenApiTypes.STR, required=True,
                                            enum=Consent.Channel.values)],
        responses={(200, "text/csv"): OpenApiTypes.STR, 400: OpenApiResponse(description="Unknown channel"),
                   **_ERRORS})
    @action(detail=True, methods=["get"], url_path="members/export", pagination_class=None, filterset_fields=None)
    def export(self, request, slug=None):
        segment = self.get_object()
        if not may_export_members(request):
            raise PermissionDenied("Exporting members needs the permission privacy.export_members.")
        channel = request.query_params.get("channel", "")
        if channel not in Consent.Channel.values:
            raise ValidationError({"channel": [f"one of {', '.join(Consent.Channel.values)}"]})
        viewer = personal_data_viewer(request)
        lines = segment_members_export_lines(segment=segment, channel=channel, viewer=viewer, header=EXPORT_COLUMNS)
        response = StreamingHttpResponse(lines, content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{segment.slug}-{channel}.csv"'
        return response

    @extend_schema(summary="Entered and exited events, oldest first, cursor-paginated",
                   parameters=[_SLUG, OpenApiParameter("profile", OpenApiTypes.STR,
                                                       description="Only this profile's events"),
                               OpenApiParameter("since", OpenApiTypes.DATETIME, description="Events at or after")],
                   responses={200: s.SegmentEventSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], filterset_fields=None)
    def history(self, request, slug=None):
        segment = self.get_object()
        profile = None
        if public_id := request.query_params.get("profile"):
            try:
                profile, _ = profile_resolve(public_id=public_id.replace("\x00", ""))
            except CustomerProfile.DoesNotExist:
                raise Http404 from None
        events = segment_history(segment=segment, profile=profile).select_related("profile")
        if since := request.query_params.get("since"):
            events = events.filter(at__gte=serializers.DateTimeField().run_validation(since))
        page = self.paginate_queryset(events)
        return self.get_paginated_response(s.SegmentEventSerializer(page, many=True).data)

    @extend_schema(summary="The members at the end of a day, from the history (public ids, cursor-paginated)",
                   parameters=[_SLUG, OpenApiParameter("date", OpenApiTypes.DATE, required=True)],
                   responses={200: s.SegmentSnapshotMemberSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], filterset_fields=None)
    def snapshot(self, request, slug=None):
        segment = self.get_object()
        day = serializers.DateField().run_validation(request.query_params.get("date") or serializers.empty)
        page = self.paginate_queryset(segment_members_on(segment=segment, day=day).only("id", "public_id"))
        return self.get_paginated_response(s.SegmentSnapshotMemberSerializer(page, many=True).data)
