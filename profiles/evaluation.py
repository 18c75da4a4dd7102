"""Identity resolution measured against a labelled sample: how the records are split into live profiles compared
with a truth file `source,customer_key,entity` (records with the same entity are the same person).

Only the records the truth file names are evaluated; a profile's other records are ignored, and a named record
that is loaded but not resolved yet counts as a profile of its own. Every figure comes from the contingency table
of (entity, profile) counts, computed in SQL, so the cost grows with the number of records named, never with the
number of pairs:

- pairs: a pair of records is predicted when they share a profile and true when they share an entity;
  precision = right pairs / predicted pairs, recall = right pairs / true pairs.
- exact clusters: a profile is right when the records of it that the file names are exactly one entity's records;
  precision = right profiles / profiles, recall = right profiles / entities.
- B-cubed: for each record, the share of its profile that is its entity (precision) and the share of its entity
  that is in its profile (recall), averaged over the records.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from profiles import sql
from profiles.models import (
    CustomerProfile, MatchKey, MatchRule, PossibleDuplicate, RecordLink, Source, SourceRecord,
)

TRUTH_COLUMNS = ("source", "customer_key", "entity")
T_TRUTH = "identity_eval_truth"
T_ASSIGNED = "identity_eval_assigned"


class IdentityTruthError(ValueError):
    """The truth file cannot be read as `source,customer_key,entity` rows."""


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def _ratio(part: float, whole: float) -> float:
    # Nothing predicted (or nothing to find) is no error: precision (recall) 1 by convention.
    return part / whole if whole else 1.0


@dataclass(frozen=True)
class Evidence:
    """Why two records of different entities share a profile, or what was known about two records of one entity
    that did not: a rule whose key both records carry, a stored link, or a pair left for review."""

    record_a: str
    record_b: str
    kind: str  # "rule", "probabilistic", "manual" or "possible duplicate (status)"
    detail: str


@dataclass
class ErrorGroup:
    """A profile holding several entities (false merge) or an entity spread over several profiles (missed)."""

    label: str  # the profile's public id, or the entity
    wrong_pairs: int
    records: list[tuple[str, str, str]]  # (source:key, entity, profile public id or "unresolved")
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class IdentityEvaluation:
    records: int  # named in the truth file and loaded
    entities: int
    profiles: int
    unknown_keys: int  # named in the truth file but not loaded
    unknown_examples: list[str]
    unresolved: int  # loaded but without a profile
    true_pairs: int
    predicted_pairs: int
    right_pairs: int
    exact_clusters: int
    bcubed: Scores
    false_merges: list[ErrorGroup]
    missed: list[ErrorGroup]

    @property
    def pairs(self) -> Scores:
        return Scores(_ratio(self.right_pairs, self.predicted_pairs), _ratio(self.right_pairs, self.true_pairs))

    @property
    def clusters(self) -> Scores:
        return Scores(_ratio(self.exact_clusters, self.profiles), _ratio(self.exact_clusters, self.entities))

    def summary(self) -> str:
        pairs, clusters, bcubed = self.pairs, self.clusters, self.bcubed
        lines = [
            f"records {self.records:,} (named in the truth and loaded; {self.unknown_keys:,} named but not loaded, "
            f"{self.unresolved:,} loaded but not resolved), entities {self.entities:,}, profiles {self.profiles:,}",
            f"pairs:    precision {pairs.precision:.4f}  recall {pairs.recall:.4f}  F1 {pairs.f1:.4f}  "
            f"({self.right_pairs:,} right of {self.predicted_pairs:,} linked, {self.true_pairs:,} true; "
            f"{self.predicted_pairs - self.right_pairs:,} false, {self.true_pairs - self.right_pairs:,} missed)",
            f"clusters: precision {clusters.precision:.4f}  recall {clusters.recall:.4f}  F1 {clusters.f1:.4f}  "
            f"({self.exact_clusters:,} profiles are exactly one entity)",
            f"B-cubed:  precision {bcubed.precision:.4f}  recall {bcubed.recall:.4f}  F1 {bcubed.f1:.4f}",
        ]
        if self.unknown_examples:
            lines.append(f"not loaded, e.g.: {', '.join(self.unknown_examples)}")
        return "\n".join(lines)


def identity_evaluate(*, truth_path: Path | str, show: int = 10) -> IdentityEvaluation:
    """Compare the live profiles with the truth file; list the `show` worst false merges and missed entities."""
    truth = read_truth(truth_path)
    sql.create_temp_table(T_TRUTH, "source varchar(32), customer_key varchar(64), entity text")
    try:
        sql.bulk_insert_arrow(T_TRUTH, truth)
        sql.analyze(T_TRUTH)
        return _evaluate(show)
    finally:
        sql.drop_temp_table(T_TRUTH)
        sql.drop_temp_table(T_ASSIGNED)


def read_truth(path: Path | str) -> pa.Table:
    """The truth file's three columns as trimmed strings; a clear error for anything else."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = [name.strip() for name in next(csv.reader([fh.readline()]), [])]
    except FileNotFoundError:
        raise IdentityTruthError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise IdentityTruthError(f"{path}: not UTF-8 text") from None
    if missing := [name for name in TRUTH_COLUMNS if name not in header]:
        raise IdentityTruthError(f"{path}: the header needs the columns {','.join(TRUTH_COLUMNS)}; "
                                 f"missing {', '.join(missing)}")
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={name: pa.string() for name in header},
                                   include_columns=list(TRUTH_COLUMNS), strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise IdentityTruthError(f"{path}: not a truth file: {str(exc).splitlines()[0]}") from None
    table = pa.table({name: pc.utf8_trim_whitespace(table[name]) for name in TRUTH_COLUMNS})
    for name in TRUTH_COLUMNS:
        empty = pc.equal(pc.utf8_length(table[name]), 0)
        if pc.any(empty).as_py():
            row = pc.index(empty, True).as_py() + 1
            raise IdentityTruthError(f"{path}: row {row}: empty {name}")
    for name, limit in (("source", 32), ("customer_key", 64)):
        too_long = pc.greater(pc.utf8_length(table[name]), limit)
        if pc.any(too_long).as_py():
            row = pc.index(too_long, True).as_py() + 1
            raise IdentityTruthError(f"{path}: row {row}: {name} longer than {limit} characters")
    counts = table.group_by(["source", "customer_key"]).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        raise IdentityTruthError(f"{path}: {repeated.num_rows} record(s) named more than once, e.g. "
                                 f"{first['source']}:{first['customer_key']}")
    return table


def _evaluate(show: int) -> IdentityEvaluation:
    t_source, t_record = Source._meta.db_table, SourceRecord._meta.db_table
    sql.drop_temp_table(T_ASSIGNED)
    # A record without a profile is a cluster of its own: its negated record id cannot clash with a profile id.
    sql.execute(
        f"CREATE TEMP TABLE {T_ASSIGNED} AS SELECT t.source, t.customer_key, t.entity, r.id AS record_id, "
        f"COALESCE(r.profile_id, -r.id) AS cluster FROM {T_TRUTH} t "
        f"JOIN {t_source} s ON s.code = t.source "
        f"JOIN {t_record} r ON r.source_id = s.id AND r.customer_key = t.customer_key"
    )
    sql.analyze(T_ASSIGNED)
    (records, entities, profiles, unresolved, right, predicted, true, exact, bc_precision, bc_recall), = sql.fetch_all(
        f"WITH cells AS (SELECT entity, cluster, COUNT(*) AS n FROM {T_ASSIGNED} GROUP BY entity, cluster), "
        f"by_entity AS (SELECT entity, SUM(n) AS n FROM cells GROUP BY entity), "
        f"by_cluster AS (SELECT cluster, SUM(n) AS n FROM cells GROUP BY cluster) "
        f"SELECT (SELECT COUNT(*) FROM {T_ASSIGNED}), (SELECT COUNT(*) FROM by_entity), "
        f"(SELECT COUNT(*) FROM by_cluster), (SELECT COUNT(*) FROM {T_ASSIGNED} WHERE cluster < 0), "
        f"(SELECT COALESCE(SUM(n * (n - 1) / 2), 0) FROM cells), "
        f"(SELECT COALESCE(SUM(n * (n - 1) / 2), 0) FROM by_cluster), "
        f"(SELECT COALESCE(SUM(n * (n - 1) / 2), 0) FROM by_entity), "
        f"(SELECT COUNT(*) FROM cells c JOIN by_entity e USING (entity) JOIN by_cluster p USING (cluster) "
        f" WHERE c.n = e.n AND c.n = p.n), "
        f"(SELECT COALESCE(SUM(1.0 * c.n * c.n / p.n), 0) FROM cells c JOIN by_cluster p USING (cluster)), "
        f"(SELECT COALESCE(SUM(1.0 * c.n * c.n / e.n), 0) FROM cells c JOIN by_entity e USING (entity))"
    )
    unknown, = sql.fetch_all(
        f"SELECT COUNT(*) FROM {T_TRUTH} t WHERE NOT EXISTS (SELECT 1 FROM {t_source} s JOIN {t_record} r "
        f"ON r.source_id = s.id WHERE s.code = t.source AND r.customer_key = t.customer_key)"
    )[0]
    unknown_examples = [f"{source}:{key}" for source, key in sql.fetch_all(
        f"SELECT source, customer_key FROM {T_TRUTH} t WHERE NOT EXISTS (SELECT 1 FROM {T_ASSIGNED} a "
        f"WHERE a.source = t.source AND a.customer_key = t.customer_key) ORDER BY source, customer_key LIMIT 5"
    )] if unknown else []
    return IdentityEvaluation(
        records=records, entities=entities, profiles=profiles, unknown_keys=unknown,
        unknown_examples=unknown_examples, unresolved=unresolved, true_pairs=int(true), predicted_pairs=int(predicted),
        right_pairs=int(right), exact_clusters=exact,
        bcubed=Scores(_ratio(float(bc_precision), records), _ratio(float(bc_recall), records)),
        false_merges=_worst(show, by="cluster") if show else [], missed=_worst(show, by="entity") if show else [],
    )


def _worst(show: int, *, by: str) -> list[ErrorGroup]:
    """By profile ("cluster"): those holding the most pairs of records of different entities (false merges); by
    "entity": those whose records are spread over the most pairs of profiles (misses). Worst first."""
    other = "entity" if by == "cluster" else "cluster"
    worst = sql.fetch_all(
        f"WITH cells AS (SELECT {by}, {other}, COUNT(*) AS n FROM {T_ASSIGNED} GROUP BY {by}, {other}) "
        f"SELECT {by}, (SUM(n) * (SUM(n) - 1) - SUM(n * (n - 1))) / 2 AS wrong FROM cells "
        f"GROUP BY {by} HAVING COUNT(*) > 1 ORDER BY wrong DESC, {by} LIMIT %s", [show]
    )
    return _groups([(key, int(wrong)) for key, wrong in worst], by=by, merged=by == "cluster")


def _groups(worst: list[tuple], *, by: str, merged: bool) -> list[ErrorGroup]:
    if not worst:
        return []
    keys = [key for key, _ in worst]
    rows = sql.fetch_all(
        f"SELECT a.{by}, a.record_id, a.source, a.customer_key, a.entity, a.cluster, p.public_id "
        f"FROM {T_ASSIGNED} a LEFT JOIN {CustomerProfile._meta.db_table} p ON p.id = a.cluster "
        f"WHERE a.{by} IN ({', '.join(['%s'] * len(keys))}) ORDER BY a.source, a.customer_key", keys
    )
    members: dict = {key: [] for key in keys}
    for key, record_id, source, customer_key, entity, cluster, public_id in rows:
        members[key].append((record_id, f"{source}:{customer_key}", entity, cluster, public_id or "unresolved"))
    evidence = _evidence([m[0] for group in members.values() for m in group])
    groups = []
    for key, wrong in worst:
        group = members[key]
        names = {record_id: name for record_id, name, *_ in group}
        side = {record_id: (entity if merged else cluster) for record_id, _, entity, cluster, _ in group}
        found = [Evidence(names[a], names[b], kind, detail) for a, b, kind, detail in evidence
                 if a in names and b in names and side[a] != side[b]]
        label = group[0][4] if merged else key
        groups.append(ErrorGroup(label=label, wrong_pairs=wrong,
                                 records=[(name, entity, profile) for _, name, entity, _, profile in group],
                                 evidence=found))
    return groups


def _evidence(record_ids: list[int]) -> list[tuple[int, int, str, str]]:
    """Between any two of these records: the rules whose key both carry, stored links and pairs for review."""
    marks = ", ".join(["%s"] * len(record_ids))
    found = [(a, b, "rule", name) for a, b, name in sql.fetch_all(
        f"SELECT x.record_id, y.record_id, m.name FROM {MatchKey._meta.db_table} x "
        f"JOIN {MatchKey._meta.db_table} y ON y.rule_id = x.rule_id AND y.key_hi = x.key_hi AND y.key_lo = x.key_lo "
        f"AND y.record_id > x.record_id JOIN {MatchRule._meta.db_table} m ON m.id = x.rule_id "
        f"WHERE x.record_id IN ({marks}) AND y.record_id IN ({marks}) ORDER BY m.priority, 1, 2",
        record_ids * 2)]
    for link in RecordLink.objects.filter(record_a_id__in=record_ids, record_b_id__in=record_ids).order_by("pk"):
        found.append((link.record_a_id, link.record_b_id, link.kind, _describe(link)))
    for pair in PossibleDuplicate.objects.filter(record_a_id__in=record_ids, record_b_id__in=record_ids).order_by("pk"):
        found.append((pair.record_a_id, pair.record_b_id, f"possible duplicate ({pair.status})", _describe(pair)))
    return found


def _describe(link) -> str:
    evidence = link.evidence or {}
    parts = [f"p={link.probability:.4f}" if link.probability is not None else "",
             f"match weight {evidence['match_weight']}" if "match_weight" in evidence else ""]
    comparisons = evidence.get("comparisons")
    if isinstance(comparisons, dict):
        parts.append(", ".join(f"{name}: {level}" for name, level in comparisons.items()))
    return "; ".join(part for part in parts if part) or "no score"
