"""Who is calling: a client app with an API key, or a staff member signed in to the admin."""
from dataclasses import dataclass

from rest_framework import authentication, exceptions

from .keys import api_key_verify
from .models import ApiKey


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """request.user for a call made with an API key: authenticated, never staff, named after the key."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = True
    pk: None = None
    id: None = None

    @property
    def username(self) -> str:
        return f"api-key:{self.api_key.name}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`; request.auth is the ApiKey."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <key>'.")
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        api_key = api_key_verify(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        # Makes unauthenticated requests answer 401 with WWW-Authenticate rather than 403.
        return f'{self.keyword} realm="api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """Admin session, for staff only (the browsable API and the docs); CSRF-checked like the admin."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None or not result[0].is_staff:
            return None
        return result
