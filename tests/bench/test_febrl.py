"""The FEBRL harness: public records mapped to customer feeds as documented, and the plain baselines scored right."""
import csv

from bench.febrl import baseline_scores, febrl_feeds, pair_scores

FEBRL = """rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id
rec-1-org, sarah, bruhn, 44, forbes street, wintersloe, kellerberrin, 4510, vic, 19300213, 7535316
rec-1-dup-0, sara, bruhn, 44, forbes street, , kellerberrin, 4510, vic, 19300231, 7535316
rec-2-org, jacob, lanyon, 5, milne cove, , beaconsfield, 2602, vic, 19080712, 9497788
rec-2-dup-0, jacob, lanyon, 5, milne cove, , beaconsfield, 2602, vic, 19080712, 9497789
rec-3-org, kiara, everett, 8, eddy crescent, , nobl ee park, 6076, wa, 19900101, 3831644
"""


def _read(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_records_become_core_and_card_feeds_with_a_truth_file(tmp_path):
    source = tmp_path / "febrl.csv"
    source.write_text(FEBRL, encoding="utf-8")

    feeds = febrl_feeds(source, tmp_path / "out", with_ids=True, spread=False)

    # Originals in core, duplicates in card; the truth names every record once by its FEBRL person
    assert sorted(feeds) == ["card", "core"]
    truth = _read(tmp_path / "out" / "truth.csv")
    assert sorted((r["source"], r["entity"]) for r in truth) == [
        ("card", "1"), ("card", "2"), ("core", "1"), ("core", "2"), ("core", "3")]
    core = {r["given_name"]: r for r in _read(feeds["core"])}
    card = {r["given_name"]: r for r in _read(feeds["card"])}
    # Address from its three parts, city from the suburb, the id as OTHER; an impossible date is left out
    assert core["sarah"]["address"] == "44 forbes street wintersloe"
    assert (core["sarah"]["city"], core["sarah"]["birth_date"]) == ("kellerberrin", "1930-02-13")
    assert (core["sarah"]["id_type"], core["sarah"]["id_number"]) == ("OTHER", "7535316")
    assert card["sara"]["birth_date"] == ""
    # Keys say nothing about the person
    assert all("rec" not in r["customer_key"] for r in truth)


def test_without_ids_the_feeds_carry_none(tmp_path):
    source = tmp_path / "febrl.csv"
    source.write_text(FEBRL, encoding="utf-8")

    feeds = febrl_feeds(source, tmp_path / "out", with_ids=False, spread=True, seed=3)

    rows = [row for path in feeds.values() for row in _read(path)]
    assert len(rows) == 5 and not any(r["id_number"] or r["id_type"] for r in rows)


def test_baselines_score_the_pairs_their_rules_link(tmp_path):
    source = tmp_path / "febrl.csv"
    source.write_text(FEBRL, encoding="utf-8")
    feeds = febrl_feeds(source, tmp_path / "out", with_ids=True, spread=False)
    truth = tmp_path / "out" / "truth.csv"

    # The same id links person 1 only (person 2's id has a typo): 1 right pair of 1 linked, 2 true
    by_id = baseline_scores(feeds, truth, with_name_rules=False)
    assert (by_id.precision, by_id.recall) == (1.0, 0.5)
    # With the name rules person 2 links on name + birth date too (person 1's pair still only by its id)
    by_rules = baseline_scores(feeds, truth, with_name_rules=True)
    assert (by_rules.precision, by_rules.recall, by_rules.f1) == (1.0, 1.0, 1.0)


def test_pair_scores_count_pairs_from_cluster_sizes():
    # Truth {a,b,c} {d}; predicted {a,b} {c,d}: 1 right of 2 linked, 3 true
    scores = pair_scores(["x", "x", "x", "y"], [1, 1, 2, 2])
    assert (scores.precision, round(scores.recall, 4)) == (0.5, 0.3333)
