"""The customer's rights under PIPL (privacy.rights): subject access gives everything held on a person; erasure
deletes it everywhere and keeps do-not-reload markers, so that a reload of the very same feeds does not bring the
person back while everyone else reloads unchanged."""
import csv
import json
import threading
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from privacy.models import AuditRecord, ErasedIdentifier, ErasureLog
from privacy.policy import Viewer
from privacy.rights import PER_CUSTOMER_KINDS, SubjectEncoder, erase_subject, subject_access
from profiles.activity import activity_feed_load
from profiles.feeds import SKIPPED_ERASED, feed_load
from profiles.metrics import profile_metrics_recompute
from profiles import sql
from profiles.models import (
    Consent, ConsentEvent, CustomerProfile, FeedBatch, RejectedRow, Source, SourceRecord,
)
from profiles.resolution import identity_resolve
from profiles.sample_activity import ACTIVITY_FILES, generate_sample_activity
from profiles.sample_data import CARD_FILE, CORE_FILE, WEALTH_FILE, generate_sample_feeds
from profiles.services import consent_set
from segments.models import Segment, SegmentEvent, SegmentMember
from segments.services import segment_refresh, segment_save
from tags.models import TagAssignment, TagDefinition
from tags.services import system_tags_sync, tag_add
from tests.profiles.loads import snapshot

pytestmark = pytest.mark.django_db

CUSTOMER_FILES = (("core", CORE_FILE), ("card", CARD_FILE), ("wealth", WEALTH_FILE))


def _load_everything(folder) -> dict[str, FeedBatch]:
    batches = {source: feed_load(source=source, path=folder / name) for source, name in CUSTOMER_FILES}
    identity_resolve()
    for kind, (source, name, _header) in ACTIVITY_FILES.items():
        batches[kind] = activity_feed_load(source=source, kind=kind, path=folder / name)
    assert {k: b.status for k, b in batches.items() if b.status != "succeeded"} == {}
    return batches


def _activity_by_key() -> Counter:
    """Activity rows per (kind, source, customer key)."""
    counts = Counter()
    for kind, spec in PER_CUSTOMER_KINDS.items():
        for source, key in spec.model.objects.values_list("source__code", "customer_key"):
            counts[(kind, source, key)] += 1
    return counts


def _tables_containing(values: set[str], *, leave_out: tuple[str, ...] = ()) -> dict[str, int]:
    """Per table, how many rows hold one of `values` anywhere (the whole row cast to text)."""
    found = {}
    with connection.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                    "AND table_type = 'BASE TABLE' ORDER BY table_name")
        for (table,) in cur.fetchall():
            if table in leave_out:
                continue
            cur.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)} t "
                        f"WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) v WHERE strpos(CAST(t AS TEXT), v) > 0)",
                        [sorted(values)])
            if count := cur.fetchone()[0]:
                found[table] = count
    return found


@pytest.fixture
def platform(tmp_path):
    """60 sample people in core, card and wealth with their activity, resolved, with metrics and system tags."""
    generate_sample_feeds(out_dir=tmp_path, customers=60, seed=11)
    generate_sample_activity(out_dir=tmp_path, seed=11, today=timezone.localdate())
    first = _load_everything(tmp_path)
    profile_metrics_recompute()
    system_tags_sync()
    return tmp_path, first


def _person_in_three_sources() -> CustomerProfile:
    """A profile with a record in each source, activity in each, and a phone, e-mail and id number nobody else
    has."""
    activity = _activity_by_key()
    for profile in CustomerProfile.objects.filter(status="active", record_count=3).order_by("pk"):
        records = {r.source.code: r for r in profile.records.select_related("source")}
        if set(records) != {"core", "card", "wealth"} or not (profile.phone and profile.email):
            continue
        others = SourceRecord.objects.exclude(profile=profile)
        if others.filter(Q(phone=profile.phone) | Q(email=profile.email) | Q(
                id_number_hash__in=[r.id_number_hash for r in records.values() if r.id_number_hash])).exists():
            continue
        kinds = {kind for (kind, source, key) in activity if records.get(source)
                 and records[source].customer_key == key}
        if {"transactions", "card_transactions", "holdings"} <= kinds:
            return profile
    raise AssertionError("the sample has no one in three sources with activity in each")


def _engage(person: CustomerProfile) -> None:
    """A manual tag, a segment the person is in (refreshed twice: memberships and history), consent decisions."""
    vip = TagDefinition.objects.create(code="vip", name="VIP")
    tag_add(tag=vip, profile=person, assigned_by="rm")
    segment = segment_save(segment=Segment(name="In town", slug="in-town",
                                           rule={"field": "city", "op": "eq", "value": person.city}))
    segment_refresh(segment=segment)
    consent_set(profile=person, channel="sms", granted=True, source="core")
    consent_set(profile=person, channel="sms", granted=False, source="app")


def test_subject_access_returns_everything_held_and_audits_the_read(platform):
    person = _person_in_three_sources()
    _engage(person)
    viewer = Viewer(sees_clear=True, method="CLI", path="subject_access")

    data = json.loads(json.dumps(subject_access(profile=person, viewer=viewer), cls=SubjectEncoder))

    assert data["profile"]["public_id"] == person.public_id and data["profile"]["phone"] == person.phone
    assert sorted(r["source__code"] for r in data["source_records"]) == ["card", "core", "wealth"]
    keys = {(r["source__code"], r["customer_key"]) for r in data["source_records"]}
    expected = Counter({k: n for k, n in _activity_by_key().items() if k[1:] in keys})
    assert Counter((kind, r["source__code"], r["customer_key"]) for kind, rows in data["activity"].items()
                   for r in rows) == expected
    assert {t["tag__code"] for t in data["tags"]} >= {"vip"}
    assert [s["segment"] for s in data["segments"]] == ["in-town"]
    assert [(e["segment__slug"], e["kind"]) for e in data["segment_history"]] == [("in-town", "entered")]
    assert [(c["channel"], c["granted"], c["source"]) for c in data["consent"]] == [("sms", False, "app")]
    assert [(c["granted"], c["source"]) for c in data["consent_history"]] == [(True, "core"), (False, "app")]
    assert data["metrics"]["profile_id"] == person.pk
    # The access itself is the last clear read in the audit it returns.
    assert data["audit"][-1]["path"] == "subject_access" and "phone" in data["audit"][-1]["fields"]
    assert AuditRecord.objects.filter(profile_public_id=person.public_id).count() == 1


def test_erasure_removes_the_person_and_a_reload_of_the_same_feeds_does_not_bring_them_back(platform):
    folder, first = platform
    person = _person_in_three_sources()
    _engage(person)
    records = list(person.records.select_related("source"))
    keys = {(r.source.code, r.customer_key) for r in records}
    identifiers = {person.phone, person.email, *(r.id_number_hash for r in records if r.id_number_hash)}
    subject_access(profile=person, viewer=Viewer(sees_clear=True, method="CLI", path="subject_access"))
    everyone_else = snapshot()
    everyone_else["records"] = {k: v for k, v in everyone_else["records"].items() if k not in keys}
    everyone_else["profiles"] = {m: v for m, v in everyone_else["profiles"].items() if not m & keys}
    activity_before = _activity_by_key()
    their_activity = {k: n for k, n in activity_before.items() if k[1:] in keys}
    others_activity = {k: n for k, n in activity_before.items() if k[1:] not in keys}
    segment = Segment.objects.get(slug="in-town")
    members_before = segment.member_count

    log = erase_subject(profile=person, reason="DSR-2026-0042", by="dpo")

    assert log.counts["source_records"] == 3 and log.counts["profiles"] == 1
    assert sum(log.counts.get(kind, 0) for kind in PER_CUSTOMER_KINDS) == sum(their_activity.values())
    assert not CustomerProfile.objects.filter(pk=person.pk).exists()
    assert not TagAssignment.objects.filter(profile_id=person.pk).exists()
    assert not SegmentMember.objects.filter(profile_id=person.pk).exists()
    assert not SegmentEvent.objects.filter(profile_id=person.pk).exists()
    assert not ConsentEvent.objects.filter(profile_id=person.pk).exists()
    assert Segment.objects.get(pk=segment.pk).member_count == members_before - 1
    # Their phone, e-mail and id-number hash are nowhere but in the markers (which hold the id hash by design).
    assert _tables_containing(identifiers, leave_out=("privacy_erasedidentifier",)) == {}
    assert ErasureLog.objects.get().erased_by == "dpo"
    assert json.dumps(ErasureLog.objects.values().get(), default=str).find(person.public_id) == -1
    assert ErasedIdentifier.objects.filter(kind="source_key").count() == 3

    reloaded = _load_everything(folder)

    assert not SourceRecord.objects.filter(customer_key__in=[k for _, k in keys]).exists()
    assert not CustomerProfile.objects.filter(phone=person.phone).exists()
    assert not any(k[1:] in keys for k in _activity_by_key())
    for code, _ in CUSTOMER_FILES:
        batch = reloaded[code]
        assert batch.warnings.get(SKIPPED_ERASED) == 1
        assert (batch.rows_created, batch.rows_updated, batch.rows_rejected) == (0, 0, first[code].rows_rejected)
    for kind in ("transactions", "card_transactions", "holdings"):
        assert reloaded[kind].warnings.get(SKIPPED_ERASED) == sum(n for k, n in their_activity.items()
                                                                  if k[0] == kind)
        assert reloaded[kind].rows_created == 0
    assert not RejectedRow.objects.filter(batch__in=reloaded.values(), raw__customer_key__in=[k for _, k in keys])
    after = snapshot()
    assert after == everyone_else
    assert {k: n for k, n in _activity_by_key().items()} == others_activity


def test_a_marker_skips_the_person_under_a_new_key_but_not_a_household_sharing_one_identifier(platform, write_feed):
    person = _person_in_three_sources()
    core = person.records.get(source__code="core")
    id_number = _id_number_of(core, folder=platform[0])
    erase_subject(profile=person, reason="DSR-7", by="dpo")
    row = {"full_name": "Back Again", "gender": "M", "birth_date": "1980-01-01", "city": "Beijing"}
    feed = write_feed([
        # the same person under a new key: the same valid id number is found through its keyed hash
        {**row, "customer_key": "NEW-1", "id_type": "CN_RESIDENT",
         "id_number": id_number, "phone": "", "email": ""},
        # the same phone and e-mail together, no id number
        {**row, "customer_key": "NEW-2", "phone": person.phone, "email": person.email},
        # a household member sharing only the phone: loaded
        {**row, "customer_key": "NEW-3", "phone": person.phone, "email": "someone.else@example.com"},
    ])

    batch = feed_load(source="core", path=feed)

    assert batch.warnings.get(SKIPPED_ERASED) == 2
    assert list(SourceRecord.objects.filter(customer_key__startswith="NEW-").values_list("customer_key", flat=True)) \
        == ["NEW-3"]


def _id_number_of(record: SourceRecord, *, folder) -> str:
    """The clear id number of a sample record (only its hash is stored), from the core feed it was loaded from (a
    batch names its file's base name)."""
    with open(folder / record.first_batch.file_name, encoding="utf-8-sig") as fh:
        for raw in csv.DictReader(fh):
            if raw["CUST_NO"] == record.customer_key:
                assert raw["id_number"], "the chosen person has an id number"
                return raw["id_number"]
    raise AssertionError(record.customer_key)


def test_commands_write_the_access_file_and_erase(platform, tmp_path, capsys):
    person = _person_in_three_sources()
    out = tmp_path / "access.json"

    call_command("subject_access", person.public_id, "--out", str(out))
    call_command("erase_subject", person.public_id, "--reason", "DSR-9", "--by", "dpo")

    assert json.loads(out.read_text(encoding="utf-8"))["profile"]["public_id"] == person.public_id
    assert not CustomerProfile.objects.filter(pk=person.pk).exists()
    assert "source_records 3" in capsys.readouterr().out


def test_consent_rows_are_erased_with_their_history(make_profile):
    person, other = make_profile(city="Beijing"), make_profile(city="Beijing")
    consent_set(profile=person, channel="email", granted=True, source="api")
    consent_set(profile=other, channel="email", granted=True, source="api")

    erase_subject(profile=person, reason="DSR-1", by="dpo")

    assert list(Consent.objects.values_list("profile_id", flat=True)) == [other.pk]
    assert list(ConsentEvent.objects.values_list("profile_id", flat=True)) == [other.pk]


# serialized_rollback: the sources the migrations create are there whatever ran before (a flush removes them).
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_erasure_waits_for_a_running_load_of_the_persons_source(make_profile):
    person = make_profile(phone="+8613912875634")
    core = Source.objects.get(code="core")
    batch = FeedBatch.objects.create(source=core, file_name="core.csv", status=FeedBatch.Status.SUCCEEDED)
    SourceRecord.objects.create(source=core, customer_key="C1", profile=person, row_digest="x", first_batch=batch,
                                last_batch=batch, loaded_at=timezone.now(), needs_resolution=False)
    load_running, load_done = threading.Event(), threading.Event()

    def running_load():  # holds the lock a load of core holds
        key = sql.advisory_lock_key("feed", core.pk)
        sql.execute("SELECT pg_advisory_lock(%s)", [key])
        load_running.set()
        load_done.wait(60)
        sql.execute("SELECT pg_advisory_unlock(%s)", [key])
        connection.close()

    def erasure():
        erase_subject(profile=person, reason="DSR-5", by="dpo")
        connection.close()

    load = threading.Thread(target=running_load)
    load.start()
    load_running.wait(60)
    erasing = threading.Thread(target=erasure)
    erasing.start()
    waiting = 0
    for _ in range(600):  # until the erasure is seen queued behind the load's lock
        waiting = sql.fetch_all("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0]
        if waiting:
            break
        time.sleep(0.05)

    assert waiting == 1 and CustomerProfile.objects.filter(pk=person.pk).exists()
    load_done.set()
    load.join(60)
    erasing.join(60)
    assert not CustomerProfile.objects.filter(pk=person.pk).exists()
