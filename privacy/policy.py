"""The privacy policy, in one place: which fields are personal, how each is masked, and who sees them clear.

Every door that shows a profile's personal data (the API, the admin, exports, explain, rejected rows) asks this
module, through a `Viewer`, whether the reader sees a field clear, and masks it with `MASKS` otherwise; a clear
read is audited through `privacy.audit` before the data leaves.

The national id number is never stored in clear (only a keyed hash and `id_number_masked`), so it is always
returned masked, with or without the scope; it is still personal: a lookup by it says whether a guessed number is a
customer's. Card numbers are only ever BIN and last 4 (stored that way).

Asking is reading: a search that answers yes or no for a guessed value of a personal field (a lookup by phone, a
segment rule `phone startswith ...`) recovers the value behind its mask (a phone's mask hides 4 digits: 10,000
guesses), so a door that searches by a personal field lets only viewers who may see it clear do so.
"""
import datetime as dt
import re
from dataclasses import dataclass

from profiles.normalize import mask_email, mask_id_number, mask_name, mask_phone, redact_raw_row

# Address: the first characters (province, city, district) stay readable; the street and number do not.
_ADDRESS_VISIBLE = 6


def mask_address(address: str) -> str:
    if not address:
        return ""
    visible = min(_ADDRESS_VISIBLE, len(address) // 3)
    return address[:visible] + "****"


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def mask_given_name(name: str) -> str:
    """Chinese given names fully starred ("伟" -> "*"): with the family name shown, "张" + "伟" would be the name."""
    if not name:
        return ""
    return " ".join("*" * len(word) if _CJK.match(word) else mask_name(word) for word in name.split())


def mask_birth_date(value: dt.date | str) -> str:
    """Year only: "1985-**-**"."""
    if not value:
        return ""
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    return text[:4] + "-**-**"


MASKS = {
    "full_name": mask_name,
    "family_name": mask_name,
    "given_name": mask_given_name,
    "phone": mask_phone,
    "email": mask_email,
    "address": mask_address,
    "birth_date": mask_birth_date,
    "id_number": mask_id_number,
}
# The personal fields: their clear value is what profiles:read_pii unlocks, what an audit record lists, and what a
# lookup or a segment rule may search by only for a viewer who sees it clear.
PII_FIELDS = tuple(MASKS)

__all__ = ["MASKED_VIEWER", "MASKS", "PII_FIELDS", "Viewer", "is_personal", "mask_address", "mask_birth_date",
           "mask_email", "mask_given_name", "mask_id_number", "mask_name", "mask_phone", "mask_value", "present"]


def is_personal(field: str) -> bool:
    return field in MASKS


def mask_value(field: str, value):
    """One value of `field` as a viewer without the right sees it: a personal field's text or date masked (a list
    item by item); anything else (a relative date such as {"years_ago": 60}, a non-personal field) as it is."""
    if not is_personal(field) or not value:
        return value
    if isinstance(value, list):
        return [mask_value(field, item) for item in value]
    if isinstance(value, (str, dt.date)):
        return MASKS[field](value)
    return value


def mask_fields(data: dict, fields=PII_FIELDS) -> dict:
    """Mask, in place, the personal fields present with a value."""
    for name in fields:
        value = data.get(name)
        if value:
            data[name] = MASKS[name](value)
    return data


def pii_present(data: dict, fields=PII_FIELDS) -> list[str]:
    """The personal fields that carry a value in a serialized object (what an audit record lists)."""
    return [name for name in fields if data.get(name)]


@dataclass(frozen=True)
class Viewer:
    """Who reads personal data: an API key or a person, whether the policy lets them see it clear, and the request
    an audit record names. Built by the door (api.audit.viewer_of for a key or a browsable-API user)."""

    sees_clear: bool
    api_key_id: int | None = None
    user_id: int | None = None
    request_id: str = ""
    method: str = ""
    path: str = ""


# A reader the door could not name: it sees masks (the safe default of a selector given no viewer).
MASKED_VIEWER = Viewer(sees_clear=False)


def present(data: dict, viewer: Viewer, fields=PII_FIELDS) -> dict:
    """`data` as the viewer may see it: personal fields masked in place unless the viewer sees them clear."""
    return data if viewer.sees_clear else mask_fields(data, fields)


def mask_raw_row(row: dict) -> dict:
    """A raw feed row as it may be kept at rest (a rejected row, for review): its personal fields masked as above,
    the id number masked and the card number as BIN and last 4 (profiles.normalize.redact_raw_row). The clear values
    are never stored, so no reader of rejected rows can see them."""
    return mask_fields(redact_raw_row(row))
