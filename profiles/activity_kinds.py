"""The activity feed kinds (accounts, transactions, card transactions, holdings, risk assessments, FX rates): their
columns, natural keys, and the parser of one row, which defines what each value becomes and why a row is rejected.

Each field parser takes the row and a column name and raises RowRejected naming the column; profiles.activity
runs the row parsers for rows the vectorised path (profiles.activity_columnar) cannot parse.
"""
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.db import models
from django.utils import timezone

from .models import Account, CardTransaction, FxRate, Holding, RiskAssessment, Transaction
from .normalize import RowRejected, tokenize_pan

_CENT = Decimal("0.01")
_AMOUNT_RE = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)(?:\.\d+)?", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Z]{3}", re.ASCII)
_TOKEN_RE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
MCC_RE = re.compile(r"\d{4}", re.ASCII)
RISK_LEVELS = frozenset({"C1", "C2", "C3", "C4", "C5"})
TXN_CHANNELS = frozenset({"app", "branch", "atm", "pos", "online", "system"})
_YES = frozenset({"y", "yes", "true", "t"})
_NO = frozenset({"n", "no", "false", "f"})


# --- field parsers: each raises RowRejected naming the column ---------------------------------------------------

def shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


def text_field(row: dict, column: str, *, max_len: int, required: bool = True) -> str:
    value = (row.get(column) or "").strip()
    if not value and required:
        raise RowRejected(f"{column}: missing")
    if len(value) > max_len:
        raise RowRejected(f"{column}: longer than {max_len} characters")
    return value


def choice_field(row: dict, column: str, choices: frozenset[str] | None = None, *, max_len: int = 24) -> str:
    """A lower-case code: one of `choices`, or any identifier-like token when the set is open."""
    value = text_field(row, column, max_len=max_len).lower()
    if (choices is not None and value not in choices) or (choices is None and not _TOKEN_RE.fullmatch(value)):
        allowed = ", ".join(sorted(choices)) if choices else "a lower-case code"
        raise RowRejected(f"{column}: {shown(value)} is not one of {allowed}")
    return value


def amount_field(row: dict, column: str, *, signed: bool = True, positive: bool = False) -> Decimal:
    raw = text_field(row, column, max_len=30)
    if not _AMOUNT_RE.fullmatch(raw):
        raise RowRejected(f"{column}: not an amount ({shown(raw)})")
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise RowRejected(f"{column}: not an amount ({shown(raw)})") from None
    if (not signed and value < 0) or (positive and value <= 0):
        raise RowRejected(f"{column}: must be {'> 0' if positive else '>= 0'} ({shown(raw)})")
    if abs(value) >= Decimal("1e16"):
        raise RowRejected(f"{column}: out of range ({shown(raw)})")
    return value


def money_field(row: dict, column: str, *, signed: bool = True) -> Decimal:
    return amount_field(row, column, signed=signed).quantize(_CENT, rounding=ROUND_HALF_UP)


def currency_field(row: dict) -> str:
    value = text_field(row, "currency", max_len=3).upper()
    if not _CURRENCY_RE.fullmatch(value):
        raise RowRejected(f"currency: not an ISO 4217 code ({shown(value)})")
    return value


def date_field(row: dict, column: str, *, required: bool = True) -> date | None:
    raw = text_field(row, column, max_len=30, required=required)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RowRejected(f"{column}: not an ISO date ({shown(raw)})") from None


def timestamp_field(row: dict, column: str) -> datetime:
    raw = text_field(row, column, max_len=40)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise RowRejected(f"{column}: not an ISO date-time ({shown(raw)})") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.get_current_timezone())
    return value


def installments_field(row: dict) -> int:
    raw = (row.get("installment") or "").strip().lower()
    if not raw or raw in _NO:
        return 0
    if raw in _YES:
        return 1
    if raw.isascii() and raw.isdigit() and int(raw) <= 120:
        return int(raw)
    raise RowRejected(f"installment: not a number of installments or yes/no ({shown(raw)})")


# --- one parser per kind: row -> values of the kind's columns, in order ---------------------------------------

def parse_account(row: dict) -> tuple:
    opened, closed = date_field(row, "opened_at"), date_field(row, "closed_at", required=False)
    if closed is not None and closed < opened:
        raise RowRejected("closed_at: before opened_at")
    return (
        text_field(row, "account_key", max_len=64), choice_field(row, "product_type", frozenset(Account.ProductType.values)),
        currency_field(row), money_field(row, "balance"), opened, closed, choice_field(row, "status", max_len=16),
        date_field(row, "as_of"),
    )


def parse_transaction(row: dict) -> tuple:
    return (
        text_field(row, "txn_key", max_len=64), text_field(row, "account_key", max_len=64), timestamp_field(row, "occurred_at"),
        money_field(row, "amount"), currency_field(row), choice_field(row, "kind"), choice_field(row, "channel", TXN_CHANNELS, max_len=8),
        text_field(row, "counterparty_category", max_len=32, required=False).lower(),
    )


def parse_card_transaction(row: dict) -> tuple:
    pan = (row.get("pan") or "").strip()
    if pan:
        token, pan_bin, last4 = tokenize_pan(pan)
    else:
        token, pan_bin, last4 = text_field(row, "card_token", max_len=64), None, None
    mcc = text_field(row, "mcc", max_len=4, required=False)
    if mcc and not MCC_RE.fullmatch(mcc):
        raise RowRejected(f"mcc: not 4 digits ({shown(mcc)})")
    return (
        text_field(row, "txn_key", max_len=64), token, pan_bin, last4, timestamp_field(row, "occurred_at"), money_field(row, "amount"),
        currency_field(row), mcc, text_field(row, "merchant_category", max_len=32, required=False).lower(),
        choice_field(row, "channel", max_len=8), installments_field(row),
    )


def parse_holding(row: dict) -> tuple:
    return (
        text_field(row, "holding_key", max_len=64), text_field(row, "product_code", max_len=32),
        choice_field(row, "product_type", frozenset(Holding.ProductType.values)), money_field(row, "market_value", signed=False),
        currency_field(row), date_field(row, "as_of"),
    )


def parse_risk_assessment(row: dict) -> tuple:
    level = text_field(row, "risk_level", max_len=2).upper()
    if level not in RISK_LEVELS:
        raise RowRejected(f"risk_level: not one of C1-C5 ({shown(level)})")
    assessed, expires = date_field(row, "assessed_at"), date_field(row, "expires_at", required=False)
    if expires is not None and expires < assessed:
        raise RowRejected("expires_at: before assessed_at")
    return level, assessed, expires


def fx_rate_field(row: dict) -> Decimal:
    return amount_field(row, "rate_to_cny", positive=True).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)


def parse_fx_rate(row: dict) -> tuple:
    return currency_field(row), fx_rate_field(row), date_field(row, "as_of")


@dataclass(frozen=True)
class ActivityKind:
    model: type[models.Model]
    columns: tuple[str, ...]  # what the parser returns, in order
    key: tuple[str, ...]  # the natural key, what a reload matches on
    parse: Callable[[dict], tuple]
    required: tuple[str, ...]  # columns the header must have
    per_customer: bool = True
    # A snapshot kind's row is the state as of this date: an older one, sent late, never replaces a newer one.
    snapshot_date: str | None = None


KINDS: dict[str, ActivityKind] = {
    "accounts": ActivityKind(
        Account, ("account_key", "product_type", "currency", "balance", "opened_at", "closed_at", "status", "as_of"),
        ("source_id", "account_key"), parse_account,
        ("account_key", "product_type", "currency", "balance", "opened_at", "status", "as_of"),
        snapshot_date="as_of",
    ),
    "transactions": ActivityKind(
        Transaction, ("txn_key", "account_key", "occurred_at", "amount", "currency", "kind", "channel",
                      "counterparty_category"),
        ("source_id", "txn_key"), parse_transaction, ("txn_key", "account_key", "occurred_at", "amount", "currency", "kind", "channel"),
    ),
    "card_transactions": ActivityKind(
        CardTransaction, ("txn_key", "card_token", "pan_bin", "pan_last4", "occurred_at", "amount", "currency", "mcc",
                          "merchant_category", "channel", "installments"),
        ("source_id", "txn_key"), parse_card_transaction, ("txn_key", "occurred_at", "amount", "currency", "channel"),
    ),
    "holdings": ActivityKind(
        Holding, ("holding_key", "product_code", "product_type", "market_value", "currency", "as_of"),
        ("source_id", "holding_key"), parse_holding, ("holding_key", "product_code", "product_type", "market_value", "currency", "as_of"),
        snapshot_date="as_of",
    ),
    "risk_assessments": ActivityKind(
        RiskAssessment, ("risk_level", "assessed_at", "expires_at"), ("source_id", "customer_key", "assessed_at"), parse_risk_assessment,
        ("risk_level", "assessed_at"),
    ),
    "fx_rates": ActivityKind(
        FxRate, ("currency", "rate_to_cny", "as_of"), ("currency", "as_of"), parse_fx_rate, ("rate_to_cny", "as_of"),
        per_customer=False,
    ),
}
