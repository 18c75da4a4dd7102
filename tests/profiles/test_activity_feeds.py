"""Loading activity feeds: validation and rejects per kind, bad files, reloads, card-number tokenisation."""
import gzip
from decimal import Decimal

import pytest
from django.db import connection

from profiles.activity import activity_feed_load
from profiles.models import (
    Account, CardTransaction, FeedBatch, FxRate, Holding, RejectedRow, RiskAssessment, Transaction,
)
from profiles.normalize import keyed_hash

pytestmark = pytest.mark.django_db

VISA = "4111111111111111"  # Luhn-valid test number


def rejects(batch) -> dict[int, str]:
    return {r.row_number: r.reason for r in RejectedRow.objects.filter(batch=batch)}


def txn(key, **fields) -> dict:
    row = {"txn_key": key, "customer_key": "C1", "account_key": "A1", "occurred_at": "2026-03-01T10:00:00",
           "amount": "-100.00", "currency": "CNY", "kind": "payment", "channel": "app", "counterparty_category": ""}
    return {**row, **fields}


def test_transactions_load_while_bad_rows_are_rejected_with_row_number_and_reason(write_feed):
    rows = [
        txn("T1"), txn("T2", amount="8,000.50", kind="salary_credit", channel="system"),
        txn("T3", amount="ten"), txn("T4", occurred_at="2026-02-30"), txn("T5", currency="yuan"),
        txn("T6", channel="pigeon"), txn("T7", customer_key=""), txn("T1", amount="1"),
    ]
    batch = activity_feed_load(source="core", kind="transactions", path=write_feed(rows, header=list(txn("x"))))

    assert batch.status == FeedBatch.Status.SUCCEEDED
    assert batch.kind == "transactions"
    assert (batch.rows_read, batch.rows_created, batch.rows_rejected) == (8, 2, 6)
    reasons = rejects(batch)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert reasons[3].startswith("amount")
    assert reasons[4].startswith("occurred_at")
    assert reasons[5].startswith("currency")
    assert reasons[6].startswith("channel")
    assert reasons[7].startswith("customer_key")
    assert reasons[8] == "txn_key: duplicate of row 1"
    salary = Transaction.objects.get(txn_key="T2")
    assert salary.amount == Decimal("8000.50")
    assert salary.kind == "salary_credit"
    assert Transaction.objects.get(txn_key="T1").amount == Decimal("-100.00")


@pytest.mark.parametrize("first_load", [True, False], ids=["into an empty table", "into a loaded table"])
def test_of_a_key_repeated_in_one_file_the_first_row_loads(write_feed, first_load):
    header = list(txn("x"))
    if not first_load:
        activity_feed_load(source="core", kind="transactions", path=write_feed([txn("T0")], header=header))
    rows = [txn("T1", amount="8,000.50"), txn("T2"), txn("T1", amount="-1"), txn("T2", amount="-2")]
    batch = activity_feed_load(source="core", kind="transactions", path=write_feed(rows, header=header))

    assert (batch.rows_created, batch.rows_rejected) == (2, 2)
    assert rejects(batch) == {3: "txn_key: duplicate of row 1", 4: "txn_key: duplicate of row 2"}
    amounts = dict(Transaction.objects.values_list("txn_key", "amount"))
    assert amounts == {**({} if first_load else {"T0": Decimal("-100.00")}),
                       "T1": Decimal("8000.50"), "T2": Decimal("-100.00")}


def test_reloading_the_same_transactions_changes_nothing_and_a_changed_row_is_updated(write_feed):
    header = list(txn("x"))
    path = write_feed([txn("T1"), txn("T2")], header=header)
    activity_feed_load(source="core", kind="transactions", path=path)
    before = list(Transaction.objects.order_by("pk").values())

    again = activity_feed_load(source="core", kind="transactions", path=path)
    assert (again.rows_created, again.rows_updated, again.rows_unchanged) == (0, 0, 2)
    assert list(Transaction.objects.order_by("pk").values()) == before

    changed = activity_feed_load(source="core", kind="transactions",
                                 path=write_feed([txn("T1"), txn("T2", amount="-250")], header=header))
    assert (changed.rows_created, changed.rows_updated, changed.rows_unchanged) == (0, 1, 1)
    assert Transaction.objects.get(txn_key="T2").amount == Decimal("-250.00")
    assert Transaction.objects.get(txn_key="T2").last_batch_id == changed.pk
    assert Transaction.objects.get(txn_key="T1").last_batch_id != changed.pk


def test_a_file_that_is_not_the_feed_fails_and_changes_nothing(write_feed, tmp_path):
    activity_feed_load(source="core", kind="transactions", path=write_feed([txn("T1")], header=list(txn("x"))))
    wrong = write_feed([{"customer_key": "C1", "balance": "1"}], header=["customer_key", "balance"])
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\x00\x00\x00")

    for path in (wrong, binary):
        batch = activity_feed_load(source="core", kind="transactions", path=path)
        assert batch.status == FeedBatch.Status.FAILED
        assert batch.error
    assert "required column(s) txn_key" in FeedBatch.objects.get(file_name=wrong.name).error
    assert list(Transaction.objects.values_list("txn_key", flat=True)) == ["T1"]


@pytest.mark.parametrize("first_load", [True, False], ids=["into an empty table", "into a loaded table"])
def test_a_load_that_crashes_half_way_keeps_nothing(write_feed, monkeypatch, first_load):
    import profiles.activity as activity

    if not first_load:
        activity_feed_load(source="core", kind="transactions", path=write_feed([txn("T0")], header=list(txn("x"))))

    def broken(spec, state, target):
        raise RuntimeError("killed")

    # Every row is staged by then, and on a first load already written into the table with its indexes dropped.
    monkeypatch.setattr(activity, "_reject_duplicates", broken)
    with pytest.raises(RuntimeError):
        activity_feed_load(source="core", kind="transactions", path=write_feed([txn("T1")], header=list(txn("x"))))
    assert list(Transaction.objects.values_list("txn_key", flat=True)) == ([] if first_load else ["T0"])
    assert FeedBatch.objects.filter(kind="transactions").latest("pk").status == FeedBatch.Status.FAILED
    with connection.cursor() as cur:
        indexes = connection.introspection.get_constraints(cur, Transaction._meta.db_table)
    assert {"uniq_txn_key", "txn_customer_covering"} <= set(indexes)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="first loads lock tables on PostgreSQL only")
def test_a_first_load_into_a_table_someone_else_is_reading_takes_the_stage_instead_of_waiting(write_feed):
    # Two first loads of one table, each holding a read lock while waiting for the other's, would deadlock.
    import psycopg2

    settings_dict = connection.settings_dict
    reader = psycopg2.connect(dbname=settings_dict["NAME"], user=settings_dict["USER"],
                              host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432)
    try:
        with reader.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {Transaction._meta.db_table} LIMIT 1")  # holds its read lock until rollback
        batch = activity_feed_load(source="core", kind="transactions",
                                   path=write_feed([txn("T1"), txn("T1")], header=list(txn("x"))))
    finally:
        reader.rollback()
        reader.close()
    assert (batch.status, batch.rows_created, rejects(batch)) == (FeedBatch.Status.SUCCEEDED, 1,
                                                                  {2: "txn_key: duplicate of row 1"})


@pytest.mark.parametrize("first_load", [True, False], ids=["into an empty table", "into a loaded table"])
def test_a_transactions_file_arrow_gives_up_on_half_way_loads_as_read_feed_reads_it(tmp_path, monkeypatch, caplog,
                                                                                    write_feed, first_load):
    header = list(txn("x"))
    if not first_load:
        activity_feed_load(source="core", kind="transactions", path=write_feed([txn("T0")], header=header))
    # Small blocks: Arrow's reader has written earlier chunks (on a first load, into the table itself) when it meets
    # what only read_feed reads, a quoted value longer than a block and never closed.
    monkeypatch.setattr("profiles.feeds.ARROW_BLOCK_BYTES", 256)
    lines = [",".join(header)] + [",".join(txn(f"T{i}", amount=f"-{i}.00").values()) for i in range(1, 40)]
    lines += [",".join(txn("T1", amount="-99.00").values()), ",".join(txn("T40").values()) + '"never closed' + "x" * 300]
    path = tmp_path / "late_quirk.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with caplog.at_level("INFO", logger="profiles.feeds"):
        batch = activity_feed_load(source="core", kind="transactions", path=path)

    assert "read row by row" in caplog.text
    assert (batch.status, batch.rows_read, batch.rows_created) == (FeedBatch.Status.SUCCEEDED, 41, 39)
    reasons = rejects(batch)
    assert reasons.pop(40) == "txn_key: duplicate of row 1"
    assert list(reasons) == [41] and reasons[41].startswith("counterparty_category")
    amounts = dict(Transaction.objects.values_list("txn_key", "amount"))
    assert len(amounts) == 39 + (0 if first_load else 1)
    assert amounts["T1"] == Decimal("-1.00")


def test_accounts_validate_product_type_dates_and_balance(write_feed):
    header = ["account_key", "customer_key", "product_type", "currency", "balance", "opened_at", "closed_at",
              "status", "as_of"]
    good = dict(zip(header, ["A1", "C1", "savings", "cny", "1,000.005", "2020-01-01", "", "open", "2026-03-31"]))
    rows = [
        good,
        {**good, "account_key": "A2", "product_type": "crypto"},
        {**good, "account_key": "A3", "closed_at": "2019-01-01"},
        {**good, "account_key": "A4", "balance": ""},
        {**good, "account_key": "A5", "product_type": "Mortgage", "balance": "300000"},
    ]
    batch = activity_feed_load(source="core", kind="accounts", path=write_feed(rows, header=header))

    assert (batch.rows_created, batch.rows_rejected) == (2, 3)
    reasons = rejects(batch)
    assert reasons[2].startswith("product_type")
    assert reasons[3] == "closed_at: before opened_at"
    assert reasons[4] == "balance: missing"
    account = Account.objects.get(account_key="A1")
    assert (account.currency, account.balance, account.closed_at) == ("CNY", Decimal("1000.01"), None)
    assert Account.objects.get(account_key="A5").product_type == "mortgage"


def test_card_numbers_are_tokenised_and_never_stored(write_feed):
    header = ["txn_key", "customer_key", "pan", "card_token", "occurred_at", "amount", "currency", "mcc",
              "merchant_category", "channel", "installment"]
    base = {"customer_key": "K1", "occurred_at": "2026-03-01 12:00:00+08:00", "amount": "300", "currency": "CNY",
            "mcc": "5812", "merchant_category": "dining", "channel": "pos", "installment": ""}
    rows = [
        {**base, "txn_key": "X1", "pan": "4111 1111 1111 1111"},
        {**base, "txn_key": "X2", "card_token": "tok_abc", "installment": "12"},
        {**base, "txn_key": "X3", "pan": "4111111111111112"},
        {**base, "txn_key": "X4", "pan": VISA, "mcc": "58"},
        {**base, "txn_key": "X5", "card_token": ""},
    ]
    batch = activity_feed_load(source="card", kind="card_transactions", path=write_feed(rows, header=header))

    assert (batch.rows_created, batch.rows_rejected) == (2, 3)
    first = CardTransaction.objects.get(txn_key="X1")
    assert (first.card_token, first.pan_bin, first.pan_last4) == (keyed_hash(VISA, "pan"), "411111", "1111")
    assert CardTransaction.objects.get(txn_key="X2").installments == 12
    reasons = rejects(batch)
    assert reasons[3].startswith("pan: not a valid card number")
    assert reasons[4].startswith("mcc")
    assert reasons[5] == "card_token: missing"
    # The rejected row keeps the card number masked, and no stored value holds the full number.
    assert RejectedRow.objects.get(batch=batch, row_number=3).raw["pan"] == "411111******1112"
    stored = " ".join(str(v) for row in CardTransaction.objects.values() for v in row.values())
    stored += " ".join(str(r.raw) + r.reason for r in RejectedRow.objects.all())
    assert VISA not in stored and "4111111111111112" not in stored


def test_holdings_risk_assessments_and_fx_rates_validate(write_feed):
    holdings = activity_feed_load(source="wealth", kind="holdings", path=write_feed([
        {"holding_key": "H1", "customer_key": "W1", "product_code": "F001", "product_type": "fund",
         "market_value": "120000", "currency": "USD", "as_of": "2026-03-31"},
        {"holding_key": "H2", "customer_key": "W1", "product_code": "X", "product_type": "fund",
         "market_value": "-5", "currency": "CNY", "as_of": "2026-03-31"},
    ], header=["holding_key", "customer_key", "product_code", "product_type", "market_value", "currency", "as_of"]))
    risk = activity_feed_load(source="wealth", kind="risk_assessments", path=write_feed([
        {"customer_key": "W1", "risk_level": "c3", "assessed_at": "2025-06-01", "expires_at": "2026-06-01"},
        {"customer_key": "W1", "risk_level": "C9", "assessed_at": "2025-07-01", "expires_at": ""},
        {"customer_key": "W2", "risk_level": "C2", "assessed_at": "2025-07-01", "expires_at": "2025-01-01"},
    ], header=["customer_key", "risk_level", "assessed_at", "expires_at"]))
    fx = activity_feed_load(source="core", kind="fx_rates", path=write_feed([
        {"currency": "USD", "rate_to_cny": "7.1", "as_of": "2026-03-31"},
        {"currency": "EUR", "rate_to_cny": "0", "as_of": "2026-03-31"},
        {"currency": "USD", "rate_to_cny": "7.0", "as_of": "2026-03-31"},
    ], header=["currency", "rate_to_cny", "as_of"]))

    assert (holdings.rows_created, rejects(holdings)) == (1, {2: "market_value: must be >= 0 ('-5')"})
    assert holdings.warnings == {"currency_without_fx_rate": 1}  # the USD rate arrives after the holding
    assert Holding.objects.get().market_value == Decimal("120000.00")
    assert RiskAssessment.objects.get().risk_level == "C3"
    assert set(rejects(risk)) == {2, 3}
    assert rejects(risk)[3] == "expires_at: before assessed_at"
    assert rejects(fx) == {2: "rate_to_cny: must be > 0 ('0')", 3: "as_of: duplicate of row 1"}
    assert FxRate.objects.get().rate_to_cny == Decimal("7.10000000")


def test_amounts_in_a_currency_without_any_fx_rate_are_counted_as_a_warning(write_feed):
    batch = activity_feed_load(source="core", kind="transactions",
                               path=write_feed([txn("T1", currency="GBP"), txn("T2")], header=list(txn("x"))))
    assert batch.rows_created == 2
    assert batch.warnings == {"currency_without_fx_rate": 1}


def test_gzipped_jsonl_feeds_and_source_column_mappings_are_read(tmp_path, write_feed):
    path = tmp_path / "txns.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write('{"txn_key": "J1", "CUST_NO": "C9", "account_key": "A", "occurred_at": "2026-01-01T00:00:00", '
                 '"amount": "5", "currency": "CNY", "kind": "interest", "channel": "system"}\n')
    batch = activity_feed_load(source="core", kind="transactions", path=path)
    assert batch.rows_created == 1
    assert Transaction.objects.get().customer_key == "C9"


def test_unknown_kind_is_refused(write_feed):
    with pytest.raises(ValueError):
        activity_feed_load(source="core", kind="loyalty", path=write_feed([txn("T1")]))
