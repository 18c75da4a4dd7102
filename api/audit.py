"""The request id, and the API's side of the privacy policy: who the caller is (a privacy.policy.Viewer)."""
import re
import uuid

from privacy.audit import audit_clear_read
from privacy.policy import Viewer

from .models import ApiKey, Scope
from .permissions import has_scope

# A caller's X-Request-ID is kept if it looks like an id; anything else is replaced, never stored as given.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def request_id_of(request) -> str:
    """The request's id: the caller's X-Request-ID if it is a plain token, else a new one (kept on the request)."""
    django_request = getattr(request, "_request", request)
    rid = getattr(django_request, "cdp_request_id", None)
    if rid is None:
        given = django_request.headers.get("X-Request-ID", "")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        django_request.cdp_request_id = rid
    return rid


def viewer_of(request, *, sees_clear: bool) -> Viewer:
    """The caller of an API request as the privacy policy sees it: its key, or the signed-in person."""
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    user = request.user if api_key is None and request.user.is_authenticated else None
    # The path only: a query string may hold the phone or id number of a lookup.
    return Viewer(sees_clear=sees_clear, api_key_id=api_key and api_key.pk, user_id=user and user.pk,
                  request_id=request_id_of(request), method=request.method, path=request.path[:500])


def personal_data_viewer(request) -> Viewer:
    """The caller as the policy sees it: clear personal data with the scope profiles:read_pii, masks without."""
    return viewer_of(request, sees_clear=has_scope(request, Scope.PROFILES_READ_PII))


def audit_pii_returned(*, request, fields_by_profile: dict[str, list[str]]) -> int:
    """Audit the personal fields this response returns clear, per profile (see privacy.audit.audit_clear_read)."""
    return audit_clear_read(viewer=viewer_of(request, sees_clear=True), fields_by_profile=fields_by_profile)
