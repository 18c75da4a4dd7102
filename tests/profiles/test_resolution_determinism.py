"""The same files loaded into a fresh state give the identical partition, whatever ids the records get.

Feeds of several sources load at once (`load_feed core=... card=... wealth=...`), a process each, so the ids the
records receive interleave differently from one load to the next. Nothing the partition depends on may follow
those ids: here a second fresh load numbers the same records in another order (the sources in reverse).
"""
import pytest

from profiles.feeds import feed_load
from profiles.models import (
    CustomerProfile, FeedBatch, MatchKey, PossibleDuplicate, ProbabilisticModel, RecordLink, SourceRecord,
)
from profiles.resolution import identity_resolve
from profiles.sample_data import CARD_FILE, CORE_FILE, WEALTH_FILE, generate_sample_feeds
from tests.factories import customer

pytestmark = pytest.mark.django_db

# Twins, one in core and one in card, with valid resident ids of their own, one phone and one birth date, and a
# wealth record of one of them without an id: the phone and birth date rule puts the three in one group that the
# id guard rail must split. Which twin keeps the wealth record must not depend on which was numbered first.
TWIN_CORE = customer("TW-A", full_name="李明", gender="M", birth_date="1990-05-06", id_type="CN_RESIDENT",
                     id_number="110105199005060015", phone="13911112222", postcode="100105", city="北京市")
TWIN_CARD = customer("TW-B", full_name="李亮", gender="M", birth_date="1990-05-06", id_type="CN_RESIDENT",
                     id_number="110105199005060031", phone="13911112222", postcode="100105", city="北京市")
TWIN_WEALTH = customer("TW-C", full_name="李明", gender="M", birth_date="1990-05-06", phone="13911112222",
                       postcode="100105", city="北京市")


def _partition() -> set[frozenset[tuple[str, str]]]:
    groups: dict[int, set] = {}
    for profile_id, source, key in SourceRecord.objects.values_list("profile_id", "source__code", "customer_key"):
        groups.setdefault(profile_id, set()).add((source, key))
    return {frozenset(members) for members in groups.values()}


def _fresh_state() -> None:
    for model in (PossibleDuplicate, RecordLink, MatchKey, SourceRecord, CustomerProfile, ProbabilisticModel):
        model.objects.all().delete()
    FeedBatch.objects.all().delete()


def _load(feeds: list[tuple[str, object]]) -> set:
    for source, path in feeds:
        batch = feed_load(source=source, path=path)
        assert batch.status == "succeeded", batch.error
    identity_resolve()
    return _partition()


def test_the_same_files_give_the_identical_partition_under_other_record_ids(write_feed, tmp_path):
    sample = tmp_path / "sample"
    generate_sample_feeds(out_dir=sample, customers=600, seed=5)
    feeds = [("core", sample / CORE_FILE), ("core", write_feed([TWIN_CORE])), ("card", sample / CARD_FILE),
             ("card", write_feed([TWIN_CARD])), ("wealth", sample / WEALTH_FILE),
             ("wealth", write_feed([TWIN_WEALTH]))]

    first = _load(feeds)
    _fresh_state()
    second = _load([(source, path) for source, path in reversed(feeds)])

    twin_profiles = [group for group in first if {("core", "TW-A"), ("card", "TW-B")} & group]
    assert len(twin_profiles) == 2  # the twins stay apart
    assert second == first
