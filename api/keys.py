"""Creating, verifying and revoking API keys (services and selectors of the api app's own model)."""
import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from profiles import sql

from .models import ApiKey, Scope
from .rates import parse_rate

KEY_PREFIX = "cdp"
# last_used_at is written at most this often per key, so a busy key does not write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


_PREFIX = re.compile(r"[0-9a-f]{8}", re.ASCII)


_BY_PREFIX = f"SELECT * FROM {ApiKey._meta.db_table} WHERE prefix = %s"


class ApiKeyError(ValueError):
    pass


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def scopes_validate(scopes) -> list[str]:
    scopes = sorted({s.strip() for s in scopes if s and s.strip()})
    unknown = [s for s in scopes if s not in Scope.values]
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}; one of {', '.join(Scope.values)}")
    return scopes


def api_key_create(*, name: str, scopes, expires_in_days: int | None = None, rate: str = "",
                   created_by: str = "") -> tuple[ApiKey, str]:
    """A new key and its clear text, which is never stored and cannot be shown again."""
    if not name.strip():
        raise ApiKeyError("a key needs a name")
    if rate:
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise ApiKeyError(str(exc)) from None
    scopes = scopes_validate(scopes)
    if expires_in_days is not None and expires_in_days <= 0:
        raise ApiKeyError("expires-in-days must be positive")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    api_key = ApiKey.objects.create(name=name.strip(), prefix=prefix, key_hash=_hash(key), scopes=scopes,
                                    rate=rate.strip(), expires_at=expires_at, created_by=created_by)
    return api_key, key


def api_keys_revoke(*, ids) -> int:
    """Revoke keys at once; a revoked key answers 401 from the next request (see api_key_forget). Returns how
    many were live."""
    ids = list(ids)
    revoked = ApiKey.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key_forget(prefixes=ApiKey.objects.filter(pk__in=ids).values_list("prefix", flat=True))
    return revoked


def _cache_key(prefix: str) -> str:
    return f"cdp:api-key:{prefix}"


def api_key_forget(*, prefixes) -> None:
    """Drop keys from the verification cache after a change (revocation, scopes, rate). With a shared cache
    (CACHE_URL) every server process sees the change on its next request; with the per-process default, the
    others within CDP_API_KEY_CACHE_SECONDS."""
    cache.delete_many([_cache_key(p) for p in prefixes])


def _remember(api_key: ApiKey) -> None:
    if settings.CDP_API_KEY_CACHE_SECONDS:
        cache.set(_cache_key(api_key.prefix), api_key, settings.CDP_API_KEY_CACHE_SECONDS)


def _key_by_prefix(prefix: str) -> ApiKey | None:
    # Every request verifies its key: caching the row for a few seconds spares a query on the hottest path.
    api_key = cache.get(_cache_key(prefix)) if settings.CDP_API_KEY_CACHE_SECONDS else None
    if api_key is None:
        api_key = sql.fetch_instance(ApiKey, _BY_PREFIX, [prefix])
        if api_key is not None:
            _remember(api_key)
    return api_key


def api_key_verify(key: str) -> ApiKey | None:
    """The live key for a clear-text key, or None (unknown, wrong secret, revoked, expired)."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or _PREFIX.fullmatch(parts[1]) is None or not parts[2]:
        return None
    now = timezone.now()
    # Looked up by the unique prefix alone, revocation and expiry checked here: the cheapest query per request,
    # as fixed SQL because compiling the ORM query on every request cost twice as much as running it.
    api_key = _key_by_prefix(parts[1])
    if (api_key is None or api_key.revoked_at is not None or (api_key.expires_at and api_key.expires_at <= now)
            or not secrets.compare_digest(api_key.key_hash, _hash(key))):
        return None
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
        _remember(api_key)
    return api_key
