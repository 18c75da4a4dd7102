"""The vectorised path of customer-feed loading: a chunk of rows normalised column by column with Arrow.

`normalize.normalize_customer_row` calls one function per column (`normalize.gender_value`, ...) for one row and
costs about 100 µs a row. Here every column of a whole chunk is computed at once, with the same functions as the
definition of what a value becomes:

- a column with few distinct values (names, gender, dates of birth, cities, id types, typed attributes) calls the
  column function once per distinct value and spreads the answers with Arrow's `take`;
- a column whose values are mostly unique (id numbers, phones, e-mails, card numbers, addresses, timestamps) is
  computed with Arrow kernels for the values in its common shapes (an 18-character id, a Chinese mobile in any of
  its usual spellings, an ASCII e-mail, ...), and with the column function for every other value;
- a value whose column function rejects it marks its row; the caller runs `normalize_customer_row` on those few
  rows to get exactly the reason a row-by-row load would give.

A "common shape" is narrow on purpose: it excludes every character on which Python's `str.strip`, `split` and
`casefold` could differ from Arrow's kernels (Unicode spaces, control characters, full-width forms), so the two
paths agree value for value; `tests/profiles/test_columnar.py` checks that they do.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import normalize as n
from .normalize import RowRejected

STRING = pa.string()
# Characters Python's str.isspace() accepts, except the plain space: a value without any of them and without
# full-width forms (which normalisation folds) is trimmed and split the same way by Arrow and by Python.
_PY_SPACE = r"\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_SPECIAL_RE = rf"[{_PY_SPACE}\x{{ff01}}-\x{{ff5e}}]"
_CJK_RE = r"[\x{3400}-\x{4dbf}\x{4e00}-\x{9fff}\x{f900}-\x{faff}\x{20000}-\x{3134f}]"
_MOBILE_RE = (r"^(?:(?:\+|00)?86[ \-]?)?(?P<a>1[3-9][0-9])[ \-]?(?P<b>[0-9]{4})[ \-]?(?P<c>[0-9]{4})$")
_TIMESTAMP_SHAPES = (
    (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$", "%Y-%m-%dT%H:%M:%S"),
    (r"^[0-9]{4}-[0-9]{2}-[0-9]{2} ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$", "%Y-%m-%d %H:%M:%S"),
    (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "%Y-%m-%d"),
)
# The longest placeholder value ("unknown"): a longer value can never be one, whatever casefold does.
_LONGEST_PLACEHOLDER = max(len(v) for v in n.PLACEHOLDER_VALUES)
_CN_ID_WEIGHTS = np.array((7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2), dtype=np.int64)
_CN_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_LUHN_DOUBLE = np.array((0, 2, 4, 6, 8, 1, 3, 5, 7, 9), dtype=np.int64)
# Typed-in digit runs ("123456789012"): every prefix an id body can be, as a set for one is_in.
_ID_RUN_PREFIXES = pa.array(sorted({seq[:k] for seq in n._ID_SEQUENCES for k in range(5, len(seq) + 1)}))

# The normalised columns, in the order and types both paths produce.
NORMALISED_SCHEMA = pa.schema([
    ("customer_key", STRING), ("full_name", STRING), ("family_name", STRING), ("given_name", STRING),
    ("name_key", STRING), ("gender", STRING), ("birth_date", pa.date32()), ("id_type", STRING),
    ("id_number_hash", STRING), ("id_number_masked", STRING), ("id_valid", pa.bool_()), ("phone", STRING),
    ("email", STRING), ("address", STRING), ("city", STRING), ("postcode", STRING), ("core_cif", STRING),
    ("pan_token", STRING), ("pan_bin", STRING), ("pan_last4", STRING), ("attributes", STRING),
    ("source_updated_at", pa.timestamp("us", tz="UTC")),
])


@dataclass
class NormalisedChunk:
    table: pa.Table  # NORMALISED_SCHEMA; rows in `rejected` hold nothing meaningful
    rejected: np.ndarray  # positions whose row a column function rejected
    warnings: Counter = field(default_factory=Counter)  # over the rows not rejected


class Chunk:
    """One chunk being normalised: its raw columns, and the rows and warnings found so far."""

    def __init__(self, raw: pa.Table):
        self.raw = raw
        self.rows = raw.num_rows
        self.rejected = np.zeros(self.rows, dtype=bool)
        self.warned: dict[str, np.ndarray] = {}

    def column(self, name: str) -> pa.Array:
        if name in self.raw.column_names:
            return self.raw.column(name).combine_chunks()
        return pa.array([""] * self.rows, STRING) if self.rows else pa.array([], STRING)

    def warn(self, code: str, mask) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.warned[code] = self.warned.get(code, np.zeros(self.rows, dtype=bool)) | mask

    def warnings(self) -> Counter:
        accepted = ~self.rejected
        return Counter({code: int((mask & accepted).sum()) for code, mask in self.warned.items()
                        if (mask & accepted).any()})


def as_mask(mask: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def is_plain(values: pa.Array, *, fold_width: bool = True) -> np.ndarray:
    """Values that Arrow trims, splits and cases exactly as Python does (module docstring); with
    fold_width=False, those it trims the same (full-width forms allowed: str.strip leaves them alone)."""
    return ~as_mask(pc.match_substring_regex(values, _SPECIAL_RE if fold_width else f"[{_PY_SPACE}]"))



def by_distinct(chunk: Chunk, values: pa.Array, fn: Callable[[str], object], types: list[pa.DataType]) -> list[pa.Array]:
    """fn applied once per distinct value, spread to every row; rows whose value fn rejects are marked.

    fn returns a tuple of len(types) (or one value when len(types) == 1)."""
    encoded = pc.dictionary_encode(values)
    results: list[list] = [[] for _ in types]
    bad = []
    for position, value in enumerate(encoded.dictionary.to_pylist()):
        try:
            out = fn(value)
            if len(types) == 1:
                out = (out,)
        except RowRejected:
            out = (None,) * len(types)
            bad.append(position)
        for target, item in zip(results, out):
            target.append(item)
    if bad:
        chunk.rejected |= np.isin(encoded.indices.to_numpy(zero_copy_only=False), bad)
    return [pc.take(pa.array(r, t), encoded.indices) for r, t in zip(results, types)]


def patch(chunk: Chunk, values: pa.Array, fast: np.ndarray, computed: list[pa.Array],
           fn: Callable[[str], object], types: list[pa.DataType]) -> list[pa.Array]:
    """`computed` where `fast`, fn(value) elsewhere, value by value; rows fn rejects are marked."""
    slow = np.flatnonzero(~fast)
    if len(slow) == 0:
        return computed
    results: list[list] = [[] for _ in types]
    for position, value in zip(slow, pc.take(values, pa.array(slow)).to_pylist()):
        try:
            out = fn(value or "")
            if len(types) == 1:
                out = (out,)
        except RowRejected:
            out = (None,) * len(types)
            chunk.rejected[position] = True
        for target, item in zip(results, out):
            target.append(item)
    patched = []
    for column, result, type_ in zip(computed, results, types):
        filled = np.zeros(chunk.rows, dtype=bool)
        filled[slow] = True
        base = pc.cast(column, type_) if column.type != type_ else column
        patched.append(pc.replace_with_mask(base, pa.array(filled), pa.array(result, type_)))
    return patched


def _same_char(values: pa.Array) -> np.ndarray:
    return as_mask(pc.equal(values, pc.binary_repeat(pc.utf8_slice_codeunits(values, 0, 1), pc.utf8_length(values))))


def _fixed_width_digits(values: pa.Array, width: int) -> np.ndarray:
    """An (n, width) array of the bytes of `values`, which must all be `width` ASCII characters long."""
    copy = pa.array(values.to_pylist(), STRING) if values.offset else values
    offsets = np.frombuffer(copy.buffers()[1], dtype=np.int32)
    data = np.frombuffer(copy.buffers()[2], dtype=np.uint8)
    return data[offsets[0]:offsets[0] + width * len(copy)].reshape(len(copy), width)


def _real_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = np.array((0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31))[np.clip(month, 0, 12)] + (
        (month == 2) & leap)
    return (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)


def _cn_resident_valid(numbers: pa.Array, today: date) -> np.ndarray:
    """normalize.is_valid_cn_resident_id of upper-case ASCII alphanumerics, vectorised."""
    valid = np.zeros(len(numbers), dtype=bool)
    candidates = np.flatnonzero(as_mask(pc.match_substring_regex(numbers, r"^[0-9]{17}[0-9X]$")))
    if len(candidates) == 0:
        return valid
    chars = _fixed_width_digits(pc.take(numbers, pa.array(candidates)), 18)
    digits = chars[:, :17].astype(np.int64) - 48
    check = _CN_ID_CHECK[(digits @ _CN_ID_WEIGHTS) % 11] == chars[:, 17]
    year = digits[:, 6] * 1000 + digits[:, 7] * 100 + digits[:, 8] * 10 + digits[:, 9]
    month = digits[:, 10] * 10 + digits[:, 11]
    day = digits[:, 12] * 10 + digits[:, 13]
    real = _real_dates(year, month, day)
    ordinal = year * 10_000 + month * 100 + day
    in_range = (year >= n._CN_ID_EARLIEST_YEAR) & (ordinal <= today.year * 10_000 + today.month * 100 + today.day)
    valid[candidates] = check & real & in_range
    return valid


def _from_legacy_cn_resident(numbers: pa.Array, eligible: np.ndarray) -> pa.Array:
    """normalize.cn_resident_id_from_legacy of the `eligible` upper-case ASCII alphanumerics, vectorised: a
    15-digit number with a real 19YYMMDD date becomes its 18-character form; any other value is kept."""
    rows = np.flatnonzero(eligible & as_mask(pc.match_substring_regex(numbers, r"^[0-9]{15}$")))
    if len(rows) == 0:
        return numbers
    digits = _fixed_width_digits(pc.take(numbers, pa.array(rows)), 15).astype(np.int64) - 48
    real = _real_dates(1900 + digits[:, 6] * 10 + digits[:, 7], digits[:, 8] * 10 + digits[:, 9],
                       digits[:, 10] * 10 + digits[:, 11])
    rows, digits = rows[real], digits[real]
    if len(rows) == 0:
        return numbers
    body = np.concatenate([digits[:, :6], np.tile([1, 9], (len(rows), 1)), digits[:, 6:]], axis=1)
    chars = np.concatenate([(body + 48).astype(np.uint8), _CN_ID_CHECK[(body @ _CN_ID_WEIGHTS) % 11, None]], axis=1)
    offsets = np.arange(0, 18 * len(rows) + 1, 18, dtype=np.int32)
    converted = pa.StringArray.from_buffers(len(rows), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
    replaced = np.zeros(len(numbers), dtype=bool)
    replaced[rows] = True
    return pc.replace_with_mask(numbers, pa.array(replaced), converted)


def luhn_valid(digits: pa.Array) -> np.ndarray:
    """normalize.is_luhn_valid of all-digit strings of 13 to 19 characters, vectorised per length."""
    valid = np.zeros(len(digits), dtype=bool)
    lengths = pc.utf8_length(digits).to_numpy(zero_copy_only=False)
    for width in range(13, 20):
        rows = np.flatnonzero(lengths == width)
        if len(rows) == 0:
            continue
        values = _fixed_width_digits(pc.take(digits, pa.array(rows)), width).astype(np.int64) - 48
        from_right = values[:, ::-1]
        total = from_right[:, 0::2].sum(axis=1) + _LUHN_DOUBLE[from_right[:, 1::2]].sum(axis=1)
        valid[rows] = total % 10 == 0
    return valid


# DuckDB scans a registered Arrow table one record batch per thread: a chunk arriving as a single batch would
# be hashed on one core.
_MORSEL_ROWS = 25_000


def _in_morsels(table: pa.Table) -> pa.Table:
    return pa.Table.from_batches(table.to_batches(max_chunksize=_MORSEL_ROWS), table.schema)


class KeyedHasher:
    """normalize.keyed_hash for whole columns: each HMAC-SHA256 of the chain composed from two SHA-256 calls in
    DuckDB, nested oldest key innermost."""

    def __init__(self):
        self.pads = []
        for key in n.pii_keys():
            if len(key) > 64:
                key = hashlib.sha256(key).digest()
            key = key.ljust(64, b"\0")
            self.pads.append((bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)))
        self.con = duckdb.connect()

    def __call__(self, values: pa.Array, purpose: str) -> pa.Array:
        if len(values) == 0:
            return pa.array([], STRING)
        expression, params = "v", {"purpose": purpose}
        for n, (inner, outer) in enumerate(self.pads):
            expression = (f"substr(sha256($outer{n} || unhex(sha256($inner{n} || encode($purpose || chr(31) || "
                          f"{expression})))), 1, 32)")
            params.update({f"inner{n}": inner, f"outer{n}": outer})
        self.con.register("hash_input", _in_morsels(pa.table({"v": values})))
        try:
            result = self.con.sql(f"SELECT {expression} FROM hash_input", params=params).to_arrow_table()
        finally:
            self.con.unregister("hash_input")
        return result.column(0).combine_chunks().cast(STRING)

    def row_digests(self, table: pa.Table, names: list[str]) -> tuple[pa.Array, np.ndarray]:
        """feeds.row_digest of every row over the columns `names` (sorted), and the rows it may be wrong for:
        those with whitespace other than spaces, which str.strip removes and SQL's trim keeps."""
        self.con.register("digest_input",
                          _in_morsels(pa.table({f"c{i}": table.column(name) for i, name in enumerate(names)})))
        # name \x1e value, NULL (skipped by concat_ws) where the trimmed value is empty: a fifth cheaper than CASE.
        parts = ", ".join(f"$n{i} || nullif(trim(c{i}), '')" for i in range(len(names)))
        params = {f"n{i}": f"{name}\x1e" for i, name in enumerate(names)}
        params["space"] = f"[{_PY_SPACE}]"
        try:
            result = self.con.sql(
                f"SELECT md5(concat_ws(chr(31), {parts})), regexp_matches(concat_ws(' ', {', '.join(f'c{i}' for i in range(len(names)))}), $space) "
                f"FROM digest_input", params=params,
            ).to_arrow_table()
        finally:
            self.con.unregister("digest_input")
        return result.column(0).combine_chunks().cast(STRING), as_mask(result.column(1).combine_chunks())


def join_present(arrays: list[pa.Array], separator: str) -> pa.Array:
    """The non-null values of each row joined by `separator` ("" where all are null).

    Not binary_join_element_wise(..., null_handling="skip"): it drops the rows where every value is null."""
    pieces = [pc.fill_null(pc.binary_join_element_wise(a, separator, ""), "") for a in arrays]
    joined = pc.binary_join_element_wise(*pieces, "") if len(pieces) > 1 else pieces[0]
    return pc.utf8_slice_codeunits(joined, 0, -len(separator))


def is_real_date(parsed: pa.Array, text: pa.Array) -> np.ndarray:
    """Where `parsed` (strptime of `text`, which starts YYYY-MM-DD) is the date the text names, as Python's
    date parsing requires: strptime rolls an impossible date over (02-30 becomes 03-01), and Python has no year 0."""
    text = null_where(text, ~as_mask(pc.is_valid(parsed)))
    same = None
    for part, start, stop in ((pc.year, 0, 4), (pc.month, 5, 7), (pc.day, 8, 10)):
        named = pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64())
        equal = pc.equal(part(parsed), named)
        same = equal if same is None else pc.and_(same, equal)
    return as_mask(same) & as_mask(pc.greater_equal(pc.year(parsed), 1))


def null_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def trim_spaces(values: pa.Array) -> pa.Array:
    return pc.utf8_trim(values, characters=" ")


# --- the columns ------------------------------------------------------------------------------------------------

def _customer_key(chunk: Chunk) -> pa.Array:
    raw = chunk.column("customer_key")
    key = trim_spaces(raw)
    lengths = pc.utf8_length(key).to_numpy(zero_copy_only=False)
    fast = is_plain(raw) & (lengths > 0) & (lengths <= n._MAX_LEN["customer_key"])
    return patch(chunk, raw, fast, [key], n.customer_key_value, [STRING])[0]


def _names(chunk: Chunk) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """(full name, family name, given name, name key)."""
    names = {}
    placeholder = np.zeros(chunk.rows, dtype=bool)
    for column in ("full_name", "family_name", "given_name"):
        value, is_placeholder = by_distinct(chunk, chunk.column(column), lambda raw, c=column: n.name_value(c, raw),
                                             [STRING, pa.bool_()])
        names[column] = value
        placeholder |= as_mask(is_placeholder)
    chunk.warn("placeholder_name", placeholder)
    family, given = names["family_name"], names["given_name"]
    both = as_mask(pc.and_(pc.is_valid(family), pc.is_valid(given)))
    cjk_pair = both & as_mask(pc.match_substring_regex(family, _CJK_RE + "$")) & as_mask(
        pc.match_substring_regex(given, "^" + _CJK_RE))
    separator = pa.array(np.where(cjk_pair, "", " "), STRING)
    composed = pc.coalesce(pc.binary_join_element_wise(family, given, separator), family, given)
    full_name = pc.coalesce(names["full_name"], composed)
    too_long = as_mask(pc.greater(pc.utf8_length(full_name), n._MAX_LEN["full_name"]))
    chunk.rejected |= too_long & as_mask(pc.is_null(names["full_name"]))
    # name_match_key of a name of ASCII letters and spaces, or of CJK ideographs, is it lower-cased without spaces.
    simple = as_mask(pc.match_substring_regex(full_name, r"^(?:[A-Za-z ]+|[\x{4e00}-\x{9fff}]+)$"))
    name_key = pc.utf8_lower(pc.replace_substring(full_name, " ", ""))
    name_key = patch(chunk, full_name, simple | as_mask(pc.is_null(full_name)), [name_key], n.name_match_key, [STRING])[0]
    return full_name, family, given, null_where(name_key, as_mask(pc.equal(name_key, "")))


def _id_number(chunk: Chunk, hasher: KeyedHasher, today: date) -> tuple[pa.Array, ...]:
    """(id type, hash, masked, valid)."""
    given_type = by_distinct(chunk, chunk.column("id_type"), n.id_type_value, [STRING])[0]
    raw = chunk.column("id_number")
    lengths = pc.utf8_length(raw).to_numpy(zero_copy_only=False)
    shaped = as_mask(pc.match_substring_regex(raw, r"^[0-9A-Za-z]+$")) & (lengths <= n._MAX_LEN["id_number"])
    empty = lengths == 0
    number = pc.utf8_upper(raw)
    placeholder = shaped & (
        as_mask(pc.is_in(pc.utf8_lower(number), value_set=pa.array(sorted(n.PLACEHOLDER_VALUES))))
        | as_mask(pc.is_in(number, value_set=pa.array(sorted(n.PLACEHOLDER_ID_NUMBERS))))
        | _same_char(number))
    long_enough = lengths >= 6
    without_check = pc.utf8_slice_codeunits(number, 0, -1)
    body = pc.if_else(pc.ends_with(number, "X"), without_check, number)
    placeholder |= shaped & long_enough & (
        _same_char(without_check) | (as_mask(pc.match_substring_regex(body, r"^[0-9]+$"))
                                     & as_mask(pc.is_in(body, value_set=_ID_RUN_PREFIXES))))
    usable = shaped & ~placeholder & ~empty
    given = given_type.to_numpy(zero_copy_only=False)
    is_passport, is_cn, no_type = given == "PASSPORT", given == "CN_RESIDENT", pc.is_null(given_type).to_numpy(
        zero_copy_only=False)
    number = _from_legacy_cn_resident(number, usable & (is_cn | no_type))
    lengths = pc.utf8_length(number).to_numpy(zero_copy_only=False)
    cn_valid = _cn_resident_valid(number, today) & usable
    passport_ok = as_mask(pc.match_substring_regex(number, r"^[A-Z0-9]{5,20}$"))
    valid = np.where(is_passport, passport_ok, np.where(is_cn, cn_valid, cn_valid | (lengths >= 4))) & usable
    id_type = pc.if_else(pa.array(usable & no_type), pa.array(np.where(cn_valid, "CN_RESIDENT", "OTHER"), STRING),
                         given_type)
    hashed = hasher(pc.if_else(pa.array(usable), number, pa.scalar(None, STRING)), "id")
    stars = pc.max_element_wise(pc.subtract(pc.utf8_length(number), 7), 0)
    masked = pc.binary_join_element_wise(pc.utf8_slice_codeunits(number, 0, 3), pc.binary_repeat("*", stars),
                                         pc.utf8_slice_codeunits(number, -4), "")
    long_mask = lengths >= n._ID_MASK_MIN_LEN
    short = pc.binary_join_element_wise(pc.binary_repeat("*", pc.max_element_wise(pc.subtract(pc.utf8_length(number), 2), 0)),
                                        pc.utf8_slice_codeunits(number, -2), "")
    masked = pc.if_else(pa.array(long_mask), masked, pc.if_else(pa.array(lengths <= 2), pc.binary_repeat("*", pc.utf8_length(number)), short))
    masked = null_where(masked, ~usable)
    chunk.warn("placeholder_id", placeholder)
    chunk.warn("invalid_id_checksum", usable & is_cn & ~cn_valid)

    fast = shaped | empty
    slow = np.flatnonzero(~fast)
    if len(slow) == 0:
        return id_type, hashed, masked, pa.array(valid)
    outputs = [[] for _ in range(5)]
    for position, value, type_ in zip(slow, pc.take(raw, pa.array(slow)).to_pylist(),
                                      pc.take(given_type, pa.array(slow)).to_pylist()):
        try:
            out = n.id_number_values(value or "", type_)
        except RowRejected:
            out = (None, None, None, False, None)
            chunk.rejected[position] = True
        for target, item in zip(outputs, out):
            target.append(item)
    filled = np.zeros(chunk.rows, dtype=bool)
    filled[slow] = True
    for code in ("placeholder_id", "invalid_id_checksum"):
        hits = np.zeros(chunk.rows, dtype=bool)
        hits[slow] = [w == code for w in outputs[4]]
        chunk.warn(code, hits)
    mask = pa.array(filled)
    return (pc.replace_with_mask(id_type, mask, pa.array(outputs[0], STRING)),
            pc.replace_with_mask(hashed, mask, pa.array(outputs[1], STRING)),
            pc.replace_with_mask(masked, mask, pa.array(outputs[2], STRING)),
            pc.replace_with_mask(pa.array(valid), mask, pa.array(outputs[3], pa.bool_())))


def _phone(chunk: Chunk) -> pa.Array:
    raw = chunk.column("phone")
    trimmed = trim_spaces(raw)
    plain = is_plain(raw)
    parts = pc.extract_regex(trimmed, _MOBILE_RE)
    mobile = plain & as_mask(pc.is_valid(parts))
    national = pc.binary_join_element_wise(parts.field("a"), parts.field("b"), parts.field("c"), "")
    placeholder = mobile & (as_mask(pc.is_in(national, value_set=pa.array(sorted(n.PLACEHOLDER_PHONES))))
                            | _same_char(national) | _same_char(pc.utf8_slice_codeunits(national, 3)))
    phone = null_where(pc.binary_join_element_wise("+86", national, ""), ~mobile | placeholder)
    empty = plain & (pc.utf8_length(trimmed).to_numpy(zero_copy_only=False) == 0)
    chunk.warn("placeholder_phone", placeholder)
    return patch_with_warning(chunk, raw, mobile | empty, phone, n.phone_value)


def patch_with_warning(chunk: Chunk, raw: pa.Array, fast: np.ndarray, computed: pa.Array,
                        fn: Callable[[str], tuple[str | None, str | None]]) -> pa.Array:
    """patch for a column function that returns (value, warning), counting the warnings of the slow values."""
    warnings: list[str | None] = []

    def value_only(value: str):
        try:
            result, warning = fn(value)
        except RowRejected:
            warnings.append(None)
            raise
        warnings.append(warning)
        return result

    patched = patch(chunk, raw, fast, [computed], value_only, [STRING])[0]
    slow = np.flatnonzero(~fast)
    for code in set(w for w in warnings if w):
        hits = np.zeros(chunk.rows, dtype=bool)
        hits[slow] = [w == code for w in warnings]
        chunk.warn(code, hits)
    return patched


def _email(chunk: Chunk) -> pa.Array:
    raw = chunk.column("email")
    email = pc.utf8_lower(trim_spaces(raw))
    lengths = pc.utf8_length(email).to_numpy(zero_copy_only=False)
    shaped = is_plain(raw) & as_mask(pc.match_substring_regex(email, r"^[!-~]+$"))
    empty = is_plain(raw) & (lengths == 0)
    valid = as_mask(pc.match_substring_regex(email, r"^[^@]+@[^@]+[.][^@]+$")) & (lengths <= 254)
    # str.rpartition("@"): the domain after the last "@", the local part before it.
    parts = pc.extract_regex(email, r"^(?P<local>.*)@(?P<domain>[^@]*)$")
    has_at = as_mask(pc.is_valid(parts))
    local, domain = pc.fill_null(parts.field("local"), ""), parts.field("domain")
    local_length = pc.utf8_length(local).to_numpy(zero_copy_only=False)
    placeholder = shaped & (
        as_mask(pc.is_in(email, value_set=pa.array(sorted(n.PLACEHOLDER_VALUES | n.PLACEHOLDER_EMAILS))))
        | (has_at & (local_length > 0) & (
            as_mask(pc.is_in(local, value_set=pa.array(sorted(n.PLACEHOLDER_EMAIL_LOCAL_PARTS))))
            | as_mask(pc.is_in(domain, value_set=pa.array(sorted(n.PLACEHOLDER_EMAIL_DOMAINS))))
            | ((local_length >= 3) & _same_char(local)))))
    result = null_where(email, ~(shaped & valid) | placeholder)
    chunk.warn("placeholder_email", placeholder)
    chunk.warn("invalid_email", shaped & ~valid & ~placeholder)
    return patch_with_warning(chunk, raw, shaped | empty, result, n.email_value)


def _text(chunk: Chunk, column: str) -> pa.Array:
    """Address or city (normalize.text_value)."""
    raw = chunk.column(column)
    lengths = pc.utf8_length(raw).to_numpy(zero_copy_only=False)
    shaped = is_plain(raw) & ~as_mask(pc.match_substring_regex(raw, r"^ | $|  ")) & (lengths > _LONGEST_PLACEHOLDER) & (
        lengths <= n._MAX_LEN[column])
    empty = lengths == 0
    value = null_where(raw, empty)
    return patch(chunk, raw, shaped | empty, [value], lambda v: n.text_value(column, v), [STRING])[0]


def _postcode(chunk: Chunk) -> pa.Array:
    raw = chunk.column("postcode")
    lengths = pc.utf8_length(raw).to_numpy(zero_copy_only=False)
    digits = as_mask(pc.match_substring_regex(raw, r"^[0-9]+$")) & (lengths <= n._MAX_LEN["postcode"])
    value = null_where(raw, (lengths == 0) | as_mask(pc.match_substring_regex(raw, r"^0+$")))
    return patch(chunk, raw, digits | (lengths == 0), [value], n.postcode_value, [STRING])[0]


def _core_cif(chunk: Chunk) -> pa.Array:
    raw = chunk.column("core_cif")
    cif = trim_spaces(raw)
    lengths = pc.utf8_length(cif).to_numpy(zero_copy_only=False)
    shaped = is_plain(raw) & (lengths > _LONGEST_PLACEHOLDER) & (lengths <= n._MAX_LEN["core_cif"])
    empty = is_plain(raw) & (lengths == 0)
    return patch(chunk, raw, shaped | empty, [null_where(cif, empty)], n.core_cif_value, [STRING])[0]


def _updated_at(chunk: Chunk, time_zone: str) -> pa.Array:
    """normalize.updated_at_value: ISO date-times without offset read in the current time zone."""
    raw = chunk.column("updated_at")
    trimmed = trim_spaces(raw)
    plain = is_plain(raw)
    local = pa.nulls(chunk.rows, pa.timestamp("us"))
    fast = plain & (pc.utf8_length(trimmed).to_numpy(zero_copy_only=False) == 0)
    for pattern, fmt in _TIMESTAMP_SHAPES:
        shaped = plain & as_mask(pc.match_substring_regex(trimmed, pattern))
        if not shaped.any():
            continue
        parsed = pc.strptime(null_where(trimmed, ~shaped), format=fmt, unit="us", error_is_null=True)
        real = is_real_date(parsed, trimmed)  # the shape already bounds hours, minutes and seconds
        local = pc.coalesce(local, null_where(parsed, ~real))
        fast |= shaped & real
    utc = pa.timestamp("us", tz="UTC")
    try:
        # zoneinfo's fold=0 reads an ambiguous wall time as the earlier instant.
        aware = pc.cast(pc.assume_timezone(local, timezone=time_zone, ambiguous="earliest", nonexistent="raise"), utc)
    except pa.ArrowInvalid:
        # A wall-clock time the zone skips (a DST gap): Python's own arithmetic decides.
        return patch(chunk, raw, np.zeros(chunk.rows, dtype=bool), [pa.nulls(chunk.rows, utc)],
                      n.updated_at_value, [utc])[0]
    return patch(chunk, raw, fast, [aware], n.updated_at_value, [utc])[0]


def nonblank(values: pa.Array) -> np.ndarray:
    """bool(value.strip()) for every value."""
    plain = is_plain(values)
    nonblank = as_mask(pc.not_equal(trim_spaces(values), ""))
    for position in np.flatnonzero(~plain):
        nonblank[position] = bool((values[position].as_py() or "").strip())
    return nonblank


def _card(chunk: Chunk, hasher: KeyedHasher) -> tuple[pa.Array, pa.Array, pa.Array]:
    """normalize.card_values: (token, BIN, last 4) from `pan`, else from card_token / pan_bin / pan_last4."""
    pan = chunk.column("pan")
    has_pan = nonblank(pan)
    digits = pc.replace_substring_regex(pan, r"[ \-]+", "")
    shaped = has_pan & is_plain(pan) & as_mask(pc.match_substring_regex(digits, r"^[0-9]{13,19}$"))
    shaped &= luhn_valid(pc.if_else(pa.array(shaped), digits, pa.scalar("0" * 13)))
    from_pan = [hasher(null_where(digits, ~shaped), "pan"), null_where(pc.utf8_slice_codeunits(digits, 0, 6), ~shaped),
                null_where(pc.utf8_slice_codeunits(digits, -4), ~shaped)]
    token, pan_bin, last4 = patch(chunk, pan, shaped | ~has_pan, from_pan, n.tokenize_pan, [STRING, STRING, STRING])
    if has_pan.all():
        return token, pan_bin, last4
    # Rows without a card number: the source's own token, BIN and last 4 (ignored where there is a number).
    without = pa.array(~has_pan)
    raw_token = chunk.column("card_token")
    own_token = patch(chunk, raw_token, has_pan | as_mask(pc.equal(raw_token, "")), [pa.nulls(chunk.rows, STRING)],
                       n.card_token_value, [STRING])[0]
    own_bin = by_distinct(chunk, null_where(chunk.column("pan_bin"), has_pan), lambda v: n.pan_bin_value(v or ""),
                           [STRING])[0]
    own_last4 = by_distinct(chunk, null_where(chunk.column("pan_last4"), has_pan),
                             lambda v: n.pan_last4_value(v or ""), [STRING])[0]
    return (pc.if_else(without, own_token, token), pc.if_else(without, own_bin, pan_bin),
            pc.if_else(without, own_last4, last4))


def _json_string(values: pa.Array) -> pa.Array:
    """json.dumps(value, ensure_ascii=False) of each value, vectorised where nothing needs escaping."""
    quoted = pc.binary_join_element_wise('"', values, '"', "")
    needs_escape = as_mask(pc.match_substring_regex(values, r'["\\\x00-\x1f]'))
    if not needs_escape.any():
        return quoted
    rows = np.flatnonzero(needs_escape)
    escaped = [None if v is None else json.dumps(v, ensure_ascii=False) for v in pc.take(values, pa.array(rows)).to_pylist()]
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(quoted, pa.array(mask), pa.array(escaped, STRING))


def _attributes(chunk: Chunk) -> pa.Array:
    """The JSON object of the source's other columns, keys sorted (json.dumps(..., sort_keys=True))."""
    members = []
    for key in sorted(c for c in chunk.raw.column_names if c != "rn" and n.is_attribute_column(c)):
        raw = chunk.column(key)
        if key in n._TYPED_ATTRIBUTES:
            value = by_distinct(chunk, raw, lambda v, k=key: n.attribute_value(k, v or ""), [STRING])[0]
        else:
            trimmed = trim_spaces(raw)
            value = patch(chunk, raw, is_plain(raw), [null_where(trimmed, as_mask(pc.equal(trimmed, "")))],
                           lambda v, k=key: n.attribute_value(k, v), [STRING])[0]
        members.append(pc.binary_join_element_wise(json.dumps(key, ensure_ascii=False) + ": ", _json_string(value), ""))
    if not members:
        return pa.array(["{}"] * chunk.rows, STRING)
    return pc.binary_join_element_wise("{", join_present(members, ", "), "}", "")


def normalise_chunk(raw: pa.Table, *, hasher: KeyedHasher, today: date, time_zone: str) -> NormalisedChunk:
    """normalize_customer_row for every row of `raw` (canonical column names, string values; `rn` ignored)."""
    chunk = Chunk(raw)
    customer_key = _customer_key(chunk)
    full_name, family, given, name_key = _names(chunk)
    gender = by_distinct(chunk, chunk.column("gender"), n.gender_value, [STRING])[0]
    birth_date = by_distinct(chunk, chunk.column("birth_date"), n.birth_date_value, [pa.date32()])[0]
    id_type, id_hash, id_masked, id_valid = _id_number(chunk, hasher, today)
    phone = _phone(chunk)
    email = _email(chunk)
    address = _text(chunk, "address")
    city = by_distinct(chunk, chunk.column("city"), lambda v: n.text_value("city", v or ""), [STRING])[0]
    postcode = _postcode(chunk)
    core_cif = _core_cif(chunk)
    updated_at = _updated_at(chunk, time_zone)
    pan_token, pan_bin, pan_last4 = _card(chunk, hasher)
    attributes = _attributes(chunk)
    table = pa.Table.from_arrays(
        [customer_key, full_name, family, given, name_key, gender, birth_date, id_type, id_hash, id_masked, id_valid,
         phone, email, address, city, postcode, core_cif, pan_token, pan_bin, pan_last4, attributes, updated_at],
        schema=NORMALISED_SCHEMA,
    )
    return NormalisedChunk(table=table, rejected=np.flatnonzero(chunk.rejected), warnings=chunk.warnings())
