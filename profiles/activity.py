"""Loading activity feeds: accounts, transactions, card transactions, holdings, risk assessments and FX rates.

The contract is the customer feed's (profiles.feeds): one FeedBatch per file with read/created/updated/unchanged/
rejected counts, rejects kept with their row number and reason, a file that is not a feed fails the batch and
changes nothing, one transaction per file, and a reload of unchanged rows writes nothing.

Rows are validated in Python as they are read, staged in a temp table (COPY on PostgreSQL), and everything after
that is set-based: duplicates inside the file, the created/updated/unchanged counts, and one
INSERT ... SELECT ... ON CONFLICT DO UPDATE that only rewrites rows whose digest changed.
"""
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from django.db import connection, models, transaction
from django.utils import timezone

from . import sql
from .feeds import FeedFormatError, batch_start, read_feed
from .models import (
    Account, CardTransaction, CustomerProfile, FeedBatch, FxRate, Holding, RejectedRow, RiskAssessment, Source,
    SourceRecord, Transaction,
)
from .normalize import RowRejected, redact_raw_row, tokenize_pan

_CENT = Decimal("0.01")
_AMOUNT_RE = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)(?:\.\d+)?", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Z]{3}", re.ASCII)
_TOKEN_RE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
_MCC_RE = re.compile(r"\d{4}", re.ASCII)
_RISK_LEVELS = frozenset({"C1", "C2", "C3", "C4", "C5"})
_TXN_CHANNELS = frozenset({"app", "branch", "atm", "pos", "online", "system"})
_YES = frozenset({"y", "yes", "true", "t"})
_NO = frozenset({"n", "no", "false", "f"})


def _row_digest(row: dict[str, str]) -> str:
    payload = "\x1f".join(f"{k}\x1e{v.strip()}" for k, v in sorted(row.items()) if v and v.strip())
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


# --- field parsers: each raises RowRejected naming the column ---------------------------------------------------

def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _text(row: dict, column: str, *, max_len: int, required: bool = True) -> str:
    value = (row.get(column) or "").strip()
    if not value and required:
        raise RowRejected(f"{column}: missing")
    if len(value) > max_len:
        raise RowRejected(f"{column}: longer than {max_len} characters")
    return value


def _choice(row: dict, column: str, choices: frozenset[str] | None = None, *, max_len: int = 24) -> str:
    """A lower-case code: one of `choices`, or any identifier-like token when the set is open."""
    value = _text(row, column, max_len=max_len).lower()
    if (choices is not None and value not in choices) or (choices is None and not _TOKEN_RE.fullmatch(value)):
        allowed = ", ".join(sorted(choices)) if choices else "a lower-case code"
        raise RowRejected(f"{column}: {_shown(value)} is not one of {allowed}")
    return value


def _amount(row: dict, column: str, *, signed: bool = True, positive: bool = False) -> Decimal:
    raw = _text(row, column, max_len=30)
    if not _AMOUNT_RE.fullmatch(raw):
        raise RowRejected(f"{column}: not an amount ({_shown(raw)})")
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise RowRejected(f"{column}: not an amount ({_shown(raw)})") from None
    if (not signed and value < 0) or (positive and value <= 0):
        raise RowRejected(f"{column}: must be {'> 0' if positive else '>= 0'} ({_shown(raw)})")
    if abs(value) >= Decimal("1e16"):
        raise RowRejected(f"{column}: out of range ({_shown(raw)})")
    return value


def _money(row: dict, column: str, *, signed: bool = True) -> Decimal:
    return _amount(row, column, signed=signed).quantize(_CENT, rounding=ROUND_HALF_UP)


def _currency(row: dict) -> str:
    value = _text(row, "currency", max_len=3).upper()
    if not _CURRENCY_RE.fullmatch(value):
        raise RowRejected(f"currency: not an ISO 4217 code ({_shown(value)})")
    return value


def _date(row: dict, column: str, *, required: bool = True) -> date | None:
    raw = _text(row, column, max_len=30, required=required)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise RowRejected(f"{column}: not an ISO date ({_shown(raw)})") from None


def _timestamp(row: dict, column: str) -> datetime:
    raw = _text(row, column, max_len=40)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise RowRejected(f"{column}: not an ISO date-time ({_shown(raw)})") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.get_current_timezone())
    return value


def _installments(row: dict) -> int:
    raw = (row.get("installment") or "").strip().lower()
    if not raw or raw in _NO:
        return 0
    if raw in _YES:
        return 1
    if raw.isascii() and raw.isdigit() and int(raw) <= 120:
        return int(raw)
    raise RowRejected(f"installment: not a number of installments or yes/no ({_shown(raw)})")


# --- one parser per kind: row -> values of the kind's columns, in order ---------------------------------------

def _account(row: dict) -> tuple:
    opened, closed = _date(row, "opened_at"), _date(row, "closed_at", required=False)
    if closed is not None and closed < opened:
        raise RowRejected("closed_at: before opened_at")
    return (
        _text(row, "account_key", max_len=64), _choice(row, "product_type", frozenset(Account.ProductType.values)),
        _currency(row), _money(row, "balance"), opened, closed, _choice(row, "status", max_len=16),
        _date(row, "as_of"),
    )


def _transaction(row: dict) -> tuple:
    return (
        _text(row, "txn_key", max_len=64), _text(row, "account_key", max_len=64), _timestamp(row, "occurred_at"),
        _money(row, "amount"), _currency(row), _choice(row, "kind"), _choice(row, "channel", _TXN_CHANNELS, max_len=8),
        _text(row, "counterparty_category", max_len=32, required=False).lower(),
    )


def _card_transaction(row: dict) -> tuple:
    pan = (row.get("pan") or "").strip()
    if pan:
        token, pan_bin, last4 = tokenize_pan(pan)
    else:
        token, pan_bin, last4 = _text(row, "card_token", max_len=64), None, None
    mcc = _text(row, "mcc", max_len=4, required=False)
    if mcc and not _MCC_RE.fullmatch(mcc):
        raise RowRejected(f"mcc: not 4 digits ({_shown(mcc)})")
    return (
        _text(row, "txn_key", max_len=64), token, pan_bin, last4, _timestamp(row, "occurred_at"), _money(row, "amount"),
        _currency(row), mcc, _text(row, "merchant_category", max_len=32, required=False).lower(),
        _choice(row, "channel", max_len=8), _installments(row),
    )


def _holding(row: dict) -> tuple:
    return (
        _text(row, "holding_key", max_len=64), _text(row, "product_code", max_len=32),
        _choice(row, "product_type", frozenset(Holding.ProductType.values)), _money(row, "market_value", signed=False),
        _currency(row), _date(row, "as_of"),
    )


def _risk_assessment(row: dict) -> tuple:
    level = _text(row, "risk_level", max_len=2).upper()
    if level not in _RISK_LEVELS:
        raise RowRejected(f"risk_level: not one of C1-C5 ({_shown(level)})")
    assessed, expires = _date(row, "assessed_at"), _date(row, "expires_at", required=False)
    if expires is not None and expires < assessed:
        raise RowRejected("expires_at: before assessed_at")
    return level, assessed, expires


def _fx_rate(row: dict) -> tuple:
    rate = _amount(row, "rate_to_cny", positive=True)
    return _currency(row), rate.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP), _date(row, "as_of")


@dataclass(frozen=True)
class ActivityKind:
    model: type[models.Model]
    columns: tuple[str, ...]  # what the parser returns, in order
    key: tuple[str, ...]  # the natural key, what a reload matches on
    parse: Callable[[dict], tuple]
    required: tuple[str, ...]  # columns the header must have
    per_customer: bool = True


KINDS: dict[str, ActivityKind] = {
    "accounts": ActivityKind(
        Account, ("account_key", "product_type", "currency", "balance", "opened_at", "closed_at", "status", "as_of"),
        ("source_id", "account_key"), _account,
        ("account_key", "product_type", "currency", "balance", "opened_at", "status", "as_of"),
    ),
    "transactions": ActivityKind(
        Transaction, ("txn_key", "account_key", "occurred_at", "amount", "currency", "kind", "channel",
                      "counterparty_category"),
        ("source_id", "txn_key"), _transaction, ("txn_key", "account_key", "occurred_at", "amount", "currency", "kind", "channel"),
    ),
    "card_transactions": ActivityKind(
        CardTransaction, ("txn_key", "card_token", "pan_bin", "pan_last4", "occurred_at", "amount", "currency", "mcc",
                          "merchant_category", "channel", "installments"),
        ("source_id", "txn_key"), _card_transaction, ("txn_key", "occurred_at", "amount", "currency", "channel"),
    ),
    "holdings": ActivityKind(
        Holding, ("holding_key", "product_code", "product_type", "market_value", "currency", "as_of"),
        ("source_id", "holding_key"), _holding, ("holding_key", "product_code", "product_type", "market_value", "currency", "as_of"),
    ),
    "risk_assessments": ActivityKind(
        RiskAssessment, ("risk_level", "assessed_at", "expires_at"), ("source_id", "customer_key", "assessed_at"), _risk_assessment,
        ("risk_level", "assessed_at"),
    ),
    "fx_rates": ActivityKind(
        FxRate, ("currency", "rate_to_cny", "as_of"), ("currency", "as_of"), _fx_rate, ("rate_to_cny", "as_of"),
        per_customer=False,
    ),
}


def _adapt(value):
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, date):
        return connection.ops.adapt_datefield_value(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


@dataclass
class _Staged:
    rejected: list[tuple[int, str, dict]]
    warnings: Counter
    rows_read: int = 0
    # Raised after the COPY: an exception inside the generator would reach us as the driver's QueryCanceled.
    format_error: FeedFormatError | None = None


def _stage_columns(spec: ActivityKind) -> tuple[str, ...]:
    head = ("source_id", "customer_key") if spec.per_customer else ("source_id",)
    body = tuple(c for c in spec.columns if c not in head)
    return head + body + ("row_digest", "last_batch_id")


def _read_rows(path: Path, *, spec: ActivityKind, kind: str, source: Source, encoding: str, batch_id: int,
               state: _Staged, known_currencies: set[str], progress: bool):
    """Yield staging tuples (row_number first) of the good rows; rejects and counts go to `state`.

    No queries in here: on PostgreSQL this generator feeds a COPY that is in progress.
    """
    mapping = dict(source.column_mapping)
    if not spec.per_customer:
        # read_feed insists on a customer_key column; FX rates are keyed by currency, which stands in for it.
        mapping["currency"] = "customer_key"
    stage_columns = _stage_columns(spec)
    header_checked = False
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit=" rows", unit_scale=True, dynamic_ncols=True, desc=kind)
    try:
        for row_number, row in read_feed(path, mapping=mapping, encoding=encoding):
            state.rows_read += 1
            if bar is not None and state.rows_read % 10_000 == 0:
                bar.update(10_000)
            if isinstance(row, str):
                state.rejected.append((row_number, row, {}))
                continue
            if not header_checked:
                missing = [c for c in spec.required if c not in row]
                if missing:
                    raise FeedFormatError(f"not a {kind} feed: required column(s) {', '.join(missing)} missing")
                header_checked = True
            if not spec.per_customer:
                row = {("currency" if k == "customer_key" else k): v for k, v in row.items()}
            try:
                customer_key = _text(row, "customer_key", max_len=64) if spec.per_customer else None
                values = spec.parse(row)
            except RowRejected as exc:
                state.rejected.append((row_number, str(exc), redact_raw_row(row)))
                continue
            named = dict(zip(spec.columns, values))
            if spec.per_customer and named.get("currency", "CNY") not in known_currencies:
                state.warnings["currency_without_fx_rate"] += 1
            named.update(source_id=source.pk, customer_key=customer_key, row_digest=_row_digest(row),
                         last_batch_id=batch_id)
            yield (row_number, *(_adapt(named[c]) for c in stage_columns))
    except FeedFormatError as exc:
        state.format_error = exc
    finally:
        if bar is not None:
            bar.update(state.rows_read % 10_000)
            bar.close()


def _reject_duplicates(spec: ActivityKind, state: _Staged) -> None:
    """A key seen twice in one file: the first row loads, later ones are rejected (set-based, any file size)."""
    key = spec.key
    keys = ", ".join(sql.quote(c) for c in key)
    join = " AND ".join(f"s.{sql.quote(c)} = f.{sql.quote(c)}" for c in key)
    shown = [c for c in spec.key if c != "source_id"]
    duplicates = sql.fetch_all(
        f"SELECT s.row_number, f.first_row, {', '.join('s.' + sql.quote(c) for c in shown)} FROM activity_stage s "
        f"JOIN (SELECT {keys}, MIN(row_number) AS first_row FROM activity_stage GROUP BY {keys} HAVING COUNT(*) > 1) f "
        f"ON {join} WHERE s.row_number > f.first_row"
    )
    if not duplicates:
        return
    sql.create_temp_table("activity_duplicate", "row_number BIGINT PRIMARY KEY")
    sql.bulk_insert("activity_duplicate", ("row_number",), ((n,) for n, *_ in duplicates))
    sql.execute("DELETE FROM activity_stage WHERE row_number IN (SELECT row_number FROM activity_duplicate)")
    sql.drop_temp_table("activity_duplicate")
    for row_number, first_row, *key_values in duplicates:
        state.rejected.append((row_number, f"{shown[-1]}: duplicate of row {first_row}",
                               dict(zip(shown, map(str, key_values)))))


def _count_and_upsert(spec: ActivityKind) -> tuple[int, int, int]:
    """(created, updated, unchanged) of the staged rows, then write the created and changed ones."""
    table = sql.quote(spec.model._meta.db_table)
    key = spec.key
    match = " AND ".join(f"t.{sql.quote(c)} = s.{sql.quote(c)}" for c in key)
    created, updated, unchanged = sql.fetch_all(
        f"SELECT COALESCE(SUM(CASE WHEN t.row_digest IS NULL THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN t.row_digest <> s.row_digest THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN t.row_digest = s.row_digest THEN 1 ELSE 0 END), 0) "
        f"FROM activity_stage s LEFT JOIN {table} t ON {match}"
    )[0]
    columns = _stage_columns(spec)
    cols = ", ".join(sql.quote(c) for c in columns)
    updates = ", ".join(f"{sql.quote(c)} = excluded.{sql.quote(c)}" for c in columns if c not in key)
    # WHERE 1 = 1 keeps SQLite from reading ON CONFLICT as a join clause of the SELECT.
    sql.execute(
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM activity_stage WHERE 1 = 1 "
        f"ON CONFLICT ({', '.join(sql.quote(c) for c in key)}) DO UPDATE SET {updates} "
        f"WHERE {table}.row_digest <> excluded.row_digest"
    )
    return int(created), int(updated), int(unchanged)


def _lock(source: Source, kind: str) -> None:
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_lock(%s)", [sql.advisory_lock_key(f"activity:{kind}", source.pk)])
    FeedBatch.objects.filter(source=source, kind=kind, status=FeedBatch.Status.RUNNING).update(
        status=FeedBatch.Status.FAILED, error="interrupted before it finished; nothing of it was kept",
        finished_at=timezone.now(),
    )


def _unlock(source: Source, kind: str) -> None:
    if sql.is_postgres():
        sql.execute("SELECT pg_advisory_unlock(%s)", [sql.advisory_lock_key(f"activity:{kind}", source.pk)])


def activity_feed_load(*, source: Source | str, kind: str, path: Path | str, encoding: str = "utf-8-sig",
                       progress: bool = False, batch: FeedBatch | None = None) -> FeedBatch:
    """Load one activity feed file of `kind` (see KINDS) for `source`; returns its batch (`batch`: a queued one to
    run this load as)."""
    if kind not in KINDS:
        raise ValueError(f"unknown feed kind {kind!r}: one of customers, {', '.join(KINDS)}")
    spec = KINDS[kind]
    if isinstance(source, str):
        source = Source.objects.get(code=source)
    path = Path(path)
    _lock(source, kind)
    try:
        batch = batch_start(batch, source=source, kind=kind, file_name=str(path))
        state = _Staged(rejected=[], warnings=Counter())
        known_currencies = {"CNY", *FxRate.objects.values_list("currency", flat=True).distinct()}
        try:
            with transaction.atomic():
                sql.set_work_mem()
                columns = _stage_columns(spec)
                sql.drop_temp_table("activity_stage")
                sql.execute(
                    f"CREATE TEMP TABLE activity_stage AS SELECT {', '.join(sql.quote(c) for c in columns)} "
                    f"FROM {sql.quote(spec.model._meta.db_table)} WHERE 1 = 0"
                )
                sql.execute("ALTER TABLE activity_stage ADD COLUMN row_number BIGINT")
                sql.bulk_insert("activity_stage", ("row_number", *columns), _read_rows(
                    path, spec=spec, kind=kind, source=source, encoding=encoding, batch_id=batch.pk, state=state,
                    known_currencies=known_currencies, progress=progress,
                ))
                if state.format_error is not None:
                    raise state.format_error
                sql.analyze("activity_stage")
                _reject_duplicates(spec, state)
                created, updated, unchanged = _count_and_upsert(spec)
                sql.drop_temp_table("activity_stage")
                RejectedRow.objects.bulk_create(
                    [RejectedRow(batch=batch, row_number=n, reason=reason, raw=raw) for n, reason, raw in state.rejected],
                    batch_size=5000,
                )
                FeedBatch.objects.filter(pk=batch.pk).update(
                    status=FeedBatch.Status.SUCCEEDED, rows_read=state.rows_read, rows_created=created,
                    rows_updated=updated, rows_unchanged=unchanged, rows_rejected=len(state.rejected),
                    warnings=dict(state.warnings), finished_at=timezone.now(),
                )
        except FeedFormatError as exc:
            FeedBatch.objects.filter(pk=batch.pk).update(
                status=FeedBatch.Status.FAILED, error=str(exc), finished_at=timezone.now())
        except Exception as exc:
            FeedBatch.objects.filter(pk=batch.pk).update(
                status=FeedBatch.Status.FAILED, error=f"load failed, nothing of it was kept: {exc!r}",
                finished_at=timezone.now())
            raise
        batch.refresh_from_db()
        return batch
    finally:
        _unlock(source, kind)


def activity_batch_profile_ids(*, batch: FeedBatch) -> list[int]:
    """Profiles whose activity a batch wrote (created or changed rows); FX rates touch every profile."""
    spec = KINDS[batch.kind]
    if not spec.per_customer:
        return list(CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE).values_list("pk", flat=True))
    rows = sql.fetch_all(
        f"SELECT DISTINCT r.profile_id FROM {sql.quote(spec.model._meta.db_table)} a "
        f"JOIN {sql.quote(SourceRecord._meta.db_table)} r ON r.source_id = a.source_id "
        f"AND r.customer_key = a.customer_key WHERE a.last_batch_id = %s AND r.profile_id IS NOT NULL",
        [batch.pk],
    )
    return [r[0] for r in rows]
