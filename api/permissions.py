"""Scopes: what a key may do, declared on each view.

A view declares `required_scopes`, a mapping from the viewset action (`list`, `retrieve`, `lookup`, ...) or,
for plain APIViews, the HTTP method (`GET`, `PUT`, ...) to a scope. An action or method missing from the
mapping is refused (fail closed). Staff signed in with a session hold every scope.
"""
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from .models import ApiKey, Scope


def scopes_of(request) -> frozenset[str]:
    if isinstance(request.auth, ApiKey):
        return frozenset(request.auth.scopes)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return frozenset(Scope.values)
    return frozenset()


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
