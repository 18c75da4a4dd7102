"""evaluate_identity: the profiles scored against a truth file, on a tiny set whose answers are computed by hand."""
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from profiles.evaluation import identity_evaluate
from profiles.feeds import feed_load
from profiles.resolution import identity_resolve
from tests.factories import customer

pytestmark = pytest.mark.django_db

# Resolved by the rules into {C1,K1} (phone and birth date), {C3,K3} (the same), {C2}, {K2}, {C4}.
CORE = [
    customer("C1", full_name="张伟", phone="13824681357", birth_date="1990-01-01"),
    customer("C2", full_name="李娜", birth_date="1985-05-05", postcode="100020"),
    customer("C3", full_name="王芳", phone="13924681111", birth_date="2001-07-07"),
    customer("C4", full_name="赵强", birth_date="1970-03-03"),
]
CARD = [
    customer("K1", full_name="Zhang Wei", phone="13824681357", birth_date="1990-01-01"),
    customer("K2", full_name="Li Na", birth_date="1985-05-06", postcode="200020"),
    customer("K3", full_name="王芳", phone="13924681111", birth_date="2001-07-07"),
]
# C1+K1 are one person (found); C2+K2 are one person (missed); C3 and K3 are namesakes born the same day who share a
# phone, two people whom no rule can tell apart (falsely merged); C4 alone.
TRUTH = """source,customer_key,entity
core,C1,a
card,K1,a
core,C2,b
card,K2,b
core,C3,c
card,K3,d
core,C4,e
card,NOPE,f
"""


@pytest.fixture
def resolved(write_feed):
    for source, rows in (("core", CORE), ("card", CARD)):
        assert feed_load(source=source, path=write_feed(rows)).status == "succeeded"
    identity_resolve()


def truth_file(tmp_path, text: str):
    path = tmp_path / "truth.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_scores_match_the_hand_computed_answers(resolved, tmp_path):
    # Given 7 known records: linked pairs C1-K1 (right) and C3-K3 (wrong); true pairs C1-K1 and C2-K2
    evaluation = identity_evaluate(truth_path=truth_file(tmp_path, TRUTH), show=5)

    # Then pairs: 1 right of 2 linked, of 2 true
    assert (evaluation.records, evaluation.entities, evaluation.profiles) == (7, 5, 5)
    assert (evaluation.right_pairs, evaluation.predicted_pairs, evaluation.true_pairs) == (1, 2, 2)
    assert evaluation.pairs.precision == evaluation.pairs.recall == evaluation.pairs.f1 == 0.5
    # Exact clusters: {C1,K1} and {C4} of 5 profiles and 5 entities
    assert evaluation.exact_clusters == 2
    assert evaluation.clusters.precision == evaluation.clusters.recall == pytest.approx(0.4)
    # B-cubed: C3 and K3 each hold half of their profile, C2 and K2 half of their entity
    assert evaluation.bcubed.precision == pytest.approx(6 / 7)
    assert evaluation.bcubed.recall == pytest.approx(6 / 7)
    # The unknown key is reported, not scored
    assert evaluation.unknown_keys == 1 and evaluation.unknown_examples == ["card:NOPE"]
    # The false merge names its records and the rule that joined them; the missed entity has no evidence
    merge, = evaluation.false_merges
    assert merge.wrong_pairs == 1
    assert {name for name, _, _ in merge.records} == {"core:C3", "card:K3"}
    assert [(e.kind, e.detail) for e in merge.evidence] == [("rule", "Phone and birth date")]
    missed, = evaluation.missed
    assert (missed.label, missed.wrong_pairs, missed.evidence) == ("b", 1, [])


def test_command_prints_the_figures_and_the_worst_cases(resolved, tmp_path, capsys):
    call_command("evaluate_identity", str(truth_file(tmp_path, TRUTH)), "--show", "3")

    out = capsys.readouterr().out
    assert "pairs:    precision 0.5000  recall 0.5000  F1 0.5000" in out
    assert "1 named but not loaded" in out and "card:NOPE" in out
    assert "core:C3 ~ card:K3: rule: Phone and birth date" in out


@pytest.mark.parametrize("text, message", [
    ("source,customer_key\ncore,C1\n", "missing entity"),
    ("source,customer_key,entity\ncore,C1,a\ncard,,a\n", "row 2: empty customer_key"),
    ("source,customer_key,entity\ncore,C1,a\ncore,C1,b\n", "named more than once, e.g. core:C1"),
    ("source,customer_key,entity\ncore,C1,a,extra\n", "not a truth file"),
    ("", "missing source"),
])
def test_a_bad_truth_file_gives_a_clear_error(tmp_path, text, message):
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_identity", str(truth_file(tmp_path, text)))


def test_a_missing_truth_file_gives_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("evaluate_identity", str(tmp_path / "absent.csv"))


def test_a_record_not_resolved_yet_counts_as_a_profile_of_its_own(resolved, write_feed, tmp_path):
    # Given C4's card record, loaded after the resolution
    later = [customer("K4", full_name="赵强", birth_date="1970-03-03")]
    assert feed_load(source="card", path=write_feed(later)).status == "succeeded"

    evaluation = identity_evaluate(
        truth_path=truth_file(tmp_path, "source,customer_key,entity\ncore,C4,e\ncard,K4,e\n"), show=5)

    # Then it is scored apart from C4: one missed pair, nothing linked
    assert (evaluation.records, evaluation.unresolved, evaluation.profiles) == (2, 1, 2)
    assert (evaluation.right_pairs, evaluation.predicted_pairs, evaluation.true_pairs) == (0, 0, 1)
    assert (evaluation.pairs.precision, evaluation.pairs.recall) == (1.0, 0.0)
    missed, = evaluation.missed
    assert sorted(profile for _, _, profile in missed.records)[-1] == "unresolved"
