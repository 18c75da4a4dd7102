"""Rotating the key of the keyed hashes (README): every stored hash is re-keyed without the clear values, and the
identity partition, lookups by phone, e-mail and id number, and reloads of the same feeds are as before."""
from datetime import date

import pyarrow as pa
import pytest
from django.core.management import CommandError, call_command

from privacy.keys import PiiKeyRotationError, pii_key_rotate
from privacy.rights import erase_subject
from profiles.activity import activity_feed_load
from profiles.columnar import KeyedHasher
from profiles.feeds import feed_load
from profiles.models import CardTransaction, CustomerProfile, MatchKey, SourceRecord, SuppressedIdentifier
from profiles.normalize import keyed_hash
from profiles.pii_keys import PiiKeyMismatch
from profiles.resolution import identity_resolve
from profiles.selectors import profiles_by_identifier
from tests.factories import cn_resident_id, customer

pytestmark = pytest.mark.django_db

OLD, NEW = "old-pii-key-0123456789", "new-pii-key-9876543210"
ID_WANG = cn_resident_id(date(1980, 5, 6))
ID_LI = cn_resident_id(date(1992, 7, 8), sequence=456)
SHARED_ID = cn_resident_id(date(1970, 1, 1), sequence=789)  # a branch's test number, on too many records
VISA = "4111111111111111"
CARD_HEADER = ["txn_key", "customer_key", "card_token", "pan", "occurred_at", "amount", "currency", "mcc",
               "merchant_category", "channel", "installment"]

CORE = [
    customer("C1", full_name="王伟", birth_date="1980-05-06", id_type="CN_RESIDENT", id_number=ID_WANG,
             phone="13800000001", email="wang.wei@example.com"),
    customer("C2", full_name="李娜", birth_date="1992-07-08", id_type="CN_RESIDENT", id_number=ID_LI,
             phone="13800000002", email="li.na@example.com"),
    *(customer(f"S{n}", full_name=f"测试{n}", id_type="CN_RESIDENT", id_number=SHARED_ID, phone=f"1390000000{n}")
      for n in range(6)),
]
# Linked to the core only by the id number: other phone, other e-mail.
CARD = [
    customer("K1", full_name="王伟", id_type="CN_RESIDENT", id_number=ID_WANG, phone="13700000001", pan=VISA),
    customer("K2", full_name="张敏", phone="13700000002", email="zhang.min@example.com"),
]
# Linked by phone and birth date, no id number.
WEALTH = [customer("W1", full_name="李娜", birth_date="1992-07-08", phone="13800000002")]


def partition() -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for profile_id, source, key in SourceRecord.objects.values_list("profile_id", "source__code", "customer_key"):
        groups.setdefault(profile_id, set()).add(f"{source}:{key}")
    return {frozenset(group) for group in groups.values()}


def public_ids() -> dict[str, str]:
    return {f"{source}:{key}": public_id for source, key, public_id in
            SourceRecord.objects.values_list("source__code", "customer_key", "profile__public_id")}


@pytest.fixture
def feeds(write_feed):
    return {"core": write_feed(CORE, name="core.csv"), "card": write_feed(CARD, name="card.csv"),
            "wealth": write_feed(WEALTH, name="wealth.csv"),
            "card_transactions": write_feed([
                {"txn_key": "X1", "customer_key": "K1", "pan": VISA, "occurred_at": "2026-03-01 12:00:00+08:00",
                 "amount": "300", "currency": "CNY", "mcc": "5812", "merchant_category": "dining", "channel": "pos"},
                {"txn_key": "X2", "customer_key": "K2", "card_token": "tok_abc",
                 "occurred_at": "2026-03-01 12:00:00+08:00", "amount": "50", "currency": "CNY", "mcc": "5812",
                 "merchant_category": "dining", "channel": "pos"},
            ], name="card_transactions.csv", header=CARD_HEADER)}


def load_all(feeds) -> list:
    batches = [feed_load(source=code, path=feeds[code]) for code in ("core", "card", "wealth")]
    batches.append(activity_feed_load(source="card", kind="card_transactions", path=feeds["card_transactions"]))
    assert [b.status for b in batches] == ["succeeded"] * 4, [b.error for b in batches]
    identity_resolve()
    return batches


@pytest.fixture
def loaded(feeds, settings):
    settings.CDP_PII_KEY, settings.CDP_PII_KEY_PREVIOUS = OLD, ()
    load_all(feeds)
    return feeds


def rotate(settings):
    settings.CDP_PII_KEY, settings.CDP_PII_KEY_PREVIOUS = NEW, (OLD,)
    return pii_key_rotate()


def test_a_rotation_keeps_the_partition_and_the_lookups(loaded, settings):
    before = partition()
    ids_before = public_ids()
    hashes_before = set(SourceRecord.objects.exclude(id_number_hash=None).values_list("id_number_hash", flat=True))
    wang = CustomerProfile.objects.get(records__customer_key="C1")
    assert {"core:C1", "card:K1"} in before and {"core:C2", "wealth:W1"} in before  # what the fixture is for

    rotation = rotate(settings)

    assert not rotation.already_current
    assert partition() == before
    assert public_ids() == ids_before
    # Under the new chain of keys, and no stored hash is one the old key alone gives.
    hashes_after = set(SourceRecord.objects.exclude(id_number_hash=None).values_list("id_number_hash", flat=True))
    assert hashes_after == {keyed_hash(n, "id") for n in (ID_WANG, ID_LI, SHARED_ID)}
    assert not hashes_after & hashes_before
    assert CustomerProfile.objects.get(pk=wang.pk).id_number_hash == keyed_hash(ID_WANG, "id")
    assert list(SuppressedIdentifier.objects.values_list("field", "value")) == [
        ("id_number", f"CN_RESIDENT:{keyed_hash(SHARED_ID, 'id')}")]
    for lookup in ({"id_number": ID_WANG}, {"phone": "13800000001"}, {"email": "wang.wei@example.com"}):
        assert profiles_by_identifier(**lookup) == [wang], lookup


def test_card_tokens_from_card_numbers_are_re_keyed_and_a_source_s_own_token_is_not(loaded, settings):
    old_token = CardTransaction.objects.get(txn_key="X1").card_token

    rotate(settings)

    assert CardTransaction.objects.get(txn_key="X1").card_token == keyed_hash(VISA, "pan") != old_token
    assert SourceRecord.objects.get(customer_key="K1").pan_token == keyed_hash(VISA, "pan")
    assert CardTransaction.objects.get(txn_key="X2").card_token == "tok_abc"


def test_reloading_the_same_feeds_after_a_rotation_changes_nothing(loaded, settings):
    before, ids_before, profiles_before = partition(), public_ids(), CustomerProfile.objects.count()
    keys_before = set(MatchKey.objects.values_list("record_id", "rule_id"))
    rotate(settings)

    batches = load_all(loaded)

    assert [(b.rows_created, b.rows_updated) for b in batches] == [(0, 0)] * 4
    assert (partition(), public_ids(), CustomerProfile.objects.count()) == (before, ids_before, profiles_before)
    assert set(MatchKey.objects.values_list("record_id", "rule_id")) == keys_before


def test_after_a_rotation_a_new_record_links_by_its_id_number_to_a_record_hashed_before(loaded, settings, write_feed):
    rotate(settings)
    wang = CustomerProfile.objects.get(records__customer_key="C1")

    # another address for C1 (so it is hashed again), and a wealth record known by the id number alone
    feed_load(source="core", path=write_feed([{**CORE[0], "address": "上海市浦东新区世纪大道100号"}]))
    feed_load(source="wealth", path=write_feed([customer("W2", full_name="王伟", id_type="CN_RESIDENT",
                                                         id_number=ID_WANG, phone="13600000009")]))
    identity_resolve()

    assert {r.customer_key for r in SourceRecord.objects.filter(profile=wang)} == {"C1", "K1", "W2"}


def test_a_second_run_does_nothing(loaded, settings):
    rotate(settings)
    hashes = list(SourceRecord.objects.order_by("pk").values_list("id_number_hash", flat=True))

    assert pii_key_rotate().already_current
    assert list(SourceRecord.objects.order_by("pk").values_list("id_number_hash", flat=True)) == hashes


def test_a_process_still_on_the_old_key_cannot_load_after_a_rotation(loaded, settings, write_feed):
    rotate(settings)
    settings.CDP_PII_KEY, settings.CDP_PII_KEY_PREVIOUS = OLD, ()
    records = SourceRecord.objects.count()

    with pytest.raises(PiiKeyMismatch):
        feed_load(source="wealth", path=write_feed([customer("W3", full_name="王伟", id_type="CN_RESIDENT",
                                                             id_number=ID_WANG)]))
    assert SourceRecord.objects.count() == records


def test_a_rotation_from_keys_the_hashes_are_not_under_is_refused(loaded, settings):
    hashes = set(SourceRecord.objects.values_list("id_number_hash", flat=True))
    settings.CDP_PII_KEY, settings.CDP_PII_KEY_PREVIOUS = NEW, ("not-the-key-in-use",)

    with pytest.raises(PiiKeyRotationError):
        pii_key_rotate()
    assert set(SourceRecord.objects.values_list("id_number_hash", flat=True)) == hashes


def test_the_command_rotates_and_refuses_without_a_new_key(loaded, settings, capsys):
    with pytest.raises(CommandError, match="no key to rotate to"):
        call_command("rotate_pii_key")

    settings.CDP_PII_KEY, settings.CDP_PII_KEY_PREVIOUS = NEW, (OLD,)
    call_command("rotate_pii_key")

    out = capsys.readouterr().out
    assert "profiles.sourcerecord.id_number_hash: 9 re-keyed" in out
    assert SourceRecord.objects.get(customer_key="C1").id_number_hash == keyed_hash(ID_WANG, "id")


def test_the_column_hasher_of_loads_gives_the_chain_of_keys(settings):
    settings.CDP_PII_KEY, settings.CDP_PII_KEY_PREVIOUS = NEW, (OLD, "a-key-before-that")
    values = [ID_WANG, ID_LI, "含非ASCII的值"]

    assert KeyedHasher()(pa.array(values), "id").to_pylist() == [keyed_hash(v, "id") for v in values]


def test_an_erased_person_stays_erased_through_a_rotation_and_a_reload(loaded, settings):
    erase_subject(profile=CustomerProfile.objects.get(records__customer_key="C1"), reason="DSR-7", by="dpo")
    rest = partition()

    rotate(settings)
    load_all(loaded)

    assert partition() == rest
    assert not SourceRecord.objects.filter(customer_key__in=("C1", "K1")).exists()
    assert not CardTransaction.objects.filter(txn_key="X1").exists()
