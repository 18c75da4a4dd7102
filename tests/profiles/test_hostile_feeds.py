"""Hostile feeds and what a load keeps at rest: upload bombs, over-long lines, floods of rejects, rejected rows with
personal data, server file paths, and match rules naming an unknown identifier.

Given a file or rule crafted as an attacker (or a slip of the keyboard) would make it, when it is loaded, saved or
used, then it fails with a clear reason or is bounded, and nothing clear or server-side leaks into what is kept.
"""
import datetime as dt
import gzip
import importlib
import json

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from api.keys import api_key_create

from profiles.activity import activity_feed_load
from profiles.feeds import feed_load
from profiles.models import FeedBatch, MatchRule, RejectedRow, Source, SourceRecord, Transaction
from profiles import resolution
from tests.factories import cn_resident_id, customer

pytestmark = pytest.mark.django_db

HEADER = "customer_key,full_name,gender,birth_date,phone\n"
TXN_HEADER = "customer_key,txn_key,account_key,occurred_at,amount,currency,kind,channel\n"


def _txn(key: str, amount="-100.00") -> str:
    return f"C1,{key},A1,2026-03-01T10:00:00,{amount},CNY,payment,app\n"
PERSON = dict(full_name="张晓明", gender="X", birth_date="1980-03-04", id_type="CN_RESIDENT",
              id_number=cn_resident_id(dt.date(1980, 3, 4)), phone="13912875634",
              email="zhang.xiaoming@example.com", address="上海市浦东新区世纪大道100号")
CLEAR_VALUES = ["张晓明", "晓明", "13912875634", "2875634", "zhang.xiaoming", "世纪大道100号", "1980-03-04",
                PERSON["id_number"], PERSON["id_number"][6:14]]


def _api_client(*scopes: str) -> APIClient:
    _, key = api_key_create(name="hostile-feeds", scopes=list(scopes), expires_in_days=None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _gzip_file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    return path


# Finding 10: upload bombs.

def test_a_gzip_that_decompresses_past_the_limit_fails_its_batch_and_loads_nothing(tmp_path, settings):
    settings.CDP_FEED_MAX_BYTES = 1_000_000
    bomb = _gzip_file(tmp_path, "core.csv.gz", HEADER + "C1,张伟,M,1980-01-01,13912875634\n" * 100_000)

    batch = feed_load(source="core", path=bomb)

    assert batch.status == FeedBatch.Status.FAILED
    assert "1000000 bytes" in batch.error and "CDP_FEED_MAX_BYTES" in batch.error
    assert not SourceRecord.objects.exists() and not RejectedRow.objects.exists()


def test_a_gzipped_activity_feed_past_the_limit_fails_too(tmp_path, settings):
    settings.CDP_FEED_MAX_BYTES = 1_000_000
    bomb = _gzip_file(tmp_path, "txn.csv.gz", TXN_HEADER + _txn("T1") * 50_000)

    batch = activity_feed_load(source="core", kind="transactions", path=bomb)

    assert batch.status == FeedBatch.Status.FAILED and "CDP_FEED_MAX_BYTES" in batch.error
    assert not Transaction.objects.exists()


def test_a_plain_file_past_the_limit_fails_before_it_is_read(write_feed, settings):
    settings.CDP_FEED_MAX_BYTES = 1000
    path = write_feed([customer(f"C{i}", full_name="张伟") for i in range(200)])

    batch = feed_load(source="core", path=path)

    assert batch.status == FeedBatch.Status.FAILED and "CDP_FEED_MAX_BYTES" in batch.error


@pytest.mark.parametrize("name", ["core.jsonl", "core.csv"])
def test_a_line_longer_than_the_limit_fails_the_file_naming_the_limit(tmp_path, settings, name):
    settings.CDP_FEED_MAX_LINE_CHARS = 10_000
    long_value = "长" * 50_000
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text(json.dumps({"customer_key": "C1"}) + "\n" + json.dumps({"customer_key": long_value}) + "\n")
    else:
        path.write_text(HEADER + f'C1,"{long_value}",M,1980-01-01,13912875634\n')

    batch = feed_load(source="core", path=path)

    assert batch.status == FeedBatch.Status.FAILED
    assert "longer than 10000 characters" in batch.error and "CDP_FEED_MAX_LINE_CHARS" in batch.error
    assert not SourceRecord.objects.exists()


def test_a_flood_of_rejected_rows_is_counted_but_only_the_first_are_stored(tmp_path, settings):
    settings.CDP_FEED_MAX_STORED_REJECTS = 10
    flood = _gzip_file(tmp_path, "core.csv.gz", HEADER + "C1,张伟,M,1980-01-01,13912875634\n" * 5_000)

    batch = feed_load(source="core", path=flood)

    assert batch.status == FeedBatch.Status.SUCCEEDED
    assert (batch.rows_read, batch.rows_created, batch.rows_rejected) == (5_000, 1, 4_999)
    assert list(batch.rejected_rows.values_list("row_number", flat=True)) == list(range(2, 12))


def test_an_activity_flood_of_duplicates_is_counted_but_only_the_first_are_stored(tmp_path, settings):
    settings.CDP_FEED_MAX_STORED_REJECTS = 5
    path = tmp_path / "txn.csv"
    path.write_text(TXN_HEADER + _txn("T1") * 300 + _txn("T2", amount="x") * 3)

    batch = activity_feed_load(source="core", kind="transactions", path=path)

    assert batch.status == FeedBatch.Status.SUCCEEDED, batch.error
    assert batch.rows_rejected == 302 and batch.rejected_rows.count() == 5


def test_a_json_line_nested_thousands_deep_is_a_rejected_row_not_a_crash(tmp_path):
    path = tmp_path / "core.jsonl"
    path.write_text(json.dumps({"customer_key": "C1", "full_name": "张伟"}) + "\n"
                    + '{"customer_key": ' + "[" * 100_000 + "]" * 100_000 + "}\n")

    batch = feed_load(source="core", path=path)

    assert batch.status == FeedBatch.Status.SUCCEEDED
    assert (batch.rows_created, batch.rows_rejected) == (1, 1)
    assert "nested too deep" in batch.rejected_rows.get().reason


# Build 4: rejected rows at rest hold no clear personal value.

def test_a_rejected_row_is_stored_with_its_personal_fields_masked(write_feed, admin_client):
    batch = feed_load(source="core", path=write_feed([customer("C1", **PERSON), customer("C2", full_name="李娜")]))
    assert batch.rows_rejected == 1  # gender X

    stored = json.dumps(batch.rejected_rows.get().raw, ensure_ascii=False)
    listed = _api_client("jobs:read").get(f"/api/v1/feeds/batches/{batch.pk}/rejects/").content.decode()
    admin_page = admin_client.get(f"/admin/profiles/feedbatch/{batch.pk}/change/").content.decode()

    for shown in (stored, listed, admin_page):
        assert "C1" in shown or "row_number" in shown
        assert not [value for value in CLEAR_VALUES if value in shown], shown[:2000]
    raw = batch.rejected_rows.get().raw
    assert raw["full_name"] == "张**" and raw["phone"] == "139****5634" and raw["birth_date"] == "1980-**-**"
    assert raw["customer_key"] == "C1" and raw["gender"] == "X"


def test_the_migration_masks_the_rejected_rows_already_stored(write_feed):
    batch = FeedBatch.objects.create(source=Source.objects.get(code="core"), file_name="/srv/cdp/var/feeds/a.csv")
    clear = {"customer_key": "C1", **{k: v for k, v in PERSON.items() if k not in ("id_number", "id_type")}}
    RejectedRow.objects.bulk_create([RejectedRow(batch=batch, row_number=n, reason="gender", raw=clear)
                                     for n in range(1, 4)] + [RejectedRow(batch=batch, row_number=9, reason="x")])
    migration = importlib.import_module("profiles.migrations.0016_feed_file_base_name_and_masked_rejects")

    migration.keep_base_names(apps, None)
    migration.mask_stored_rejects(apps, None)

    batch.refresh_from_db()
    assert batch.file_name == "a.csv"
    stored = json.dumps(list(RejectedRow.objects.values_list("raw", flat=True)), ensure_ascii=False)
    assert not [value for value in CLEAR_VALUES if value in stored]
    assert RejectedRow.objects.get(row_number=9).raw == {}


# Finding 7: no server file path in batches or lineage.

def test_batches_and_lineage_name_the_file_not_where_it_is_stored(tmp_path, django_capture_on_commit_callbacks,
                                                                    settings):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path / "uploads"
    folder = tmp_path / "incoming"
    folder.mkdir()
    path = folder / "core.csv"
    path.write_text(HEADER + "C1,张伟,M,1980-01-01,13912875634\n")
    txn = folder / "txn.csv"
    txn.write_text(TXN_HEADER + _txn("T1"))
    client = _api_client("feeds:write", "jobs:read", "profiles:read")

    loaded = feed_load(source="core", path=path)
    activity = activity_feed_load(source="core", kind="transactions", path=txn)
    with django_capture_on_commit_callbacks(execute=True):
        uploaded = client.post("/api/v1/feeds/batches/upload/",
                               {"source": "core", "file": SimpleUploadedFile("card.csv", b"customer_key\nK1\n")},
                               format="multipart").json()["job_id"]
    resolution.identity_resolve()
    profile = SourceRecord.objects.get(customer_key="C1").profile
    lineage = client.get(f"/api/v1/profiles/{profile.public_id}/lineage/").json()

    assert (loaded.file_name, activity.file_name) == ("core.csv", "txn.csv")
    assert FeedBatch.objects.get(pk=uploaded).file_name.endswith("card.csv")
    assert not FeedBatch.objects.filter(file_name__contains="/").exists()
    assert lineage and {entry["batch_file_name"] for entry in lineage} == {"core.csv"}


# Finding 7: a match rule naming an unknown identifier.

def test_a_match_rule_naming_an_unknown_identifier_is_refused_by_the_model():
    rule = MatchRule(name="phone and birth date typo", priority=9, fields=["phone", "birth_dat"])

    with pytest.raises(ValidationError) as refused:
        rule.full_clean()

    assert "birth_dat" in str(refused.value.message_dict["fields"])


@pytest.mark.parametrize("fields", [[], "phone", ["phone", "phone"], ["phone", 3]])
def test_a_match_rule_with_no_or_malformed_identifiers_is_refused(fields):
    with pytest.raises(ValidationError):
        MatchRule(name="bad", priority=9, fields=fields).full_clean()


def test_the_admin_refuses_a_match_rule_naming_an_unknown_identifier(admin_client):
    response = admin_client.post("/admin/profiles/matchrule/add/", {
        "name": "phone and birth date typo", "priority": 9, "fields": '["phone", "birth_dat"]', "is_active": "on"})

    assert response.status_code == 200  # the form again, with the error
    assert "birth_dat" in response.content.decode()
    assert not MatchRule.objects.filter(name="phone and birth date typo").exists()


def test_resolution_refuses_a_stored_rule_naming_an_unknown_identifier_rather_than_shorten_it(write_feed):
    MatchRule.objects.update(is_active=False)
    MatchRule.objects.create(name="phone and birth date typo", priority=1, fields=["phone", "birth_dat"])
    household = [customer("C1", full_name="张伟", birth_date="1980-01-01", phone="13912875634"),
                 customer("C2", full_name="李娜", birth_date="1983-07-09", phone="13912875634")]
    feed_load(source="core", path=write_feed(household))

    with pytest.raises(resolution.InvalidMatchRule, match="birth_dat"):
        resolution.identity_resolve()

    assert SourceRecord.objects.filter(profile__isnull=False).count() == 0
