"""Each comparison of the probabilistic model (profiles/probabilistic.py) on hand-built pairs: the level a typo, a
transposed birth date, pinyin against Chinese characters, swapped names, an initial or a move falls in; and a
household (parent and child sharing phone and address) against one person written twice. Pure Python, no database.

The model is estimated, unsupervised, from a generated population of people with a second record in another
system for some, carrying the same kinds of errors, and households that share contact data.
"""
import numpy as np
import pytest

from profiles.normalize import compose_full_name, name_match_key
from profiles.probabilistic import score_pairs, train_model

LINK, REVIEW = 0.99, 0.80
FAMILY = ["wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "ma", "zhu", "hu",
          "guo", "he", "gao", "lin", "luo", "zheng", "liang", "xie", "song", "tang", "han", "feng", "deng", "cao", "peng"]
SYLLABLES = ["wei", "fang", "na", "xiu", "ying", "min", "jing", "qiang", "lei", "jun", "yong", "yan", "jie", "tao",
             "ming", "chao", "lan", "xia", "ping", "hua", "yu", "hong", "ling", "peng", "hui", "jian", "wen", "hao",
             "kai", "xin", "xue", "mei", "jia", "yi", "ting", "bo", "si", "rui", "zi", "han"]
STREETS = [f"{a} {b}" for a in ("garden", "river", "station", "temple", "market", "lake", "spring", "harbour",
                                "pine", "maple", "cedar", "bamboo", "lotus", "jade", "silk")
           for b in ("road", "street", "lane", "avenue")]


def record(record_id, *, family=None, given=None, full_name=None, birth_date=None, phone=None, email=None,
           address=None, postcode=None, city=None, candidate=False):
    full_name = full_name or compose_full_name(family, given)
    return {"record_id": record_id, "cluster_id": record_id, "is_candidate": candidate,
            "name_key": name_match_key(full_name) if full_name else None, "full_name": full_name,
            "family_name": family, "given_name": given, "birth_date": birth_date, "id_number": None,
            "phone": phone, "email": email, "address": address, "postcode": postcode, "city": city, "gender": "U"}


def _typo(rng, word):
    i = int(rng.integers(1, len(word)))
    return word[:i] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))] + word[i + 1:]


def population(seed=11, people=2500):
    rng = np.random.default_rng(seed)
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    rows, people_rows = [], []
    for p in range(people):
        street = int(rng.integers(len(STREETS)))
        person = {
            "family": pick(FAMILY), "given": pick(SYLLABLES) + (pick(SYLLABLES) if rng.random() < 0.7 else ""),
            "birth_date": str(np.datetime64("1940-01-01") + np.timedelta64(int(rng.integers(0, 365 * 65)), "D")),
            "phone": f"+861{int(rng.integers(3_000_000_000, 9_999_999_999))}" if rng.random() < 0.8 else None,
            "email": f"u{p}@mail.example" if rng.random() < 0.5 else None,
            "address": f"{int(rng.integers(1, 300))} {STREETS[street]}", "postcode": f"{200000 + street * 10}",
            "city": f"city{street % 12:02d}",
        }
        if people_rows and rng.random() < 0.15:  # a household member: the same surname, phone, e-mail and address
            other = pick(people_rows)
            person.update({k: other[k] for k in ("family", "phone", "email", "address", "postcode", "city")})
        people_rows.append(person)
        rows.append(record(len(rows) + 1, **person))
        if rng.random() < 0.4:  # the same person in another system, with the errors such systems carry
            dup = dict(person)
            r = rng.random()
            if r < 0.15:
                dup["given"] = _typo(rng, dup["given"])
            elif r < 0.2:
                dup["family"], dup["given"] = dup["given"], dup["family"]
            y, m, d = dup["birth_date"].split("-")
            r = rng.random()
            if r < 0.05 and int(d) <= 12:
                dup["birth_date"] = f"{y}-{d}-{m}"
            elif r < 0.1:
                dup["birth_date"] = f"{y}-{m}-{(int(d) % 28) + 1:02d}"
            if rng.random() < 0.15:
                dup["address"] = f"{int(rng.integers(1, 300))} {dup['address'].split(' ', 1)[1]}"
            if rng.random() < 0.3:
                dup["email"] = None
            if rng.random() < 0.3:
                dup["phone"] = None if rng.random() < 0.5 else f"+861{int(rng.integers(3_000_000_000, 9_999_999_999))}"
            rows.append(record(len(rows) + 1, **dup))
    return rows


SHANGHAI = {"postcode": "200031", "city": "shanghai"}
HOME = {"phone": "+8613911112222", "email": "zhou.family@mail.example", "address": "21 orchid road", **SHANGHAI}
PAIRS = {
    "typo": (record(900_001, family="chen", given="xiaoming", birth_date="1971-06-18", candidate=True, **HOME),
             record(900_002, family="chen", given="xiaomign", birth_date="1971-06-18", **HOME)),
    "transposed": (record(900_011, family="gao", given="yuting", birth_date="1979-03-04", **SHANGHAI),
                   record(900_012, family="gao", given="yuting", birth_date="1979-04-03", candidate=True, **SHANGHAI)),
    "one character": (record(900_021, family="lin", given="zihan", birth_date="1983-09-14", candidate=True),
                      record(900_022, family="lin", given="zihan", birth_date="1983-09-17")),
    "pinyin": (record(900_031, full_name="张晓明", birth_date="1966-01-23", candidate=True, **SHANGHAI),
               record(900_032, family="Zhang", given="Xiaoming", birth_date="1966-01-23", **SHANGHAI)),
    "swapped": (record(900_041, family="liu", given="yang", birth_date="1990-10-02", candidate=True, **SHANGHAI),
                record(900_042, family="yang", given="liu", birth_date="1990-10-02", **SHANGHAI)),
    "initial": (record(900_051, family="huang", given="j", birth_date="1958-12-01", candidate=True, **SHANGHAI),
                record(900_052, family="huang", given="jiahui", birth_date="1958-12-01", **SHANGHAI)),
    "moved": (record(900_061, family="song", given="meiling", birth_date="1975-05-05", address="12 garden road",
                     candidate=True, **SHANGHAI),
              record(900_062, family="song", given="meiling", birth_date="1975-05-05", address="188 garden road",
                     **SHANGHAI)),
    "postcode typo": (record(900_071, family="tang", given="wenjie", birth_date="1962-02-27", postcode="200031",
                             candidate=True),
                      record(900_072, family="tang", given="wenjie", birth_date="1962-02-27", postcode="200013")),
    # parent and child: one phone, e-mail and address, one surname; different given names and birth dates
    "household": (record(900_081, family="zhou", given="jianguo", birth_date="1960-02-11", candidate=True, **HOME),
                  record(900_082, family="zhou", given="haoran", birth_date="1988-07-30", **HOME)),
    # the parent in another system: a typo in the given name, day and month transposed
    "same person": (record(900_091, family="zhou", given="jianguo", birth_date="1960-02-11", candidate=True, **HOME),
                    record(900_092, family="zhou", given="jiangou", birth_date="1960-11-02", **HOME)),
}


@pytest.fixture(scope="module")
def model():
    return train_model(population())


@pytest.fixture(scope="module")
def scored(model):
    """Every blocked pair of the hand-built records, whatever its probability."""
    hand_built = [r for pair in PAIRS.values() for r in pair]
    links = score_pairs(model, [*population(), *hand_built], review_threshold=0.0)
    by_pair = {(link.record_a, link.record_b): link for link in links}
    return {case: by_pair.get((a["record_id"], b["record_id"])) for case, (a, b) in PAIRS.items()}


@pytest.mark.parametrize("case, comparison, level", [
    ("typo", "name", "both parts alike (Jaro-Winkler >=0.92)"),
    ("transposed", "birth_date", "day and month transposed"),
    ("one character", "birth_date", "one character"),
    ("pinyin", "name", "same in pinyin"),
    ("swapped", "name", "given and family swapped"),
    ("initial", "name", "family exact, same given initial"),
    ("moved", "contact", "address: most words (moved in the street)"),
    ("postcode typo", "postcode", "one character"),
    ("household", "contact", "phone, and e-mail or address"),
])
def test_each_comparison_puts_a_hand_built_pair_in_its_level(scored, case, comparison, level):
    link = scored[case]
    assert link is not None, f"{case}: the pair was not compared"
    assert link.comparisons[comparison].startswith(level + " ("), (case, link.comparisons)


@pytest.mark.parametrize("case", ["typo", "transposed", "pinyin", "swapped", "moved", "same person"])
def test_one_person_written_with_an_error_is_linked(scored, case):
    assert scored[case].probability >= LINK, (case, scored[case])


def test_a_household_is_not_a_person(scored):
    household, person = scored["household"], scored["same person"]
    assert household.probability < REVIEW, household
    assert person.match_weight > household.match_weight + 10


def test_every_level_has_an_estimated_or_merged_m(model):
    merged = model["training"]["merged_levels"]
    for comparison in model["splink_settings"]["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            assert 0 < level["m_probability"] <= 1 and 0 < level["u_probability"] <= 1, (comparison, level)
    # the data has no id number: its levels are named, not silently defaulted
    assert model["training"]["u_not_sampled"].get("id_number") == "no values"
    assert all(isinstance(neighbour, str) for neighbour in merged.values())
