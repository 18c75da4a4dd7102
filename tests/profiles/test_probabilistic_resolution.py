"""The probabilistic tier end to end: feeds loaded with feed_load, resolved with identity_resolve on PostgreSQL.

The model is estimated from the data being loaded, so every test loads a background population from the
sample-data generator (about 2,100 records of 1,000 people with realistic overlap) and adds hand-made pairs
that no deterministic rule links: a clear match, a clear non-match and a borderline pair.
"""
import pytest
from django.conf import settings

from profiles import probabilistic
from profiles.feeds import feed_load
from profiles.models import (
    CustomerProfile, DoNotLink, MatchKey, PossibleDuplicate, ProbabilisticModel, RecordLink, SourceRecord,
)
from profiles.resolution import identity_resolve
from profiles.sample_data import CARD_FILE, CORE_FILE, WEALTH_FILE, generate_sample_feeds
from profiles.services import possible_duplicate_accept, possible_duplicate_reject
from tests.factories import customer

pytestmark = pytest.mark.django_db

# Clear match: the same rare name (Chinese in core, family + given name in card), the same phone, postcode and
# city, the birth date with day and month transposed, no email in card. No rule fires: phone + birth date and
# name + birth date + postcode need the exact birth date, email + name needs an email on both sides.
CLEAR_MATCH = (
    customer("PM1", full_name="欧阳晓明", gender="M", birth_date="1979-03-04", phone="13924681357",
             email="oyxm79@example.cn", postcode="200031", city="上海市"),
    customer("PM2", family_name="欧阳", given_name="晓明", gender="M", birth_date="1979-04-03",
             phone="139 2468 1357", postcode="200031", city="上海市"),
)
# Clear non-match: compared (same birth date, same first character of the name), nothing else agrees.
CLEAR_NON_MATCH = (
    customer("PN1", full_name="赵志强", gender="M", birth_date="1966-05-05", phone="13724681301",
             email="zzq66@example.cn", postcode="300021", city="天津市"),
    customer("PN2", full_name="赵丽", gender="F", birth_date="1966-05-05", phone="13724681302",
             email="zl66@example.cn", postcode="400022", city="重庆市"),
)
# Borderline: a very common name, day and month of the birth date transposed, the same city, different postcodes,
# no phone or e-mail on the card record. One person who moved within the city and whose birth date was typed
# wrong, or two namesakes born in the same year: a human should look.
BORDERLINE = (
    customer("PB1", full_name="张伟", gender="M", birth_date="1985-09-07", phone="13724681331",
             email="zw85@example.cn", postcode="200040", city="上海市"),
    customer("PB2", full_name="张伟", gender="M", birth_date="1985-07-09", postcode="200099", city="上海市"),
)


def load(source, path):
    batch = feed_load(source=source, path=path)
    assert batch.status == "succeeded", batch.error
    return batch


@pytest.fixture
def loaded(write_feed, tmp_path):
    """Background population plus the hand-made pairs (first of each pair in core, second in card), loaded."""
    sample = tmp_path / "sample"
    generate_sample_feeds(out_dir=sample, customers=1000, seed=2)
    for source, name in (("core", CORE_FILE), ("card", CARD_FILE), ("wealth", WEALTH_FILE)):
        load(source, sample / name)
    pairs = (CLEAR_MATCH, CLEAR_NON_MATCH, BORDERLINE)
    load("core", write_feed([first for first, _ in pairs]))
    load("card", write_feed([second for _, second in pairs]))


@pytest.fixture
def resolved(loaded):
    """The loaded records, resolved."""
    report = identity_resolve()
    assert ProbabilisticModel.objects.exists(), "the tier should have estimated a model from the loaded data"
    assert report.probabilistic_candidates > 0
    return report


def record(key: str) -> SourceRecord:
    return SourceRecord.objects.select_related("profile").get(customer_key=key)


def ordered_ids(key_a: str, key_b: str) -> tuple[int, int]:
    return tuple(sorted((record(key_a).pk, record(key_b).pk)))


def shared_rule_keys(key_a: str, key_b: str) -> set:
    keys = lambda key: set(MatchKey.objects.filter(record=record(key)).values_list("rule_id", "key_hi", "key_lo"))  # noqa: E731
    return keys(key_a) & keys(key_b)


def test_clear_match_that_no_rule_links_is_linked_into_one_profile(resolved):
    assert shared_rule_keys("PM1", "PM2") == set()
    a, b = record("PM1"), record("PM2")
    assert a.profile_id == b.profile_id
    profile = a.profile
    assert profile.status == CustomerProfile.Status.ACTIVE and profile.record_count == 2
    assert profile.email == "oyxm79@example.cn"  # golden record combines both: email only in core

    link = RecordLink.objects.get(record_a_id=min(a.pk, b.pk), record_b_id=max(a.pk, b.pk))
    assert link.kind == RecordLink.Kind.PROBABILISTIC
    assert link.probability >= settings.CDP_MATCH_PROBABILITY_LINK
    # the link explains itself: the model that made it and the weight of each comparison
    assert link.evidence["model"] == ProbabilisticModel.objects.get().pk
    comparisons = link.evidence["comparisons"]
    assert comparisons["name"].startswith("exact") and comparisons["contact"].startswith("phone")
    assert comparisons["birth_date"].startswith("day and month transposed")
    assert not PossibleDuplicate.objects.filter(record_a_id=link.record_a_id, record_b_id=link.record_b_id).exists()


def test_clear_non_match_stays_apart_and_is_not_sent_to_review(resolved):
    assert record("PN1").profile_id != record("PN2").profile_id
    pair = ordered_ids("PN1", "PN2")
    assert not RecordLink.objects.filter(record_a_id=pair[0], record_b_id=pair[1]).exists()
    assert not PossibleDuplicate.objects.filter(record_a_id=pair[0], record_b_id=pair[1]).exists()


def borderline_duplicate() -> PossibleDuplicate:
    a, b = ordered_ids("PB1", "PB2")
    return PossibleDuplicate.objects.get(record_a_id=a, record_b_id=b)


def test_borderline_pair_becomes_a_possible_duplicate_and_stays_apart(resolved):
    duplicate = borderline_duplicate()
    assert duplicate.status == PossibleDuplicate.Status.OPEN
    assert settings.CDP_MATCH_PROBABILITY_REVIEW <= duplicate.probability < settings.CDP_MATCH_PROBABILITY_LINK
    assert duplicate.evidence["comparisons"]["name"].startswith("exact")
    assert duplicate.evidence["comparisons"]["birth_date"].startswith("day and month transposed")
    assert record("PB1").profile_id != record("PB2").profile_id
    assert not RecordLink.objects.filter(record_a_id=duplicate.record_a_id, record_b_id=duplicate.record_b_id).exists()
    assert resolved.possible_duplicates >= 1


def test_accepting_the_possible_duplicate_merges_the_pair_for_good(resolved, write_feed):
    before = {record("PB1").profile.public_id, record("PB2").profile.public_id}

    possible_duplicate_accept(duplicate=borderline_duplicate(), decided_by="reviewer")

    a, b = record("PB1"), record("PB2")
    assert a.profile_id == b.profile_id
    assert a.profile.public_id in before and a.profile.record_count == 2
    absorbed = CustomerProfile.objects.get(public_id=(before - {a.profile.public_id}).pop())
    assert (absorbed.status, absorbed.merged_into_id) == (CustomerProfile.Status.MERGED, a.profile_id)
    duplicate = borderline_duplicate()
    assert (duplicate.status, duplicate.decided_by) == (PossibleDuplicate.Status.ACCEPTED, "reviewer")
    assert RecordLink.objects.get(record_a_id=duplicate.record_a_id, record_b_id=duplicate.record_b_id).kind == "manual"

    # a changed card row and a full re-resolution keep the reviewer's decision
    load("card", write_feed([dict(BORDERLINE[1], email="zhangwei.sh@example.cn")]))
    identity_resolve()
    identity_resolve(full=True)
    assert record("PB1").profile_id == record("PB2").profile_id
    assert PossibleDuplicate.objects.filter(status=PossibleDuplicate.Status.OPEN,
                                            record_a_id=duplicate.record_a_id,
                                            record_b_id=duplicate.record_b_id).count() == 0


def test_rejecting_the_possible_duplicate_keeps_the_pair_apart_for_good(resolved, write_feed):
    possible_duplicate_reject(duplicate=borderline_duplicate(), decided_by="reviewer")

    duplicate = borderline_duplicate()
    assert (duplicate.status, duplicate.decided_by) == (PossibleDuplicate.Status.REJECTED, "reviewer")
    assert DoNotLink.objects.filter(record_a_id=duplicate.record_a_id, record_b_id=duplicate.record_b_id).exists()
    assert record("PB1").profile_id != record("PB2").profile_id

    # even when the card record changes so that a deterministic rule links the pair (email + name), and after
    # a full re-resolution, the pair is neither merged, linked nor offered for review again
    load("card", write_feed([dict(BORDERLINE[1], email="zw85@example.cn", full_name="张 伟 ")]))
    identity_resolve()
    identity_resolve(full=True)
    assert shared_rule_keys("PB1", "PB2")
    assert record("PB1").profile_id != record("PB2").profile_id
    assert PossibleDuplicate.objects.filter(record_a_id=duplicate.record_a_id,
                                            record_b_id=duplicate.record_b_id).get().status == "rejected"
    assert not RecordLink.objects.filter(record_a_id=duplicate.record_a_id, record_b_id=duplicate.record_b_id).exists()


@pytest.mark.parametrize("step", ["train_model", "score_pairs"])
def test_a_scoring_failure_fails_the_whole_resolution_and_the_next_run_completes_it(loaded, monkeypatch, step):
    # A first resolution trains and scores in a thread while the match keys are written; an error in either
    # must still undo the run.
    def broken(*args, **kwargs):
        raise RuntimeError(f"{step} died")

    with monkeypatch.context() as patched:
        patched.setattr(probabilistic, step, broken)
        with pytest.raises(RuntimeError, match=f"{step} died"):
            identity_resolve()
    assert not MatchKey.objects.exists()
    assert not CustomerProfile.objects.exists()
    assert not ProbabilisticModel.objects.exists()
    assert not SourceRecord.objects.filter(needs_resolution=False).exists()

    report = identity_resolve()
    assert report.probabilistic_links > 0
    assert ProbabilisticModel.objects.count() == 1
    assert record("PM1").profile_id == record("PM2").profile_id
    assert not SourceRecord.objects.filter(needs_resolution=True).exists()


def test_every_prediction_blocking_rule_requires_equality_on_a_column_the_delta_universe_is_drawn_by():
    # A delta scores its candidates against the records sharing one of these values with one: a rule without
    # any of them pairs only records that another shared value draws in (the keys derived in the model have no
    # column to draw by; the postcode would draw in most records).
    for rule in probabilistic.PREDICTION_BLOCKING_RULES:
        assert (set(rule) & set(probabilistic.UNIVERSE_COLUMNS)
                or rule in probabilistic.BLOCKING_RULES_OUTSIDE_UNIVERSE), rule


def test_a_full_re_resolution_scores_linked_records_again_and_keeps_their_profile(resolved):
    # The pair shares a profile only through its probabilistic link, which a full run scores again.
    profile = record("PM1").profile_id
    assert record("PM2").profile_id == profile

    report = identity_resolve(full=True)

    assert report.probabilistic_links > 0
    assert record("PM1").profile_id == record("PM2").profile_id == profile
    assert RecordLink.objects.filter(record_a_id=ordered_ids("PM1", "PM2")[0],
                                     record_b_id=ordered_ids("PM1", "PM2")[1], kind="probabilistic").exists()


def test_a_delta_that_changes_a_probabilistically_linked_record_keeps_it_in_its_profile(resolved, write_feed):
    profile = record("PM2").profile_id
    assert record("PM1").profile_id == profile
    changed = dict(CLEAR_MATCH[1], email="ouyang.xm@example.cn")  # a new e-mail: no rule links it either

    load("card", write_feed([changed]))
    report = identity_resolve()

    assert report.records_resolved == 1
    assert record("PM2").email == "ouyang.xm@example.cn"
    assert record("PM1").profile_id == record("PM2").profile_id == profile


# Households: each pair shares a home and its contact data, and is two people (different given names and birth
# dates). The model alone would link them (same surname, phone, e-mail, address, postcode and city).
HOME = {"address": "上海市徐汇区漕溪北路88号", "city": "上海市", "postcode": "200030"}
PARENT_AND_CHILD = (
    customer("HP1", full_name="王建国", gender="M", birth_date="1958-02-03", phone="13912340011",
             email="wjg58@163.com", **HOME),
    customer("HP2", family_name="王", given_name="小军", gender="M", birth_date="1986-09-10", phone="13912340011",
             email="wjg58@163.com", **HOME),
)
SPOUSES = (
    customer("HS1", full_name="陈丽", gender="F", birth_date="1979-05-06", phone="13912340021",
             email="chen.home@163.com", **HOME),
    customer("HS2", family_name="陈", given_name="刚", gender="M", birth_date="1978-11-20", phone="13912340021",
             email="chen.home@163.com", **HOME),
)


def resolve_pairs_among_a_thousand_people(write_feed, tmp_path, pairs) -> None:
    """Each pair's first record in core and second in card, beside a generated thousand people (so the model has
    data to be estimated from), then resolved."""
    sample = tmp_path / "sample"
    generate_sample_feeds(out_dir=sample, customers=1000, seed=2)
    for source, name in (("core", CORE_FILE), ("card", CARD_FILE), ("wealth", WEALTH_FILE)):
        load(source, sample / name)
    load("core", write_feed([first for first, _ in pairs]))
    load("card", write_feed([second for _, second in pairs]))
    identity_resolve()


def test_parent_and_child_or_spouses_sharing_contact_data_stay_apart(write_feed, tmp_path):
    resolve_pairs_among_a_thousand_people(write_feed, tmp_path, (PARENT_AND_CHILD, SPOUSES))

    assert record("HP1").profile_id != record("HP2").profile_id
    assert record("HS1").profile_id != record("HS2").profile_id
    assert record("HP1").profile.record_count == record("HS1").profile.record_count == 1


# Twins as a card application types them: same family name, birthday and home, one giving a phone, the other an
# e-mail, so no contact datum is shared; their names are Chinese, and a Chinese customer has one given name.
TWINS_WITHOUT_SHARED_CONTACT = (
    customer("TW1", full_name="刘雪", gender="F", birth_date="1984-04-12", phone="13601067032", **HOME),
    customer("TW2", family_name="Liu", given_name="Yaozhen", gender="F", birth_date="1984-04-12",
             email="liu_yaozhen78@aliyun.com", **HOME),
)


def test_twins_with_chinese_names_stay_apart_with_no_phone_or_email_in_common(write_feed, tmp_path):
    resolve_pairs_among_a_thousand_people(write_feed, tmp_path, (TWINS_WITHOUT_SHARED_CONTACT,))

    assert record("TW1").profile_id != record("TW2").profile_id
