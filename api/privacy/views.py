"""The customer's rights under PIPL under /api/v1/privacy/subjects/{public_id}/, with the scope privacy:rights only
(no other scope implies it): GET the subject access (everything held, audited as a clear read), POST erase/."""
import json

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from privacy.rights import SubjectEncoder, erase_subject, subject_access
from profiles.models import CustomerProfile

from ..audit import viewer_of
from ..models import ApiKey, Scope
from . import serializers as s

RIGHTS = Scope.PRIVACY_RIGHTS.value
_SUBJECT = OpenApiParameter("public_id", OpenApiTypes.STR, OpenApiParameter.PATH,
                            description="A profile's public id; an absorbed id stands for its survivor")
_ERRORS = {401: OpenApiResponse(description="Not authenticated"),
           403: OpenApiResponse(description="Missing scope privacy:rights"),
           404: OpenApiResponse(description="Unknown profile")}


class SubjectViewSet(viewsets.GenericViewSet):
    lookup_field = "public_id"
    lookup_value_regex = "[A-Za-z0-9_-]+"
    queryset = CustomerProfile.objects.none()
    pagination_class = None
    filterset_class = None
    required_scopes = {"retrieve": RIGHTS, "erase": RIGHTS}

    def check_permissions(self, request):
        super().check_permissions(request)
        # A person (a staff session) needs the Django permission of the right as well as the scope.
        if not isinstance(request.auth, ApiKey) and self.action in self._PERMISSIONS and not request.user.has_perm(
                self._PERMISSIONS[self.action]):
            self.permission_denied(request, message=f"This needs the permission {self._PERMISSIONS[self.action]!r}.")

    _PERMISSIONS = {"retrieve": "privacy.subject_access", "erase": "privacy.erase_subject"}

    def _profile(self) -> CustomerProfile:
        profile = CustomerProfile.objects.filter(public_id=self.kwargs["public_id"]).first()
        if profile is None:
            raise Http404
        return profile

    @extend_schema(summary="Subject access: everything held on the customer (audited as a clear read)",
                   parameters=[_SUBJECT], responses={200: OpenApiTypes.OBJECT, **_ERRORS})
    def retrieve(self, request, public_id=None):
        data = subject_access(profile=self._profile(), viewer=viewer_of(request, sees_clear=True))
        # Decimals as their exact text, as the command writes them (the renderer would make them floats).
        return Response(json.loads(json.dumps(data, cls=SubjectEncoder)), headers={"Cache-Control": "no-store"})

    @extend_schema(summary="Erase the customer everywhere; later feeds do not bring them back",
                   parameters=[_SUBJECT], request=s.ErasureRequestSerializer,
                   responses={200: s.ErasureLogSerializer, 400: OpenApiResponse(description="No reason"), **_ERRORS})
    @action(detail=True, methods=["post"])
    def erase(self, request, public_id=None):
        profile = self._profile()
        body = s.ErasureRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        caller = f"api:{request.auth}" if isinstance(request.auth, ApiKey) else f"user:{request.user.get_username()}"
        log = erase_subject(profile=profile, reason=body.validated_data["reason"], by=caller)
        return Response(s.ErasureLogSerializer(log).data)

