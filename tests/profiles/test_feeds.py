"""Loading customer feeds: rejects with reasons, bad files, reloads, mapping, encodings, card numbers."""
import gzip
import json
from datetime import date

import pytest
from django.db import connection

from profiles import feeds
from profiles.feeds import feed_load
from profiles.models import FeedBatch, RejectedRow, Source, SourceRecord
from tests.factories import cn_resident_id, customer

pytestmark = pytest.mark.django_db

GOOD = [
    customer("C1", full_name="张伟", gender="M", birth_date="1990-01-01", id_type="CN_RESIDENT",
             id_number=cn_resident_id(date(1990, 1, 1)), phone="138 2468 1357", email="Zhang.Wei@Example.com"),
    customer("C2", full_name="李娜", gender="F", birth_date="1985-06-30", phone="13912345678"),
    customer("C3", full_name="王芳", gender="F", birth_date="1979-12-31"),
]


def test_good_rows_load_while_bad_rows_are_rejected_with_row_number_and_reason(write_feed):
    rows = GOOD + [customer("", full_name="无键"), customer("C5", birth_date="1990-02-30"), customer("C6", gender="X")]
    batch = feed_load(source="core", path=write_feed(rows))

    assert batch.status == FeedBatch.Status.SUCCEEDED
    assert (batch.rows_read, batch.rows_created, batch.rows_rejected) == (6, 3, 3)
    rejected = {r.row_number: r.reason for r in RejectedRow.objects.filter(batch=batch)}
    assert set(rejected) == {4, 5, 6}
    assert rejected[4].startswith("customer_key")
    assert rejected[5].startswith("birth_date")
    assert rejected[6].startswith("gender")
    assert set(SourceRecord.objects.values_list("customer_key", flat=True)) == {"C1", "C2", "C3"}


def test_loaded_record_is_normalised(write_feed):
    feed_load(source="core", path=write_feed(GOOD))
    record = SourceRecord.objects.get(customer_key="C1")
    assert record.phone == "+8613824681357"
    assert record.email == "zhang.wei@example.com"
    assert record.id_valid is True
    assert record.id_number_masked == "110***********" + cn_resident_id(date(1990, 1, 1))[-4:]
    assert record.cif_ref == "C1"  # core is the CIF authority


def test_reloading_the_same_file_changes_nothing(write_feed):
    path = write_feed(GOOD)
    feed_load(source="core", path=path)
    before = list(SourceRecord.objects.order_by("pk").values())

    batch = feed_load(source="core", path=path)

    assert (batch.rows_unchanged, batch.rows_created, batch.rows_updated) == (3, 0, 0)
    after = list(SourceRecord.objects.order_by("pk").values())
    assert after == before


def test_a_changed_row_is_updated_and_others_stay_unchanged(write_feed):
    feed_load(source="core", path=write_feed(GOOD))
    changed = [dict(GOOD[0], phone="13700000001")] + GOOD[1:]
    batch = feed_load(source="core", path=write_feed(changed))
    assert (batch.rows_updated, batch.rows_unchanged) == (1, 2)
    record = SourceRecord.objects.get(customer_key="C1")
    assert record.phone == "+8613700000001"
    assert record.last_batch_id == batch.pk and record.first_batch_id != batch.pk


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("name,phone\n张伟,138\n".encode(), "customer_key is missing"),
    (b"", "empty"),
])
def test_a_file_that_is_not_a_feed_fails_clearly_and_changes_nothing(tmp_path, write_feed, content, message):
    feed_load(source="core", path=write_feed(GOOD))
    before = list(SourceRecord.objects.order_by("pk").values())
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    batch = feed_load(source="core", path=path)

    assert batch.status == FeedBatch.Status.FAILED
    assert message in batch.error
    assert list(SourceRecord.objects.order_by("pk").values()) == before


def test_undecodable_bytes_after_good_rows_fail_the_whole_file(tmp_path):
    lines = ["customer_key,full_name"] + [f"K{i},name {i}" for i in range(2000)]
    path = tmp_path / "broken.csv"
    path.write_bytes("\n".join(lines).encode() + b"\nK9999,\xff\xfe broken\n")

    batch = feed_load(source="core", path=path)

    assert batch.status == FeedBatch.Status.FAILED
    assert "cannot decode" in batch.error
    assert SourceRecord.objects.count() == 0


def test_source_column_mapping_renames_headers_without_code(tmp_path):
    path = tmp_path / "core_export.csv"
    path.write_text("CUST_NO,full_name,birth_date\nX1,赵敏,1992-03-04\n", encoding="utf-8")
    batch = feed_load(source="core", path=path)
    assert batch.rows_created == 1
    assert SourceRecord.objects.get().customer_key == "X1"

    Source.objects.filter(code="wealth").update(column_mapping={"KHH": "customer_key", "XM": "full_name"})
    path = tmp_path / "wealth_export.csv"
    path.write_text("KHH,XM\nW1,钱七\n", encoding="utf-8")
    feed_load(source="wealth", path=path)
    assert SourceRecord.objects.get(customer_key="W1").full_name == "钱七"


def test_gb18030_bom_utf8_jsonl_and_gzip_feeds_load(tmp_path, write_feed):
    gb = write_feed([customer("G1", full_name="孙悟空")], encoding="gb18030")
    assert feed_load(source="core", path=gb, encoding="gb18030").rows_created == 1
    bom = write_feed([customer("B1", full_name="猪八戒")], encoding="utf-8-sig")
    assert feed_load(source="core", path=bom).rows_created == 1
    jsonl = tmp_path / "wealth.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"customer_key": "J1", "full_name": "沙僧", "risk_level": "c3"}, ensure_ascii=False) + "\n")
        fh.write("{not json\n")
    batch = feed_load(source="wealth", path=jsonl)
    assert (batch.rows_created, batch.rows_rejected) == (1, 1)
    assert SourceRecord.objects.get(customer_key="J1").attributes == {"risk_level": "C3"}
    assert set(SourceRecord.objects.values_list("full_name", flat=True)) == {"孙悟空", "猪八戒", "沙僧"}


def test_duplicate_key_in_one_file_is_rejected_with_the_first_row(write_feed):
    rows = [GOOD[0], customer("", full_name="无键"), GOOD[1], dict(GOOD[0], full_name="other"), customer("", full_name="无键")]
    batch = feed_load(source="core", path=write_feed(rows))
    rejected = {r.row_number: r.reason for r in RejectedRow.objects.filter(batch=batch)}
    assert rejected[4] == "customer_key: duplicate of row 1"
    # Rows without a key are rejected for the missing key, not as duplicates of each other.
    assert rejected[2].startswith("customer_key") and rejected[2] == rejected[5] != rejected[4]
    assert (batch.rows_created, batch.rows_rejected) == (2, 3)


def _luhn_pan(prefix: str) -> str:
    digits = [int(d) for d in prefix]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return prefix + str((10 - total % 10) % 10)


def name(i: int, family: str = "Wang") -> str:
    """A distinct real-looking name per i (no digits: "name 4" would be a placeholder)."""
    return f"{family} {chr(97 + i % 26)}{chr(97 + i // 26)}"


def test_a_file_read_in_many_chunks_loads_like_one_chunk(write_feed, monkeypatch):
    # Small blocks: chunks are normalised in a worker while later ones are read; counts, row numbers and values
    # must come out as for one chunk, duplicates and changes spanning chunks included.
    monkeypatch.setattr("profiles.feeds.ARROW_BLOCK_BYTES", 256)
    first = [customer(f"K{i}", full_name=name(i), phone=f"1391234{i:04d}") for i in range(200)]
    feed_load(source="core", path=write_feed(first))
    second = [customer(f"K{i}", full_name=name(i, "Li" if i % 3 == 0 else "Wang"), phone=f"1391234{i:04d}")
              for i in range(250)]
    second[120] = customer("K120", full_name="Bad Date", birth_date="1990-13-01")
    second.append(customer("K7", full_name="Wang Again"))

    batch = feed_load(source="core", path=write_feed(second))

    assert batch.status == FeedBatch.Status.SUCCEEDED
    changed = sum(1 for i in range(200) if i % 3 == 0 and i != 120)
    assert (batch.rows_read, batch.rows_created, batch.rows_updated, batch.rows_rejected) == (251, 50, changed, 2)
    assert batch.rows_unchanged == 251 - 50 - changed - 2
    rejected = {r.row_number: r.reason for r in RejectedRow.objects.filter(batch=batch)}
    assert rejected[121].startswith("birth_date")
    assert rejected[251] == "customer_key: duplicate of row 8"
    names = dict(SourceRecord.objects.values_list("customer_key", "full_name"))
    assert names == {f"K{i}": name(i, "Li" if i % 3 == 0 and i != 120 else "Wang") for i in range(250)}
    assert SourceRecord.objects.get(customer_key="K249").phone == "+8613912340249"
    again = feed_load(source="core", path=write_feed(second))
    assert (again.rows_unchanged, again.rows_rejected) == (249, 2)  # each record kept its own row's digest


@pytest.mark.skipif(connection.vendor != "postgresql", reason="elsewhere a load always compares every digest")
def test_a_small_delta_looks_up_its_keys_and_counts_as_a_full_comparison_would(write_feed, monkeypatch):
    feed_load(source="core", path=write_feed([customer(f"K{i}", full_name=name(i)) for i in range(400)]))
    looked_up = []
    original = feeds._existing_digests

    def spied(source, keys=None):
        looked_up.append(keys)
        return original(source, keys)

    monkeypatch.setattr(feeds, "_existing_digests", spied)
    delta = [customer("K1", full_name=name(1)), customer("K2", full_name="Li Changed"),
             customer("N1", full_name="Zhao New"), customer("K1", full_name="Wang Again")]

    batch = feed_load(source="core", path=write_feed(delta))

    assert looked_up == [["K1", "K2", "N1", "K1"]]  # the file's keys, not the 400 records'
    assert (batch.rows_read, batch.rows_created, batch.rows_updated, batch.rows_unchanged, batch.rows_rejected) == (
        4, 1, 1, 1, 1)
    assert RejectedRow.objects.get(batch=batch).reason == "customer_key: duplicate of row 1"
    assert SourceRecord.objects.get(customer_key="K2").full_name == "Li Changed"
    assert SourceRecord.objects.count() == 401


def test_rows_after_an_unreadable_row_in_an_earlier_chunk_keep_their_row_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr("profiles.feeds.ARROW_BLOCK_BYTES", 256)
    lines = (["customer_key,full_name"] + [f"K{i},{name(i)}" for i in range(100)] + ["K_SHORT"]
             + [f"K{i},{name(i)}" for i in range(100, 180)] + ["K5,Wang Again"]
             + [f"K{i},{name(i)}" for i in range(180, 200)])
    path = tmp_path / "short_row.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    batch = feed_load(source="core", path=path)

    assert (batch.rows_read, batch.rows_created, batch.rows_rejected) == (202, 200, 2)
    assert dict(RejectedRow.objects.filter(batch=batch).values_list("row_number", "reason")) == {
        101: "expected 2 columns, found 1", 182: "customer_key: duplicate of row 6"}


def test_a_delta_that_arrow_gives_up_on_half_way_loads_every_new_row(write_feed, tmp_path, monkeypatch):
    # The delta looks its keys up chunk by chunk; by the time Arrow gives up, an early new row is written and
    # found by the lookup of its later duplicate. The restart deletes it: it must be written again.
    feed_load(source="core", path=write_feed([customer(f"K{i}", full_name=name(i)) for i in range(400)]))
    monkeypatch.setattr("profiles.feeds.ARROW_BLOCK_BYTES", 64)
    lines = ["customer_key,full_name"] + [f"N{i},{name(i, 'Zhao')}" for i in range(20)] + ["N0,Zhao Again"]
    path = tmp_path / "late_quirk_delta.csv"
    path.write_text("\n".join(lines + ['N20,"never closed' + "x" * 180]) + "\n", encoding="utf-8")

    batch = feed_load(source="core", path=path)

    assert (batch.rows_read, batch.rows_created, batch.rows_rejected) == (22, 21, 1)
    assert SourceRecord.objects.get(customer_key="N0").full_name == name(0, "Zhao")
    assert SourceRecord.objects.filter(customer_key__startswith="N").count() == 21


def test_full_card_number_is_never_stored(write_feed):
    pan = _luhn_pan("622202123456789")
    bad_pan = pan[:-1] + str((int(pan[-1]) + 1) % 10)
    rows = [customer("H1", full_name="周杰", pan=pan, credit_limit="50000"),
            customer("H2", full_name="吴磊", pan=bad_pan)]
    batch = feed_load(source="card", path=write_feed(rows))

    record = SourceRecord.objects.get(customer_key="H1")
    assert (record.pan_bin, record.pan_last4) == (pan[:6], pan[-4:])
    assert record.pan_token and pan not in record.pan_token
    rejected = RejectedRow.objects.get(batch=batch)
    assert rejected.reason.startswith("pan")
    with connection.cursor() as cur:
        for table in ("profiles_sourcerecord", "profiles_rejectedrow", "profiles_feedbatch"):
            cur.execute(f"SELECT * FROM {table}")
            dump = repr(cur.fetchall())
            assert pan not in dump and bad_pan not in dump, table


def test_a_file_arrow_gives_up_on_half_way_loads_as_read_feed_reads_it(tmp_path, monkeypatch, caplog):
    # Small blocks: Arrow's reader has written earlier chunks when it meets what only read_feed reads (a quoted
    # value longer than a block, never closed: Python's csv module ends it at the end of the file).
    monkeypatch.setattr("profiles.feeds.ARROW_BLOCK_BYTES", 64)
    lines = ["customer_key,full_name"] + [f"K{i},name {i}" for i in range(300)] + ['K300,"never closed' + "x" * 180]
    path = tmp_path / "late_quirk.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with caplog.at_level("INFO", logger="profiles.feeds"):
        batch = feed_load(source="core", path=path)

    assert "read row by row" in caplog.text
    assert batch.status == FeedBatch.Status.SUCCEEDED
    assert (batch.rows_read, batch.rows_created, batch.rows_rejected) == (301, 301, 0)
    assert SourceRecord.objects.count() == 301
    assert SourceRecord.objects.get(customer_key="K300").full_name == "never closed" + "x" * 180
