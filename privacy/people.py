"""People (signed in to the admin or the browsable API) as the privacy policy sees them.

A person sees personal data clear only with the permission `privacy.view_pii` and exports members only with
`privacy.export_members`; being staff grants neither. A superuser holds every permission (Django's rule).
Every clear read is audited under the person's user id, like a key's.
"""
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from .audit import audit_clear_read
from .policy import MASKS, Viewer

VIEW_PII = "privacy.view_pii"
EXPORT_MEMBERS = "privacy.export_members"


def request_id_for(request) -> str:
    """One id per request, shared by every audit record the request writes."""
    rid = getattr(request, "cdp_request_id", None)
    if rid is None:
        rid = request.cdp_request_id = uuid.uuid4().hex
    return rid


def person_viewer(request) -> Viewer:
    """The signed-in person of a request (admin or browsable API) as a Viewer: clear only with privacy.view_pii."""
    user = request.user
    return Viewer(sees_clear=user.has_perm(VIEW_PII), user_id=user.pk, request_id=request_id_for(request),
                  method=request.method, path=request.path[:500])


@dataclass
class PersonalDataReading:
    """The personal values one page shows: masked for a viewer without the right, else clear and noted for the
    audit record written before the page leaves."""

    viewer: Viewer
    read: dict[str, set[str]] = field(default_factory=dict)

    def show(self, value, *, field_name: str, public_id: str | None):
        if value in (None, "") or field_name not in MASKS:
            return value
        if not self.viewer.sees_clear:
            return MASKS[field_name](value)
        self.read.setdefault(public_id or "", set()).add(field_name)
        return value

    def audit(self) -> int:
        return audit_clear_read(viewer=self.viewer, fields_by_profile=self.read)


# The reading of the admin page being rendered: display methods get only the object, not the request.
_current_reading: ContextVar[PersonalDataReading | None] = ContextVar("personal_data_reading", default=None)


def shown(value, *, field_name: str, public_id: str | None):
    """A personal value as the page being rendered may show it; masked outside a reading (fail closed)."""
    reading = _current_reading.get()
    if reading is None:
        return MASKS[field_name](value) if value not in (None, "") and field_name in MASKS else value
    return reading.show(value, field_name=field_name, public_id=public_id)


def read_personal_data(request, render):
    """Run `render()` (a view returning a response) as a reading by the request's person: the response is rendered
    here, so every value it shows passed through `shown`, and its clear reads are audited before it is returned."""
    reading = PersonalDataReading(person_viewer(request))
    token = _current_reading.set(reading)
    try:
        response = render()
        if hasattr(response, "render") and not response.is_rendered:
            response.render()
    finally:
        _current_reading.reset(token)
    reading.audit()
    return response
