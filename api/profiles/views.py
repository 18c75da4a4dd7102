"""Profile endpoints under /api/v1/profiles/. Thin: selectors read, services write, serializers shape and mask.

An absorbed (merged) id answers for the profile that absorbed it: the body (retrieve, lookup) says
`"resolved_from": "<absorbed id>"`, and every response on that id carries `X-Resolved-From: <absorbed id>` and
`Content-Location` with the survivor's URL.
"""
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from profiles.models import Consent, CustomerProfile
from profiles.selectors import (
    profile_consents, profile_get_by_source_key, profile_lineage, profile_metrics, profile_resolve,
    profile_source_records, profile_timeline, profiles_active, profiles_by_identifier,
)
from profiles.services import consent_set
from segments.selectors import profile_segments
from tags.models import TagAssignment
from tags.selectors import profile_tags, tag_definition_get
from tags.services import tag_add, tag_remove

from privacy.audit import audit_clear_read
from privacy.policy import is_personal, pii_present

from ..audit import personal_data_viewer
from ..exceptions import Conflict
from ..models import Scope
from ..permissions import require_personal_data_scope
from . import serializers as s
from .filters import CustomerProfileFilterSet

READ, WRITE = Scope.PROFILES_READ.value, Scope.PROFILES_WRITE.value
_ERRORS = {401: OpenApiResponse(description="Not authenticated"),
           403: OpenApiResponse(description="Missing scope"),
           404: OpenApiResponse(description="Unknown profile")}
_PROFILE_ID = OpenApiParameter("public_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                               description="A profile's public id; an absorbed id answers for its survivor")


@extend_schema_view(
    list=extend_schema(summary="Live profiles, filtered, cursor-paginated", responses={200: s.ProfileSerializer}),
    retrieve=extend_schema(summary="A profile by public id", parameters=[_PROFILE_ID],
                           responses={200: s.ProfileDetailSerializer, **_ERRORS}),
)
class ProfileViewSet(viewsets.ReadOnlyModelViewSet):
    """Customer profiles: personal fields masked without `profiles:read_pii`; with it, returned and audited."""

    lookup_field = "public_id"
    # Ids, tag codes and channels are plain tokens: anything else is a JSON 404 from the catch-all route.
    lookup_value_regex = "[A-Za-z0-9_-]+"
    serializer_class = s.ProfileSerializer
    filterset_class = CustomerProfileFilterSet
    required_scopes = {
        "list": READ, "retrieve": READ, "lookup": READ, "source_records": READ, "tags": READ, "segments": READ,
        "metrics": READ, "lineage": READ, "consent": READ, "timeline": READ,
        "tag_add": WRITE, "tag_remove": WRITE, "consent_set": WRITE,
    }
    resolved_from: str | None = None

    def get_queryset(self):
        return profiles_active()

    def get_serializer_context(self):
        if not hasattr(self, "_viewer"):
            self._viewer = personal_data_viewer(self.request)
        return {**super().get_serializer_context(), "viewer": self._viewer}

    def get_profile(self) -> CustomerProfile:
        try:
            profile, self.resolved_from = profile_resolve(public_id=self.kwargs["public_id"])
        except CustomerProfile.DoesNotExist:
            raise Http404 from None
        self.profile = profile
        return profile

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.resolved_from:
            response["X-Resolved-From"] = self.resolved_from
            response["Content-Location"] = reverse("profile-detail", kwargs={"public_id": self.profile.public_id},
                                                   request=request)
        return response

    def _audit(self, items: list[tuple[str, dict]]) -> None:
        """Audit the clear personal data of (public id, serialized object) pairs, if this response returns any."""
        viewer = self.get_serializer_context()["viewer"]
        if not viewer.sees_clear:
            return
        fields: dict[str, set[str]] = {}
        for public_id, data in items:
            fields.setdefault(public_id, set()).update(pii_present(data))
        audit_clear_read(viewer=viewer, fields_by_profile=fields)

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        data = self.get_serializer(page, many=True).data
        self._audit([(item["id"], item) for item in data])
        return self.get_paginated_response(data)

    def _detail(self, profile: CustomerProfile, resolved_from: str | None = None) -> Response:
        context = {**self.get_serializer_context(), "resolved_from": resolved_from}
        data = s.ProfileDetailSerializer(profile, context=context).data
        self._audit([(profile.public_id, data)])
        return Response(data)

    def retrieve(self, request, *args, **kwargs):
        profile = self.get_profile()
        return self._detail(profile, self.resolved_from)

    @extend_schema(
        summary="Find a profile by a source's customer key, or by phone, e-mail or id number",
        description="GET with query parameters, or POST the same fields as JSON (preferred for phone, e-mail and id "
                    "number: a request body is not written to access logs). Values are normalised as in the "
                    "feeds (E.164 phones, lower-case e-mails); the id number is compared through its keyed hash. "
                    "409 when several profiles share the value. A lookup by phone, e-mail or id number (personal "
                    "fields) needs profiles:read_pii besides profiles:read: answered for guessed values, it would "
                    "recover what the masks hide.",
        parameters=[s.ProfileLookupSerializer], request=s.ProfileLookupSerializer,
        responses={200: s.ProfileDetailSerializer, 400: OpenApiResponse(description="Bad query"),
                   409: OpenApiResponse(description="Several profiles match"), **_ERRORS,
                   403: OpenApiResponse(description="Missing scope (profiles:read_pii for a personal field)")},
    )
    @action(detail=False, methods=["get", "post"], url_path="lookup")
    def lookup(self, request):
        query = s.ProfileLookupSerializer(data=request.data if request.method == "POST" else request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        require_personal_data_scope(request, [name for name in q if q[name] and is_personal(name)],
                                    "A lookup")
        if q.get("key"):
            profile = profile_get_by_source_key(source=q["source"], customer_key=q["key"])
            matches = [profile] if profile else []
        else:
            matches = profiles_by_identifier(phone=q.get("phone"), email=q.get("email"),
                                             id_number=q.get("id_number"), id_type=q.get("id_type"))
        if not matches:
            raise Http404
        if len(matches) > 1:
            raise Conflict("Several profiles match; narrow the lookup.",
                           details={"profiles": [p.public_id for p in matches[:10]]})
        return self._detail(matches[0])

    @extend_schema(summary="The source records of a profile", parameters=[_PROFILE_ID],
                   responses={200: s.ProfileSourceRecordSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], url_path="source-records", pagination_class=None, filterset_class=None)
    def source_records(self, request, public_id=None):
        profile = self.get_profile()
        data = s.ProfileSourceRecordSerializer(profile_source_records(profile=profile), many=True,
                                               context=self.get_serializer_context()).data
        self._audit([(profile.public_id, item) for item in data])
        return Response(data)

    @extend_schema(summary="A profile's tags in force", parameters=[_PROFILE_ID],
                   responses={200: s.ProfileTagSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], url_path="tags", pagination_class=None, filterset_class=None)
    def tags(self, request, public_id=None):
        return Response(s.ProfileTagSerializer(profile_tags(profile=self.get_profile()), many=True).data)

    @extend_schema(summary="Add a manual tag to a profile", parameters=[_PROFILE_ID], request=s.ProfileTagAddSerializer,
                   responses={201: s.ProfileTagSerializer, 200: s.ProfileTagSerializer,
                              400: OpenApiResponse(description="Unknown or non-manual tag"), **_ERRORS})
    @tags.mapping.post
    def tag_add(self, request, public_id=None):
        profile = self.get_profile()
        body = s.ProfileTagAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tag = tag_definition_get(code=body.validated_data["code"])
        if tag is None:
            raise ValidationError({"code": [f"no tag {body.validated_data['code']!r}"]})
        added = tag_add(tag=tag, profile=profile, assigned_by=str(request.user)[:150],
                        source=TagAssignment.Source.API, expires_at=body.validated_data.get("expires_at"))
        assignment = TagAssignment.objects.select_related("tag").get(tag=tag, profile=profile)
        return Response(s.ProfileTagSerializer(assignment).data,
                        status=status.HTTP_201_CREATED if added else status.HTTP_200_OK)

    @extend_schema(summary="Remove a manual tag from a profile",
                   parameters=[_PROFILE_ID, OpenApiParameter("code", OpenApiTypes.STR, OpenApiParameter.PATH)],
                   responses={204: None, 400: OpenApiResponse(description="Not a manual tag"), **_ERRORS})
    @action(detail=True, methods=["delete"], url_path=r"tags/(?P<code>[A-Za-z0-9_-]+)", pagination_class=None,
            filterset_class=None)
    def tag_remove(self, request, public_id=None, code=None):
        profile = self.get_profile()
        tag = tag_definition_get(code=code)
        if tag is None or not tag_remove(tag=tag, profile=profile):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="The segments a profile is in, with its holdout flag", parameters=[_PROFILE_ID],
                   responses={200: s.ProfileSegmentSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], url_path="segments", pagination_class=None, filterset_class=None)
    def segments(self, request, public_id=None):
        return Response(s.ProfileSegmentSerializer(profile_segments(profile=self.get_profile()), many=True).data)

    @extend_schema(summary="The profile's events across all systems, newest first (pages with `before`)",
                   parameters=[_PROFILE_ID,
                               OpenApiParameter("before", OpenApiTypes.DATETIME, description="Events before this"),
                               OpenApiParameter("limit", OpenApiTypes.INT, description="At most 200; default 50")],
                   responses={200: s.ProfileTimelineEventSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], url_path="timeline", pagination_class=None, filterset_class=None)
    def timeline(self, request, public_id=None):
        profile = self.get_profile()
        query = s.ProfileTimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        events = profile_timeline(profile=profile, **query.validated_data)
        return Response(s.ProfileTimelineEventSerializer(events, many=True).data)

    @extend_schema(summary="Financial metrics and derived attributes (lifecycle stage, value tier, CLV, churn risk)",
                   parameters=[_PROFILE_ID],
                   responses={200: s.ProfileMetricsSerializer,
                              404: OpenApiResponse(description="Unknown profile, or no metrics computed yet"),
                              401: _ERRORS[401], 403: _ERRORS[403]})
    @action(detail=True, methods=["get"], url_path="metrics", pagination_class=None, filterset_class=None)
    def metrics(self, request, public_id=None):
        metrics = profile_metrics(profile=self.get_profile())
        if metrics is None:
            raise Http404
        return Response(s.ProfileMetricsSerializer(metrics).data)

    @extend_schema(summary="Where each golden attribute came from (source record and batch)", parameters=[_PROFILE_ID],
                   responses={200: s.ProfileLineageSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], url_path="lineage", pagination_class=None, filterset_class=None)
    def lineage(self, request, public_id=None):
        return Response(s.ProfileLineageSerializer(profile_lineage(profile=self.get_profile()), many=True).data)

    @extend_schema(summary="Marketing consent per channel", parameters=[_PROFILE_ID],
                   responses={200: s.ProfileConsentSerializer(many=True), **_ERRORS})
    @action(detail=True, methods=["get"], url_path="consent", pagination_class=None, filterset_class=None)
    def consent(self, request, public_id=None):
        return Response(s.ProfileConsentSerializer(profile_consents(profile=self.get_profile()), many=True).data)

    @extend_schema(summary="Record the customer's consent decision for one channel (kept in the consent history)",
                   parameters=[_PROFILE_ID, OpenApiParameter("channel", OpenApiTypes.STR, OpenApiParameter.PATH,
                                                             enum=Consent.Channel.values)],
                   request=s.ProfileConsentUpdateSerializer,
                   responses={200: s.ProfileConsentSerializer, 400: OpenApiResponse(description="Bad body"),
                              **_ERRORS})
    @action(detail=True, methods=["put", "patch"], url_path=r"consent/(?P<channel>[a-z]+)", pagination_class=None,
            filterset_class=None)
    def consent_set(self, request, public_id=None, channel=None):
        profile = self.get_profile()
        if channel not in Consent.Channel.values:
            raise Http404
        body = s.ProfileConsentUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        consent = consent_set(profile=profile, channel=channel, granted=body.validated_data["granted"],
                              purpose=body.validated_data["purpose"], source=body.validated_data.get("source") or "api")
        return Response(s.ProfileConsentSerializer(
            {"channel": consent.channel, "granted": consent.granted, "source": consent.source,
             "updated_at": consent.updated_at}).data)
