"""The vectorised loader path (profiles.columnar, Arrow's CSV reader) gives exactly what the row-by-row definition
(normalize_customer_row, read_feed) gives: the same values, warnings and rejected rows, on sample feeds and on rows
built to hit every edge of every column."""
import csv
import json
import random
from collections import Counter
from datetime import date, datetime
from datetime import timezone as dt_timezone

import pyarrow as pa
import pytest
from django.utils import timezone

from profiles import columnar
from profiles.feeds import (
    FastReadUnavailable, _arrow_chunks, _canonical_header, _csv_header, _python_chunks, row_digest, row_digests,
)
from profiles.normalize import RowRejected, normalize_customer_row
from profiles.sample_data import CARD_FILE, CORE_FILE, WEALTH_FILE, generate_sample_feeds
from tests.factories import cn_resident_id

VALUES = {
    "customer_key": ["C1", " C2 ", "", "   ", "Ｃ3", "K\u30004", "x" * 65, "键5", "\x1c6\x1c"],
    "full_name": ["张伟", " 张  伟 ", "Zhang Wei", "ZHANG  WEI", "ｚｈａｎｇ", "test", "测试", "Test1", "123", "na",
                  "欧阳娜娜", "O'Brien", "José", "\u00a0李娜\u00a0", "Straße", "x" * 201, "", "N/A", "王·伟"],
    "family_name": ["张", "ZHANG", "", "null", "欧阳", " 李 ", "Ｗａｎｇ"],
    "given_name": ["伟", "WEI", "", "客户", "Na", "晓 明"],
    "gender": ["M", "f", " male ", "女", "Ｍ", "U", "", "x", "未知", "男性", "null"],
    "birth_date": ["1980-01-01", "19900215", " 1975-12-31 ", "1980-02-30", "1899-12-31", "2999-01-01",
                   "1980-1-1", "１９８０-０１-０１", "", "01/02/1980", "0000-01-01"],
    "id_type": ["CN_RESIDENT", "passport", "OTHER", "", " cn_resident ", "DRIVING", "null", "Ｐａｓｓｐｏｒｔ"],
    "id_number": [cn_resident_id(date(1980, 1, 1)), cn_resident_id(date(1990, 5, 6))[:17] + "0",
                  cn_resident_id(date(1985, 3, 3)).lower(), "E12345678", "AB-123 456", "123456789012345678",
                  "000000000000000000", "11111111111111111X", "null", "", "  ", "１１０１０５１９８００１０１１２３４",
                  "A" * 41, "X1", "12345", "9876543210", "ID 4455 6677", "110105300001011234",
                  # 15-digit first-generation ids: a real date (also 29 February 1984), impossible dates
                  "110105800101123", "110105840229123", "110105830229123", "110105801301123", "110105800100123",
                  "11010580010112X"],
    "phone": ["13812345678", "+86 138 2468 1357", "0086-139-1234-5679", "86 13722223333", "138-0013-8000",
              "13800000000", "13911111111", "010-12345678", "+1 415 555 0123", "12345", "", " ",
              "１３８２４６８１３５７", "null", "+86 138 1111 1111", "6588 1234", "\u00a013812345670"],
    "email": ["Zhang.Wei@Example.com", " li@qq.com ", "test@test.com", "noreply@bank.cn", "aaa@qq.com", "a@b@c.com",
              "bad-email", "x@y", "", "null", "ZHANG@１６３.com", "名@例子.中国", "two words@x.com", "x" * 250 + "@y.com"],
    "address": ["上海市浦东新区世纪大道100号", " 北京市  朝阳区 ", "null", "", "-", "Room 5, 88 Nanjing Road",
                "广州\u3000天河", "x" * 301, "ＡＢＣ大街1号"],
    "city": ["上海市", "北京", "", "unknown", " 深圳 "],
    "postcode": ["200120", "100 020", "000000", "", "ABC", "１２３４５６", "12345678901"],
    "core_cif": ["1000012345", " 1000012346 ", "", "NULL", "x" * 65, "CIF-7"],
    "updated_at": ["2024-05-06T07:08:09", "2024-05-06 07:08:09", "2024-05-06", "2024-05-06T07:08:09+08:00",
                   "2024-05-06T07:08:09Z", "2024-05-06T07:08", "2024-05-06T07:08:09.123", "2024-02-30T00:00:00",
                   "2024-05-06T24:00:00", "0000-05-06T07:08:09", "yesterday", "", "1988-04-10T02:30:00", "1986-09-14T01:30:00"],
    "pan": ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111112", "411111", "",
            "６２２２０２１２３４５６７８９０１２", "5555555555554444", "  "],
    "card_token": ["tok_1", "", "t" * 65],
    "pan_bin": ["411111", "41111111", "", "4111", "abcdef"],
    "pan_last4": ["1111", "", "111", "abcd"],
    "credit_limit": ["50000", "1,000", "1,234.565", "-5", "null", "abc", "", "0", "9" * 30, "12.345"],
    "card_status": ["active", "CLOSED", "", "-", "ａｃｔｉｖｅ"],
    "risk_level": ["C3", "c5", "Ｃ2", "C6", "", "null"],
    "risk_assessed_at": ["2024-01-02", "20240102", "2024-13-01", "", "n/a"],
    "branch_note": ['VIP "gold"', "back\\slash", "", "  x  ", "多行\u3000备注", "ctl\x1fx"],
}


def _random_rows(count: int, seed: int) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    return [{column: rnd.choice(values) for column, values in VALUES.items()} for _ in range(count)]


def _chunk(rows: list[dict[str, str]], columns: list[str]) -> pa.Table:
    data = {"rn": pa.array(range(1, len(rows) + 1), pa.int64())}
    for name in columns:
        data[name] = pa.array([row.get(name, "") for row in rows], pa.string())
    return pa.table(data)


def assert_same_as_row_by_row(rows: list[dict[str, str]], columns: list[str]) -> int:
    """Compare both paths row by row; returns how many rows the vectorised path took without the fallback."""
    result = columnar.normalise_chunk(_chunk(rows, columns), hasher=columnar.KeyedHasher(), today=date.today(),
                                      time_zone=timezone.get_current_timezone_name())
    vectorised = result.table.to_pylist()
    rejected = set(result.rejected.tolist())
    expected_warnings = Counter()
    for position, row in enumerate(rows):
        try:
            expected = normalize_customer_row(row)
        except RowRejected:
            assert position in rejected, f"row {row} is rejected row by row"
            continue
        if position in rejected:  # the fallback runs normalize_customer_row itself
            continue
        expected_warnings.update(expected["warnings"])
        got = vectorised[position]
        for name in got:
            want = expected[name]
            if name == "attributes":
                want = json.dumps(want, ensure_ascii=False, sort_keys=True)
            elif isinstance(want, datetime):  # instants (aware datetimes of two zones compare unequal when ambiguous)
                want = want.astimezone(dt_timezone.utc)
            assert got[name] == want, (name, row)
    # Warnings of the rows both paths accepted.
    both = Counter(result.warnings)
    assert +both == +expected_warnings
    return len(rows) - len(rejected)


def test_edge_values_of_every_column_give_what_the_row_function_gives():
    rows = _random_rows(4000, seed=3)
    assert_same_as_row_by_row(rows, list(VALUES))


def test_each_edge_value_alone():
    base = {column: values[0] for column, values in VALUES.items()}
    rows = [dict(base, **{column: value}) for column, values in VALUES.items() for value in values]
    assert_same_as_row_by_row(rows, list(VALUES))


@pytest.mark.parametrize("name", [CORE_FILE, CARD_FILE, WEALTH_FILE])
def test_sample_feeds_are_normalised_alike_and_almost_all_without_the_fallback(tmp_path, name):
    generate_sample_feeds(out_dir=tmp_path, customers=2000, seed=5)
    with open(tmp_path / name, encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = _canonical_header(next(reader), {"CUST_NO": "customer_key"})
        rows = [dict(zip(header, values)) for values in reader]
    vectorised = assert_same_as_row_by_row(rows, header)
    assert vectorised / len(rows) > 0.99


CSV_CASES = [
    'customer_key,full_name\nK1,"a, b"\nK2,"multi\nline"\n\nK3,"say ""hi"""\n',
    "customer_key,full_name\nK1,x\nK2\nK3,y,z\n   \nK4,w",
    'customer_key,full_name\r\nK1,x\r\nK2,"unterminated\r\n',
    "\ufeffcustomer_key,full_name\nK1,张伟\n",
    'customer_key,full_name\nK1,a"b\nK2,"q"r\n',
]


@pytest.mark.parametrize("text", CSV_CASES)
def test_arrow_reader_reads_rows_as_read_feed_reads_them(tmp_path, text):
    path = tmp_path / "feed.csv"
    path.write_text(text, encoding="utf-8", newline="")
    raw_header = _csv_header(path, "utf-8-sig")
    assert raw_header is not None
    header = _canonical_header(raw_header, {})

    def rows_of(chunks):
        rows, unreadable = [], []
        for chunk in chunks:
            rows += chunk.table.to_pylist()
            unreadable += chunk.unreadable
        return sorted(rows, key=lambda r: r["rn"]), sorted(unreadable)

    expected = rows_of(_python_chunks(path, mapping={}, encoding="utf-8-sig"))
    try:
        actual = rows_of(_arrow_chunks(path, raw_header=raw_header, header=header, encoding="utf-8-sig"))
    except FastReadUnavailable:  # the loader then reads the file with read_feed: the same result by construction
        return
    assert actual == expected


def test_chunk_digests_are_the_row_digests():
    rows = _random_rows(2000, seed=8)
    chunk = _chunk(rows, list(VALUES))
    assert row_digests(chunk, columnar.KeyedHasher()).to_pylist() == [row_digest(row) for row in rows]
