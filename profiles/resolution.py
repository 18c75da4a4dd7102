"""Identity resolution: source records -> one customer profile per person.

The pipeline (one transaction, so an interrupted run leaves the previous state and the next run redoes it):
1. match keys for the records a load touched, one per active rule (SQL INSERT ... SELECT);
2. guard rails: identifier values shared by too many records of one source are suppressed;
3. the probabilistic tier scores records no rule links (see probabilistic.py);
4. the scope: touched records, the records they share a key or a link with, and all records of the
   profiles those belong to;
5. clustering of the scope: connected components of the links (scipy), and for the few components that break
   a constraint (do-not-link, two different valid id numbers of one type, size cap) a greedy union-find that
   adds links strongest first and skips any that would break one;
6. clusters -> profiles: a cluster keeps the profile that holds most of its records, other profiles it covers
   are merged into it (and keep resolving to it), a cluster with no profile gets a new one;
7. survivorship and lineage of every golden attribute (SQL window functions).
"""
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from django.conf import settings
from django.db import transaction
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from . import probabilistic, sql
from .models import (
    AttributeLineage, CustomerProfile, DoNotLink, MatchKey, MatchRule, PossibleDuplicate, ProbabilisticModel,
    RecordLink, Source, SourceRecord, SuppressedIdentifier,
)

log = logging.getLogger(__name__)

T_RECORD = SourceRecord._meta.db_table
T_PROFILE = CustomerProfile._meta.db_table
T_KEY = MatchKey._meta.db_table
T_RULE = MatchRule._meta.db_table
T_LINK = RecordLink._meta.db_table
T_DNL = DoNotLink._meta.db_table
T_LINEAGE = AttributeLineage._meta.db_table
T_SOURCE = Source._meta.db_table
T_SUPPRESSED = SuppressedIdentifier._meta.db_table

# SQL for each identifier a rule can name, over source records aliased `r`. NULL means "no usable value".
IDENTIFIER_SQL = {
    "id_number": "CASE WHEN r.id_valid THEN r.id_type || ':' || r.id_number_hash END",
    "core_cif": "r.cif_ref",
    "phone": "r.phone",
    "birth_date": "CAST(r.birth_date AS TEXT)",
    "email": "r.email",
    "name": "r.name_key",
    "postcode": "r.postcode",
    "city": "r.city",
    "gender": "CASE WHEN r.gender IN ('M', 'F') THEN r.gender END",
}
# Identifiers that point at one person by themselves, so one shared too widely (a branch phone) is suppressed.
GUARDED_IDENTIFIERS = ("id_number", "core_cif", "phone", "email")

# Golden attributes by survivorship group: a group's values always come from one record together.
SURVIVORSHIP_GROUPS = {
    "name": ("r.full_name IS NOT NULL", ("full_name", "family_name", "given_name")),
    "gender": ("r.gender IN ('M', 'F')", ("gender",)),
    "birth_date": ("r.birth_date IS NOT NULL", ("birth_date",)),
    "id_number": ("r.id_number_hash IS NOT NULL", ("id_type", "id_number_hash", "id_number_masked")),
    "phone": ("r.phone IS NOT NULL", ("phone",)),
    "email": ("r.email IS NOT NULL", ("email",)),
    "address": ("(r.address IS NOT NULL OR r.postcode IS NOT NULL OR r.city IS NOT NULL)", ("address", "city", "postcode")),
}
# Edge strength order: deterministic rules by priority (0..), reviewer links, then probabilistic links.
MANUAL_LINK_RANK = 10_000
PROBABILISTIC_LINK_RANK = 20_000


@dataclass
class ResolutionReport:
    records_resolved: int = 0
    scope_records: int = 0
    profiles_created: int = 0
    profiles_merged: int = 0
    profiles_updated: int = 0
    probabilistic_candidates: int = 0
    probabilistic_links: int = 0
    possible_duplicates: int = 0
    suppressed_identifiers: int = 0
    constrained_clusters: int = 0
    seconds: float = 0.0
    steps: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"resolved {self.records_resolved} records in {self.seconds}s: {self.profiles_created} new profiles, "
            f"{self.profiles_merged} merged, {self.probabilistic_links} probabilistic links, "
            f"{self.possible_duplicates} possible duplicates for review"
        )


class _Timer:
    def __init__(self, report: ResolutionReport):
        self.report = report
        self.last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.report.steps[step] = round(now - self.last, 3)
        self.last = now


def identity_resolve(*, full: bool = False, train: bool | None = None) -> ResolutionReport:
    """Resolve every record that a load touched (or all records with `full`) into profiles."""
    report = ResolutionReport()
    started = time.perf_counter()
    with transaction.atomic():
        if sql.is_postgres():
            # One resolution at a time: two would race to assign the same records.
            sql.execute("SELECT pg_advisory_xact_lock(%s)", [sql.advisory_lock_key("resolve", 0)])
        sql.set_work_mem()
        if full:
            sql.execute(f"UPDATE {T_RECORD} SET needs_resolution = TRUE WHERE needs_resolution = FALSE")
        timer = _Timer(report)
        sql.create_temp_table("resolve_dirty", "record_id BIGINT PRIMARY KEY")
        sql.execute(f"INSERT INTO resolve_dirty (record_id) SELECT id FROM {T_RECORD} WHERE needs_resolution")
        sql.analyze("resolve_dirty")
        report.records_resolved = sql.fetch_all("SELECT COUNT(*) FROM resolve_dirty")[0][0]
        if report.records_resolved == 0:
            sql.drop_temp_table("resolve_dirty")
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        rules = list(MatchRule.objects.filter(is_active=True))
        suppressed_records = _refresh_suppressed_identifiers(report, rules)
        timer.lap("guard_rails")
        _refresh_match_keys(rules)
        sql.analyze_after_bulk_write(T_KEY, report.records_resolved)
        timer.lap("match_keys")
        _run_probabilistic_tier(report, full=full, train=train)
        timer.lap("probabilistic")
        _build_scope(suppressed_records)
        report.scope_records = sql.fetch_all("SELECT COUNT(*) FROM resolve_scope")[0][0]
        timer.lap("scope")
        record_ids, labels = _cluster_scope(report)
        timer.lap("cluster")
        _assign_profiles(report, record_ids, labels)
        timer.lap("assign_profiles")
        _apply_survivorship()
        timer.lap("survivorship")
        for table in ("resolve_dirty", "resolve_scope", "resolve_profiles"):
            sql.drop_temp_table(table)
        timer.lap("finish")
    report.seconds = round(time.perf_counter() - started, 3)
    log.info("identity resolution: %s", report.as_dict())
    return report


# --- 1. guard rails and match keys -------------------------------------------------------------------------

def _refresh_suppressed_identifiers(report: ResolutionReport, rules: list[MatchRule]) -> list[int]:
    """Suppress guarded values of touched records that are now over the limit; return the records holding them."""
    limit = settings.CDP_MAX_SHARED_IDENTIFIER
    newly: list[tuple[str, str]] = []
    for name in GUARDED_IDENTIFIERS:
        expr = IDENTIFIER_SQL[name]
        over = sql.fetch_all(
            f"SELECT r.source_id, {expr} AS v, COUNT(*) FROM {T_RECORD} r "
            f"WHERE {expr} IN (SELECT {expr} FROM {T_RECORD} r JOIN resolve_dirty d ON d.record_id = r.id) "
            f"GROUP BY r.source_id, {expr} HAVING COUNT(*) > %s",
            [limit],
        )
        known = set(
            SuppressedIdentifier.objects.filter(field=name, value__in={v for _, v, _ in over}).values_list("value", flat=True)
        )
        for source_id, value, count in over:
            SuppressedIdentifier.objects.update_or_create(
                field=name, value=value, source_id=source_id, defaults={"record_count": count}
            )
            if value not in known:
                newly.append((name, value))
    report.suppressed_identifiers = SuppressedIdentifier.objects.count()
    if not newly:
        return []
    # Records holding a newly suppressed value lose the keys built on it and are resolved again.
    affected: set[int] = set()
    for name, value in newly:
        ids = [rid for (rid,) in sql.fetch_all(f"SELECT r.id FROM {T_RECORD} r WHERE {IDENTIFIER_SQL[name]} = %s", [value])]
        affected.update(ids)
        rule_ids = [rule.pk for rule in rules if name in rule.fields]
        if ids and rule_ids:
            MatchKey.objects.filter(record_id__in=ids, rule_id__in=rule_ids).delete()
    return sorted(affected)


def _suppression_filter(rule_fields: list[str]) -> str:
    clauses = [
        f"NOT EXISTS (SELECT 1 FROM {T_SUPPRESSED} s WHERE s.field = '{name}' AND s.value = {IDENTIFIER_SQL[name]})"
        for name in rule_fields if name in GUARDED_IDENTIFIERS
    ]
    return " AND ".join(clauses) or "1 = 1"


def _refresh_match_keys(rules: list[MatchRule]) -> None:
    sql.execute(f"DELETE FROM {T_KEY} WHERE record_id IN (SELECT record_id FROM resolve_dirty)")
    for rule in rules:
        fields = [f for f in rule.fields if f in IDENTIFIER_SQL]
        if not fields:
            continue
        key_sql = " || '|' || ".join(f"({IDENTIFIER_SQL[f]})" for f in fields)
        present = " AND ".join(f"({IDENTIFIER_SQL[f]}) IS NOT NULL" for f in fields)
        sql.execute(
            f"INSERT INTO {T_KEY} (record_id, rule_id, key) "
            f"SELECT r.id, %s, {key_sql} FROM {T_RECORD} r JOIN resolve_dirty d ON d.record_id = r.id "
            f"WHERE {present} AND {_suppression_filter(fields)}",
            [rule.pk],
        )


# --- 3. probabilistic tier ---------------------------------------------------------------------------------

_PROBABILISTIC_SCHEMA = pa.schema(
    [("record_id", pa.int64()), ("cluster_id", pa.int64()), ("is_candidate", pa.bool_())]
    + [(name, pa.string()) for name in ("name_key", "birth_date", "phone", "email", "postcode", "city", "gender")]
)


def _run_probabilistic_tier(report: ResolutionReport, *, full: bool, train: bool | None) -> None:
    # Links scored for a record whose content changed are stale: it is scored again below.
    sql.execute(
        f"DELETE FROM {T_LINK} WHERE kind = 'probabilistic' AND (record_a_id IN (SELECT record_id FROM resolve_dirty) "
        f"OR record_b_id IN (SELECT record_id FROM resolve_dirty))"
    )
    sql.create_temp_table("resolve_candidates", "record_id BIGINT PRIMARY KEY")
    sql.execute(
        f"INSERT INTO resolve_candidates (record_id) SELECT d.record_id FROM resolve_dirty d "
        f"WHERE NOT EXISTS (SELECT 1 FROM {T_KEY} a JOIN {T_KEY} b ON b.rule_id = a.rule_id AND b.key = a.key "
        f"AND b.record_id <> a.record_id WHERE a.record_id = d.record_id) "
        f"AND NOT EXISTS (SELECT 1 FROM {T_LINK} l WHERE l.kind = 'manual' "
        f"AND (l.record_a_id = d.record_id OR l.record_b_id = d.record_id))"
    )
    sql.analyze("resolve_candidates")
    report.probabilistic_candidates = sql.fetch_all("SELECT COUNT(*) FROM resolve_candidates")[0][0]
    if report.probabilistic_candidates == 0:
        sql.drop_temp_table("resolve_candidates")
        return
    universe = _probabilistic_universe(everything=full)
    model = _probabilistic_model(universe, train=full if train is None else train)
    if model is None:
        sql.drop_temp_table("resolve_candidates")
        return
    links = probabilistic.score_pairs(
        model.parameters, universe, review_threshold=settings.CDP_MATCH_PROBABILITY_REVIEW
    )
    dnl = set(sql.fetch_all(f"SELECT record_a_id, record_b_id FROM {T_DNL}"))
    decided = set(sql.fetch_all(f"SELECT record_a_id, record_b_id FROM {PossibleDuplicate._meta.db_table}"))
    to_link, to_review = [], []
    for link in links:
        pair = (link.record_a, link.record_b)
        if pair in dnl:
            continue
        evidence = {"model": model.pk, "match_weight": round(link.match_weight, 3), "comparisons": link.comparisons}
        if link.probability >= settings.CDP_MATCH_PROBABILITY_LINK:
            to_link.append(RecordLink(record_a_id=pair[0], record_b_id=pair[1], kind=RecordLink.Kind.PROBABILISTIC,
                                      probability=link.probability, evidence=evidence))
        elif pair not in decided:
            to_review.append(PossibleDuplicate(record_a_id=pair[0], record_b_id=pair[1],
                                               probability=link.probability, evidence=evidence))
    RecordLink.objects.bulk_create(to_link, batch_size=5000, ignore_conflicts=True)
    PossibleDuplicate.objects.bulk_create(to_review, batch_size=5000, ignore_conflicts=True)
    report.probabilistic_links = len(to_link)
    report.possible_duplicates = len(to_review)
    sql.drop_temp_table("resolve_candidates")


def _probabilistic_universe(*, everything: bool) -> pa.Table:
    """Candidates and every record that could be compared with one (shares a blocking value with it)."""
    blocking = ("birth_date", "phone", "email", "name_key", "postcode")
    where = "1 = 1" if everything else "r.id IN (SELECT record_id FROM resolve_candidates) OR " + " OR ".join(
        f"r.{col} IN (SELECT c.{col} FROM {T_RECORD} c JOIN resolve_candidates k ON k.record_id = c.id)"
        for col in blocking
    )
    return sql.fetch_arrow(
        f"SELECT r.id, COALESCE(r.profile_id, -r.id), "
        f"r.id IN (SELECT record_id FROM resolve_candidates), "
        f"r.name_key, CAST(r.birth_date AS TEXT), r.phone, r.email, r.postcode, r.city, r.gender "
        f"FROM {T_RECORD} r WHERE {where}",
        _PROBABILISTIC_SCHEMA,
    )


# Fewer records than this give EM too little to estimate match and non-match rates from.
MIN_RECORDS_TO_TRAIN = 1000


def _probabilistic_model(universe: pa.Table, *, train: bool) -> ProbabilisticModel | None:
    latest = ProbabilisticModel.objects.order_by("-created_at", "-id").first()
    if latest is not None and not train:
        return latest
    if universe.num_rows < MIN_RECORDS_TO_TRAIN:
        log.info("probabilistic tier: %s records are too few to estimate a model", universe.num_rows)
        return latest
    parameters = probabilistic.train_model(universe)
    return ProbabilisticModel.objects.create(parameters=parameters, trained_on_records=universe.num_rows)


# --- 4. scope ----------------------------------------------------------------------------------------------

def _build_scope(suppressed_records: list[int]) -> None:
    if sql.fetch_all(f"SELECT NOT EXISTS (SELECT 1 FROM {T_RECORD} WHERE NOT needs_resolution)")[0][0]:
        # Every record is touched (a first load, or --full): the scope is the whole table, no neighbours to find.
        sql.create_temp_table("resolve_scope", "record_id BIGINT PRIMARY KEY, profile_id BIGINT")
        sql.execute(f"INSERT INTO resolve_scope (record_id, profile_id) SELECT id, profile_id FROM {T_RECORD}")
        sql.analyze("resolve_scope")
        return
    sql.create_temp_table("resolve_seed", "record_id BIGINT PRIMARY KEY")
    sql.execute("INSERT INTO resolve_seed (record_id) SELECT record_id FROM resolve_dirty")
    # Records sharing a key or a link with a touched record, and those holding a newly suppressed value.
    sql.create_temp_table("resolve_seed_new", "record_id BIGINT")
    sql.bulk_insert("resolve_seed_new", ("record_id",), [(r,) for r in suppressed_records])
    neighbours = (
        f"SELECT b.record_id AS record_id FROM {T_KEY} a JOIN resolve_dirty d ON d.record_id = a.record_id "
        f"JOIN {T_KEY} b ON b.rule_id = a.rule_id AND b.key = a.key",
        f"SELECT l.record_b_id AS record_id FROM {T_LINK} l JOIN resolve_dirty d ON d.record_id = l.record_a_id",
        f"SELECT l.record_a_id AS record_id FROM {T_LINK} l JOIN resolve_dirty d ON d.record_id = l.record_b_id",
        "SELECT record_id FROM resolve_seed_new",
    )
    for select in neighbours:
        sql.execute(
            f"INSERT INTO resolve_seed (record_id) SELECT DISTINCT x.record_id FROM ({select}) x "
            f"WHERE 1 = 1 ON CONFLICT DO NOTHING"
        )
    sql.drop_temp_table("resolve_seed_new")
    sql.analyze("resolve_seed")
    sql.create_temp_table("resolve_scope", "record_id BIGINT PRIMARY KEY, profile_id BIGINT")
    sql.execute(
        f"INSERT INTO resolve_scope (record_id, profile_id) SELECT r.id, r.profile_id FROM {T_RECORD} r "
        f"WHERE r.id IN (SELECT record_id FROM resolve_seed) OR r.profile_id IN "
        f"(SELECT r2.profile_id FROM {T_RECORD} r2 JOIN resolve_seed s ON s.record_id = r2.id "
        f"WHERE r2.profile_id IS NOT NULL)"
    )
    sql.drop_temp_table("resolve_seed")
    sql.analyze("resolve_scope")


# --- 5. clustering -----------------------------------------------------------------------------------------

def _scope_edges() -> dict[str, np.ndarray]:
    """Edges among scope records as (a, b, rank): a star per (rule, key) group, then links."""
    return sql.fetch_columns(
        f"SELECT k.record_id AS a, k.anchor AS b, k.rank AS rank FROM ("
        f"  SELECT mk.record_id, MIN(mk.record_id) OVER (PARTITION BY mk.rule_id, mk.key) AS anchor, ru.priority AS rank"
        f"  FROM {T_KEY} mk JOIN resolve_scope s ON s.record_id = mk.record_id JOIN {T_RULE} ru ON ru.id = mk.rule_id"
        f") k WHERE k.record_id <> k.anchor "
        f"UNION ALL "
        f"SELECT l.record_a_id, l.record_b_id, CASE WHEN l.kind = 'manual' THEN {MANUAL_LINK_RANK} "
        f"ELSE {PROBABILISTIC_LINK_RANK} + CAST((1 - COALESCE(l.probability, 1)) * 1000 AS INTEGER) END "
        f"FROM {T_LINK} l JOIN resolve_scope sa ON sa.record_id = l.record_a_id "
        f"JOIN resolve_scope sb ON sb.record_id = l.record_b_id"
    )


def _cluster_scope(report: ResolutionReport) -> tuple[np.ndarray, np.ndarray]:
    """Return scope record ids (sorted) and a cluster label for each, honouring every constraint."""
    record_ids = sql.fetch_columns("SELECT record_id FROM resolve_scope ORDER BY record_id")["record_id"]
    n = len(record_ids)
    edges = _scope_edges()
    a = np.searchsorted(record_ids, edges["a"])
    b = np.searchsorted(record_ids, edges["b"])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)

    id_of = {
        rid: (id_type, id_hash) for rid, id_type, id_hash in sql.fetch_all(
            f"SELECT r.id, r.id_type, r.id_number_hash FROM {T_RECORD} r "
            f"JOIN resolve_scope s ON s.record_id = r.id WHERE r.id_valid"
        )
    }
    dnl = sql.fetch_columns(
        f"SELECT d.record_a_id AS a, d.record_b_id AS b FROM {T_DNL} d "
        f"JOIN resolve_scope sa ON sa.record_id = d.record_a_id JOIN resolve_scope sb ON sb.record_id = d.record_b_id"
    )
    dnl_pairs = [(int(x), int(y)) for x, y in zip(dnl["a"], dnl["b"])]

    conflicted = _conflicted_labels(labels, record_ids, id_of, dnl_pairs)
    report.constrained_clusters = len(conflicted)
    if conflicted:
        labels = _split_conflicted(labels, record_ids, edges, conflicted, id_of, dnl_pairs)
    return record_ids, labels


def _conflicted_labels(labels, record_ids, id_of, dnl_pairs) -> set[int]:
    conflicted = set(np.flatnonzero(np.bincount(labels) > settings.CDP_MAX_CLUSTER_SIZE).tolist())
    index = {int(rid): i for i, rid in enumerate(record_ids)} if (id_of or dnl_pairs) else {}
    for x, y in dnl_pairs:
        if labels[index[x]] == labels[index[y]]:
            conflicted.add(int(labels[index[x]]))
    seen: dict[tuple[int, int], str] = {}
    for rid, (id_type, id_hash) in id_of.items():
        key = (int(labels[index[rid]]), id_type)
        if seen.setdefault(key, id_hash) != id_hash:
            conflicted.add(key[0])
    return conflicted


def _split_conflicted(labels, record_ids, edges, conflicted, id_of, dnl_pairs) -> np.ndarray:
    """Greedy constrained union-find over the conflicted components: strongest links first."""
    labels = labels.copy()
    in_conflict = np.isin(labels, list(conflicted))
    members = record_ids[in_conflict]
    member_set = set(members.tolist())
    parent = {int(r): int(r) for r in members}
    size = dict.fromkeys(parent, 1)
    ids = {r: {id_of[r][0]: id_of[r][1]} if r in id_of else {} for r in parent}
    forbidden: dict[int, set[int]] = defaultdict(set)
    for x, y in dnl_pairs:
        if x in member_set:
            forbidden[x].add(y)
            forbidden[y].add(x)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    order = np.argsort(edges["rank"], kind="stable")
    for i in order:
        x, y = int(edges["a"][i]), int(edges["b"][i])
        if x not in member_set or y not in member_set:
            continue
        rx, ry = find(x), find(y)
        if rx == ry or size[rx] + size[ry] > settings.CDP_MAX_CLUSTER_SIZE:
            continue
        if any(t in ids[ry] and ids[ry][t] != h for t, h in ids[rx].items()):
            continue
        if any(find(other) == ry for other in forbidden[rx]):
            continue
        if size[rx] < size[ry]:
            rx, ry = ry, rx
        parent[ry] = rx
        size[rx] += size[ry]
        ids[rx].update(ids.pop(ry))
        forbidden[rx] |= forbidden.pop(ry, set())
    next_label = int(labels.max()) + 1
    root_label: dict[int, int] = {}
    for pos in np.flatnonzero(in_conflict):
        root = find(int(record_ids[pos]))
        if root not in root_label:
            root_label[root] = next_label
            next_label += 1
        labels[pos] = root_label[root]
    return labels


# --- 6. clusters -> profiles -------------------------------------------------------------------------------

def _assign_profiles(report: ResolutionReport, record_ids: np.ndarray, labels: np.ndarray) -> None:
    scope = sql.fetch_columns(
        "SELECT s.record_id, COALESCE(s.profile_id, 0) AS profile_id, "
        "CASE WHEN d.record_id IS NULL THEN 0 ELSE 1 END AS dirty "
        "FROM resolve_scope s LEFT JOIN resolve_dirty d ON d.record_id = s.record_id ORDER BY s.record_id"
    )
    current = scope["profile_id"]
    # Count records per (cluster, current profile); a cluster keeps the profile that holds most of its records.
    has_profile = current > 0
    pairs, counts = np.unique(np.stack([labels[has_profile], current[has_profile]]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -counts))
    cluster_profile: dict[int, int] = {}
    taken: set[int] = set()
    for i in order:
        cluster, profile = int(pairs[0][i]), int(pairs[1][i])
        if cluster not in cluster_profile and profile not in taken:
            cluster_profile[cluster] = profile
            taken.add(profile)
    clusters = np.unique(labels)
    new_clusters = [int(c) for c in clusters if int(c) not in cluster_profile]
    new_ids = sql.allocate_ids(CustomerProfile, len(new_clusters))
    now = sql.adapt_now()
    sql.bulk_insert(
        T_PROFILE,
        ("id", "public_id", "status", "record_count", "created_at", "updated_at"),
        ((pid, CustomerProfile.new_public_id(), "active", 0, now, now) for pid in new_ids),
    )
    cluster_profile.update(zip(new_clusters, new_ids))
    report.profiles_created = len(new_ids)

    # A profile that keeps no cluster is absorbed by the cluster holding most of its former records.
    absorbed: dict[int, int] = {}
    for i in order:
        cluster, profile = int(pairs[0][i]), int(pairs[1][i])
        if profile not in taken and profile not in absorbed:
            absorbed[profile] = cluster_profile[cluster]
    report.profiles_merged = len(absorbed)
    target = np.array([cluster_profile[int(c)] for c in labels], dtype=np.int64)

    sql.create_temp_table("resolve_assignment", "record_id BIGINT PRIMARY KEY, profile_id BIGINT")
    # Records that move, and every touched record (to clear its flag): one pass over the table, not two.
    written = (target != current) | (scope["dirty"] == 1)
    sql.bulk_insert("resolve_assignment", ("record_id", "profile_id"),
                    zip(record_ids[written].tolist(), target[written].tolist()))
    sql.analyze("resolve_assignment")
    moved = sql.execute(
        f"UPDATE {T_RECORD} SET profile_id = a.profile_id, needs_resolution = FALSE "
        f"FROM resolve_assignment a WHERE {T_RECORD}.id = a.record_id"
    )
    sql.analyze_after_bulk_write(T_RECORD, moved)
    sql.analyze_after_bulk_write(T_PROFILE, len(new_ids))
    sql.drop_temp_table("resolve_assignment")
    if absorbed:
        _absorb_profiles(absorbed, now)
    sql.create_temp_table("resolve_profiles", "profile_id BIGINT PRIMARY KEY")
    sql.bulk_insert("resolve_profiles", ("profile_id",), ((p,) for p in sorted(set(cluster_profile.values()))))
    sql.analyze("resolve_profiles")
    report.profiles_updated = len(cluster_profile) - len(new_ids)


def _absorb_profiles(absorbed: dict[int, int], now) -> None:
    sql.create_temp_table("resolve_absorbed", "profile_id BIGINT PRIMARY KEY, into_id BIGINT")
    sql.bulk_insert("resolve_absorbed", ("profile_id", "into_id"), absorbed.items())
    sql.execute(
        f"UPDATE {T_PROFILE} SET status = 'merged', merged_into_id = a.into_id, merged_at = %s, record_count = 0, "
        f"updated_at = %s FROM resolve_absorbed a WHERE {T_PROFILE}.id = a.profile_id",
        [now, now],
    )
    # Profiles absorbed earlier follow their survivor, so every old id resolves in one step.
    sql.execute(
        f"UPDATE {T_PROFILE} SET merged_into_id = a.into_id FROM resolve_absorbed a "
        f"WHERE {T_PROFILE}.merged_into_id = a.profile_id"
    )
    sql.drop_temp_table("resolve_absorbed")


# --- 7. survivorship and lineage ---------------------------------------------------------------------------

def _apply_survivorship() -> None:
    """Per attribute group: source priority, then the most recent non-empty value; record where it came from."""
    sql.execute(f"DELETE FROM {T_LINEAGE} WHERE profile_id IN (SELECT profile_id FROM resolve_profiles)")
    ranked = " UNION ALL ".join(
        f"SELECT r.profile_id, '{group}' AS attribute, r.id AS record_id, r.last_batch_id AS batch_id, "
        f"ROW_NUMBER() OVER (PARTITION BY r.profile_id ORDER BY "
        f"{'CASE WHEN r.id_valid THEN 0 ELSE 1 END, ' if group == 'id_number' else ''}"
        f"s.priority, COALESCE(r.source_updated_at, r.loaded_at) DESC, r.id DESC) AS rn "
        f"FROM {T_RECORD} r JOIN resolve_profiles p ON p.profile_id = r.profile_id "
        f"JOIN {T_SOURCE} s ON s.id = r.source_id WHERE {present}"
        for group, (present, _) in SURVIVORSHIP_GROUPS.items()
    )
    sql.drop_temp_table("resolve_winners")
    sql.execute(
        f"CREATE TEMP TABLE resolve_winners AS "
        f"SELECT profile_id, attribute, record_id, batch_id FROM ({ranked}) x WHERE rn = 1"
    )
    sql.execute(
        f"INSERT INTO {T_LINEAGE} (profile_id, attribute, record_id, batch_id) "
        f"SELECT profile_id, attribute, record_id, batch_id FROM resolve_winners"
    )
    # One row per profile with the winning record of each group, then each record fetched by primary key.
    pivot = ", ".join(
        f"MAX(CASE WHEN attribute = '{group}' THEN record_id END) AS w{n}"
        for n, group in enumerate(SURVIVORSHIP_GROUPS)
    )
    joins, columns = [], []
    for n, (_, fields) in enumerate(SURVIVORSHIP_GROUPS.values()):
        joins.append(f"LEFT JOIN {T_RECORD} r{n} ON r{n}.id = w.w{n}")
        columns += [f"r{n}.{f} AS {f}" for f in fields]
    golden_fields = [f for _, fields in SURVIVORSHIP_GROUPS.values() for f in fields]
    sql.drop_temp_table("resolve_golden")
    sql.execute(
        f"CREATE TEMP TABLE resolve_golden AS SELECT p.profile_id, {', '.join(columns)}, "
        f"COALESCE(c.record_count, 0) AS record_count FROM resolve_profiles p "
        f"LEFT JOIN (SELECT profile_id, {pivot} FROM resolve_winners GROUP BY profile_id) w "
        f"ON w.profile_id = p.profile_id {' '.join(joins)} "
        f"LEFT JOIN (SELECT r.profile_id, COUNT(*) AS record_count FROM {T_RECORD} r "
        f"JOIN resolve_profiles rp ON rp.profile_id = r.profile_id GROUP BY r.profile_id) c "
        f"ON c.profile_id = p.profile_id"
    )
    sql.drop_temp_table("resolve_winners")
    assignments = ", ".join(f"{f} = g.{f}" for f in golden_fields + ["record_count"])
    sql.execute(
        f"UPDATE {T_PROFILE} SET {assignments}, status = 'active', merged_into_id = NULL, merged_at = NULL, "
        f"updated_at = %s FROM resolve_golden g WHERE {T_PROFILE}.id = g.profile_id",
        [sql.adapt_now()],
    )
    sql.drop_temp_table("resolve_golden")
