"""Scopes: what a key may do, declared on each view.

A view declares `required_scopes`, a mapping from the viewset action (`list`, `retrieve`, `lookup`, ...) or,
for plain APIViews, the HTTP method (`GET`, `PUT`, ...) to a scope. An action or method missing from the
mapping is refused (fail closed). A person signed in with a staff session holds a scope through a Django
permission (STAFF_SCOPE_PERMISSIONS): being staff grants none, and a superuser holds them all (Django's rule).
"""
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from privacy.people import EXPORT_MEMBERS, VIEW_PII

from .models import ApiKey, Scope

# The permission that gives a signed-in person each scope: the one that allows the same in the admin.
STAFF_SCOPE_PERMISSIONS = {
    Scope.PROFILES_READ: "profiles.view_customerprofile",
    Scope.PROFILES_READ_PII: VIEW_PII,
    Scope.PROFILES_WRITE: "tags.add_tagassignment",
    Scope.SEGMENTS_READ: "segments.view_segment",
    Scope.SEGMENTS_WRITE: "segments.change_segment",
    Scope.FEEDS_WRITE: "profiles.add_feedbatch",
    Scope.JOBS_READ: "profiles.view_feedbatch",
    # Erasure needs privacy.erase_subject on top (checked by the view).
    Scope.PRIVACY_RIGHTS: "privacy.subject_access",
}


def _person(request):
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated and user.is_staff else None


def scopes_of(request) -> frozenset[str]:
    if isinstance(request.auth, ApiKey):
        return frozenset(request.auth.scopes)
    person = _person(request)
    if person is None:
        return frozenset()
    return frozenset(scope.value for scope, permission in STAFF_SCOPE_PERMISSIONS.items()
                     if person.has_perm(permission))


def may_export_members(request) -> bool:
    """A key exports with segments:read (checked by HasScope); a person also needs privacy.export_members."""
    if isinstance(request.auth, ApiKey):
        return True
    person = _person(request)
    return person is not None and person.has_perm(EXPORT_MEMBERS)


def has_scope(request, scope: str) -> bool:
    return scope in scopes_of(request)


def required_scope(view, request) -> str | None:
    mapping = getattr(view, "required_scopes", {})
    action = getattr(view, "action", None)
    if action and action in mapping:
        return mapping[action]
    return mapping.get(request.method)


class HasScope(BasePermission):
    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if not hasattr(view, "required_scopes"):
            return True  # schema and docs: any authenticated caller
        if getattr(view, "action_map", None) is not None and view.action is None:
            return True  # a method the viewset does not offer: let it answer 405
        scope = required_scope(view, request)
        if scope is None:
            return False
        if scope not in scopes_of(request):
            self.message = f"This endpoint needs the scope {scope!r}."
            return False
        return True


def require_personal_data_scope(request, fields, what: str) -> None:
    """Searching by a personal field (a lookup, a rule's condition) answers for guessed values and so recovers what
    the masks hide: it needs the scope that shows the field clear. `fields`: the personal fields searched by."""
    if fields and not has_scope(request, Scope.PROFILES_READ_PII):
        raise PermissionDenied(f"{what} on the personal fields {', '.join(fields)} needs the scope "
                               f"{Scope.PROFILES_READ_PII.value!r}.")
