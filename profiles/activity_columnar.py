"""The vectorised path of activity-feed loading: a chunk of rows parsed column by column with Arrow.

The field parsers of profiles.activity_kinds (`money_field`, `timestamp_field`, ...) define what a value becomes and why a row is
rejected. Here each column of a whole chunk is parsed at once: columns with few distinct values (kinds,
channels, currencies, dates) call the parser once per distinct value; columns of mostly unique values (keys,
amounts, timestamps, card numbers) use Arrow kernels for their common shapes and the parser for any other
value. A row that a parser rejects is marked, and the caller asks the row parser for the reason, so a row
gets exactly the reason a row-by-row load gives (tests/profiles/test_activity_columnar.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import activity_kinds as kinds
from .columnar import (
    STRING, Chunk, KeyedHasher, as_mask, by_distinct, is_plain, is_real_date, luhn_valid, null_where, patch,
    trim_spaces,
)
from .normalize import RowRejected, tokenize_pan

MONEY = pa.decimal128(18, 2)
UTC = pa.timestamp("us", tz="UTC")
# Amounts Arrow casts exactly as Decimal(...).quantize(0.01) does: at most two decimals, below 1e16.
_PLAIN_AMOUNT_RE = r"^-?[0-9]{1,16}(?:[.][0-9]{1,2})?$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_NAIVE_SHAPES = ((rf"^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T{_TIME}$", "%Y-%m-%dT%H:%M:%S"),
                 (rf"^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}} {_TIME}$", "%Y-%m-%d %H:%M:%S"),
                 (_DATE_RE, "%Y-%m-%d"))
_OFFSET_RE = rf"^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[T ]{_TIME}(?:[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]|Z)$"


@dataclass
class ParsedChunk:
    customer_key: pa.Array | None  # None for kinds not keyed by customer (FX rates)
    columns: dict[str, pa.Array]  # the kind's columns, as activity.KINDS lists them
    rejected: np.ndarray  # positions of rows some parser rejected


def _one(parse: Callable[[dict, str], object], column: str) -> Callable[[str], object]:
    """A row parser of activity.py applied to one value."""
    return lambda value: parse({column: value or ""}, column)


class _Columns:
    """Parses the columns of one chunk, marking rejected rows in `chunk`."""

    def __init__(self, chunk: Chunk, time_zone: str):
        self.chunk = chunk
        self.time_zone = time_zone

    def text(self, column: str, *, max_len: int, required: bool = True) -> pa.Array:
        raw = self.chunk.column(column)
        value = trim_spaces(raw)
        lengths = pc.utf8_length(value).to_numpy(zero_copy_only=False)
        fast = is_plain(raw, fold_width=False) & (lengths <= max_len) & ((lengths > 0) | (not required))
        parse = _one(lambda row, c: kinds.text_field(row, c, max_len=max_len, required=required), column)
        return patch(self.chunk, raw, fast, [value], parse, [STRING])[0]

    def distinct(self, column: str, parse: Callable[[dict, str], object], type_: pa.DataType) -> pa.Array:
        return by_distinct(self.chunk, self.chunk.column(column), _one(parse, column), [type_])[0]

    def choice(self, column: str, choices: frozenset[str] | None = None, *, max_len: int = 24) -> pa.Array:
        return self.distinct(column, lambda row, c: kinds.choice_field(row, c, choices, max_len=max_len), STRING)

    def lower_text(self, column: str, *, max_len: int) -> pa.Array:
        return self.distinct(column, lambda row, c: kinds.text_field(row, c, max_len=max_len, required=False).lower(),
                             STRING)

    def money(self, column: str, *, signed: bool = True) -> pa.Array:
        raw = self.chunk.column(column)
        value = trim_spaces(raw)
        fast = is_plain(raw, fold_width=False) & as_mask(pc.match_substring_regex(value, _PLAIN_AMOUNT_RE))
        if not signed:
            fast &= ~as_mask(pc.starts_with(value, "-"))
        amounts = pc.cast(null_where(value, ~fast), MONEY)
        return patch(self.chunk, raw, fast, [amounts], _one(lambda row, c: kinds.money_field(row, c, signed=signed), column),
                     [MONEY])[0]

    def date(self, column: str, *, required: bool = True) -> pa.Array:
        raw = self.chunk.column(column)
        value = trim_spaces(raw)
        shaped = is_plain(raw, fold_width=False) & as_mask(pc.match_substring_regex(value, _DATE_RE))
        parsed = pc.cast(pc.strptime(null_where(value, ~shaped), format="%Y-%m-%d", unit="s", error_is_null=True),
                         pa.date32())
        real = shaped & is_real_date(parsed, value)
        empty = is_plain(raw, fold_width=False) & (pc.utf8_length(value).to_numpy(zero_copy_only=False) == 0)
        fast = real | (empty & (not required))
        parse = _one(lambda row, c: kinds.date_field(row, c, required=required), column)
        return patch(self.chunk, raw, fast, [null_where(parsed, ~real)], parse, [pa.date32()])[0]

    def timestamp(self, column: str) -> pa.Array:
        """activity._timestamp: ISO date-times, with an offset or read in the current time zone."""
        raw = self.chunk.column(column)
        value = trim_spaces(raw)
        plain = is_plain(raw, fold_width=False)
        local = pa.nulls(len(raw), pa.timestamp("us"))
        naive = np.zeros(len(raw), dtype=bool)
        for pattern, fmt in _NAIVE_SHAPES:
            shaped = plain & as_mask(pc.match_substring_regex(value, pattern))
            if shaped.any():
                parsed = pc.strptime(null_where(value, ~shaped), format=fmt, unit="us", error_is_null=True)
                real = shaped & is_real_date(parsed, value)
                local = pc.coalesce(local, null_where(parsed, ~real))
                naive |= real
        offset = plain & as_mask(pc.match_substring_regex(value, _OFFSET_RE))
        base = pc.replace_substring(pc.utf8_slice_codeunits(value, 0, 19), "T", " ")
        wall = pc.strptime(null_where(base, ~offset), format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
        offset &= is_real_date(wall, value)
        zone = pc.utf8_slice_codeunits(value, 19)
        hours_minutes = null_where(pc.replace_substring(zone, "Z", "+00:00"), ~offset)
        sign = pc.if_else(pc.starts_with(hours_minutes, "-"), -1, 1)
        minutes = pc.multiply(sign, pc.add(pc.multiply(pc.cast(pc.utf8_slice_codeunits(hours_minutes, 1, 3), pa.int64()), 60),
                                           pc.cast(pc.utf8_slice_codeunits(hours_minutes, 4, 6), pa.int64())))
        shift = pc.cast(pc.multiply(minutes, 60_000_000), pa.duration("us"))
        from_offset = pc.cast(pc.subtract(wall, shift), UTC)
        try:
            # zoneinfo's fold=0 reads an ambiguous wall time as the earlier instant.
            from_zone = pc.cast(pc.assume_timezone(local, timezone=self.time_zone, ambiguous="earliest",
                                                   nonexistent="raise"), UTC)
        except pa.ArrowInvalid:  # a wall time the zone skips (a DST gap): Python decides, value by value
            naive[:] = False
            from_zone = pa.nulls(len(raw), UTC)
        stamps = pc.if_else(pa.array(offset), from_offset, from_zone)
        return patch(self.chunk, raw, naive | offset, [stamps], _one(kinds.timestamp_field, column), [UTC])[0]

    def reject(self, mask: np.ndarray) -> None:
        self.chunk.rejected |= mask


def _before(later: pa.Array, earlier: pa.Array) -> np.ndarray:
    return as_mask(pc.less(later, earlier))


def _accounts(c: _Columns) -> dict[str, pa.Array]:
    opened, closed = c.date("opened_at"), c.date("closed_at", required=False)
    c.reject(_before(closed, opened))
    return {"account_key": c.text("account_key", max_len=64),
            "product_type": c.choice("product_type", frozenset(kinds.Account.ProductType.values)),
            "currency": c.distinct("currency", lambda row, col: kinds.currency_field(row), STRING),
            "balance": c.money("balance"), "opened_at": opened, "closed_at": closed,
            "status": c.choice("status", max_len=16), "as_of": c.date("as_of")}


def _transactions(c: _Columns) -> dict[str, pa.Array]:
    return {"txn_key": c.text("txn_key", max_len=64), "account_key": c.text("account_key", max_len=64),
            "occurred_at": c.timestamp("occurred_at"), "amount": c.money("amount"),
            "currency": c.distinct("currency", lambda row, col: kinds.currency_field(row), STRING),
            "kind": c.choice("kind"), "channel": c.choice("channel", kinds.TXN_CHANNELS, max_len=8),
            "counterparty_category": c.lower_text("counterparty_category", max_len=32)}


def _card_transactions(c: _Columns, hasher: KeyedHasher) -> dict[str, pa.Array]:
    chunk = c.chunk
    pan_raw = chunk.column("pan")
    pan = trim_spaces(pan_raw)
    plain = is_plain(pan_raw, fold_width=False)
    has_pan = as_mask(pc.not_equal(pan, ""))
    has_pan[~plain] = [bool((pan_raw[int(i)].as_py() or "").strip()) for i in np.flatnonzero(~plain)]
    digits = pc.replace_substring_regex(pan, r"[ \-]+", "")
    shaped = has_pan & plain & as_mask(pc.match_substring_regex(digits, r"^[0-9]{13,19}$"))
    shaped &= luhn_valid(pc.if_else(pa.array(shaped), digits, pa.scalar("0" * 13)))
    from_pan = [hasher(null_where(digits, ~shaped), "pan"), null_where(pc.utf8_slice_codeunits(digits, 0, 6), ~shaped),
                null_where(pc.utf8_slice_codeunits(digits, -4), ~shaped)]
    token, pan_bin, last4 = patch(chunk, pan_raw, shaped | ~has_pan, from_pan,
                                  lambda value: tokenize_pan(value.strip()), [STRING, STRING, STRING])
    # The source's own token counts only where a row has no card number, and is required there.
    token_raw = chunk.column("card_token")
    own = trim_spaces(token_raw)
    lengths = pc.utf8_length(own).to_numpy(zero_copy_only=False)
    fast = has_pan | (is_plain(token_raw, fold_width=False) & (lengths > 0) & (lengths <= 64))
    own_token = patch(chunk, token_raw, fast, [own], _one(lambda row, col: kinds.text_field(row, col, max_len=64),
                                                          "card_token"), [STRING])[0]
    keep = pa.array(has_pan)
    return {"txn_key": c.text("txn_key", max_len=64), "card_token": pc.if_else(keep, token, own_token),
            "pan_bin": pan_bin, "pan_last4": last4, "occurred_at": c.timestamp("occurred_at"),
            "amount": c.money("amount"), "currency": c.distinct("currency", lambda row, col: kinds.currency_field(row), STRING),
            "mcc": c.distinct("mcc", _mcc, STRING), "merchant_category": c.lower_text("merchant_category", max_len=32),
            "channel": c.choice("channel", max_len=8),
            "installments": c.distinct("installment", lambda row, col: kinds.installments_field(row), pa.int64())}


def _mcc(row: dict, column: str) -> str:
    mcc = kinds.text_field(row, column, max_len=4, required=False)
    if mcc and not kinds.MCC_RE.fullmatch(mcc):
        raise RowRejected(f"mcc: not 4 digits ({kinds.shown(mcc)})")
    return mcc


def _holdings(c: _Columns) -> dict[str, pa.Array]:
    return {"holding_key": c.text("holding_key", max_len=64), "product_code": c.text("product_code", max_len=32),
            "product_type": c.choice("product_type", frozenset(kinds.Holding.ProductType.values)),
            "market_value": c.money("market_value", signed=False),
            "currency": c.distinct("currency", lambda row, col: kinds.currency_field(row), STRING),
            "as_of": c.date("as_of")}


def _risk_level(row: dict, column: str) -> str:
    level = kinds.text_field(row, column, max_len=2).upper()
    if level not in kinds.RISK_LEVELS:
        raise RowRejected(f"risk_level: not one of C1-C5 ({kinds.shown(level)})")
    return level


def _risk_assessments(c: _Columns) -> dict[str, pa.Array]:
    assessed, expires = c.date("assessed_at"), c.date("expires_at", required=False)
    c.reject(_before(expires, assessed))
    return {"risk_level": c.distinct("risk_level", _risk_level, STRING), "assessed_at": assessed,
            "expires_at": expires}


def _fx_rates(c: _Columns) -> dict[str, pa.Array]:
    rate = c.distinct("rate_to_cny", lambda row, col: kinds.fx_rate_field(row), pa.decimal128(18, 8))
    return {"currency": c.distinct("currency", lambda row, col: kinds.currency_field(row), STRING),
            "rate_to_cny": rate, "as_of": c.date("as_of")}


_PARSERS = {"accounts": _accounts, "transactions": _transactions, "holdings": _holdings,
            "risk_assessments": _risk_assessments, "fx_rates": _fx_rates}


def parse_chunk(kind: str, table: pa.Table, *, hasher: KeyedHasher, time_zone: str) -> ParsedChunk:
    """The values of every row of `table` (canonical column names, string values) as KINDS[kind] stages them."""
    chunk = Chunk(table)
    columns = _Columns(chunk, time_zone)
    spec = kinds.KINDS[kind]
    customer_key = columns.text("customer_key", max_len=64) if spec.per_customer else None
    parsed = _card_transactions(columns, hasher) if kind == "card_transactions" else _PARSERS[kind](columns)
    assert tuple(parsed) == spec.columns, kind
    return ParsedChunk(customer_key=customer_key, columns=parsed, rejected=np.flatnonzero(chunk.rejected))
