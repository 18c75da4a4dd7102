"""Identity resolution: each rule, guard rails, survivorship and lineage, merges, unmerge, deltas."""
from datetime import date

import pytest
from django.db import IntegrityError, connection, transaction

from profiles import identity_model
from profiles.feeds import feed_load
from profiles.models import CustomerProfile, DoNotLink, SourceRecord, SuppressedIdentifier
from profiles.resolution import identity_resolve
from profiles.sample_data import CARD_FILE, CORE_FILE, WEALTH_FILE, generate_sample_feeds
from profiles.selectors import profile_get, profile_lineage
from profiles.services import identity_map_export, profile_unmerge
from tests.factories import cn_resident_id, customer

pytestmark = pytest.mark.django_db


def load(write_feed, source: str, rows: list[dict]):
    batch = feed_load(source=source, path=write_feed(rows))
    assert batch.status == "succeeded", batch.error
    assert batch.rows_rejected == 0, list(batch.rejected_rows.values_list("reason", flat=True))
    return batch


def groups() -> set[frozenset[str]]:
    """The partition of records into profiles, as sets of 'source:key'."""
    result: dict[int, set[str]] = {}
    for profile_id, source, key in SourceRecord.objects.values_list("profile_id", "source__code", "customer_key"):
        result.setdefault(profile_id, set()).add(f"{source}:{key}")
    return {frozenset(g) for g in result.values()}


ID_1990 = cn_resident_id(date(1990, 1, 1))
ID_1991 = cn_resident_id(date(1991, 2, 2))
INVALID_ID = ID_1990[:-1] + ("0" if ID_1990[-1] != "0" else "1")

RULE_CASES = {
    "id_number": (
        customer("C1", full_name="张伟", id_type="CN_RESIDENT", id_number=ID_1990),
        customer("K1", full_name="Zhang Wei", id_type="CN_RESIDENT", id_number=ID_1990),
        customer("K1", full_name="Zhang Wei", id_type="CN_RESIDENT", id_number=INVALID_ID),
    ),
    "core_cif": (
        customer("C1", full_name="张伟"),
        customer("K1", full_name="Zhang Wei", core_cif="C1"),
        customer("K1", full_name="Zhang Wei", core_cif="C2"),
    ),
    "phone_and_birth_date": (
        customer("C1", full_name="张伟", phone="13824681357", birth_date="1990-01-01"),
        customer("K1", full_name="Zhang Wei", phone="+86 138-2468-1357", birth_date="1990-01-01"),
        customer("K1", full_name="Zhang Wei", phone="+86 138-2468-1357", birth_date="1990-01-02"),
    ),
    "email_and_name": (
        customer("C1", full_name="Li Na", email="li.na@example.com"),
        customer("K1", full_name="LI  NA", email="Li.Na@Example.com"),
        customer("K1", full_name="Li Nan", email="li.na@example.com"),
    ),
    "name_birth_date_postcode": (
        customer("C1", full_name="王芳", birth_date="1979-12-31", postcode="100020"),
        customer("K1", full_name="王芳", birth_date="1979-12-31", postcode="100020"),
        customer("K1", full_name="王芳", birth_date="1979-12-31", postcode="200001"),
    ),
}


@pytest.mark.parametrize("rule", RULE_CASES)
def test_each_rule_links_records_that_agree_on_all_its_identifiers(write_feed, rule):
    core, card, _ = RULE_CASES[rule]
    load(write_feed, "core", [core])
    load(write_feed, "card", [card])
    identity_resolve()
    assert groups() == {frozenset({"core:C1", "card:K1"})}


@pytest.mark.parametrize("rule", RULE_CASES)
def test_each_rule_does_not_link_when_one_identifier_differs(write_feed, rule):
    core, _, near_miss = RULE_CASES[rule]
    load(write_feed, "core", [core])
    load(write_feed, "card", [near_miss])
    identity_resolve()
    assert groups() == {frozenset({"core:C1"}), frozenset({"card:K1"})}


def test_identifier_shared_by_too_many_records_is_not_used_and_is_reported(write_feed, settings):
    settings.CDP_MAX_SHARED_IDENTIFIER = 3
    branch_phone = "010-6655 8800"
    rows = [customer(f"C{i}", full_name=f"客户{i}", phone=branch_phone, birth_date="1980-05-05") for i in range(4)]
    load(write_feed, "core", rows)
    identity_resolve()

    assert len(groups()) == 4
    suppressed = SuppressedIdentifier.objects.get(field="phone")
    assert (suppressed.value, suppressed.record_count) == ("+861066558800", 4)


def test_records_with_different_valid_id_numbers_never_merge(write_feed):
    same_contact = {"phone": "13912345678", "birth_date": "1990-01-01"}
    load(write_feed, "core", [customer("C1", id_type="CN_RESIDENT", id_number=ID_1990, **same_contact),
                              customer("C2", id_type="CN_RESIDENT", id_number=ID_1991, **same_contact)])
    load(write_feed, "card", [customer("K1", core_cif="C1", **same_contact)])
    identity_resolve()
    groups_found = groups()
    assert len(groups_found) == 2
    assert frozenset({"core:C1", "card:K1"}) in groups_found  # the stronger CIF link wins over phone+birth date


def test_a_conflicted_cluster_keeps_its_strongest_links(write_feed):
    # C1 and C2 hold different valid id numbers; K1 links to C1 by the CIF cross-reference (a stronger rule) and
    # to C2 by email + name (a weaker one): K1 goes with C1, whichever link the data lists first.
    contact = {"phone": "13912345678", "birth_date": "1990-01-01"}
    load(write_feed, "core", [
        customer("C1", full_name="李娜", id_type="CN_RESIDENT", id_number=ID_1990, **contact),
        customer("C2", full_name="Li Na", id_type="CN_RESIDENT", id_number=ID_1991, email="li.na@bank.cn", **contact),
    ])
    load(write_feed, "card", [customer("K1", full_name="Li Na", core_cif="C1", email="li.na@bank.cn")])
    report = identity_resolve()

    assert report.constrained_clusters == 1
    assert groups() == {frozenset({"core:C1", "card:K1"}), frozenset({"core:C2"})}


def test_a_cluster_cannot_grow_past_the_size_cap(write_feed, settings):
    settings.CDP_MAX_CLUSTER_SIZE = 3
    # A chain of different rules: each consecutive pair shares one rule's identifiers.
    load(write_feed, "core", [
        customer("C1", full_name="甲", phone="13900000001", birth_date="1990-01-01"),
        customer("C2", full_name="乙", phone="13900000001", birth_date="1990-01-01", email="x@bank.cn"),
        customer("C3", full_name="乙", email="x@bank.cn", birth_date="1991-01-01", postcode="100000"),
        customer("C4", full_name="乙", birth_date="1991-01-01", postcode="100000"),
    ])
    identity_resolve()
    sizes = sorted(len(g) for g in groups())
    assert sizes == [1, 3]


def test_survivorship_prefers_source_priority_then_recency_and_records_lineage(write_feed):
    core_batch = load(write_feed, "core", [
        customer("C1", full_name="张伟", id_type="CN_RESIDENT", id_number=ID_1990, city="北京",
                 updated_at="2020-01-01T00:00:00"),
        customer("C2", full_name="张伟", id_type="CN_RESIDENT", id_number=ID_1990, city="上海",
                 email="new@bank.cn", updated_at="2025-01-01T00:00:00"),
    ])
    card_batch = load(write_feed, "card", [
        customer("K1", full_name="Zhang Wei", core_cif="C1", phone="13824681357", email="card@bank.cn",
                 updated_at="2026-01-01T00:00:00"),
    ])
    identity_resolve()

    profile = CustomerProfile.objects.get(status="active")
    assert profile.full_name == "张伟"  # core outranks the newer card value
    assert profile.city == "上海"  # within core, the most recent record wins
    assert profile.email == "new@bank.cn"  # core again, although card's is newer
    assert profile.phone == "+8613824681357"  # only card has one
    lineage = {l.attribute: (l.record.source.code, l.record.customer_key, l.batch_id)
               for l in profile_lineage(profile=profile)}
    assert lineage["phone"] == ("card", "K1", card_batch.pk)
    assert lineage["address"] == ("core", "C2", core_batch.pk)
    assert lineage["name"][0] == "core"
    assert profile.record_count == 3


def test_a_profile_whose_one_record_wins_everything_takes_its_values_beside_a_merged_one(write_feed):
    core_batch = load(write_feed, "core", [
        customer("C1", full_name="王芳", gender="F", birth_date="1991-02-02", id_type="CN_RESIDENT", id_number=ID_1991,
                 phone="13911112222", email="wang.fang@bank.cn", address="人民路1号", city="杭州", postcode="310000"),
        customer("C2", full_name="张伟", id_type="CN_RESIDENT", id_number=ID_1990, city="上海"),
    ])
    load(write_feed, "card", [customer("K2", full_name="Zhang Wei", core_cif="C2", phone="13824681357")])
    identity_resolve()

    single = CustomerProfile.objects.get(records__customer_key="C1")
    assert (single.full_name, single.gender, single.birth_date, single.phone, single.email, single.city) == (
        "王芳", "F", date(1991, 2, 2), "+8613911112222", "wang.fang@bank.cn", "杭州")
    assert single.id_number_masked.endswith(ID_1991[-4:]) and single.record_count == 1
    assert {l.attribute: (l.record.customer_key, l.batch_id) for l in profile_lineage(profile=single)} == {
        group: ("C1", core_batch.pk)
        for group in ("name", "gender", "birth_date", "id_number", "phone", "email", "address")
    }
    merged = CustomerProfile.objects.get(records__customer_key="K2")
    assert (merged.full_name, merged.city, merged.phone, merged.record_count) == ("张伟", "上海", "+8613824681357", 2)
    assert merged.email is None and merged.birth_date is None


def test_merge_keeps_all_records_and_the_absorbed_id_resolves_to_the_survivor(write_feed):
    load(write_feed, "core", [customer("C1", full_name="李娜", phone="13700000001")])
    load(write_feed, "card", [customer("K1", full_name="Li Na", phone="13700000002")])
    identity_resolve()
    before = {r.customer_key: r.profile.public_id for r in SourceRecord.objects.select_related("profile")}
    assert before["C1"] != before["K1"]

    load(write_feed, "card", [customer("K1", full_name="Li Na", phone="13700000002", core_cif="C1")])
    report = identity_resolve()

    assert report.profiles_merged == 1
    survivor = CustomerProfile.objects.get(status="active")
    assert set(survivor.records.values_list("customer_key", flat=True)) == {"C1", "K1"}
    absorbed_id = ({before["C1"], before["K1"]} - {survivor.public_id}).pop()
    resolved, was_absorbed = profile_get(public_id=absorbed_id)
    assert resolved == survivor and was_absorbed
    assert profile_get(public_id=survivor.public_id) == (survivor, False)


def test_unmerge_splits_and_do_not_link_survives_a_reload(write_feed):
    load(write_feed, "core", [customer("C1", full_name="陈晨", phone="13600000001", birth_date="1988-08-08")])
    card_rows = [customer("K1", full_name="Chen Chen", phone="13600000001", birth_date="1988-08-08")]
    load(write_feed, "card", card_rows)
    identity_resolve()
    profile = CustomerProfile.objects.get(status="active")
    card_record = SourceRecord.objects.get(customer_key="K1")

    profile_unmerge(profile=profile, split_off=[card_record.pk], decided_by="tester")
    assert groups() == {frozenset({"core:C1"}), frozenset({"card:K1"})}
    assert DoNotLink.objects.count() == 1

    load(write_feed, "card", [dict(card_rows[0], email="chen@bank.cn")])
    identity_resolve()
    assert groups() == {frozenset({"core:C1"}), frozenset({"card:K1"})}
    identity_resolve(full=True)
    assert groups() == {frozenset({"core:C1"}), frozenset({"card:K1"})}


def test_delta_load_re_resolves_only_touched_records_and_their_profiles(write_feed):
    core = [customer(f"C{i}", full_name=f"客户{i}", phone=f"1350000{i:04d}", birth_date="1970-01-01")
            for i in range(50)]
    card = [customer(f"K{i}", full_name=f"Ke Hu {i}", core_cif=f"C{i}") for i in range(50)]
    load(write_feed, "core", core)
    load(write_feed, "card", card)
    identity_resolve()
    untouched_before = dict(CustomerProfile.objects.values_list("public_id", "updated_at"))

    load(write_feed, "card", [dict(card[7], email="k7@bank.cn")])
    report = identity_resolve()

    assert report.records_resolved == 1
    assert report.scope_records == 2
    after = dict(CustomerProfile.objects.values_list("public_id", "updated_at"))
    changed = {pid for pid in after if after[pid] != untouched_before[pid]}
    assert changed == {SourceRecord.objects.get(customer_key="K7").profile.public_id}
    assert SourceRecord.objects.get(customer_key="K7").profile.email == "k7@bank.cn"


def test_a_first_resolution_leaves_the_record_indexes_and_the_unique_source_key_in_force(write_feed):
    # On PostgreSQL the first assignment of profiles rebuilds the records' indexes instead of updating them.
    with connection.cursor() as cur:
        before = set(connection.introspection.get_constraints(cur, SourceRecord._meta.db_table))
    load(write_feed, "core", [customer("C1", full_name="A"), customer("C2", full_name="B")])
    load(write_feed, "card", [customer("K1", core_cif="C1")])
    identity_resolve()
    with connection.cursor() as cur:
        assert set(connection.introspection.get_constraints(cur, SourceRecord._meta.db_table)) == before
    assert groups() == {frozenset({"core:C1", "card:K1"}), frozenset({"core:C2"})}
    record = SourceRecord.objects.get(customer_key="C2")
    with pytest.raises(IntegrityError), transaction.atomic():
        SourceRecord.objects.create(source=record.source, customer_key="C2", first_batch=record.first_batch,
                                    last_batch=record.last_batch, row_digest=record.row_digest)
    # A later load still finds its records through them: the delta re-resolves one record and moves it.
    load(write_feed, "card", [customer("K1", core_cif="C2")])
    assert identity_resolve().records_resolved == 1
    assert groups() == {frozenset({"core:C1"}), frozenset({"core:C2", "card:K1"})}


def test_resolution_is_idempotent_and_full_rerun_gives_the_same_partition(write_feed):
    load(write_feed, "core", [customer("C1", full_name="A", phone="13100000001", birth_date="1990-01-01"),
                              customer("C2", full_name="B")])
    load(write_feed, "card", [customer("K1", core_cif="C2"), customer("K2", phone="13100000001",
                                                                    birth_date="1990-01-01")])
    identity_resolve()
    first = groups()
    ids = dict(SourceRecord.objects.values_list("customer_key", "profile__public_id"))
    assert identity_resolve().records_resolved == 0
    identity_resolve(full=True)
    assert groups() == first
    assert dict(SourceRecord.objects.values_list("customer_key", "profile__public_id")) == ids


def test_identity_map_export_lists_every_record_with_its_profile(write_feed, tmp_path):
    load(write_feed, "core", [customer("C1"), customer("C2")])
    load(write_feed, "card", [customer("K1", core_cif="C1")])
    identity_resolve()
    out = tmp_path / "map.csv"
    assert identity_map_export(path=out) == 3
    lines = out.read_text().splitlines()
    assert lines[0] == "profile_id,source,customer_key"
    by_key = {line.split(",")[2]: line.split(",")[0] for line in lines[1:]}
    assert by_key["C1"] == by_key["K1"] != by_key["C2"]


def test_incremental_loads_and_a_whole_table_run_give_the_same_partition(tmp_path, settings, monkeypatch):
    # Given a sample population (deterministic rules and guard rails only: no probabilistic model, whose
    # training on a new source would resolve the whole table), with identifiers shared widely enough that some
    # are suppressed
    monkeypatch.setattr(identity_model, "MIN_RECORDS_FOR_MODEL", 10_000)
    settings.CDP_MAX_SHARED_IDENTIFIER = 3
    generate_sample_feeds(out_dir=tmp_path, customers=400, seed=5)
    # When its sources arrive one by one, each resolved as a delta of the records already resolved
    for source, name in (("core", CORE_FILE), ("card", CARD_FILE), ("wealth", WEALTH_FILE)):
        assert feed_load(source=source, path=tmp_path / name).status == "succeeded"
        report = identity_resolve()
        assert report.records_resolved < SourceRecord.objects.count() or source == "core"
    incremental = groups()
    assert SuppressedIdentifier.objects.exists()
    # Then resolving the whole table again gives the same profiles, each keeping its id
    ids = dict(SourceRecord.objects.values_list("pk", "profile__public_id"))
    assert identity_resolve(full=True).records_resolved == SourceRecord.objects.count()
    assert groups() == incremental
    assert dict(SourceRecord.objects.values_list("pk", "profile__public_id")) == ids
    assert len(incremental) < SourceRecord.objects.count()  # records were linked


def test_survivorship_takes_a_valid_id_number_before_one_from_a_better_source(write_feed):
    load(write_feed, "core", [customer("C1", full_name="张伟", id_type="CN_RESIDENT", id_number=INVALID_ID)])
    load(write_feed, "card", [customer("K1", full_name="张伟", id_type="CN_RESIDENT", id_number=ID_1990,
                                       core_cif="C1")])
    identity_resolve()
    profile = CustomerProfile.objects.get(status="active")
    card = SourceRecord.objects.get(customer_key="K1")
    assert (profile.record_count, profile.id_number_hash) == (2, card.id_number_hash)
    lineage = {l.attribute: l.record.customer_key for l in profile_lineage(profile=profile)}
    assert (lineage["id_number"], lineage["name"]) == ("K1", "C1")


# --- households are not people -----------------------------------------------------------------------------

HOUSEHOLD = {"phone": "13912340001", "address": "上海市徐汇区漕溪北路88号", "city": "上海市", "postcode": "200030"}


@pytest.mark.parametrize("in_turn", [False, True], ids=["together", "in_turn"])
def test_twins_sharing_phone_email_birth_date_and_surname_stay_apart(write_feed, in_turn):
    twins = {**HOUSEHOLD, "email": "zhang.family@163.com", "birth_date": "2001-06-01"}
    load(write_feed, "core", [customer("C1", full_name="张晓明", **twins), customer("C2", full_name="张晓红", **twins)])
    if in_turn:  # the card record then arrives in a delta, beside resolved profiles
        identity_resolve()
    load(write_feed, "card", [customer("K1", family_name="ZHANG", given_name="XIAOHONG", **twins)])
    report = identity_resolve()
    assert groups() == {frozenset({"core:C1"}), frozenset({"core:C2", "card:K1"})}
    assert report.household_links_withheld == 2  # C1 with C2, C1 with K1


def test_the_same_person_in_chinese_characters_and_in_pinyin_links_on_phone_and_birth_date(write_feed):
    load(write_feed, "core", [customer("C1", full_name="张伟", phone="13912340002", birth_date="1980-03-04"),
                              customer("C2", full_name="曾斌", phone="13912340003", birth_date="1953-10-11"),
                              customer("C3", full_name="李伟", phone="13912340004", birth_date="1966-05-06")])
    load(write_feed, "card", [customer("K1", full_name="ZHANG WEI", phone="139 1234 0002", birth_date="1980-03-04"),
                              customer("K2", family_name="Zhang", given_name="Wie", phone="13912340002",
                                       birth_date="1980-03-04"),  # a typo
                              customer("K3", family_name="Zeng", given_name="Bin", phone="13912340003",
                                       birth_date="1953-10-11"),  # pinyin reads 曾 "ceng" outside names
                              customer("K4", family_name="季", given_name="伟", phone="13912340004",
                                       birth_date="1966-05-06")])  # 李 mistyped
    identity_resolve()
    assert groups() == {frozenset({"core:C1", "card:K1", "card:K2"}), frozenset({"core:C2", "card:K3"}),
                        frozenset({"core:C3", "card:K4"})}


def test_a_holder_without_a_given_name_does_not_join_two_people(write_feed):
    twins = {**HOUSEHOLD, "birth_date": "2001-06-01"}
    load(write_feed, "core", [customer("C1", full_name="张晓明", **twins), customer("C2", full_name="张晓红", **twins)])
    load(write_feed, "card", [customer("K1", **twins)])  # no name at all
    identity_resolve()
    found = groups()
    assert len(found) == 2 and frozenset({"core:C1", "core:C2"}) not in found


def test_a_renewed_passport_is_the_same_person(write_feed):
    person = {"full_name": "李娜", "birth_date": "1985-07-08", "phone": "13912340003"}
    load(write_feed, "core", [customer("C1", id_type="PASSPORT", id_number="E12345678", **person)])
    load(write_feed, "card", [customer("K1", id_type="PASSPORT", id_number="EA7654321", **person)])
    identity_resolve()
    assert groups() == {frozenset({"core:C1", "card:K1"})}


def test_a_15_digit_resident_id_links_with_its_18_digit_form(write_feed):
    legacy = ID_1990[:6] + ID_1990[8:17]
    load(write_feed, "core", [customer("C1", full_name="王芳", id_type="CN_RESIDENT", id_number=legacy)])
    load(write_feed, "card", [customer("K1", full_name="Wang Fang", id_type="CN_RESIDENT", id_number=ID_1990)])
    identity_resolve()
    assert groups() == {frozenset({"core:C1", "card:K1"})}
    assert set(SourceRecord.objects.values_list("id_valid", "id_number_masked")) == {
        (True, ID_1990[:3] + "*" * 11 + ID_1990[-4:])}


def test_latin_names_with_a_typo_or_in_either_order_link_and_spouses_with_other_names_do_not(write_feed):
    home = {**HOUSEHOLD, "email": "family@163.com", "birth_date": "1980-03-04"}
    load(write_feed, "core", [customer("C1", full_name="SINGH ELIZABETH", **home),
                              customer("C2", full_name="刘璐佳", **home),
                              customer("C3", full_name="刘洋", **home)])
    load(write_feed, "card", [customer("K1", family_name="SIMGH", given_name="ELIZABETH", **home),  # swapped, typo
                              customer("K2", family_name="Liu", given_name="Luja", **home),  # a letter dropped
                              customer("K3", family_name="WANG", given_name="LI", **home)])  # C3's wife
    identity_resolve()
    assert groups() == {frozenset({"core:C1", "card:K1"}), frozenset({"core:C2", "card:K2"}),
                        frozenset({"core:C3"}), frozenset({"card:K3"})}


def test_names_that_share_only_a_surname_or_only_a_given_name_stay_apart(write_feed):
    # Twins written family name first in Latin letters (the family name is not known to be the first part), and
    # spouses with the same given name.
    twins = {**HOUSEHOLD, "birth_date": "2001-06-01"}
    spouses = {**HOUSEHOLD, "phone": "13912340077", "email": "home@163.com", "birth_date": "1975-01-02"}
    load(write_feed, "core", [customer("C1", full_name="ZHANG XIAOMING", **twins),
                              customer("C2", full_name="王丽", **spouses)])
    load(write_feed, "card", [customer("K1", full_name="ZHANG XIAOHONG", **twins),
                              customer("K2", family_name="李", given_name="丽", **spouses)])
    identity_resolve()
    assert len(groups()) == 4
