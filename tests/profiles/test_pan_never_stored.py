"""A full card number (PAN) is never stored anywhere in the database: not in source records, rejected rows,
batches, lineage or profiles. Only a keyed token, the BIN and the last 4 digits are kept.

test_feeds.py checks three tables for one number; this sweeps every table for every PAN of a realistic card
feed, in any spelling (groups of four, dashes, full-width digits), after loading and resolving.
"""
import csv
import json

import pytest
from django.db import connection

from profiles.feeds import feed_load
from profiles.models import PiiKeyState, RejectedRow, SourceRecord
from profiles.resolution import identity_resolve
from profiles.sample_data import CARD_FILE, CORE_FILE, generate_sample_feeds, luhn_valid
from tests.factories import customer

pytestmark = pytest.mark.django_db

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str(-total % 10)


def pans_found_in_database(pans: set[str]) -> dict[str, int]:
    """Per table, how many rows contain one of `pans` anywhere in any column: the whole row cast to text, with
    spaces and dashes removed and full-width digits folded, so that "6222 0212-3456 7894" is found too."""
    found = {}
    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE pan_probe (digits TEXT PRIMARY KEY)")
        cur.executemany("INSERT INTO pan_probe (digits) VALUES (%s)", [(p,) for p in sorted(pans)])
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        tables = [name for (name,) in cur.fetchall()]
        assert "profiles_sourcerecord" in tables and "profiles_rejectedrow" in tables
        for table in tables:
            cur.execute(
                f"WITH r AS MATERIALIZED (SELECT translate(regexp_replace(CAST(t AS TEXT), '[[:space:]-]', '', 'g'), "
                f"'０１２３４５６７８９', '0123456789') AS flat FROM {connection.ops.quote_name(table)} t) "
                f"SELECT COUNT(*) FROM r WHERE EXISTS (SELECT 1 FROM pan_probe p WHERE strpos(r.flat, p.digits) > 0)"
            )
            count = cur.fetchone()[0]
            if count:
                found[table] = count
        cur.execute("DROP TABLE pan_probe")
    return found


def test_no_full_card_number_anywhere_in_the_database_after_loading_and_resolving(write_feed, tmp_path):
    sample = tmp_path / "sample"
    generate_sample_feeds(out_dir=sample, customers=300, seed=5)
    with open(sample / CARD_FILE, encoding="utf-8") as fh:
        sample_pans = {row["pan"].replace(" ", "") for row in csv.DictReader(fh) if row["pan"]}
    assert len(sample_pans) > 100 and all(luhn_valid(p) for p in sample_pans)

    valid = [luhn_complete(f"62220212345678{i}") for i in range(6)]
    invalid = valid[0][:-1] + str((int(valid[0][-1]) + 1) % 10)
    hand_made = [
        customer("H1", full_name="周杰", gender="M", pan=valid[0], credit_limit="50000"),
        customer("H2", full_name="吴磊", pan=f"{valid[1][:4]} {valid[1][4:8]} {valid[1][8:12]} {valid[1][12:]}"),
        customer("H3", full_name="郑爽", pan=f"{valid[2][:4]}-{valid[2][4:8]}-{valid[2][8:12]}-{valid[2][12:]}"),
        customer("H4", full_name="冯绍峰", pan=valid[3].translate(FULL_WIDTH)),
        # rejected rows keep their raw data for review: with the PAN masked, whatever the reason
        customer("H5", full_name="马丽", pan=invalid),
        customer("H6", full_name="沈腾", gender="X", pan=valid[4]),
        customer("H7", full_name="贾玲", birth_date="1990-02-30", pan=valid[5].translate(FULL_WIDTH)),
        customer("H1", full_name="周杰 dup", pan=valid[5]),  # duplicate key
    ]
    assert feed_load(source="core", path=sample / CORE_FILE).status == "succeeded"
    card_batch = feed_load(source="card", path=sample / CARD_FILE)
    assert card_batch.status == "succeeded" and card_batch.rows_created > 100
    hand_batch = feed_load(source="card", path=write_feed(hand_made))
    assert (hand_batch.rows_created, hand_batch.rows_rejected) == (4, 4)
    jsonl = tmp_path / "cards.jsonl"
    jsonl.write_text(json.dumps({"customer_key": "J1", "full_name": "黄渤", "pan": int(valid[4])}) + "\n"
                     + json.dumps({"customer_key": "J2", "full_name": "徐峥", "pan": int(invalid)}) + "\n")
    json_batch = feed_load(source="card", path=jsonl)
    assert (json_batch.rows_created, json_batch.rows_rejected) == (1, 1)
    identity_resolve()

    pans = sample_pans | set(valid) | {invalid}
    assert pans_found_in_database(pans) == {}

    # what is kept: token, BIN and last 4, for valid numbers in any spelling
    for key, pan in (("H1", valid[0]), ("H2", valid[1]), ("H3", valid[2]), ("H4", valid[3]), ("J1", valid[4])):
        record = SourceRecord.objects.get(source__code="card", customer_key=key)
        assert (record.pan_bin, record.pan_last4) == (pan[:6], pan[-4:]), key
        assert record.pan_token and pan not in record.pan_token
    assert SourceRecord.objects.filter(source__code="card", pan_token__isnull=False).count() >= len(sample_pans)
    # rejected rows stay reviewable: the reason names the problem, the raw row shows BIN and last 4 only
    rejected = {r.row_number: r for r in RejectedRow.objects.filter(batch=hand_batch)}
    assert rejected[5].reason.startswith("pan") and rejected[5].raw["pan"] == invalid[:6] + "******" + invalid[-4:]
    assert rejected[6].reason.startswith("gender") and rejected[6].raw["pan"] == valid[4][:6] + "******" + valid[4][-4:]
    assert rejected[7].reason.startswith("birth_date") and rejected[7].raw["pan"].endswith(valid[5][-4:])
    assert rejected[8].reason.startswith("customer_key: duplicate")


def test_the_sweep_finds_a_stored_pan_in_any_spelling(write_feed):
    # guard against a sweep that can never fail: plant PANs where a careless loader might put them
    pan = luhn_complete("625807012345678")
    other = luhn_complete("411111111111111")
    feed_load(source="card", path=write_feed([customer("K1", full_name="刘涛")]))
    RejectedRow.objects.create(batch_id=SourceRecord.objects.get().last_batch_id, row_number=9, reason="x",
                               raw={"pan": f"{pan[:4]} {pan[4:8]}-{pan[8:12]} {pan[12:]}"})
    SourceRecord.objects.update(attributes={"note": other.translate(FULL_WIDTH)})
    assert pans_found_in_database({pan, other, luhn_complete("622202123456789")}) == {
        "profiles_rejectedrow": 1, "profiles_sourcerecord": 1}


def test_the_card_token_is_keyed_with_the_pii_key(write_feed, settings):
    pan = luhn_complete("622588123456789")

    def token(key: str, customer_key: str) -> str:
        if key != settings.CDP_PII_KEY:
            PiiKeyState.objects.all().delete()  # as a database of its own: loads refuse to mix two keys
        settings.CDP_PII_KEY = key
        batch = feed_load(source="card", path=write_feed([customer(customer_key, full_name="林心如", pan=pan)]))
        assert batch.rows_created == 1
        return SourceRecord.objects.get(customer_key=customer_key).pan_token

    first = token("pii-key-one", "K1")
    assert token("pii-key-one", "K2") == first  # one key: the same card always has the same token
    assert token("pii-key-two", "K3") != first  # another key: another token, so a token is useless without it
