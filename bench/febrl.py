"""Public person-record data (FEBRL sets 1 and 2, see their README) as the platform's customer feeds, its truth file,
and two plain baselines computed over the same feeds.

Nothing here is tuned to FEBRL: the columns are mapped as a data engineer would map them, and the baselines are
rules anyone would write first.
"""
from __future__ import annotations

import csv
import random
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from profiles.names import has_cjk, split_chinese_name
from profiles.sample_data import is_valid_cn_id

SOURCES = ("core", "card", "wealth")
FEED_HEADER = ("customer_key", "family_name", "given_name", "birth_date", "id_type", "id_number", "address", "city",
               "postcode")
TRUTH_HEADER = ("source", "customer_key", "entity")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class PairScores:
    precision: float
    recall: float
    f1: float

    def line(self) -> str:
        return f"pairs P {self.precision:.4f}  R {self.recall:.4f}  F1 {self.f1:.4f}"


def febrl_dir(root: Path) -> Path | None:
    """The FEBRL sets the project ships for its tests (tests/data/febrl), else the shared folder beside it."""
    for folder in (root / "tests" / "data" / "febrl", root.parent / "shared" / "data" / "febrl"):
        if (folder / "dataset1.csv").exists():
            return folder
    return None


def read_febrl(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh, skipinitialspace=True)]


def _birth_date(value: str) -> str:
    """YYYYMMDD as YYYY-MM-DD; an impossible date (FEBRL has them) is left out, as a load would reject it."""
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])).isoformat() if len(value) == 8 else ""
    except ValueError:
        return ""


def _customer(row: dict[str, str], key: str, with_ids: bool) -> dict[str, str]:
    address = _SPACES.sub(" ", " ".join(row[c] for c in ("street_number", "address_1", "address_2") if row[c]))
    return {
        "customer_key": key, "family_name": row["surname"], "given_name": row["given_name"],
        "birth_date": _birth_date(row["date_of_birth"]),
        "id_type": "OTHER" if with_ids and row["soc_sec_id"] else "",
        "id_number": row["soc_sec_id"] if with_ids else "",
        "address": address, "city": row["suburb"], "postcode": row["postcode"],
    }


def febrl_feeds(dataset: Path, out_dir: Path, *, with_ids: bool, spread: bool, seed: int = 1) -> dict[str, Path]:
    """Write the records of a FEBRL file as customer feeds and the truth file; return {source: feed path}.

    Without `spread` (set 1) the originals go to core and their duplicates to card; with it (set 2) each record
    goes to core, card or wealth at random (a fixed seed), so some duplicates share a source. The records are
    written in a shuffled order and keyed by their position, so neither order nor key gives the truth away.
    """
    rows = read_febrl(dataset)
    rng = random.Random(seed)
    if spread:
        sources = [rng.choice(SOURCES) for _ in rows]
    else:
        sources = ["card" if "-dup-" in row["rec_id"] else "core" for row in rows]
    order = list(range(len(rows)))
    rng.shuffle(order)
    out_dir.mkdir(parents=True, exist_ok=True)
    feeds = {source: out_dir / f"{source}.csv" for source in SOURCES if source in sources}
    handles = {source: open(path, "w", encoding="utf-8", newline="") for source, path in feeds.items()}
    try:
        writers = {source: csv.DictWriter(fh, FEED_HEADER) for source, fh in handles.items()}
        for writer in writers.values():
            writer.writeheader()
        with open(out_dir / "truth.csv", "w", encoding="utf-8", newline="") as fh:
            truth = csv.writer(fh)
            truth.writerow(TRUTH_HEADER)
            counters = Counter()
            for i in order:
                source = sources[i]
                counters[source] += 1
                key = f"{source[0].upper()}{counters[source]:06d}"
                writers[source].writerow(_customer(rows[i], key, with_ids))
                truth.writerow((source, key, rows[i]["rec_id"].split("-")[1]))
    finally:
        for fh in handles.values():
            fh.close()
    return feeds


# --- baselines: plain Python over the feeds ---------------------------------------------------------------

def _norm(value: str) -> str:
    return _SPACES.sub("", value.casefold())


def _id_key(row: dict[str, str]) -> tuple | None:
    """The id number when it is usable: any OTHER or PASSPORT number, a CN resident id only with a valid checksum."""
    number = _norm(row.get("id_number") or "").upper()
    kind = row.get("id_type") or "OTHER"
    if not number or kind == "CN_RESIDENT" and not is_valid_cn_id(number):
        return None
    return "id", kind, number


def _names(row: dict[str, str]) -> tuple[str, str]:
    """(family, whole name) as written, case-folded: from family_name + given_name, or from full_name (a name in
    Chinese characters starts with its family name, a Latin one is written "FAMILY GIVEN")."""
    if row.get("family_name") or row.get("given_name"):
        return _norm(row.get("family_name") or ""), _norm((row.get("family_name") or "") + (row.get("given_name") or ""))
    full = (row.get("full_name") or "").strip()
    if not full:
        return "", ""
    family = split_chinese_name(full)[0] if has_cjk(full) else full.split()[0]
    return _norm(family), _norm(full)


def _rule_keys(row: dict[str, str], with_name_rules: bool) -> list[tuple]:
    keys = [key] if (key := _id_key(row)) else []
    if with_name_rules:
        family, name = _names(row)
        birth, postcode = row.get("birth_date") or "", row.get("postcode") or ""
        if name and birth:
            keys.append(("name + birth date", name, birth))
        if family and birth and postcode:
            keys.append(("surname + birth date + postcode", family, birth, postcode))
    return keys


def baseline_scores(feeds: dict[str, Path], truth: Path, *, with_name_rules: bool) -> PairScores:
    """Pair scores of linking the records that share a key under any of the rules (transitively): "same id number"
    (usable: a CN resident id with a valid checksum, of the same type), or with `with_name_rules` "id, or the same
    name + birth date, or the same family name + birth date + postcode", names compared as written."""
    records: list[tuple[str, str]] = []
    keys: list[list[tuple]] = []
    for source, path in feeds.items():
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                records.append((source, row.get("customer_key") or row["CUST_NO"]))
                keys.append(_rule_keys(row, with_name_rules))
    parent = list(range(len(records)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple, int] = {}
    for i, record_keys in enumerate(keys):
        for key in record_keys:
            parent[find(i)] = find(first.setdefault(key, i))
    with open(truth, encoding="utf-8", newline="") as fh:
        entity = {(r["source"], r["customer_key"]): r["entity"] for r in csv.DictReader(fh)}
    return pair_scores([entity[record] for record in records], [find(i) for i in range(len(records))])


def pair_scores(truth: list, predicted: list) -> PairScores:
    """Pair precision, recall and F1 of two labellings of the same records, from their cluster sizes."""
    def pairs(counts: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counts.values())

    right, linked, true = pairs(Counter(zip(truth, predicted))), pairs(Counter(predicted)), pairs(Counter(truth))
    precision = right / linked if linked else 1.0
    recall = right / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(precision, recall, f1)
