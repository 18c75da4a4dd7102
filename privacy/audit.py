"""Audit records of clear personal data read by a key or a person, written before the data leaves."""
import json

from django.utils import timezone

from profiles import sql

from .models import AuditRecord
from .policy import Viewer

_TABLE = AuditRecord._meta.db_table
_COLUMNS = "(api_key_id, user_id, profile_public_id, fields, at, request_id, method, path)"
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s)"


def audit_clear_read(*, viewer: Viewer, fields_by_profile: dict[str, list[str]]) -> int:
    """One audit record per profile whose personal data the viewer reads clear, listing the fields; one INSERT.

    `fields_by_profile` maps a profile's public id to the personal fields read clear (empty: no record).
    """
    entries = {public_id: sorted(set(fields)) for public_id, fields in fields_by_profile.items() if fields}
    if not entries:
        return 0
    # A fixed INSERT, not bulk_create: the ORM's compiling cost dominated this statement.
    at = timezone.now()
    rows = [(viewer.api_key_id, viewer.user_id, public_id, json.dumps(fields), at, viewer.request_id,
             viewer.method, viewer.path) for public_id, fields in entries.items()]
    sql.execute(f"INSERT INTO {_TABLE} {_COLUMNS} VALUES {', '.join([_ROW] * len(rows))}",
                [value for row in rows for value in row])
    return len(entries)


def audit_records_for_profile(*, public_id: str):
    return AuditRecord.objects.filter(profile_public_id=public_id).select_related("api_key", "user")
