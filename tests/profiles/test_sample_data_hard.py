"""The generator's hard mode: people who share no identifier across systems, realistic errors, households and
twins, and a truth file evaluate_identity reads. The default mode's output stays what it was."""
import csv
import hashlib
import re
from collections import defaultdict

import pytest

from profiles.sample_data import (
    CARD_FILE, CORE_FILE, GROUND_TRUTH_FILE, HARD_TRUTH_FILE, WEALTH_FILE, generate_sample_feeds,
)

FEEDS = {"core": CORE_FILE, "card": CARD_FILE, "wealth": WEALTH_FILE}


def _rows(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard")
    generate_sample_feeds(out_dir=out, customers=2000, seed=4, mode="hard")
    entity = {(r["source"], r["customer_key"]): r["entity"] for r in _rows(out / HARD_TRUTH_FILE)}
    people = defaultdict(list)
    for source, name in FEEDS.items():
        for row in _rows(out / name):
            key = row.get("customer_key") or row["CUST_NO"]
            people[entity[(source, key)]].append({"source": source, "key": key, **row})
    return out, entity, people


def _digits(phone: str) -> str:
    digits = re.sub(r"\D", "", phone.translate(str.maketrans("０１２３４５６７８９", "0123456789")))
    return digits[-11:]


def _shared(core: dict, other: dict) -> bool:
    """Whether a non-core record has a CIF, id number, phone or e-mail in common with a core record."""
    return (other.get("core_cif") == core["CUST_NO"]
            or bool(core["id_number"]) and core["id_number"].upper() == other["id_number"].upper()
            or bool(core["phone"]) and _digits(core["phone"]) == _digits(other["phone"])
            or bool(core["email"]) and core["email"].lower() == other["email"].lower())


def test_truth_names_every_record_once_in_the_evaluate_identity_format(hard):
    out, entity, people = hard
    with open(out / HARD_TRUTH_FILE, encoding="utf-8") as fh:
        assert fh.readline().strip() == "source,customer_key,entity"
    assert len(entity) == sum(len(records) for records in people.values())


def test_about_a_third_of_people_share_no_identifier_across_systems(hard):
    _, _, people = hard
    spread = [records for records in people.values() if any(r["source"] != "core" for r in records)]
    apart = [records for records in spread
             if not any(_shared(core, other) for core in records if core["source"] == "core"
                        for other in records if other["source"] != "core")]
    assert 0.2 < len(apart) / len(spread) < 0.45
    others = [r for records in apart for r in records if r["source"] != "core"]
    # Their other records carry the errors of real files: pinyin for Chinese characters, missing birth dates ...
    assert sum(1 for r in others if re.fullmatch(r"[A-Za-z ]+", (r.get("family_name") or r.get("full_name") or ""))) > 50
    assert any(not r["birth_date"] for r in others)
    # ... and an old core record may hold the 15-digit form of an id another system holds in 18 digits.
    legacy = [core for records in apart for core in records if core["source"] == "core" and len(core["id_number"]) == 15]
    assert legacy


def test_twins_share_surname_birth_date_and_contact_with_different_given_names(hard):
    _, _, people = hard
    by_contact = defaultdict(set)
    for person, records in people.items():
        for r in records:
            if r["source"] == "core" and r["phone"] and r["full_name"]:
                by_contact[(r["full_name"][0], r["birth_date"], _digits(r["phone"]), r["email"])].add(
                    (person, r["full_name"]))
    twins = [names for names in by_contact.values() if len({person for person, _ in names}) > 1]
    assert len(twins) >= 10
    assert all(len({name for _, name in names}) > 1 for names in twins)


def test_default_mode_output_is_unchanged(tmp_path):
    generate_sample_feeds(out_dir=tmp_path, customers=500, seed=5)
    digest = hashlib.md5()
    for name in (CORE_FILE, CARD_FILE, WEALTH_FILE, GROUND_TRUTH_FILE):
        digest.update((tmp_path / name).read_bytes())
    # The files as the generator wrote them before the hard mode existed.
    assert digest.hexdigest() == "b7c581706eda33dbcef6880eb28da2fe"
    assert not (tmp_path / HARD_TRUTH_FILE).exists()
