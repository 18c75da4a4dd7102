"""Audit records of unmasked personal data returned by the API, and the request id they carry."""
import json
import re
import uuid

from django.utils import timezone

from profiles import sql

from .models import ApiKey, AuditRecord

_TABLE = AuditRecord._meta.db_table
_COLUMNS = "(api_key_id, user_id, profile_public_id, fields, at, request_id, method, path)"
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s)"

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


def audit_pii_returned(*, request, fields_by_profile: dict[str, list[str]]) -> int:
    """One audit record per profile whose clear personal data this response returns, listing the fields; one INSERT.

    `fields_by_profile` maps a profile's public id to the personal fields returned in clear (empty: no record).
    """
    entries = {public_id: sorted(set(fields)) for public_id, fields in fields_by_profile.items() if fields}
    if not entries:
        return 0
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    user = request.user if api_key is None and request.user.is_authenticated else None
    rid = request_id_of(request)
    # The path only: a query string may hold the phone or id number of a lookup.
    path = request.path[:500]
    # A fixed INSERT, not bulk_create: the ORM's compiling cost ten times the statement (0.5 of 0.55 ms per call).
    at = timezone.now()
    rows = [(api_key and api_key.pk, user and user.pk, public_id, json.dumps(fields), at, rid, request.method, path)
            for public_id, fields in entries.items()]
    sql.execute(f"INSERT INTO {_TABLE} {_COLUMNS} VALUES {', '.join([_ROW] * len(rows))}",
                [value for row in rows for value in row])
    return len(entries)


def audit_records_for_profile(*, public_id: str):
    return AuditRecord.objects.filter(profile_public_id=public_id).select_related("api_key", "user")
