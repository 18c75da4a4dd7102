"""Normalising one customer-feed row into source-record columns, with masking and keyed hashing of identifiers.

Pure functions: no database access. Django is used only for the PII key (``settings.CDP_PII_KEY``) and the
current time zone for naive timestamps. This runs on millions of rows, so the common paths use precompiled
regexes and plain string methods, and the ``phonenumbers`` library is kept off the path of ordinary Chinese
mobile numbers.

Privacy rule: a full card number or a full id number never leaves this module, neither in a returned value
nor in the reason of a ``RowRejected``; only keyed hashes and masked forms do.
"""
from __future__ import annotations

import hmac
import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from operator import mul

import phonenumbers
from django.conf import settings
from django.utils import timezone

__all__ = [
    "PLACEHOLDER_EMAILS", "PLACEHOLDER_EMAIL_DOMAINS", "PLACEHOLDER_EMAIL_LOCAL_PARTS", "PLACEHOLDER_ID_NUMBERS",
    "PLACEHOLDER_NAMES", "PLACEHOLDER_PHONES", "PLACEHOLDER_VALUES", "RowRejected", "cn_resident_id_from_legacy",
    "compose_full_name", "fold_width", "is_luhn_valid", "is_placeholder", "is_valid_cn_resident_id", "keyed_hash",
    "keyed_hash_step", "mask_email", "mask_id_number", "mask_name", "mask_phone", "name_match_key",
    "normalize_customer_row", "normalize_email", "normalize_id_number", "normalize_name", "normalize_phone", "pii_keys",
    "redact_raw_row", "tokenize_pan",
]


class RowRejected(Exception):
    """The row cannot be loaded; ``str(exc)`` names the column and the problem, with identifiers masked."""


# --------------------------------------------------------------------------------------------------------------
# Keyed hashing
# --------------------------------------------------------------------------------------------------------------

# The keys of the keyed hashes, oldest first: CDP_PII_KEY_PREVIOUS then CDP_PII_KEY. A hash is a chain, one HMAC per
# key, each over the one before; a rotation adds a key and re-keys what is stored with that key alone, which needs
# no clear value (README, "Rotating the key of the keyed hashes"). Keyed by the settings (not cached once) so that a
# test overriding them, or a rotation in a long-lived worker, takes effect at once.
_KEY_BYTES: dict[tuple[tuple[str, ...], str], tuple[bytes, ...]] = {}


def pii_keys() -> tuple[bytes, ...]:
    """The keys of the chain, oldest first."""
    setting = (tuple(settings.CDP_PII_KEY_PREVIOUS), settings.CDP_PII_KEY)
    keys = _KEY_BYTES.get(setting)
    if keys is None:
        if len(_KEY_BYTES) > 8:  # keys only change in tests; don't let a test suite grow this forever
            _KEY_BYTES.clear()
        keys = _KEY_BYTES[setting] = tuple(key.encode() for key in (*setting[0], setting[1]))
    return keys


def keyed_hash_step(key: bytes, value: str, purpose: str) -> str:
    """One link of the chain: HMAC-SHA256 of ``purpose + "\\x1f" + value`` keyed with `key`; first 32 hex chars."""
    # hmac.digest is the one-shot OpenSSL path: faster than building an HMAC object per value.
    return hmac.digest(key, f"{purpose}\x1f{value}".encode(), "sha256").hex()[:32]


def keyed_hash(value: str, purpose: str) -> str:
    """The keyed hash of a value: `keyed_hash_step` with each key of `pii_keys` in turn, oldest first, each over
    the one before (with one key: HMAC-SHA256 of ``purpose + "\\x1f" + value`` keyed with ``settings.CDP_PII_KEY``).

    The purpose is part of the message so that the same digits hashed as a phone and as an id never collide.
    """
    for key in pii_keys():
        value = keyed_hash_step(key, value, purpose)
    return value


# --------------------------------------------------------------------------------------------------------------
# Width folding and placeholders
# --------------------------------------------------------------------------------------------------------------

# Full-width ASCII U+FF01..U+FF5E sits exactly 0xFEE0 above its half-width twin; U+3000 is the CJK space.
# A translate table touches nothing else, so CJK ideographs (and CJK punctuation like "。") stay as written,
# which NFKC would not guarantee (it rewrites compatibility ideographs such as U+F900).
_WIDTH_TABLE = {0x3000: 0x20, **{cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}}


def fold_width(s: str) -> str:
    """Full-width ASCII and the ideographic space to half-width; everything else untouched."""
    return s if s.isascii() else s.translate(_WIDTH_TABLE)


def _clean(raw: str) -> str:
    """Width-folded, trimmed, inner whitespace collapsed to one space."""
    if not raw.isascii():
        raw = raw.translate(_WIDTH_TABLE)
    return " ".join(raw.split())


# Values that mean "nothing here" in any column (compared case-folded, after trimming and width folding).
PLACEHOLDER_VALUES = frozenset({
    "null", "none", "nil", "n/a", "na", "#n/a", "-", "--", "---", "?", "0", "unknown", "未知", "无", "不详", "空",
})
# "na" is left out for names: "Na" (娜) is a common pinyin given name.
_NAME_GENERIC = PLACEHOLDER_VALUES - {"na"}
PLACEHOLDER_NAMES = frozenset({
    "test", "testing", "tester", "test user", "dummy", "x", "xx", "xxx", "tbd", "abc", "asdf", "noname",
    "no name", "anonymous", "customer", "name", "测试", "测试用户", "客户", "匿名", "无名", "无名氏", "某某", "姓名",
})
# National significant numbers (CN mobiles as 11 digits) known to be typed in when the real number is unknown.
PLACEHOLDER_PHONES = frozenset({
    "13800000000", "13888888888", "13800138000", "13812345678", "13912345678", "12345678901", "12345678910",
    "01234567890", "12345678", "87654321",
})
PLACEHOLDER_EMAILS = frozenset({
    "test@test.com", "a@a.com", "x@x.com", "xxx@xxx.com", "abc@abc.com", "1@1.com", "123@123.com",
    "email@email.com", "test@qq.com", "test@163.com", "123456@qq.com",
})
PLACEHOLDER_EMAIL_LOCAL_PARTS = frozenset({
    "noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply", "null", "none", "nil",
    "nobody", "noemail", "no-email", "nomail", "no-mail", "unknown", "n/a",
})
# Not example.com: it is the documented test domain and test data uses it for real-looking addresses.
PLACEHOLDER_EMAIL_DOMAINS = frozenset({"test.com", "xxx.com", "null.com", "none.com", "noemail.com", "nomail.com"})
PLACEHOLDER_ID_NUMBERS = frozenset({
    "123456789", "1234567890", "123456789012345678", "12345678901234567X", "ABCDEFG", "NULL", "NONE", "UNKNOWN",
})
# Ascending / descending digit runs: an id that is a prefix of one of these is typed-in filler.
_ID_SEQUENCES = ("0123456789" * 3, "1234567890" * 3, "9876543210" * 3)

_HAS_LETTER = re.compile(r"[^\W\d_]")
_NON_DIGITS = re.compile(r"\D+")
_CN_MOBILE_NSN = re.compile(r"1[3-9]\d{9}", re.ASCII)


def _is_placeholder_national(national: str) -> bool:
    """A national significant number that is filler: listed, one repeated digit, or a CN mobile whose
    subscriber part (last 8 digits) is one repeated digit (13800000000, 13911111111)."""
    if national in PLACEHOLDER_PHONES or len(set(national)) == 1:
        return True
    return len(national) == 11 and _CN_MOBILE_NSN.fullmatch(national) is not None and len(set(national[3:])) == 1


def _is_placeholder_phone(value: str) -> bool:
    s = _clean(value)
    if s.casefold() in PLACEHOLDER_VALUES:
        return True
    digits = _NON_DIGITS.sub("", s)
    if not digits:
        return False
    if _is_placeholder_national(digits):
        return True
    if digits.startswith("0086"):
        return _is_placeholder_national(digits[4:])
    if digits.startswith("86") and (s.startswith("+") or len(digits) == 13):
        return _is_placeholder_national(digits[2:])
    if s.startswith("+"):
        parsed = _parse_phone("+" + digits, "ZZ")
        return parsed is not None and _is_placeholder_national(parsed[1])
    return False


def _is_placeholder_email(value: str) -> bool:
    s = _clean(value).lower()
    if s in PLACEHOLDER_VALUES or s in PLACEHOLDER_EMAILS:
        return True
    local, _, domain = s.rpartition("@")
    if not local:
        return False
    if local in PLACEHOLDER_EMAIL_LOCAL_PARTS or domain in PLACEHOLDER_EMAIL_DOMAINS:
        return True
    # aaa@..., 000000@qq.com: a local part of one repeated character is filler.
    return len(local) >= 3 and len(set(local)) == 1


def _is_placeholder_id(n: str) -> bool:
    """``n`` is an already normalised id number (no spaces, upper-cased)."""
    if n.casefold() in PLACEHOLDER_VALUES or n in PLACEHOLDER_ID_NUMBERS or len(set(n)) == 1:
        return True
    if len(n) >= 6:
        # 11111111111111111X / 000000000000000000 with a computed check character.
        if len(set(n[:-1])) == 1:
            return True
        body = n[:-1] if n[-1] == "X" else n
        if body.isdigit() and any(seq.startswith(body) for seq in _ID_SEQUENCES):
            return True
    return False


def _is_placeholder_name(s: str) -> bool:
    """``s`` is an already cleaned name."""
    key = s.casefold()
    if key in _NAME_GENERIC or key in PLACEHOLDER_NAMES:
        return True
    if _HAS_LETTER.search(s) is None:  # "123", "***", "?": no letter (or ideograph) at all
        return True
    stripped = key.rstrip("0123456789 ")  # "test1", "测试 2"
    return stripped != key and stripped in PLACEHOLDER_NAMES


def is_placeholder(kind: str, value: str) -> bool:
    """Whether ``value`` is filler rather than data, for kind "phone", "email", "id_number" or "name"."""
    if value is None:
        return False
    if kind == "phone":
        return _is_placeholder_phone(value)
    if kind == "email":
        return _is_placeholder_email(value)
    if kind == "id_number":
        return _is_placeholder_id(_normalise_id(value))
    if kind == "name":
        return _is_placeholder_name(_clean(value))
    raise ValueError(f"unknown placeholder kind {kind!r}")


# --------------------------------------------------------------------------------------------------------------
# Phones and emails
# --------------------------------------------------------------------------------------------------------------

# The common Chinese mobile forms in one pass: optional +86 / 0086 / 86, then 3-4-4 digits with optional
# space or dash separators. Anything else goes to phonenumbers.
_CN_MOBILE_RE = re.compile(r"(?:(?:\+|00)?86[ \-]?)?(1[3-9]\d)[ \-]?(\d{4})[ \-]?(\d{4})", re.ASCII)
_PHONE_STRIP = re.compile(r"[\s\-().]+")


@lru_cache(maxsize=65536)
def _parse_phone(cleaned: str, region: str) -> tuple[str, str] | None:
    """(E.164, national significant number) of a valid number, else None. Cached: feeds repeat numbers."""
    try:
        number = phonenumbers.parse(cleaned, None if region == "ZZ" else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
            phonenumbers.national_significant_number(number))


def normalize_phone(raw: str | None, default_region: str = "CN") -> str | None:
    """E.164 form of a phone number, or None when empty, a placeholder or not a valid number."""
    if not raw:
        return None
    s = raw.strip()
    if not s.isascii():
        s = s.translate(_WIDTH_TABLE).strip()
    m = _CN_MOBILE_RE.fullmatch(s)
    # A bare 11-digit 1xx number is Chinese only if the feed is Chinese; with a prefix it always is.
    if m is not None and (default_region == "CN" or s[0] in "+08"):
        national = m[1] + m[2] + m[3]
        return None if _is_placeholder_national(national) else "+86" + national
    if not s or s.casefold() in PLACEHOLDER_VALUES:
        return None
    cleaned = _PHONE_STRIP.sub("", s)
    digits = cleaned.lstrip("+")
    if not digits.isdigit() or _is_placeholder_national(digits):
        return None
    parsed = _parse_phone(cleaned, default_region)
    if parsed is None or _is_placeholder_national(parsed[1]):
        return None
    return parsed[0]


_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def normalize_email(raw: str | None) -> str | None:
    """Trimmed, width-folded, lower-cased email; None when empty, malformed or a placeholder."""
    if not raw:
        return None
    s = raw.strip()
    if not s.isascii():
        s = s.translate(_WIDTH_TABLE).strip()
    s = s.lower()
    if len(s) > 254 or _EMAIL_RE.fullmatch(s) is None or _is_placeholder_email(s):
        return None
    return s


# --------------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------------

def normalize_name(raw: str | None) -> str | None:
    """Trimmed, whitespace collapsed, width-folded; Chinese kept as written; None if empty or a placeholder."""
    if not raw:
        return None
    s = _clean(raw)
    if not s or _is_placeholder_name(s):
        return None
    return s


# Whitespace and the separators people put inside names inconsistently (incl. the middle dots of
# transliterated minority names: U+00B7, U+2022, U+30FB, U+2027).
_NAME_KEY_DROP = re.compile(r"[\s.·•\-'’,・‧]+")


def name_match_key(name: str | None) -> str | None:
    """Key for comparing names: width- and case-folded, whitespace and . · • - ' ’ , removed."""
    if not name:
        return None
    key = _NAME_KEY_DROP.sub("", fold_width(name).casefold())
    return key or None


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _is_cjk(ch: str) -> bool:
    return _CJK.match(ch) is not None


def compose_full_name(family: str | None, given: str | None) -> str | None:
    """Family name first: "张"+"伟" -> "张伟" (no space between CJK), "Zhang"+"Wei" -> "Zhang Wei"."""
    family = normalize_name(family)
    given = normalize_name(given)
    if family is None or given is None:
        return family or given
    if _is_cjk(family[-1]) and _is_cjk(given[0]):
        return family + given
    return f"{family} {given}"


# --------------------------------------------------------------------------------------------------------------
# Id numbers
# --------------------------------------------------------------------------------------------------------------

_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"
# The weights are applied to ASCII codes (one C-level map over bytes); this removes the '0' offset again.
_CN_ID_ASCII_OFFSET = 48 * sum(_CN_ID_WEIGHTS)
_CN_ID_EARLIEST_YEAR = 1800
_ID_TYPES = frozenset({"CN_RESIDENT", "PASSPORT", "OTHER"})
_PASSPORT_RE = re.compile(r"[A-Z0-9]{5,20}", re.ASCII)
_OTHER_ID_RE = re.compile(r"(?:[^\W_]|[\-/()])+")
_NOT_ALNUM = re.compile(r"[\W_]+")


def is_valid_cn_resident_id(number: str) -> bool:
    """GB 11643 18-character resident id: 17 digits + check char, and a real, not future, birth date inside."""
    if len(number) != 18 or not number.isascii():
        return False
    body = number[:17]
    if not body.isdigit():
        return False
    total = sum(map(mul, body.encode(), _CN_ID_WEIGHTS)) - _CN_ID_ASCII_OFFSET
    if _CN_ID_CHECK[total % 11] != number[17]:
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return _CN_ID_EARLIEST_YEAR <= born.year and born <= date.today()


def cn_resident_id_from_legacy(number: str) -> str | None:
    """The 18-character form of a first-generation (GB 11643-1989) 15-digit resident id, or None if `number` is
    not one: 6-digit area, YYMMDD birth date of the 1900s, 3-digit sequence; the century "19" goes before the
    year and the check character is computed. A number whose date does not exist is not converted."""
    if len(number) != 15 or not number.isascii() or not number.isdigit():
        return None
    try:
        date(1900 + int(number[6:8]), int(number[8:10]), int(number[10:12]))
    except ValueError:
        return None
    body = number[:6] + "19" + number[6:]
    return body + _CN_ID_CHECK[(sum(map(mul, body.encode(), _CN_ID_WEIGHTS)) - _CN_ID_ASCII_OFFSET) % 11]


def _normalise_id(raw: str) -> str:
    s = raw if raw.isascii() else raw.translate(_WIDTH_TABLE)
    return "".join(s.split()).upper()


def _other_id_valid(n: str) -> bool:
    # At least 4 letters/digits (any script: some domestic documents carry ideographs), plus only - / ( ).
    return _OTHER_ID_RE.fullmatch(n) is not None and len(_NOT_ALNUM.sub("", n)) >= 4


def normalize_id_number(raw: str | None, id_type: str | None) -> tuple[str | None, bool]:
    """(normalised number, valid): trimmed, width-folded, spaces removed, upper-cased; validity per type.

    With no id_type the number is valid if it is a valid CN resident id, else by the OTHER rule.
    Placeholders are never valid.
    """
    if not raw:
        return None, False
    n = _normalise_id(raw)
    if not n:
        return None, False
    if _is_placeholder_id(n):
        return n, False
    kind = id_type.strip().upper() if id_type else None
    if kind in (None, "CN_RESIDENT"):
        n = cn_resident_id_from_legacy(n) or n
    if kind == "CN_RESIDENT":
        return n, is_valid_cn_resident_id(n)
    if kind == "PASSPORT":
        return n, _PASSPORT_RE.fullmatch(n) is not None
    if kind == "OTHER":
        return n, _other_id_valid(n)
    if kind is None:
        return n, is_valid_cn_resident_id(n) or _other_id_valid(n)
    raise ValueError(f"unknown id type {id_type!r}")


# --------------------------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------------------------

# Below this length "first 3 + last 4" would show most of the value, so only the last 2 are shown.
_ID_MASK_MIN_LEN = 12


def mask_id_number(n: str) -> str:
    """First 3 + stars + last 4, same length; values shorter than 12: all but the last 2 starred."""
    if len(n) >= _ID_MASK_MIN_LEN:
        return n[:3] + "*" * (len(n) - 7) + n[-4:]
    if len(n) <= 2:
        return "*" * len(n)
    return "*" * (len(n) - 2) + n[-2:]


def mask_phone(e164_or_raw: str) -> str:
    """CN mobile as "138****5678"; other numbers: last 4 of the national part kept (country code kept if not 86)."""
    if not e164_or_raw:
        return ""
    e164 = normalize_phone(e164_or_raw)
    if e164 is not None and e164.startswith("+86"):
        national = e164[3:]
        if len(national) == 11 and national[0] == "1":
            return national[:3] + "****" + national[-4:]
        return "*" * (len(national) - 4) + national[-4:]
    if e164 is not None:
        parsed = _parse_phone(e164, "ZZ")
        if parsed is not None:
            national = parsed[1]
            return e164[: len(e164) - len(national)] + "*" * (len(national) - 4) + national[-4:]
    digits = _NON_DIGITS.sub("", e164_or_raw)  # not a valid number: still never show more than the last 4
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


# Latin words show at most 3 stars so the mask does not give away the word length ("Zhang" -> "Z***").
_LATIN_WORD_STARS = 3


def mask_name(name: str) -> str:
    """"张伟" -> "张*", "欧阳娜娜" -> "欧***" (a star per hidden char); "Zhang Wei" -> "Z*** W**"."""
    if not name:
        return ""
    words = []
    for word in name.split():
        hidden = len(word) - 1
        if not _is_cjk(word[0]):
            hidden = min(hidden, _LATIN_WORD_STARS)
        words.append(word[0] + "*" * hidden)
    return " ".join(words)


# The local part shows at most 7 stars, for the same reason as names.
_EMAIL_LOCAL_STARS = 7


def mask_email(e: str) -> str:
    """"zhang.wei@example.com" -> "z*******@example.com": first char of the local part, domain kept."""
    if not e:
        return ""
    local, at, domain = e.rpartition("@")
    if not at:
        return mask_name(e)
    if len(local) <= 1:
        return "*" * len(local) + "@" + domain
    return local[0] + "*" * min(len(local) - 1, _EMAIL_LOCAL_STARS) + "@" + domain


# --------------------------------------------------------------------------------------------------------------
# Card numbers
# --------------------------------------------------------------------------------------------------------------

# Luhn doubling of a digit, indexed by the digit.
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_PAN_SEPARATORS = re.compile(r"[\s\-]+")


def is_luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of an all-digit string."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    values = [ord(c) - 48 for c in reversed(digits)]
    return (sum(values[0::2]) + sum(_LUHN_DOUBLE[d] for d in values[1::2])) % 10 == 0


def _pan_tail(raw: str) -> str:
    return "…" + _NON_DIGITS.sub("", raw)[-4:]


def tokenize_pan(raw: str) -> tuple[str, str, str]:
    """(keyed token, BIN = first 6 digits, last 4) of a card number; RowRejected when it is not one."""
    digits = _PAN_SEPARATORS.sub("", fold_width(raw or ""))
    if not (13 <= len(digits) <= 19) or not is_luhn_valid(digits):
        raise RowRejected(f"pan: not a valid card number ({_pan_tail(raw or '')})")
    return keyed_hash(digits, "pan"), digits[:6], digits[-4:]


def _mask_pan_digits(value: str) -> str:
    digits = _NON_DIGITS.sub("", fold_width(value))
    if len(digits) >= 13:  # card-number length: BIN and last 4 are the most PCI DSS allows to show
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
    if len(digits) >= 8:
        return "*" * (len(digits) - 4) + digits[-4:]
    return "*" * len(digits)


def redact_raw_row(row: dict[str, str]) -> dict[str, str]:
    """Copy of a raw row safe to keep for review: pan as BIN******LAST4, id_number masked, the rest as is."""
    redacted = dict(row)
    pan = redacted.get("pan")
    if pan:
        redacted["pan"] = _mask_pan_digits(pan)
    id_number = redacted.get("id_number")
    if id_number:
        redacted["id_number"] = mask_id_number(_normalise_id(id_number))
    return redacted


# --------------------------------------------------------------------------------------------------------------
# Whole rows
# --------------------------------------------------------------------------------------------------------------

CANONICAL_COLUMNS = frozenset({
    "customer_key", "full_name", "family_name", "given_name", "gender", "birth_date", "id_type", "id_number",
    "phone", "email", "address", "city", "postcode", "core_cif", "updated_at", "pan", "card_token", "pan_bin",
    "pan_last4",
})

_GENDERS = {"m": "M", "male": "M", "男": "M", "男性": "M", "f": "F", "female": "F", "女": "F", "女性": "F", "u": "U"}
_GENDERS.update(dict.fromkeys(PLACEHOLDER_VALUES, "U"))
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{8}", re.ASCII)
_EARLIEST_BIRTH = date(1900, 1, 1)
_RISK_LEVELS = frozenset({"C1", "C2", "C3", "C4", "C5"})
_AMOUNT_RE = re.compile(r"\d+(?:\.\d+)?|\d{1,3}(?:,\d{3})+(?:\.\d+)?", re.ASCII)
_CENT = Decimal("0.01")
# Markers of a missing value in typed attributes (dropped, not rejected); "0" is not one here: 0 is a limit.
_MISSING = frozenset({"null", "none", "nil", "n/a", "na", "#n/a", "-", "--"})
# Column widths of the source record: over-long values are rejected here rather than failing the whole load
# on databases that enforce varchar lengths.
_MAX_LEN = {"customer_key": 64, "full_name": 200, "family_name": 100, "given_name": 100, "address": 300,
            "city": 100, "postcode": 10, "core_cif": 64, "card_token": 64, "id_number": 40}


def _shown(value: str) -> str:
    """A raw value quoted for a reason, cut short so one odd row cannot bloat the reject table."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _check_len(column: str, value: str | None) -> None:
    if value is not None and len(value) > _MAX_LEN[column]:
        raise RowRejected(f"{column}: longer than {_MAX_LEN[column]} characters")


def _parse_iso_date(column: str, raw: str) -> date:
    s = raw.strip()
    if not s.isascii():
        s = s.translate(_WIDTH_TABLE)
    if _ISO_DATE_RE.fullmatch(s) is None:
        raise RowRejected(f"{column}: not an ISO date ({_shown(raw)})")
    try:
        return date.fromisoformat(s)
    except ValueError:
        raise RowRejected(f"{column}: not a real date ({_shown(raw)})") from None


def _parse_timestamp(column: str, raw: str) -> datetime:
    s = raw.strip()
    try:
        value = datetime.fromisoformat(s)
    except ValueError:
        raise RowRejected(f"{column}: not an ISO date or date-time ({_shown(raw)})") from None
    if value.tzinfo is None or value.utcoffset() is None:
        # Same as timezone.make_aware for zoneinfo zones, without its extra checks per row.
        value = value.replace(tzinfo=timezone.get_current_timezone())
    return value


def _typed_attribute(key: str, value: str) -> str | None:
    """Validated, normalised value of a known attribute; None to drop a missing-value marker."""
    if value.casefold() in _MISSING:
        return None
    if key == "credit_limit":
        if _AMOUNT_RE.fullmatch(value) is None:
            raise RowRejected(f"credit_limit: not an amount >= 0 ({_shown(value)})")
        try:
            return str(Decimal(value.replace(",", "")).quantize(_CENT, rounding=ROUND_HALF_UP))
        except InvalidOperation:
            raise RowRejected(f"credit_limit: not an amount >= 0 ({_shown(value)})") from None
    if key == "card_status":
        return value.upper()
    if key == "risk_level":
        level = fold_width(value).upper()
        if level not in _RISK_LEVELS:
            raise RowRejected(f"risk_level: not one of C1-C5 ({_shown(value)})")
        return level
    if key == "risk_assessed_at":
        return _parse_iso_date(key, value).isoformat()
    return value


_TYPED_ATTRIBUTES = frozenset({"credit_limit", "card_status", "risk_level", "risk_assessed_at"})


# --- one function per column ----------------------------------------------------------------------------------
# normalize_customer_row calls these in order for one row; the vectorised loader (profiles.columnar) calls the
# same functions once per distinct value, or for values outside its vectorised shapes. Each takes the raw string
# ("" for an absent column), raises RowRejected for a value that rejects the row, and reports data problems that
# do not as a warning code.

def customer_key_value(raw: str) -> str:
    key = (raw or "").strip()
    if not key:
        raise RowRejected("customer_key: missing")
    _check_len("customer_key", key)
    return key


def name_value(column: str, raw: str) -> tuple[str | None, bool]:
    """(normalised name or None, whether it was a placeholder)."""
    if not raw:
        return None, False
    value = normalize_name(raw)
    if value is None:
        return None, bool(raw.strip())
    _check_len(column, value)
    return value, False


def full_name_value(full_name: str | None, family: str | None, given: str | None) -> str | None:
    """The full name, composed from family and given name when the feed has no full name."""
    if full_name is None and (family or given):
        full_name = compose_full_name(family, given)
        _check_len("full_name", full_name)
    return full_name


def gender_value(raw: str) -> str:
    gender = "U"
    if raw:
        s = raw.strip()
        if s:
            gender = _GENDERS.get(fold_width(s).casefold())
            if gender is None:
                raise RowRejected(f"gender: not M/F/U, male/female or 男/女 ({_shown(raw)})")
    return gender


def birth_date_value(raw: str) -> date | None:
    if not (raw and raw.strip()):
        return None
    birth_date = _parse_iso_date("birth_date", raw)
    if birth_date < _EARLIEST_BIRTH:
        raise RowRejected(f"birth_date: before 1900 ({birth_date.isoformat()})")
    if birth_date > date.today():
        raise RowRejected(f"birth_date: in the future ({birth_date.isoformat()})")
    return birth_date


def id_type_value(raw: str) -> str | None:
    """The id type the feed gives (None when it gives none)."""
    if not raw:
        return None
    s = fold_width(raw.strip())
    if not s:
        return None
    id_type = s.upper()
    if id_type not in _ID_TYPES:
        if s.casefold() not in PLACEHOLDER_VALUES:
            raise RowRejected(f"id_type: not CN_RESIDENT, PASSPORT or OTHER ({_shown(raw)})")
        return None
    return id_type


def id_number_values(raw: str, id_type: str | None) -> tuple[str | None, str | None, str | None, bool, str | None]:
    """(id type, keyed hash, masked number, valid, warning) of an id number under the given id type."""
    n = _normalise_id(raw) if raw else ""
    if not n:
        return id_type, None, None, False, None
    if _is_placeholder_id(n):
        # Never hashed: one placeholder shared by thousands of rows would link them all.
        return id_type, None, None, False, "placeholder_id"
    if len(n) > _MAX_LEN["id_number"]:
        raise RowRejected(f"id_number: longer than {_MAX_LEN['id_number']} characters "
                          f"({mask_id_number(n[:_MAX_LEN['id_number']])}...)")
    warning = None
    if id_type in (None, "CN_RESIDENT"):
        n = cn_resident_id_from_legacy(n) or n
    if id_type is None:
        id_valid = is_valid_cn_resident_id(n)
        id_type = "CN_RESIDENT" if id_valid else "OTHER"
        if not id_valid:
            id_valid = _other_id_valid(n)
    elif id_type == "CN_RESIDENT":
        id_valid = is_valid_cn_resident_id(n)
        if not id_valid:
            warning = "invalid_id_checksum"
    elif id_type == "PASSPORT":
        id_valid = _PASSPORT_RE.fullmatch(n) is not None
    else:
        id_valid = _other_id_valid(n)
    return id_type, keyed_hash(n, "id"), mask_id_number(n), id_valid, warning


def phone_value(raw: str) -> tuple[str | None, str | None]:
    """(E.164 phone or None, warning)."""
    if not raw:
        return None, None
    phone = normalize_phone(raw)
    if phone is None and raw.strip():
        return None, "placeholder_phone" if _is_placeholder_phone(raw) else "invalid_phone"
    return phone, None


def email_value(raw: str) -> tuple[str | None, str | None]:
    """(normalised e-mail or None, warning)."""
    if not raw:
        return None, None
    email = normalize_email(raw)
    if email is None and raw.strip():
        return None, "placeholder_email" if _is_placeholder_email(raw) else "invalid_email"
    return email, None


def text_value(column: str, raw: str) -> str | None:
    """Address or city: cleaned, None for a placeholder."""
    if not raw:
        return None
    value = _clean(raw) or None
    if value is not None and value.casefold() in PLACEHOLDER_VALUES:
        value = None
    _check_len(column, value)
    return value


def postcode_value(raw: str) -> str | None:
    if not raw:
        return None
    postcode = _NON_DIGITS.sub("", fold_width(raw)) or None
    if postcode is not None and len(set(postcode)) == 1 and postcode[0] == "0":  # "0", "000000"
        postcode = None
    _check_len("postcode", postcode)
    return postcode


def core_cif_value(raw: str) -> str | None:
    if not raw:
        return None
    core_cif = raw.strip() or None
    # "NULL" as a CIF would tie every such row to one customer.
    if core_cif is not None and core_cif.casefold() in PLACEHOLDER_VALUES:
        core_cif = None
    _check_len("core_cif", core_cif)
    return core_cif


def updated_at_value(raw: str) -> datetime | None:
    return _parse_timestamp("updated_at", raw) if raw and raw.strip() else None


def card_token_value(raw: str) -> str | None:
    if not (raw and raw.strip()):
        return None
    token = raw.strip()
    _check_len("card_token", token)
    return token


def pan_bin_value(raw: str) -> str | None:
    if not (raw and raw.strip()):
        return None
    s = raw.strip()
    if not (s.isascii() and s.isdigit() and len(s) in (6, 8)):
        raise RowRejected(f"pan_bin: not 6 or 8 digits ({_shown(s)})")
    return s[:6]  # 8-digit BINs: the record keeps the 6-digit prefix


def pan_last4_value(raw: str) -> str | None:
    if not (raw and raw.strip()):
        return None
    s = raw.strip()
    if not (s.isascii() and s.isdigit() and len(s) == 4):
        raise RowRejected(f"pan_last4: not 4 digits ({_shown(s)})")
    return s


def card_values(pan: str, card_token: str, pan_bin: str, pan_last4: str) -> tuple[str | None, str | None, str | None]:
    """(token, BIN, last 4): from the card number when the row has one, else from the source's own columns."""
    if pan and pan.strip():
        return tokenize_pan(pan)
    return card_token_value(card_token), pan_bin_value(pan_bin), pan_last4_value(pan_last4)


def attribute_value(key: str, raw: str) -> str | None:
    """A source attribute (any non-canonical column): trimmed, typed ones validated; None to leave it out."""
    if not raw:
        return None
    value = raw.strip()
    if not value:
        return None
    return _typed_attribute(key, value) if key in _TYPED_ATTRIBUTES else value


def is_attribute_column(key: str) -> bool:
    return bool(key) and key not in CANONICAL_COLUMNS


def normalize_customer_row(row: dict[str, str]) -> dict:
    """Source-record column values of one feed row (canonical column names -> raw strings).

    Raises RowRejected for a row that cannot be loaded. Data problems that don't block the row are dropped
    values plus warning codes in ``warnings``.
    """
    get = row.get
    warnings: list[str] = []

    customer_key = customer_key_value(get("customer_key") or "")
    names = {}
    for column in ("full_name", "family_name", "given_name"):
        names[column], placeholder = name_value(column, get(column) or "")
        if placeholder and "placeholder_name" not in warnings:
            warnings.append("placeholder_name")
    full_name = full_name_value(names["full_name"], names["family_name"], names["given_name"])
    gender = gender_value(get("gender") or "")
    birth_date = birth_date_value(get("birth_date") or "")
    id_type, id_number_hash, id_number_masked, id_valid, warning = id_number_values(
        get("id_number") or "", id_type_value(get("id_type") or ""))
    if warning:
        warnings.append(warning)
    phone, warning = phone_value(get("phone") or "")
    if warning:
        warnings.append(warning)
    email, warning = email_value(get("email") or "")
    if warning:
        warnings.append(warning)
    address = text_value("address", get("address") or "")
    city = text_value("city", get("city") or "")
    postcode = postcode_value(get("postcode") or "")
    core_cif = core_cif_value(get("core_cif") or "")
    source_updated_at = updated_at_value(get("updated_at") or "")
    pan_token, pan_bin, pan_last4 = card_values(get("pan") or "", get("card_token") or "", get("pan_bin") or "",
                                                get("pan_last4") or "")
    attributes: dict[str, str] = {}
    for key, raw in row.items():
        if raw and is_attribute_column(key):
            value = attribute_value(key, raw)
            if value is not None:
                attributes[key] = value

    return {
        "customer_key": customer_key,
        "full_name": full_name,
        "family_name": names["family_name"],
        "given_name": names["given_name"],
        "name_key": name_match_key(full_name),
        "gender": gender,
        "birth_date": birth_date,
        "id_type": id_type,
        "id_number_hash": id_number_hash,
        "id_number_masked": id_number_masked,
        "id_valid": id_valid,
        "phone": phone,
        "email": email,
        "address": address,
        "city": city,
        "postcode": postcode,
        "core_cif": core_cif,
        "source_updated_at": source_updated_at,
        "pan_token": pan_token,
        "pan_bin": pan_bin,
        "pan_last4": pan_last4,
        "attributes": attributes,
        "warnings": warnings,
    }
