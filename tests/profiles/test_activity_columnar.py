"""The vectorised activity parsers (profiles.activity_columnar) give exactly what the row parsers of
profiles.activity_kinds give: the same values, and the same rows rejected, on values built to hit every edge."""
import random
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from django.utils import timezone

from profiles.activity_columnar import parse_chunk
from profiles.activity_kinds import KINDS, text_field
from profiles.columnar import KeyedHasher
from profiles.normalize import RowRejected

KEY = ["C1", " C2 ", "", "Ｃ3", "c\u30004", "x" * 65]
AMOUNT = ["-100.00", "8,000.50", "12", "+5.5", "0.005", "-0", "ten", "", "1e5", "9999999999999999.99",
          "10000000000000000", "1.234", " 7.10 ", "１２"]
STAMP = ["2026-03-01T10:00:00", "2026-03-01 10:00:00", "2026-03-01", "2026-03-01T10:00:00+08:00",
         "2026-03-01T10:00:00Z", "2026-03-01T10:00:00-05:30", "2026-02-30T10:00:00", "2026-03-01T24:00:00",
         "2026-03-01T10:00", "2026-03-01T10:00:00.250", "1986-09-14T01:30:00", "1988-04-10T02:30:00", "", "now"]
DATE = ["2026-01-31", "2026-02-30", "20260131", " 2026-01-01 ", "", "2026/01/01", "0000-01-01"]
CURRENCY = ["CNY", "usd", " EUR ", "yuan", "", "ＵＳＤ"]
VALUES = {
    "accounts": {"customer_key": KEY, "account_key": ["A1", " A2 ", "", "a" * 65],
                 "product_type": ["savings", "CURRENT", "mortgage", "bond", ""], "currency": CURRENCY,
                 "balance": AMOUNT, "opened_at": DATE, "closed_at": DATE, "status": ["active", "Closed", "", "1x"],
                 "as_of": DATE},
    "transactions": {"customer_key": KEY, "txn_key": ["T1", "T2", " T3", "", "t" * 70], "account_key": ["A1", ""],
                     "occurred_at": STAMP, "amount": AMOUNT, "currency": CURRENCY,
                     "kind": ["payment", "Salary_Credit", "fee", "", "9x"],
                     "channel": ["app", "POS", "system", "pigeon", ""],
                     "counterparty_category": ["retail", "", "Dining", "x" * 33]},
    "card_transactions": {"customer_key": KEY, "txn_key": ["X1", ""],
                          "pan": ["4111111111111111", "4111 1111 1111 1111", "4111111111111112", "", " ", "411"],
                          "card_token": ["tok_1", "", "t" * 65], "occurred_at": STAMP, "amount": AMOUNT,
                          "currency": CURRENCY, "mcc": ["5812", "", "58", "abcd"],
                          "merchant_category": ["dining", "TRAVEL", ""], "channel": ["pos", "Online", "", "x" * 9],
                          "installment": ["", "0", "12", "yes", "N", "121", "abc"]},
    "holdings": {"customer_key": KEY, "holding_key": ["H1", ""], "product_code": ["F1", "", "p" * 33],
                 "product_type": ["fund", "Insurance", "crypto"], "market_value": AMOUNT, "currency": CURRENCY,
                 "as_of": DATE},
    "risk_assessments": {"customer_key": KEY, "risk_level": ["C3", "c5", "C6", "", " C1 "], "assessed_at": DATE,
                         "expires_at": DATE},
    "fx_rates": {"currency": CURRENCY, "rate_to_cny": ["7.1", "0", "-1", "7.123456789", "x", ""], "as_of": DATE},
}


def expected_values(kind: str, row: dict) -> tuple | None:
    spec = KINDS[kind]
    try:
        key = (text_field(row, "customer_key", max_len=64),) if spec.per_customer else ()
        return key + spec.parse(row)
    except RowRejected:
        return None


def comparable(value):
    if isinstance(value, datetime):
        return value.astimezone(dt_timezone.utc)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


@pytest.mark.parametrize("kind", list(VALUES))
def test_vectorised_parse_equals_the_row_parser(kind):
    rnd = random.Random(kind)
    values = VALUES[kind]
    base = {column: options[0] for column, options in values.items()}
    rows = [dict(base, **{column: value}) for column, options in values.items() for value in options]
    rows += [{column: rnd.choice(options) for column, options in values.items()} for _ in range(3000)]
    table = pa.table({"rn": pa.array(range(1, len(rows) + 1), pa.int64()),
                      **{column: pa.array([row[column] for row in rows], pa.string()) for column in values}})
    parsed = parse_chunk(kind, table, hasher=KeyedHasher(), time_zone=timezone.get_current_timezone_name())

    spec = KINDS[kind]
    names = (["customer_key"] if spec.per_customer else []) + list(spec.columns)
    columns = {name: (parsed.customer_key if name == "customer_key" else parsed.columns[name]).to_pylist()
               for name in names}
    rejected = set(parsed.rejected.tolist())
    accepted_by_both = 0
    for position, row in enumerate(rows):
        expected = expected_values(kind, row)
        if expected is None:
            assert position in rejected, row
            continue
        if position in rejected:  # the loader runs the row parser for these rows
            continue
        accepted_by_both += 1
        got = tuple(columns[name][position] for name in names)
        assert tuple(map(comparable, got)) == tuple(map(comparable, expected)), row
    assert accepted_by_both > 0
