"""The member export for a campaign, shared by the API and the admin: CSV lines, masked or clear by the viewer,
safe in a spreadsheet, and audited before they leave."""
from collections.abc import Iterator, Sequence
from itertools import islice

from privacy.audit import audit_clear_read
from privacy.csv_safe import SafeCsvWriter
from privacy.policy import Viewer, pii_present, present

from .models import Segment
from .selectors import segment_members_for_channel

EXPORT_FIELDS = ("full_name", "phone", "email")
# Rows read, audited and sent together: bounds memory and makes the audit one INSERT per chunk.
EXPORT_CHUNK = 2000


def segment_members_export_lines(*, segment: Segment, channel: str, viewer: Viewer,
                                 header: Sequence[str]) -> Iterator[str]:
    """The header line, then one string per chunk of members a campaign on `channel` may contact: the profile's
    public id and EXPORT_FIELDS. Clear for a viewer who sees personal data clear, and then each chunk's audit
    records are written before the chunk is yielded: a client that disconnects midway is recorded for every row
    it may have received."""
    rows = segment_members_for_channel(segment=segment, channel=channel).values_list("public_id", *EXPORT_FIELDS)
    writer = SafeCsvWriter()
    yield writer.writerow(header)
    values = rows.iterator(chunk_size=EXPORT_CHUNK)
    while chunk := list(islice(values, EXPORT_CHUNK)):
        records = [(public_id, dict(zip(EXPORT_FIELDS, fields))) for public_id, *fields in chunk]
        if viewer.sees_clear:
            audit_clear_read(viewer=viewer, fields_by_profile={
                public_id: pii_present(record, EXPORT_FIELDS) for public_id, record in records})
        yield "".join(writer.writerow([public_id, *(shown[name] or "" for name in EXPORT_FIELDS)])
                      for public_id, shown in ((public_id, present(record, viewer, EXPORT_FIELDS))
                                               for public_id, record in records))
