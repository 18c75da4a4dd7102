"""Identity resolution: source records -> one customer profile per person.

The pipeline (one transaction, so an interrupted run leaves the previous state and the next run redoes it):
1. guard rails: identifier values shared by too many records of one source are suppressed;
2. match keys for the records a load touched, one per active rule and record: the digest of the rule's
   identifiers (computed in-process with DuckDB over the records fetched once, written with COPY);
3. the probabilistic tier scores records no rule links (see probabilistic.py), in a thread of its own: on a
   whole-table run it needs only the fetched records and keys, so it scores while PostgreSQL writes the keys
   (two cores at work instead of one); a new model is estimated in another thread from the fetched records
   alone, started before the guard rails, and the scoring prepares the records and blocks the pairs meanwhile;
4. the scope: touched records, the records they share a key or a link with, and all records of the
   profiles those belong to;
5. clustering of the scope: connected components of the links (scipy), less the links that rest on contact data
   alone between records whose given names are clearly different (a household is not a person), and for the few
   components that break a constraint (do-not-link, two different valid resident id numbers, size cap) a greedy
   union-find that adds links strongest first and skips any that would break one;
6. clusters -> profiles: a cluster keeps the profile that holds most of its records, other profiles it covers
   are merged into it (and keep resolving to it), a cluster with no profile gets a new one;
7. survivorship and lineage of every golden attribute: the winning record of each group ranked in numpy, the
   profiles' golden rows taken from the winners in Arrow (in a thread, while PostgreSQL moves the records to
   their profiles); new profiles are written once, with their values, by COPY.

When every record is to be resolved (a first load, or `full`), the run works on the whole table: no list of
touched records, no neighbour search, and the match keys are rebuilt with their index built once afterwards (so
are the profiles' around their first insert; the records' first assignment to profiles rewrites their table once).
"""
import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from . import identity_model, probabilistic, sql
from .names import has_cjk, is_chinese_name, name_parts
from .models import (
    CustomerProfile, DoNotLink, FeedBatch, MatchKey, MatchRule, PossibleDuplicate, ProbabilisticModel,
    RecordLink, Source, SourceRecord, SuppressedIdentifier,
)

log = logging.getLogger(__name__)

T_RECORD = SourceRecord._meta.db_table
T_PROFILE = CustomerProfile._meta.db_table
T_KEY = MatchKey._meta.db_table
T_RULE = MatchRule._meta.db_table
T_LINK = RecordLink._meta.db_table
T_DNL = DoNotLink._meta.db_table
T_SOURCE = Source._meta.db_table
T_SUPPRESSED = SuppressedIdentifier._meta.db_table

# SQL for each identifier a rule can name, over source records aliased `r`. NULL means "no usable value".
# The same expressions run in PostgreSQL (or SQLite) and in DuckDB over the fetched records (`_RECORD_SCHEMA`).
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
# Id types of which a person holds one number for life, so two valid numbers of one type are two people. A
# passport is renewed under a new number; an OTHER number has no check character, so a typo passes for another
# valid number (and permits, too, are reissued): neither keeps records apart.
EXCLUSIVE_ID_TYPES = ("CN_RESIDENT",)
# A shared phone, e-mail or address is evidence of a household as much as of a person: a rule resting on one of
# them and on no personal identifier (and a probabilistic link between records sharing no id number or CIF)
# does not link two records whose given names are clearly different (`_household_pairs`).
CONTACT_IDENTIFIERS = ("phone", "email", "postcode", "city")
PERSONAL_IDENTIFIERS = ("id_number", "core_cif")
# Given names (pinyin keys) at least this long may be one name with one letter replaced.
MIN_GIVEN_NAME_LENGTH_FOR_A_TYPO = 5
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

# What resolution reads of a record, fetched once per run (or once for the touched records and once for the
# scope of a delta). `present` has bit i set when the record has a value for the i-th survivorship group;
# `changed` sorts like its update time (source_updated_at, else load time).
_RECORD_SCHEMA = pa.schema([
    ("id", pa.int64()), ("source_id", pa.int64()), ("profile_id", pa.int64()), ("last_batch_id", pa.int64()),
    ("source_priority", pa.int64()), ("changed", pa.int64()), ("present", pa.int64()),
    ("needs_resolution", pa.bool_()), ("id_valid", pa.bool_()),
    *((name, pa.string()) for name in ("id_type", "id_number_hash", "cif_ref", "phone", "birth_date", "email",
                                       "name_key", "postcode", "city", "gender")),
    # read by the probabilistic tier only
    *((name, pa.string()) for name in ("full_name", "family_name", "given_name", "address")),
])


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
    household_links_withheld: int = 0  # links on contact data alone between records with different given names
    # The model that scored the probabilistic tier, and how: "prior", "stored" or "trained" (in this run); why
    # a model was trained, or why the trained one was kept. None / "": the tier scored nothing.
    model_id: int | None = None
    model_use: str = ""
    model_note: str = ""
    seconds: float = 0.0
    steps: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        scored = (f"; scored with {'newly trained' if self.model_use == 'trained' else self.model_use} "
                  f"model {self.model_id}" + (f" ({self.model_note})" if self.model_note else "")
                  if self.model_id else "")
        return (
            f"resolved {self.records_resolved} records in {self.seconds}s: {self.profiles_created} new profiles, "
            f"{self.profiles_merged} merged, {self.probabilistic_links} probabilistic links, "
            f"{self.possible_duplicates} possible duplicates for review{scored}"
        )


class _Timer:
    def __init__(self, report: ResolutionReport):
        self.report = report
        self.last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.report.steps[step] = round(now - self.last, 3)
        self.last = now


@dataclass(frozen=True)
class _Touched:
    """The records this run resolves: every record (`everything`), or those listed in the resolve_dirty table."""

    everything: bool

    def where(self, column: str) -> str:
        return "1 = 1" if self.everything else f"{column} IN (SELECT record_id FROM resolve_dirty)"


def identity_resolve(*, full: bool = False, train: bool | None = None) -> ResolutionReport:
    """Resolve every record that a load touched (or all records with `full`) into profiles.

    `train`: True estimates a new probabilistic model, False keeps the stored one (estimating one only if there is
    none), None decides by the rule of identity_model.py. A run that estimates a new model resolves every record: the new model scores them all, so
    loading sources one by one ends in the partition that loading them at once gives."""
    report = ResolutionReport()
    started = time.perf_counter()
    with transaction.atomic():
        if sql.is_postgres():
            # One resolution at a time: two would race to assign the same records.
            sql.execute("SELECT pg_advisory_xact_lock(%s)", [sql.advisory_lock_key("resolve", 0)])
            # Loads and unmerges wait to write records until this run commits (and it waits for those under way):
            # a record changed meanwhile would be marked resolved without its new content ever being resolved.
            sql.execute(f"LOCK TABLE {T_RECORD} IN SHARE MODE")
        sql.set_work_mem()
        timer = _Timer(report)
        # A resolved record has a profile: through the profile index, a first run finds none at once instead of
        # scanning millions of flagged records.
        first = not sql.fetch_all(
            f"SELECT EXISTS (SELECT 1 FROM {T_RECORD} WHERE profile_id IS NOT NULL AND NOT needs_resolution)")[0][0]
        if not (full or first or sql.fetch_all(
                f"SELECT EXISTS (SELECT 1 FROM {T_RECORD} WHERE needs_resolution)")[0][0]):
            _mark_batches_resolved(report)
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        choice = identity_model.model_choice(train=train)
        touched = _Touched(full or first or choice.train_reason is not None)
        if touched.everything:
            report.records_resolved = sql.fetch_all(f"SELECT COUNT(*) FROM {T_RECORD}")[0][0]
        else:
            # A delta finds its neighbours, keys and links through indexes.
            sql.prefer_index_scans()
            sql.create_temp_table("resolve_dirty", "record_id BIGINT PRIMARY KEY")
            sql.execute(f"INSERT INTO resolve_dirty (record_id) SELECT id FROM {T_RECORD} WHERE needs_resolution")
            sql.analyze("resolve_dirty")
            report.records_resolved = sql.fetch_all("SELECT COUNT(*) FROM resolve_dirty")[0][0]
        if report.records_resolved == 0:
            sql.drop_temp_table("resolve_dirty")
            _mark_batches_resolved(report)
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        rules = _active_match_rules()
        records = _fetch_records(touched.where("r.id"), whole_table=touched.everything)
        # A new model is estimated from the fetched records alone (which records are candidates does not matter to
        # it): in a thread from now on, while the guard rails and match keys are worked out.
        training = _start_training(records) if choice.train_reason is not None else None
        with _duckdb_session(records) as duck:
            suppressed_records = _refresh_suppressed_identifiers(report, rules, touched, duck)
            timer.lap("guard_rails")
            keys, groups = _match_keys(rules, duck, grouped=touched.everything)
            if touched.everything:
                # The tier scores from the fetched records and keys alone: while it runs, PostgreSQL writes the keys.
                scoring = _start_probabilistic_tier(report, touched, records, keys, groups, choice, training)
                _write_match_keys(touched, keys)
            else:
                # A delta finds its candidates through the stored keys.
                _write_match_keys(touched, keys)
                scoring = _start_probabilistic_tier(report, touched, records, keys, groups, choice, training)
            timer.lap("match_keys")
            _finish_probabilistic_tier(report, scoring)
            timer.lap("probabilistic")
            if touched.everything:
                scope = records
            else:
                scope = _build_scope(suppressed_records)
                keys = _scope_keys()
                groups = _key_groups(keys, duck)
            report.scope_records = scope.num_rows
            timer.lap("scope")
            labels = _cluster_scope(report, touched, scope, keys, groups, duck)
        timer.lap("cluster")
        # Before the first profile exists nobody reads records by profile: first writes rebuild their indexes.
        first_profiles = not CustomerProfile.objects.exists()
        plan = _plan_profiles(report, scope, labels)
        # The golden rows are built in a thread while PostgreSQL rewrites the records (one core each).
        golden = _start_golden_values(scope, plan)
        timer.lap("survivorship_ranking")
        _write_assignment(scope, plan, first_profiles=first_profiles)
        timer.lap("assign_profiles")
        _write_profiles(plan, golden.result(), first_profiles=first_profiles)
        timer.lap("survivorship")
        for table in ("resolve_dirty", "resolve_scope"):
            sql.drop_temp_table(table)
        _mark_batches_resolved(report)
        timer.lap("finish")
    report.seconds = round(time.perf_counter() - started, 3)
    log.info("identity resolution: %s", report.as_dict())
    return report


class InvalidMatchRule(Exception):
    """An active match rule that names an unknown identifier: resolving without it would link on the rest alone."""


def _active_match_rules() -> list[MatchRule]:
    rules = list(MatchRule.objects.filter(is_active=True))
    for rule in rules:
        errors = rule.field_errors()
        if errors:
            raise InvalidMatchRule(f"match rule {rule.name!r}: {'; '.join(errors)}; fix it in the admin (Match rules)")
    return rules


class ModelTrainingError(Exception):
    """A model was asked for that the records cannot give."""


def identity_model_train() -> ProbabilisticModel:
    """Estimate a model from every record now (on demand) and store it: later resolutions score with it (records
    already linked keep their links until re-scored: `identity_resolve(full=True, train=True)` does both)."""
    records = _fetch_records("1 = 1")
    if records.num_rows < identity_model.MIN_RECORDS_FOR_MODEL:
        raise ModelTrainingError(f"{records.num_rows} records are too few to estimate a model "
                                 f"(at least {identity_model.MIN_RECORDS_FOR_MODEL})")
    universe = _universe_of_fetched(records, np.empty(0, dtype=np.int64), everything=True)
    estimate = identity_model.model_estimate(universe)
    stored = identity_model.model_latest()
    if (estimate.kind == ProbabilisticModel.Kind.PRIOR and stored is not None
            and stored.kind == ProbabilisticModel.Kind.TRAINED):
        raise ModelTrainingError(f"too few related records to train a model; {stored} stays in use")
    return identity_model.model_store(estimate, reason=ProbabilisticModel.Reason.ON_DEMAND, records=records)


def _mark_batches_resolved(report: ResolutionReport) -> None:
    """The customer batches loaded since the last resolution name this one's model (their report says which
    model scored their records)."""
    FeedBatch.objects.filter(kind="customers", status=FeedBatch.Status.SUCCEEDED, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), scored_by_id=report.model_id, model_use=report.model_use)


def _fetch_records(where: str, *, whole_table: bool = False) -> pa.Table:
    """The records matching `where` (over `r`), sorted by id, with the columns of `_RECORD_SCHEMA`."""
    present = " + ".join(
        f"CASE WHEN {condition} THEN {1 << bit} ELSE 0 END"
        for bit, (condition, _) in enumerate(SURVIVORSHIP_GROUPS.values())
    )
    select = (
        f"SELECT r.id, r.source_id, r.profile_id, r.last_batch_id, s.priority, "
        f"{sql.datetime_order_key('COALESCE(r.source_updated_at, r.loaded_at)')}, {present}, r.needs_resolution, "
        f"r.id_valid, "
        f"r.id_type, r.id_number_hash, r.cif_ref, r.phone, CAST(r.birth_date AS TEXT), r.email, r.name_key, "
        f"r.postcode, r.city, r.gender, r.full_name, r.family_name, r.given_name, r.address "
        f"FROM {T_RECORD} r JOIN {T_SOURCE} s ON s.id = r.source_id WHERE {where}"
    )
    low, high = (sql.fetch_all(f"SELECT MIN(id), MAX(id) FROM {T_RECORD}")[0]
                 if whole_table and sql.is_postgres() and not sql.transaction_has_written() else (None, None))
    if low is not None:
        # The server formats the rows on one core per query: two halves by id at once, the second on a connection
        # of its own, which reads what this one would (nothing is written here yet, and no one else may write the
        # records until this transaction ends).
        middle = (int(low) + int(high)) // 2
        records = pa.concat_tables(sql.fetch_arrow_at_once(
            [f"{select} AND r.id <= {middle}", f"{select} AND r.id > {middle}"], _RECORD_SCHEMA))
    else:
        records = sql.fetch_arrow(select, _RECORD_SCHEMA)
    ids = records.column("id").to_numpy()
    # A seq scan returns rows in heap order, which is id order unless rows were rewritten or loads ran at once.
    if (ids[1:] >= ids[:-1]).all():
        return records
    order = pa.array(np.argsort(ids, kind="stable"))  # runs of ascending ids: a merge, not a full sort
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sort") as pool:  # take releases the GIL
        columns = list(pool.map(lambda column: column.take(order), records.columns))
    return pa.Table.from_arrays(columns, schema=records.schema)


class _duckdb_session:
    """An in-memory DuckDB with the fetched records registered as `records`, for the set-based work that
    PostgreSQL does slowly at millions of rows (grouping, digests, window functions over ten million keys)."""

    def __init__(self, records: pa.Table):
        self.records = records

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con = duckdb.connect(":memory:")
        self.con.register("records", self.records)
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def _int64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numpy int64 view of an integer column; unsigned 64-bit digests keep their bits."""
    values = column.to_numpy() if isinstance(column, pa.ChunkedArray) else column.to_numpy(zero_copy_only=False)
    return values.view(np.int64) if values.dtype == np.uint64 else values.astype(np.int64)


# --- 1. guard rails ----------------------------------------------------------------------------------------

_GUARDED_SCHEMA = pa.schema([("source_id", pa.int64()), ("id_valid", pa.bool_())] + [
    (name, pa.string()) for name in ("id_type", "id_number_hash", "cif_ref", "phone", "email")
])


def _refresh_suppressed_identifiers(report: ResolutionReport, rules: list[MatchRule], touched: _Touched,
                                    duck: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Suppress guarded values of touched records that are now over the limit. Records holding a newly suppressed
    value lose the keys built on it; returns them (on a delta: they are resolved again)."""
    limit = settings.CDP_MAX_SHARED_IDENTIFIER
    if touched.everything:
        holders = "records"  # every record is fetched already
    else:
        # The records holding a guarded value of a touched record, fetched in one pass over the table.
        holders = "holders"
        duck.register(holders, sql.fetch_arrow(
            f"SELECT r.source_id, r.id_valid, r.id_type, r.id_number_hash, r.cif_ref, r.phone, r.email "
            f"FROM {T_RECORD} r WHERE " + " OR ".join(
                f"{IDENTIFIER_SQL[name]} IN (SELECT {IDENTIFIER_SQL[name]} FROM {T_RECORD} r "
                f"JOIN resolve_dirty d ON d.record_id = r.id)" for name in GUARDED_IDENTIFIERS
            ),
            _GUARDED_SCHEMA,
        ))
    over: list[tuple] = []
    for name in GUARDED_IDENTIFIERS:
        over += duck.execute(
            f"SELECT ? AS field, v AS value, source_id, COUNT(*) FROM (SELECT r.source_id, {IDENTIFIER_SQL[name]} AS v "
            f"FROM {holders} r) x WHERE v IS NOT NULL GROUP BY source_id, v HAVING COUNT(*) > ?",
            [name, limit],
        ).fetchall()
    sql.create_temp_table("resolve_over_limit", "field VARCHAR(16), value VARCHAR(300), source_id BIGINT, "
                                                "record_count BIGINT")
    sql.bulk_insert("resolve_over_limit", ("field", "value", "source_id", "record_count"), over)
    sql.create_temp_table("resolve_newly_suppressed", "field VARCHAR(16), value VARCHAR(300)")
    sql.execute(
        f"INSERT INTO resolve_newly_suppressed (field, value) SELECT DISTINCT o.field, o.value "
        f"FROM resolve_over_limit o WHERE NOT EXISTS "
        f"(SELECT 1 FROM {T_SUPPRESSED} s WHERE s.field = o.field AND s.value = o.value)"
    )
    sql.execute(
        f"INSERT INTO {T_SUPPRESSED} (field, value, source_id, record_count, detected_at) "
        f"SELECT field, value, source_id, record_count, %s FROM resolve_over_limit WHERE 1 = 1 "
        f"ON CONFLICT (field, value, source_id) DO UPDATE SET record_count = excluded.record_count, "
        f"detected_at = excluded.detected_at",
        [sql.adapt_now()],
    )
    sql.drop_temp_table("resolve_over_limit")
    report.suppressed_identifiers = SuppressedIdentifier.objects.count()
    affected = np.empty(0, dtype=np.int64)
    newly = {name for (name,) in sql.fetch_all("SELECT DISTINCT field FROM resolve_newly_suppressed")}
    if not touched.everything:
        # Keys are rebuilt for every record on a whole-table run; on a delta, the holders' keys are dropped here.
        for name in GUARDED_IDENTIFIERS:
            if name not in newly:
                continue
            holders = (f"SELECT r.id FROM {T_RECORD} r JOIN resolve_newly_suppressed n "
                       f"ON n.field = %s AND n.value = {IDENTIFIER_SQL[name]}")
            affected = np.union1d(affected, sql.fetch_int64_columns(holders, [name])["id"])
            rule_ids = [rule.pk for rule in rules if name in rule.fields]
            if rule_ids:
                sql.execute(f"DELETE FROM {T_KEY} WHERE record_id IN ({holders}) "
                            f"AND rule_id IN ({', '.join(['%s'] * len(rule_ids))})", [name, *rule_ids])
    sql.drop_temp_table("resolve_newly_suppressed")
    _register_suppressed(duck)
    return affected


def _register_suppressed(duck: duckdb.DuckDBPyConnection) -> None:
    """The suppressed identifier values as DuckDB's `suppressed`, which `_match_keys` reads."""
    suppressed = sql.fetch_all(f"SELECT field, value FROM {T_SUPPRESSED}")
    duck.register("suppressed", pa.table({"field": pa.array([f for f, _ in suppressed], pa.string()),
                                          "value": pa.array([v for _, v in suppressed], pa.string())}))


# --- 2. match keys -----------------------------------------------------------------------------------------

def _write_match_keys(touched: _Touched, keys: dict[str, np.ndarray]) -> None:
    """Store the keys of the touched records (arrays record_id, rule_id, key_hi, key_lo)."""
    if touched.everything:
        sql.truncate(T_KEY)
        with sql.indexes_rebuilt(T_KEY):
            sql.bulk_insert_arrays(T_KEY, keys)
    else:
        sql.execute(f"DELETE FROM {T_KEY} WHERE record_id IN (SELECT record_id FROM resolve_dirty)")
        sql.bulk_insert_arrays(T_KEY, keys)
    sql.analyze_after_bulk_write(T_KEY, len(keys["record_id"]))


def _match_keys(rules: list[MatchRule], duck: duckdb.DuckDBPyConnection, *,
                grouped: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Keys of the registered records as arrays (record_id, rule_id, key_hi, key_lo): per rule whose identifiers
    are all present and none suppressed, the MD5 of the identifiers joined by '|' as two 64-bit halves; and with
    `grouped` (the records are the whole scope), their groups (see `_key_groups`), else None."""
    selects, params = [], []
    for rule in rules:
        fields = list(rule.fields)
        key_sql = " || '|' || ".join(f"({IDENTIFIER_SQL[f]})" for f in fields)
        guarded = [f for f in fields if f in GUARDED_IDENTIFIERS]
        conditions = [f"({IDENTIFIER_SQL[f]}) IS NOT NULL" for f in fields] + [
            f"NOT EXISTS (SELECT 1 FROM suppressed s WHERE s.field = ? AND s.value = {IDENTIFIER_SQL[f]})"
            for f in guarded
        ]
        selects.append(f"SELECT r.id AS record_id, CAST(? AS BIGINT) AS rule_id, {key_sql} AS k FROM records r "
                       f"WHERE {' AND '.join(conditions)}")
        params += [rule.pk, *guarded]
    columns = ["record_id", "rule_id", "key_hi", "key_lo"] + (["anchor", "holders"] if grouped else [])
    if selects:
        table = duck.sql(
            f"SELECT record_id, rule_id, key_hi, key_lo{_KEY_GROUP_COLUMNS if grouped else ''} FROM ("
            f"SELECT record_id, rule_id, {_MD5_HALVES} "
            f"FROM (SELECT record_id, rule_id, md5_number(k) AS h FROM ({' UNION ALL '.join(selects)}) x) x) "
            f"k{_KEY_GROUP_WINDOW if grouped else ''}",
            params=params,
        ).to_arrow_table()
        keys = {name: _int64(table.column(name)) for name in table.column_names}
    else:
        keys = {name: np.empty(0, dtype=np.int64) for name in columns}
    groups = {name: keys.pop(name) for name in ("anchor", "holders")} if grouped else None
    return keys, groups


def match_keys_recompute(*, identifier: str) -> int:
    """Recompute in place the stored match keys of the rules naming `identifier`, after its stored values (and the
    suppressed ones) were replaced one for one, as a rotation of the keyed hashes does: the records holding a key of
    such a rule hold one still, and those that shared one share the new one, so the partition stays. Returns the
    keys rewritten."""
    rules = [rule for rule in MatchRule.objects.order_by("pk") if identifier in rule.fields]
    if not rules:
        return 0
    rule_ids = ", ".join(str(rule.pk) for rule in rules)
    records = _fetch_records(f"r.id IN (SELECT record_id FROM {T_KEY} WHERE rule_id IN ({rule_ids}))")
    with _duckdb_session(records) as duck:
        _register_suppressed(duck)
        keys, _ = _match_keys(rules, duck, grouped=False)
    sql.create_temp_table("rekeyed_match_keys", "record_id BIGINT, rule_id BIGINT, key_hi BIGINT, key_lo BIGINT")
    sql.bulk_insert_arrays("rekeyed_match_keys", keys)
    rewritten = sql.execute(
        f"UPDATE {T_KEY} SET key_hi = n.key_hi, key_lo = n.key_lo FROM rekeyed_match_keys n "
        f"WHERE {T_KEY}.record_id = n.record_id AND {T_KEY}.rule_id = n.rule_id")
    sql.drop_temp_table("rekeyed_match_keys")
    return rewritten


# md5_number_upper(k) and md5_number_lower(k) from one digest (the two functions hash the key twice): DuckDB's
# 128-bit md5_number holds the upper half in its low 64 bits.
_MD5_HALVES = ("CAST(h & CAST(18446744073709551615 AS UHUGEINT) AS UBIGINT) AS key_hi, "
               "CAST(h >> 64 AS UBIGINT) AS key_lo")
_KEY_GROUP_COLUMNS = ", MIN(record_id) OVER w AS anchor, COUNT(*) OVER w AS holders"
_KEY_GROUP_WINDOW = " WINDOW w AS (PARTITION BY rule_id, key_hi, key_lo)"


def _key_groups(keys: dict[str, np.ndarray], duck: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
    """For each key: the smallest record id sharing its (rule, key) (`anchor`), and how many records share it."""
    duck.register("key_rows", pa.table({**keys, "position": np.arange(len(keys["record_id"]))}))
    table = duck.sql(
        f"SELECT position{_KEY_GROUP_COLUMNS} FROM key_rows{_KEY_GROUP_WINDOW} ORDER BY position"
    ).to_arrow_table()
    duck.unregister("key_rows")
    return {"anchor": _int64(table.column("anchor")), "holders": _int64(table.column("holders"))}


# --- 3. probabilistic tier ---------------------------------------------------------------------------------

# Every prediction blocking key (probabilistic.py) holds one of `probabilistic.UNIVERSE_COLUMNS` (but for
# `probabilistic.BLOCKING_RULES_OUTSIDE_UNIVERSE`): a delta draws the records sharing one of them with a candidate.
_ID_NUMBER_SQL = "r.id_type || ':' || r.id_number_hash"


@dataclass
class _Scoring:
    """The probabilistic tier at work in a thread: `result` gives (the new model's estimate if it scored, links)."""

    result: Future
    choice: identity_model.ModelChoice
    records: pa.Table  # the fetched records, whose sources and batches a new model is stored with


def _start_training(records: pa.Table) -> Future:
    """Estimate a model from every fetched record in a thread, which touches no database: an `Estimate`."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training")
    estimate = pool.submit(lambda: identity_model.model_estimate(
        _universe_of_fetched(records, np.empty(0, dtype=np.int64), everything=True)))
    pool.shutdown(wait=False)  # the thread ends with its one task; `estimate` waits for it
    return estimate


def _start_probabilistic_tier(report: ResolutionReport, touched: _Touched, records: pa.Table, keys: dict,
                              groups: dict | None, choice: identity_model.ModelChoice,
                              training: Future | None) -> _Scoring | None:
    """Find the candidates and their universe, then score in a thread, which touches no database: the caller may
    write meanwhile. The model that scores is the one `training` estimates (if `choice` says to train), else the
    stored one. None when there is nothing to score."""
    # Links and open review pairs scored for a record whose content changed are stale: it is scored again below.
    for table, condition in ((T_LINK, "kind = 'probabilistic'"),
                             (PossibleDuplicate._meta.db_table, f"status = '{PossibleDuplicate.Status.OPEN}'")):
        sql.execute(f"DELETE FROM {table} WHERE {condition} AND ({touched.where('record_a_id')} "
                    f"OR {touched.where('record_b_id')})")
    if touched.everything:
        # Candidates: records no key links to another record, and no reviewer link either.
        manual = sql.fetch_int64_columns(
            f"SELECT record_a_id AS a, record_b_id AS b FROM {T_LINK} WHERE kind = 'manual'")
        ids = _int64(records.column("id"))
        # Flags indexed by record id: linear, where sorting ten million keys to find the linked records is not.
        linked = np.zeros(int(ids.max()) + 1, dtype=bool)
        for linked_ids in (keys["record_id"][groups["holders"] > 1], manual["a"], manual["b"]):
            linked[linked_ids] = True
        candidates = ids[~linked[ids]]
    else:
        sql.create_temp_table("resolve_candidates", "record_id BIGINT PRIMARY KEY")
        sql.execute(
            f"INSERT INTO resolve_candidates (record_id) SELECT d.record_id FROM resolve_dirty d "
            f"WHERE NOT EXISTS (SELECT 1 FROM {T_KEY} a JOIN {T_KEY} b ON b.key_hi = a.key_hi "
            f"AND b.key_lo = a.key_lo AND b.rule_id = a.rule_id AND b.record_id <> a.record_id "
            f"WHERE a.record_id = d.record_id) "
            f"AND NOT EXISTS (SELECT 1 FROM {T_LINK} l WHERE l.kind = 'manual' "
            f"AND (l.record_a_id = d.record_id OR l.record_b_id = d.record_id))"
        )
        sql.analyze("resolve_candidates")
        candidates = sql.fetch_int64_columns("SELECT record_id FROM resolve_candidates")["record_id"]
    report.probabilistic_candidates = len(candidates)
    trains = choice.train_reason is not None
    if trains:
        report.model_note = ProbabilisticModel.Reason(choice.train_reason).label
    elif choice.stored is None:
        report.model_note = f"no model: fewer than {identity_model.MIN_RECORDS_FOR_MODEL} records"
    if not trains and (choice.stored is None or not len(candidates)):
        sql.drop_temp_table("resolve_candidates")
        return None
    # A model is estimated from every record (a run that estimates one resolves them all); scoring needs only the
    # records that can pair with a candidate.
    universe = (_universe_of_fetched(records, candidates, everything=trains) if touched.everything
                else _probabilistic_universe())
    sql.drop_temp_table("resolve_candidates")
    stored = choice.stored
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probabilistic")
    result = pool.submit(_score, universe, training=training,
                         stored=None if stored is None else (stored.parameters, stored.kind))
    pool.shutdown(wait=False)  # the thread ends with its one task; `result` waits for it
    return _Scoring(result=result, choice=choice, records=records)


def _score(universe: pa.Table, *, training: Future | None, stored: tuple[dict, str] | None,
           ) -> tuple[identity_model.Estimate | None, str, list[probabilistic.ProbabilisticLink]]:
    """(the new model's estimate, if it is the one that scored; a note on the choice; the links). The records are
    prepared and their pairs blocked while `training` may still run; only the scoring itself waits for it."""
    chosen: dict = {}

    def model() -> dict:
        if not chosen:
            estimate, note = training.result() if training is not None else None, ""
            # A model that could not be trained (a prior) does not replace a trained one.
            if (estimate is not None and estimate.kind == ProbabilisticModel.Kind.PRIOR
                    and stored is not None and stored[1] == ProbabilisticModel.Kind.TRAINED):
                log.warning("probabilistic tier: too few related records to train a model; the stored one scores")
                estimate, note = None, "too few related records to train a new one"
            chosen.update(estimate=estimate, note=note,
                          parameters=estimate.parameters if estimate is not None else stored[0])
        return chosen["parameters"]

    links = (probabilistic.score_pairs(model, universe, review_threshold=settings.CDP_MATCH_PROBABILITY_REVIEW)
             if pc.any(universe.column("is_candidate")).as_py() else [])
    model()  # scoring may have ended before it needed one: the estimate is stored all the same
    return chosen["estimate"], chosen["note"], links


def _finish_probabilistic_tier(report: ResolutionReport, scoring: _Scoring | None) -> None:
    """Wait for the scoring; store the model it estimated, its links and the pairs for review."""
    if scoring is None:
        return
    estimate, note, links = scoring.result.result()
    if estimate is not None:
        model = identity_model.model_store(estimate, reason=scoring.choice.train_reason, records=scoring.records)
    else:
        model = scoring.choice.stored
        report.model_note = note
    report.model_id = model.pk
    report.model_use = identity_model.model_use(model, trained_now=estimate is not None)
    _link_probabilistic_pairs(report, model, links)


def _link_probabilistic_pairs(report: ResolutionReport, model: ProbabilisticModel,
                              links: list[probabilistic.ProbabilisticLink]) -> None:
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


def _universe_of_fetched(records: pa.Table, candidates: np.ndarray, *, everything: bool) -> pa.Table:
    """`_probabilistic_universe` over records already fetched: candidates and every record sharing a blocking
    value with one (all records with `everything`), in id order."""
    id_number = pc.binary_join_element_wise(records.column("id_type"), records.column("id_number_hash"), ":")
    records = records.append_column("id_number", id_number)
    is_candidate = pc.is_in(records.column("id"), value_set=pa.array(candidates))
    if not everything:
        of_candidates = records.filter(is_candidate)
        keep = is_candidate
        for col in probabilistic.UNIVERSE_COLUMNS:
            values = pc.unique(of_candidates.column(col)).drop_null()
            keep = pc.or_(keep, pc.is_in(records.column(col), value_set=values))
        records, is_candidate = records.filter(keep), is_candidate.filter(keep)
    # A candidate is its own cluster: it shares a profile with a record only through probabilistic links, which
    # are scored again now, so every pair of it is scored.
    own = pc.negate(records.column("id"))
    columns = {"record_id": records.column("id"),
               "cluster_id": pc.if_else(is_candidate, own, pc.coalesce(records.column("profile_id"), own)),
               "is_candidate": is_candidate}
    return pa.Table.from_arrays(
        [columns[name] if name in columns else records.column(name) for name in probabilistic.RECORD_SCHEMA.names],
        schema=probabilistic.RECORD_SCHEMA,
    )


def _probabilistic_universe() -> pa.Table:
    """Candidates and every record that could be compared with one (shares a blocking value with it)."""
    expression = {"birth_date": "CAST(r.birth_date AS TEXT)", "id_number": _ID_NUMBER_SQL}
    where = "r.id IN (SELECT record_id FROM resolve_candidates) OR " + " OR ".join(
        f"{expression.get(col, f'r.{col}')} IN (SELECT {expression.get(col, f'r.{col}').replace('r.', 'c.')} "
        f"FROM {T_RECORD} c JOIN resolve_candidates k ON k.record_id = c.id)"
        for col in probabilistic.UNIVERSE_COLUMNS
    )
    return sql.fetch_arrow(
        f"SELECT r.id, CASE WHEN r.id IN (SELECT record_id FROM resolve_candidates) THEN -r.id "
        f"ELSE COALESCE(r.profile_id, -r.id) END, "
        f"r.id IN (SELECT record_id FROM resolve_candidates), "
        f"r.name_key, r.full_name, r.family_name, r.given_name, CAST(r.birth_date AS TEXT), {_ID_NUMBER_SQL}, "
        f"r.phone, r.email, r.address, r.postcode, r.city, r.gender "
        f"FROM {T_RECORD} r WHERE {where}",
        probabilistic.RECORD_SCHEMA,
    )


# --- 4. scope ----------------------------------------------------------------------------------------------

def _build_scope(suppressed_records: np.ndarray) -> pa.Table:
    """The records of a delta's scope (see the module docstring), listed in resolve_scope and returned."""
    sql.create_temp_table("resolve_seed", "record_id BIGINT PRIMARY KEY")
    sql.execute("INSERT INTO resolve_seed (record_id) SELECT record_id FROM resolve_dirty")
    # Records sharing a key or a link with a touched record, and those holding a newly suppressed value.
    sql.create_temp_table("resolve_seed_new", "record_id BIGINT")
    sql.bulk_insert_arrays("resolve_seed_new", {"record_id": suppressed_records})
    neighbours = (
        f"SELECT b.record_id AS record_id FROM {T_KEY} a JOIN resolve_dirty d ON d.record_id = a.record_id "
        f"JOIN {T_KEY} b ON b.key_hi = a.key_hi AND b.key_lo = a.key_lo AND b.rule_id = a.rule_id",
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
    sql.create_temp_table("resolve_scope", "record_id BIGINT PRIMARY KEY")
    # Two index lookups, not one OR that makes PostgreSQL read every record.
    sql.execute(
        f"INSERT INTO resolve_scope (record_id) SELECT r.id FROM {T_RECORD} r JOIN resolve_seed s "
        f"ON s.record_id = r.id UNION SELECT r.id FROM {T_RECORD} r WHERE r.profile_id IN "
        f"(SELECT r2.profile_id FROM {T_RECORD} r2 JOIN resolve_seed s ON s.record_id = r2.id "
        f"WHERE r2.profile_id IS NOT NULL)"
    )
    sql.drop_temp_table("resolve_seed")
    sql.analyze("resolve_scope")
    return _fetch_records("r.id IN (SELECT record_id FROM resolve_scope)")


# --- 5. clustering -----------------------------------------------------------------------------------------

def _scope_keys() -> dict[str, np.ndarray]:
    """The stored keys of a delta's scope records (a rule made inactive keeps its keys until a full run)."""
    return sql.fetch_int64_columns(
        f"SELECT k.record_id, k.rule_id, k.key_hi, k.key_lo FROM {T_KEY} k "
        f"JOIN resolve_scope s ON s.record_id = k.record_id JOIN {T_RULE} ru ON ru.id = k.rule_id"
    )


def _scope_edges(report: ResolutionReport, touched: _Touched, scope: pa.Table, keys: dict, groups: dict,
                 duck: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
    """Edges among scope records as (a, b, rank): a star per (rule, key) group, then links; less the links that
    rest on contact data alone between records whose given names are clearly different (`_household_pairs`)."""
    rules = list(MatchRule.objects.values_list("id", "priority", "fields"))
    size = max((rule_id for rule_id, _, _ in rules), default=0) + 1
    priority_of, rests_on_contact = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=bool)
    for rule_id, priority, fields in rules:
        priority_of[rule_id] = priority
        rests_on_contact[rule_id] = bool(set(fields) & set(CONTACT_IDENTIFIERS)) and not (
            set(fields) & set(PERSONAL_IDENTIFIERS))
    star = keys["record_id"] != groups["anchor"]
    in_scope = "1 = 1" if touched.everything else (
        "l.record_a_id IN (SELECT record_id FROM resolve_scope) AND l.record_b_id IN (SELECT record_id FROM resolve_scope)")
    links = sql.fetch_int64_columns(
        f"SELECT l.record_a_id AS a, l.record_b_id AS b, CASE WHEN l.kind = 'manual' THEN {MANUAL_LINK_RANK} "
        f"ELSE {PROBABILISTIC_LINK_RANK} + CAST((1 - COALESCE(l.probability, 1)) * 1000 AS INTEGER) END AS rank "
        f"FROM {T_LINK} l WHERE {in_scope}"
    )
    record_ids = _int64(scope.column("id"))
    holder_at, anchor_at = _positions(record_ids, keys["record_id"]), _positions(record_ids, groups["anchor"])
    a_at, b_at = _positions(record_ids, links["a"]), _positions(record_ids, links["b"])
    on_contact = star & rests_on_contact[keys["rule_id"]]
    on_contact_links = (links["rank"] >= PROBABILISTIC_LINK_RANK) & ~_share_an_id(scope, a_at, b_at)
    # Records that firmer evidence already puts together need no look at their names: a link between them changes
    # no profile. Only the few links across the firm groups are looked at.
    firm_star = star & ~on_contact
    firm = _component_labels(len(record_ids), np.concatenate([holder_at[firm_star], a_at[~on_contact_links]]),
                             np.concatenate([anchor_at[firm_star], b_at[~on_contact_links]]))
    in_mixed, members = _mixed_key_groups(scope, keys, groups, holder_at, anchor_at,
                                          rests_on_contact[keys["rule_id"]], on_contact, firm)
    doubted_links = np.flatnonzero(on_contact_links)
    doubted_links = doubted_links[firm[a_at[doubted_links]] != firm[b_at[doubted_links]]]

    named = _register_given_names(scope, record_ids, np.unique(np.concatenate(
        [keys["record_id"][in_mixed], links["a"][doubted_links], links["b"][doubted_links]])), duck)
    group_pairs = []
    for (rule_id, _), holders in members.items():
        holders.sort()  # key rows come in no set order: the same pairs every run
        with_given = [h for h in holders if h in named]
        # A holder with no given name joins one named holder, not all: it must not bridge two people.
        group_pairs += [(x, y, priority_of[rule_id]) for i, x in enumerate(with_given) for y in with_given[i + 1:]]
        group_pairs += [(h, with_given[0] if with_given else holders[0], priority_of[rule_id])
                        for h in holders if h not in named and (with_given or h != holders[0])]
    group_pairs = np.array(group_pairs, dtype=np.int64).reshape(-1, 3)
    apart = _household_pairs(np.concatenate([
        group_pairs[:, :2], np.stack([links["a"][doubted_links], links["b"][doubted_links]], axis=1)]), duck)
    duck.unregister("household_names")
    report.household_links_withheld = int(apart.sum())
    kept_links = np.ones(len(links["a"]), dtype=bool)
    kept_links[doubted_links[apart[len(group_pairs):]]] = False
    group_pairs = group_pairs[~apart[:len(group_pairs)]]
    kept_star = star & ~in_mixed
    return {
        "a": np.concatenate([keys["record_id"][kept_star], group_pairs[:, 0], links["a"][kept_links]]),
        "b": np.concatenate([groups["anchor"][kept_star], group_pairs[:, 1], links["b"][kept_links]]),
        "rank": np.concatenate([priority_of[keys["rule_id"][kept_star]], group_pairs[:, 2], links["rank"][kept_links]]),
    }


def _share_an_id(scope: pa.Table, a_at: np.ndarray, b_at: np.ndarray) -> np.ndarray:
    """Per pair of scope positions: whether the records share a valid id number (of one type) or a CIF."""
    a, b = (scope.select(["id_valid", "id_type", "id_number_hash", "cif_ref"]).take(at) for at in (a_at, b_at))
    same = lambda name: _as_mask(pc.equal(a.column(name), b.column(name)))  # noqa: E731
    return (_as_mask(a.column("id_valid")) & _as_mask(b.column("id_valid")) & same("id_type")
            & same("id_number_hash")) | same("cif_ref")


def _component_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The connected component of each of n positions under the edges (a, b)."""
    return connected_components(coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)),
                                directed=False)[1]


def _mixed_key_groups(scope: pa.Table, keys: dict, groups: dict, holder_at: np.ndarray, anchor_at: np.ndarray,
                      of_contact_rule: np.ndarray, on_contact: np.ndarray,
                      firm: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int], list[int]]]:
    """The (rule, key) groups of contact rules in which a holder outside the anchor's firm group has another name
    than the anchor (or the anchor has none, so that it does not join two named holders): a mask of their key rows,
    and their holders by (rule, anchor). Their stars give way to the pairs of holders with compatible names.
    `holder_at` and `anchor_at`: each key row's record and anchor as scope positions."""
    rows = np.flatnonzero(on_contact)
    rows = rows[firm[holder_at[rows]] != firm[anchor_at[rows]]]
    name_key = scope.column("name_key")
    holder_name, anchor_name = name_key.take(holder_at[rows]), name_key.take(anchor_at[rows])
    rows = rows[_as_mask(pc.not_equal(holder_name, anchor_name))
                | (_as_mask(pc.is_null(anchor_name)) & _as_mask(pc.is_valid(holder_name)))]
    mixed = set(zip(keys["rule_id"][rows].tolist(), groups["anchor"][rows].tolist()))
    # The key rows of contact rules whose anchor is one of those (among them the anchors' own).
    mixed_anchor = np.zeros(len(firm), dtype=bool)
    mixed_anchor[anchor_at[rows]] = True
    maybe = np.flatnonzero(of_contact_rule & mixed_anchor[anchor_at])
    in_mixed = np.zeros(len(on_contact), dtype=bool)
    members: dict[tuple[int, int], list[int]] = {}
    for row, rule_id, anchor_id, record_id in zip(maybe.tolist(), keys["rule_id"][maybe].tolist(),
                                                  groups["anchor"][maybe].tolist(), keys["record_id"][maybe].tolist()):
        if (rule_id, anchor_id) in mixed:
            in_mixed[row] = True
            members.setdefault((rule_id, anchor_id), []).append(record_id)
    return in_mixed, members


_NAMED_COLUMNS = ("id", "full_name", "family_name", "given_name", "birth_date", "phone", "email")


def _register_given_names(scope: pa.Table, record_ids: np.ndarray, ids: np.ndarray,
                          duck: duckdb.DuckDBPyConnection) -> set[int]:
    """Register `household_names` (id, family, given, cjk, ordered) in DuckDB for these scope records (`record_ids`:
    the scope's ids): their family and given names as pinyin keys (`names.name_parts`, once per distinct name),
    whether the given name is written in Chinese characters, and whether the record says which part is which
    (family and given name apart, or a name in Chinese characters: family name first). Returns the ids of those
    with a given name."""
    if not len(ids):
        duck.register("household_names", pa.table({"id": pa.array([], pa.int64())}))
        return set()
    named = scope.select(list(_NAMED_COLUMNS)).take(pa.array(_positions(record_ids, ids)))
    parts: dict[tuple, tuple] = {}
    rows = []
    for full, family, given in zip(*(named.column(name).to_pylist() for name in _NAMED_COLUMNS[1:4])):
        if (full, family, given) not in parts:
            family_key, given_key = name_parts(full, family, given)
            parts[full, family, given] = (family_key, given_key, has_cjk(given if family or given else full),
                                          bool(family or given) or has_cjk(full),
                                          is_chinese_name(full, family, given))
        rows.append(parts[full, family, given])
    given_keys = pa.array([row[1] for row in rows], pa.string())
    duck.register("household_names", pa.table({
        "id": named.column("id"), "family": pa.array([row[0] for row in rows], pa.string()), "given": given_keys,
        "cjk": pa.array([row[2] for row in rows], pa.bool_()), "ordered": pa.array([row[3] for row in rows]),
        "chinese": pa.array([row[4] for row in rows], pa.bool_()),
        "born": named.column("birth_date"), "phone": named.column("phone"), "email": named.column("email")}))
    return set(named.column("id").filter(pc.is_valid(given_keys)).to_pylist())


def _household_pairs(pairs: np.ndarray, duck: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Which of the record pairs (an (n, 2) array of ids in `household_names`) have clearly different names: both
    given names present, the names not the same letters run together ("ZHANGWEI", "ZHANG XIAO MING"), and no way
    to lay one name over the other with given name fitting given name and family name fitting family name (a
    missing part fits anything). A Latin name does not say which part is its family name ("ZHANG XIAOMING",
    "SINGH ELIZABETH"), so unless both are written in Chinese characters the parts are also tried crosswise.

    A given name fits an equal one, an initial or prefix of it, or, unless both are written in Chinese characters,
    one a typo away; a family name the same one or an initial, likewise one a typo away, but no prefix (Li is not
    Liu); where both records say which part is the family name, one any letter apart (李 typed 季; 曾 read ceng,
    written Zeng). One typo: two letters swapped, a letter dropped or added (names of 4 letters or more) or replaced
    (MIN_GIVEN_NAME_LENGTH_FOR_A_TYPO letters or more): one other letter in a short name makes another syllable (wei
    and wen, yan and yuan). Not a similarity score: siblings' names share a syllable and look alike letter by letter
    (xiaoming and xiaohong: Jaro-Winkler 0.90). Two given names in Chinese characters whose pinyin differs are
    different characters that sound different: an input method's slip gives a homophone, of the same pinyin.

    Born on the same day, such a pair is apart if it also shares a phone or an e-mail (twins, or spouses of one
    birthday), or if either name is Chinese (`names.is_chinese_name`): a Chinese customer is not known by two given
    names or two family names (no married names, no nicknames in bank records), so another name on one birthday
    and address is a twin. Otherwise another given or family name on one birth date and address, with no phone or
    e-mail in common, is one person under another name (a married name, a nickname, a name typed in the wrong box)
    more often than a twin."""
    if not len(pairs):
        return np.zeros(0, dtype=bool)
    duck.execute(
        "CREATE OR REPLACE TEMP MACRO one_typo_apart(a, b) AS coalesce(damerau_levenshtein(a, b) <= 1 AND ("
        "list_sort(string_split(a, '')) = list_sort(string_split(b, '')) "
        f"OR least(length(a), length(b)) >= CASE WHEN length(a) = length(b) THEN {MIN_GIVEN_NAME_LENGTH_FOR_A_TYPO:d} "
        f"ELSE 4 END), FALSE)")
    duck.execute(
        "CREATE OR REPLACE TEMP MACRO fits(a, b, prefixes, typos) AS a IS NULL OR b IS NULL OR a = b "
        "OR ((prefixes OR length(a) = 1) AND starts_with(b, a)) OR ((prefixes OR length(b) = 1) AND starts_with(a, b)) "
        "OR (typos AND one_typo_apart(a, b))")
    duck.register("household_pairs", pa.table({"position": np.arange(len(pairs)), "a": pairs[:, 0], "b": pairs[:, 1]}))
    apart = duck.sql(
        "SELECT xg IS NOT NULL AND yg IS NOT NULL AND NOT (run_together OR crosswise OR (given_fits AND ("
        "fits(xf, yf, FALSE, typos) OR (ordered AND coalesce(damerau_levenshtein(xf, yf) <= 1, FALSE)))))"
        "AND (NOT coalesce(xb = yb, FALSE) OR shared_contact OR chinese) "
        "AS apart FROM (SELECT *, "
        "list_has_any([coalesce(xf, '') || xg, xg || coalesce(xf, '')], [coalesce(yf, '') || yg, yg || coalesce(yf, '')]) "
        "AS run_together, typos AND fits(xg, yf, FALSE, TRUE) AND fits(xf, yg, FALSE, TRUE) AS crosswise, "
        "fits(xg, yg, TRUE, typos) AS given_fits "
        "FROM (SELECT p.position, x.family AS xf, x.given AS xg, y.family AS yf, y.given AS yg, "
        "x.born AS xb, y.born AS yb, NOT (x.cjk AND y.cjk) AS typos, x.ordered AND y.ordered AS ordered, "
        "coalesce(x.phone = y.phone, FALSE) OR coalesce(x.email = y.email, FALSE) AS shared_contact, "
        "x.chinese OR y.chinese AS chinese "
        "FROM household_pairs p JOIN household_names x ON x.id = p.a JOIN household_names y ON y.id = p.b)) "
        "ORDER BY position"
    ).to_arrow_table().column("apart")
    duck.unregister("household_pairs")
    return _as_mask(apart)


def _cluster_scope(report: ResolutionReport, touched: _Touched, scope: pa.Table, keys: dict, groups: dict,
                   duck: duckdb.DuckDBPyConnection) -> np.ndarray:
    """A cluster label for each scope record (in id order), honouring every constraint."""
    record_ids = _int64(scope.column("id"))
    n = len(record_ids)
    edges = _scope_edges(report, touched, scope, keys, groups, duck)
    a, b = _positions(record_ids, edges["a"]), _positions(record_ids, edges["b"])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)

    # Valid numbers of the id types one person holds one of, as integer codes: (position in scope, type, number).
    valid = pc.fill_null(pc.and_(scope.column("id_valid"), pc.is_in(
        scope.column("id_type"), value_set=pa.array(EXCLUSIVE_ID_TYPES))), False).to_numpy(zero_copy_only=False)
    valid_at = np.flatnonzero(valid)
    id_type = _codes(pc.filter(scope.column("id_type"), pa.array(valid)))
    id_hash = _codes(pc.filter(scope.column("id_number_hash"), pa.array(valid)))
    in_scope = "1 = 1" if touched.everything else (
        "d.record_a_id IN (SELECT record_id FROM resolve_scope) AND d.record_b_id IN (SELECT record_id FROM resolve_scope)")
    dnl = sql.fetch_int64_columns(f"SELECT d.record_a_id AS a, d.record_b_id AS b FROM {T_DNL} d WHERE {in_scope}")
    dnl_pairs = (_positions(record_ids, dnl["a"]), _positions(record_ids, dnl["b"]))

    conflicted = _conflicted_labels(labels, dnl_pairs, valid_at, id_type, id_hash)
    report.constrained_clusters = len(conflicted)
    if len(conflicted):
        members = np.flatnonzero(np.isin(labels, conflicted))
        order = _content_order(record_ids[members])
        a, b = _anchor_stars_by_content(a, b, edges["rank"], members, order)
        stable = np.zeros(n, dtype=np.int64)
        stable[members] = order
        labels = _split_conflicted(labels, edges["rank"], a, b, conflicted, valid_at, id_type, id_hash, dnl_pairs,
                                   stable)
    return labels


def _content_order(record_ids: np.ndarray) -> np.ndarray:
    """Each record's rank by (source, customer key): the order of what the files say, not of the ids the records
    got (loads of several sources at once number them in whatever order their rows arrive)."""
    placeholders = ", ".join(["%s"] * len(record_ids))
    rows = sql.fetch_all(f"SELECT r.id, s.code, r.customer_key FROM {T_RECORD} r JOIN {T_SOURCE} s "
                         f"ON s.id = r.source_id WHERE r.id IN ({placeholders})", [int(i) for i in record_ids])
    rank_of = {row[0]: rank for rank, row in enumerate(sorted(rows, key=lambda row: (row[1], row[2])))}
    return np.array([rank_of[int(i)] for i in record_ids], dtype=np.int64)


def _anchor_stars_by_content(a: np.ndarray, b: np.ndarray, rank: np.ndarray, members: np.ndarray,
                             order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A key group is a star around its smallest record id (`_key_groups`); inside the conflicted clusters, the
    star is centred on the member first in content order instead, so that which records the guard rails keep
    together does not follow the ids. Returns the edges' ends (scope positions) with those stars re-centred."""
    a, b = a.copy(), b.copy()
    order_at = dict(zip(members.tolist(), order.tolist()))
    inside = np.flatnonzero((rank < MANUAL_LINK_RANK) & np.isin(a, members) & np.isin(b, members))
    stars: dict[tuple[int, int], list[int]] = {}
    for i in inside.tolist():
        stars.setdefault((int(rank[i]), int(b[i])), []).append(i)
    for (_, anchor), star in stars.items():
        centre = min([anchor, *(int(a[i]) for i in star)], key=order_at.__getitem__)
        if centre != anchor:
            for i in star:  # the old centre takes the new centre's place at the tip of its spoke
                if a[i] == centre:
                    a[i] = anchor
                b[i] = centre
    return a, b


def _positions(record_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The positions of `ids` in `record_ids` (sorted; each id is among them): through an array indexed by id
    when the ids are dense, linear where a binary search per id over millions of them costs seconds."""
    if not _dense(record_ids):
        return np.searchsorted(record_ids, ids)
    base = int(record_ids[0])
    position_of = np.empty(int(record_ids[-1]) - base + 1, dtype=np.int64)
    position_of[record_ids - base] = np.arange(len(record_ids))
    return position_of[ids - base]


def _as_mask(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as a numpy mask, null as False."""
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integer codes of a string column's values (equal values, equal codes; null is -1)."""
    indices = pc.dictionary_encode(column.combine_chunks()).indices
    return pc.fill_null(indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _conflicted_labels(labels: np.ndarray, dnl_pairs: tuple, valid_at: np.ndarray, id_type: np.ndarray,
                       id_hash: np.ndarray) -> np.ndarray:
    """Labels of the clusters that are too large, hold a do-not-link pair or two valid id numbers of one type."""
    too_large = np.flatnonzero(np.bincount(labels) > settings.CDP_MAX_CLUSTER_SIZE)
    x, y = dnl_pairs
    apart = labels[x][labels[x] == labels[y]]
    # Sorted by (label, type, number), a cluster holds two numbers of one type where neighbours differ in number only.
    valid_labels = labels[valid_at]
    order = np.lexsort((id_hash, id_type, valid_labels))
    label, kind, number = valid_labels[order], id_type[order], id_hash[order]
    two_numbers = (label[1:] == label[:-1]) & (kind[1:] == kind[:-1]) & (number[1:] != number[:-1])
    return np.unique(np.concatenate([too_large, apart, label[1:][two_numbers]]))


def _split_conflicted(labels, rank, a, b, conflicted, valid_at, id_type, id_hash, dnl_pairs, stable) -> np.ndarray:
    """Greedy constrained union-find over the conflicted components: strongest links first, then by the content
    order of their ends (`stable`, see `_content_order`), so that the result is repeatable whatever ids the records
    have. Works on scope positions (`a`, `b`: the edges' ends; `rank`: their strength)."""
    labels = labels.copy()
    in_conflict = np.isin(labels, conflicted)
    members = np.flatnonzero(in_conflict)
    member_set = set(members.tolist())
    parent = {int(p): int(p) for p in members}
    size = dict.fromkeys(parent, 1)
    ids = {p: {} for p in parent}
    for p, t, h in zip(valid_at.tolist(), id_type.tolist(), id_hash.tolist()):
        if p in ids:
            ids[p][t] = h
    forbidden: dict[int, set[int]] = {}
    for x, y in zip(*(side.tolist() for side in dnl_pairs)):
        if x in member_set:
            forbidden.setdefault(x, set()).add(y)
            forbidden.setdefault(y, set()).add(x)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # Only the edges inside conflicted components are ordered: sorting millions of edges would cost seconds.
    inside = np.flatnonzero(in_conflict[a] & in_conflict[b])
    low, high = np.minimum(stable[a[inside]], stable[b[inside]]), np.maximum(stable[a[inside]], stable[b[inside]])
    inside = inside[np.lexsort((high, low, rank[inside]))]
    for x, y in zip(a[inside].tolist(), b[inside].tolist()):
        rx, ry = find(x), find(y)
        if rx == ry or size[rx] + size[ry] > settings.CDP_MAX_CLUSTER_SIZE:
            continue
        if any(t in ids[ry] and ids[ry][t] != h for t, h in ids[rx].items()):
            continue
        if any(find(other) == ry for other in forbidden.get(rx, ())):
            continue
        if size[rx] < size[ry]:
            rx, ry = ry, rx
        parent[ry] = rx
        size[rx] += size[ry]
        ids[rx].update(ids.pop(ry))
        forbidden[rx] = forbidden.get(rx, set()) | forbidden.pop(ry, set())
    next_label = int(labels.max()) + 1
    root_label: dict[int, int] = {}
    for pos in members.tolist():
        root = find(pos)
        if root not in root_label:
            root_label[root] = next_label
            next_label += 1
        labels[pos] = root_label[root]
    return labels


# --- 6. clusters -> profiles -------------------------------------------------------------------------------

@dataclass
class _ProfilePlan:
    """Where the scope's records are and go: `current` and `target`, each record's profile now (0: none) and after
    the run (scope order); `profiles`, the profiles that hold records (sorted) with their `record_counts`; the new
    ones among them (`new_ids`, ascending, with their `public_ids`); and the profiles absorbed by others
    (`absorbed`: id -> survivor)."""

    current: np.ndarray
    target: np.ndarray
    profiles: np.ndarray
    record_counts: np.ndarray
    new_ids: np.ndarray
    public_ids: list[str]
    absorbed: dict[int, int]


def _plan_profiles(report: ResolutionReport, scope: pa.Table, labels: np.ndarray) -> _ProfilePlan:
    """Pick each cluster's profile (allocating ids for new ones) and the profiles that merge into others."""
    current = _int64(pc.fill_null(scope.column("profile_id"), 0))
    # Count records per (cluster, current profile); a cluster keeps the profile that holds most of its records.
    has_profile = current > 0
    pairs, counts = np.unique(np.stack([labels[has_profile], current[has_profile]]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -counts))
    cluster_profile = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    taken: set[int] = set()
    for cluster, profile in zip(pairs[0][order].tolist(), pairs[1][order].tolist()):
        if cluster_profile[cluster] == 0 and profile not in taken:
            cluster_profile[cluster] = profile
            taken.add(profile)
    clusters = np.flatnonzero(np.bincount(labels))  # the labels in use, in order: linear, where np.unique sorts
    new_clusters = clusters[cluster_profile[clusters] == 0]
    new_ids = np.sort(sql.allocate_id_array(CustomerProfile, len(new_clusters)))
    cluster_profile[new_clusters] = new_ids

    # A profile that keeps no cluster is absorbed by the cluster holding most of its former records.
    absorbed: dict[int, int] = {}
    for cluster, profile in zip(pairs[0][order].tolist(), pairs[1][order].tolist()):
        if profile not in taken and profile not in absorbed:
            absorbed[profile] = int(cluster_profile[cluster])
    target = cluster_profile[labels]
    profiles, record_counts = np.unique(target, return_counts=True)
    report.profiles_created = len(new_ids)
    report.profiles_merged = len(absorbed)
    report.profiles_updated = len(profiles) - len(new_ids)
    return _ProfilePlan(current=current, target=target, profiles=profiles, record_counts=record_counts, new_ids=new_ids,
                        public_ids=CustomerProfile.new_public_ids(len(new_ids)), absorbed=absorbed)


def _write_assignment(scope: pa.Table, plan: _ProfilePlan, *, first_profiles: bool) -> None:
    """Move the records to their profiles, clear their flags and mark the absorbed profiles merged."""
    record_ids = _int64(scope.column("id"))
    current, target = plan.current, plan.target
    # Records that move, and every record still flagged (to clear it): one pass over the table, not two.
    written = (target != current) | scope.column("needs_resolution").to_numpy()
    rewrites_all = first_profiles and written.all()
    if rewrites_all and sql.is_postgres() and _dense(record_ids):
        _rewrite_records_with_profiles(record_ids, target)
        moved = len(record_ids)
    else:
        # No key: the update reads the list whole and finds each record by the records' own primary key, and a
        # key on two million ids would cost a second to maintain.
        sql.create_temp_table("resolve_assignment", "record_id BIGINT, profile_id BIGINT")
        sql.bulk_insert_arrays("resolve_assignment", {"record_id": record_ids[written], "profile_id": target[written]})
        sql.analyze("resolve_assignment")
        # A first load with sparse ids rewrites every record: its indexes are cheaper built again than updated.
        with sql.indexes_rebuilt(T_RECORD) if rewrites_all else contextlib.nullcontext():
            moved = sql.execute(
                f"UPDATE {T_RECORD} SET profile_id = a.profile_id, needs_resolution = FALSE "
                f"FROM resolve_assignment a WHERE {T_RECORD}.id = a.record_id"
            )
        sql.drop_temp_table("resolve_assignment")
    sql.analyze_after_bulk_write(T_RECORD, moved)
    if plan.absorbed:
        _absorb_profiles(plan.absorbed, sql.adapt_now())


def _dense(ids: np.ndarray) -> bool:
    """Whether an array indexed by these ids (minus the smallest) would be at most twice as long as the list."""
    return len(ids) > 0 and int(ids.max()) - int(ids.min()) < 2 * len(ids)


def _rewrite_records_with_profiles(record_ids: np.ndarray, profile_ids: np.ndarray) -> None:
    """Give every record its first profile by rewriting the table once: ALTER COLUMN ... TYPE (the same type) USING
    the profile read from an array constant indexed by record id writes each row once and builds every index
    sorted, where an UPDATE of every row costs twice that (14.6s plus 7.4s of index builds at 2.15M records,
    against 8.6s). The statement carries the array as a literal of some 7 bytes per record (15 MB at 2.15M):
    a log of every DDL statement holds it once."""
    base = int(record_ids.min())
    by_id = np.zeros(int(record_ids.max()) - base + 1, dtype=np.int64)  # no NULLs: they make lookups linear
    by_id[record_ids - base] = profile_ids
    profile_type = SourceRecord._meta.get_field("profile").db_type(connection)
    flag_type = SourceRecord._meta.get_field("needs_resolution").db_type(connection)
    sql.prepare_index_builds()
    sql.execute(
        f"ALTER TABLE {T_RECORD} ALTER COLUMN profile_id TYPE {profile_type} "
        f"USING NULLIF((%s::bigint[])[id - %s], 0), ALTER COLUMN needs_resolution TYPE {flag_type} USING FALSE",
        ["{" + ",".join(map(str, by_id.tolist())) + "}", base - 1],
    )


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

def _winners(scope: pa.Table, target: np.ndarray) -> np.ndarray:
    """Per scope record, a bit mask of the survivorship groups it supplies for its profile: per group, among the
    profile's records with a value, the best source priority, then the latest update, then the highest id (and
    for the id number, a valid one first)."""
    record_ids = _int64(scope.column("id"))
    priority = _int64(scope.column("source_priority"))
    changed = _int64(scope.column("changed"))
    present = _int64(scope.column("present"))
    valid_id = scope.column("id_valid").to_numpy(zero_copy_only=False)
    order = np.lexsort((-record_ids, -changed, priority, target))
    wins = np.zeros(len(record_ids), dtype=np.int64)
    for bit, group in enumerate(SURVIVORSHIP_GROUPS):
        candidates = order[(present[order] & (1 << bit)) != 0]
        winners = candidates[_firsts(target[candidates])]
        if group == "id_number":
            # A profile's first valid number, in the same order, beats its first number.
            valid = candidates[valid_id[candidates]]
            valid_winners = valid[_firsts(target[valid])]
            winners = np.concatenate([valid_winners, winners[~np.isin(target[winners], target[valid_winners])]])
        wins[winners] |= 1 << bit
    return wins


def _firsts(profiles: np.ndarray) -> np.ndarray:
    """Of a list sorted by profile: where each profile's run starts."""
    first = np.ones(len(profiles), dtype=bool)
    first[1:] = profiles[1:] != profiles[:-1]
    return first


# Golden fields that the fetched records do not carry, read for the winning records only.
_WINNER_FIELDS_SCHEMA = pa.schema([("id", pa.int64())] + [
    (name, pa.string()) for name in ("full_name", "family_name", "given_name", "id_number_masked", "address")
])


def _start_golden_values(scope: pa.Table, plan: _ProfilePlan) -> Future:
    """Rank the winners and read their fields, then build the profiles' golden rows (`_golden_rows`) in a thread,
    which touches no database: the caller rewrites the records meanwhile. Its result: `_GoldenRows`."""
    wins = _winners(scope, plan.target)
    winning = np.flatnonzero(wins)
    # No key: the join reads the list whole and finds each record by the records' own primary key.
    sql.create_temp_table("resolve_winners", "record_id BIGINT")
    sql.bulk_insert_arrays("resolve_winners", {"record_id": _int64(scope.column("id"))[winning]})
    sql.analyze("resolve_winners")
    fields = ", ".join(f"r.{name}" for name in _WINNER_FIELDS_SCHEMA.names)
    winner_fields = sql.fetch_arrow(
        f"SELECT {fields} FROM {T_RECORD} r JOIN resolve_winners w ON w.record_id = r.id", _WINNER_FIELDS_SCHEMA)
    sql.drop_temp_table("resolve_winners")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="survivorship")
    rows = pool.submit(_golden_rows, scope, plan, wins, winning, winner_fields.sort_by("id"),
                       sql.column_types(T_PROFILE))
    pool.shutdown(wait=False)  # the thread ends with its one task
    return rows


@dataclass
class _GoldenRows:
    """What survivorship writes, made in the thread of `_start_golden_values`."""

    new: sql.EncodedRows  # the new profiles, whole rows ready to insert
    existing: pa.Table  # the others: golden fields, lineage and record count
    now: datetime


def _golden_rows(scope: pa.Table, plan: _ProfilePlan, wins: np.ndarray, winning: np.ndarray,
                 winner_fields: pa.Table, profile_column_types: dict | None) -> _GoldenRows:
    """Per profile of the plan: its record count, and per survivorship group the group's fields and lineage
    (record and batch) from the group's winner; null where none of its records has a value."""
    profile_at = np.searchsorted(plan.profiles, plan.target)  # each scope record's profile, as a row number
    winner_row = np.full(len(wins), -1, dtype=np.int64)
    winner_row[winning] = np.arange(len(winning))  # winner_fields holds the winners in scope (id) order
    columns = {"id": pa.array(plan.profiles), "record_count": pa.array(plan.record_counts)}
    for bit, (group, (_, fields)) in enumerate(SURVIVORSHIP_GROUPS.items()):
        supplier = np.full(len(plan.profiles), -1, dtype=np.int64)
        rows = np.flatnonzero(wins & (1 << bit))
        supplier[profile_at[rows]] = rows
        none = supplier < 0
        in_scope = pa.array(supplier, mask=none)
        in_winners = pa.array(winner_row[supplier], mask=none)
        for name in fields:
            if name in winner_fields.column_names:
                columns[name] = pc.take(winner_fields.column(name), in_winners)
            elif name == "birth_date":
                columns[name] = pc.take(scope.column(name), in_scope).cast(pa.date32())
            else:
                columns[name] = pc.take(scope.column(name), in_scope)
        columns[f"{group}_record_id"] = pc.take(scope.column("id"), in_scope)
        columns[f"{group}_batch_id"] = pc.take(scope.column("last_batch_id"), in_scope)
    golden = pa.table(columns)
    is_new = np.isin(plan.profiles, plan.new_ids)  # both sorted: the new rows come in new_ids order
    new = golden.filter(pa.array(is_new))
    now = timezone.now()
    stamp = pa.array(np.full(new.num_rows, int(now.timestamp() * 1_000_000), dtype=np.int64)).cast(
        pa.timestamp("us", tz="UTC"))
    new = new.append_column("public_id", pa.array(plan.public_ids, pa.string())) \
        .append_column("status", pa.array(["active"] * new.num_rows, pa.string())) \
        .append_column("created_at", stamp).append_column("updated_at", stamp)
    return _GoldenRows(new=sql.encode_rows(new, profile_column_types), existing=golden.filter(pa.array(~is_new)),
                       now=now)


def _write_profiles(plan: _ProfilePlan, golden: _GoldenRows, *, first_profiles: bool) -> None:
    """Insert the new profiles with their golden rows; give the others theirs (they hold records, so are active)."""
    # Into an empty table (a first load), a million profiles go faster with the indexes built afterwards.
    with sql.indexes_rebuilt(T_PROFILE) if first_profiles else contextlib.nullcontext():
        sql.bulk_insert_encoded(T_PROFILE, golden.new)
    existing = golden.existing
    if existing.num_rows:
        columns = existing.column_names
        sql.drop_temp_table("resolve_golden")
        sql.execute(f"CREATE TEMP TABLE resolve_golden AS SELECT {', '.join(columns)} FROM {T_PROFILE} WHERE 1 = 0")
        sql.bulk_insert_arrow("resolve_golden", existing)
        sql.analyze("resolve_golden")
        assignments = ", ".join(f"{name} = g.{name}" for name in columns if name != "id")
        sql.execute(
            f"UPDATE {T_PROFILE} SET {assignments}, status = 'active', merged_into_id = NULL, merged_at = NULL, "
            f"updated_at = %s FROM resolve_golden g WHERE {T_PROFILE}.id = g.id",
            [connection.ops.adapt_datetimefield_value(golden.now)],
        )
        sql.drop_temp_table("resolve_golden")
    sql.analyze_after_bulk_write(T_PROFILE, len(plan.target))
