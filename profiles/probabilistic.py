"""Probabilistic tier of identity resolution (Fellegi-Sunter model, estimated with Splink 5 on in-process DuckDB).

Deterministic rules link most records; this module scores the records that no rule links (`is_candidate`)
against every other record that shares a blocking value with them, and explains each score.

    model = train_model(records)                      # unsupervised: lambda, u by random sampling, m by EM
    links = score_pairs(model, records, review_threshold=0.80)

`records` is a pyarrow.Table (or a list of dicts) with the columns of `RECORD_SCHEMA`.

The model is a JSON-serialisable dict (see `train_model`), stored by the caller so every link can be traced to
the model that made it. It wraps the Splink settings dict (`model["splink_settings"]`, loadable by
`splink.Linker(df, model["splink_settings"])`) with the name frequencies this module uses for its
term-frequency adjustment and a description of the training run.

Prediction does not use Splink's own blocking: Splink would self-join all records on each blocking rule and
only then could drop the pairs without a candidate, whereas only pairs with a candidate on at least one side,
from different clusters, are wanted. The blocked pairs are built here in DuckDB SQL by joining the candidates to
all records on each of the model's blocking rules, then handed to Splink to score
(`register_blocked_pairs_for_predict`), so the cost is proportional to candidates x block size. Every rule
includes birth_date, phone, email or name_key: a record that shares none of these with any candidate can be left
out of `records` without changing the result.

Splink 5 notes (differences from v4 that this module depends on):
- tables are registered on the DuckDBAPI (`db_api.register(table)` -> SplinkDataFrame) and the Linker takes those
  SplinkDataFrames; `Linker(..., log_level=None)` leaves logging configuration alone (else Splink installs its
  own handler on the "splink" logger);
- per-comparison match weights are `mw_<col>` (+ `mw_tf_adj_<col>`), no longer Bayes factors (`bf_`); the level
  columns `gamma_<col>` are only in predictions with `retain_matching_columns=True`;
- u sampling counts a level seen 0 times as "not observed" and leaves its u unset (a default is used): identifiers
  such as phone never agree in 1e6 random pairs, see `_fill_unobserved_exact_u`;
- `save_model_to_json()` writes only the m/u values that were estimated; `_complete_parameters` writes the values
  actually used, so the stored model scores exactly like the trained one;
- DuckDB 2: a result must be fetched to the end (`fetchall`, not `fetchone`) before the next statement.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import duckdb
import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

MODEL_FORMAT = "cdp.profiles.probabilistic/1"

RECORD_SCHEMA = pa.schema([
    ("record_id", pa.int64()),
    ("cluster_id", pa.int64()),
    ("is_candidate", pa.bool_()),
    ("name_key", pa.string()),
    ("birth_date", pa.string()),
    ("phone", pa.string()),
    ("email", pa.string()),
    ("postcode", pa.string()),
    ("city", pa.string()),
    ("gender", pa.string()),
])
COMPARED_COLUMNS = ("name_key", "birth_date", "phone", "email", "postcode", "city")

# Prediction blocking: a pair is scored if it agrees on one of these (column lists, ANDed). Each is selective
# (a few records per value on millions of records). Each rule contains birth_date, phone, email or name_key,
# so a record that shares none of those values with a candidate is never compared with it. Not name + city: a
# common name in a big city pairs thousands of records (60% of all blocked pairs at a million people), and a
# pair it alone finds shares no birth year, postcode, phone or e-mail, too little to reach the review threshold.
PREDICTION_BLOCKING_RULES = (
    ("birth_date", "substr(name_key, 1, 1)"),  # name typo (first character kept); pinyin and Chinese alike
    ("phone",),
    ("email",),
    ("name_key", "postcode"),
    ("name_key", "substr(birth_date, 1, 4)"),  # day/month typo or transposition, moved address
)
# EM training: every comparison is left out of the blocking rule of at least one session, so its m values
# are estimated (phone: name_key, birth_date, email, postcode, city; name_key + birth_date: the others).
TRAINING_BLOCKING_RULES = (
    ("phone",),
    ("name_key", "birth_date"),
    ("email",),
)
# Rules that admit (almost) no false positives, for the direct estimate of lambda, the probability that two
# random records match; their recall is an assumption (`deterministic_recall`).
LAMBDA_RULES = (
    ("name_key", "birth_date"),
    ("phone", "birth_date"),
    ("email", "birth_date"),
)
NAME_JARO_WINKLER_THRESHOLDS = (0.92, 0.88, 0.70)
# At most this many of the most frequent names keep their own frequency in the model (the term-frequency table).
MAX_TERM_FREQUENCIES = 20_000


class TrainingError(ValueError):
    """The data hold too few related records for expectation maximisation to estimate the m probabilities."""


@dataclass(frozen=True)
class ProbabilisticLink:
    record_a: int  # smaller record_id
    record_b: int
    probability: float
    match_weight: float
    comparisons: dict[str, str]  # per comparison: level label and its weight, e.g. "exact (+9.8)"


# --- public API --------------------------------------------------------------------------------------------

def train_model(
    records: pa.Table | Iterable[dict],
    *,
    seed: int = 42,
    max_pairs_for_u: int = 1_000_000,
    max_training_records: int | None = 300_000,
    deterministic_recall: float = 0.8,
    prior_m: Callable[[str, list[str]], list[float]] | None = None,
    estimate_m: bool = True,
) -> dict:
    """Estimate the model from the data being loaded (unsupervised).

    - lambda (probability two random records match): pairs found by near-certain rules (`LAMBDA_RULES`),
      divided by `deterministic_recall`, over all pairs;
    - u: random sampling of `max_pairs_for_u` record pairs (seeded);
    - m: expectation maximisation over the pairs of each of `TRAINING_BLOCKING_RULES`.
    With more than `max_training_records` records, a seeded sample of that many records is used (None: all).
    When no EM session can run (no related records, e.g. one clean source), `TrainingError` is raised; with
    `prior_m` the model is returned instead with lambda and u estimated from the data as above and the m of each
    comparison's levels (null level excepted, in order) from `prior_m(comparison, level labels)`, and
    `training["prior"]` true. With `prior_m`, a comparison that EM left a level of unestimated takes all its m
    from `prior_m` too (listed in `training["m_from_prior"]`), rather than scoring that level with m = 1e-6. `estimate_m=False` (too few records for EM to be trusted) goes straight to `prior_m`.

    Returns a JSON-serialisable dict: {"format", "splink_version", "splink_settings", "term_frequencies",
    "training"}.
    """
    import splink
    from splink import Linker, SettingsCreator
    from splink.internals.exceptions import EMTrainingException

    started = time.perf_counter()
    table = _as_table(records)
    if table.num_rows < 2:
        raise ValueError("train_model needs at least 2 records")
    if not 0 < deterministic_recall <= 1:
        raise ValueError("deterministic_recall must be in (0, 1]")
    total_records = sample_size = table.num_rows
    rows = _content_order(table)
    if max_training_records is not None and table.num_rows > max_training_records:
        # Seeded uniform sample of records. Every pair survives with the same probability (p squared), so the
        # proportions estimated on it (lambda, u, m) are unbiased for the full table; EM sees p squared of the
        # matching pairs, which is plenty at this size.
        rng = np.random.default_rng(seed)
        rows = rows[np.sort(rng.choice(table.num_rows, size=max_training_records, replace=False))]
        sample_size = len(rows)
    # Numbered in that order: Splink samples pairs by a hash of the unique id, which then depends on the data too.
    table = table.take(pa.array(rows))
    table = table.set_column(table.schema.get_field_index("record_id"), "record_id",
                             pa.array(np.arange(table.num_rows, dtype=np.int64)))

    with _splink_session(table) as (db_api, con, records_sdf):
        settings = SettingsCreator(
            link_type="dedupe_only",
            unique_id_column_name="record_id",
            comparisons=_comparisons(),
            blocking_rules_to_generate_predictions=[_block_on(cols) for cols in PREDICTION_BLOCKING_RULES],
            # v5 keeps the gamma_ (level) columns in predictions only with retain_matching_columns
            retain_matching_columns=True,
            retain_intermediate_calculation_columns=True,
            em_convergence=0.0001,
            max_iterations=25,
        )
        linker = Linker(records_sdf, settings, log_level=None)

        try:
            linker.training.estimate_probability_two_random_records_match(
                [_block_on(cols) for cols in LAMBDA_RULES], recall=deterministic_recall
            )
            lam = linker._settings_obj._probability_two_random_records_match
        except ValueError as exc:  # more rule matches than the recall allows: tiny or odd data
            log.warning("probabilistic: lambda not estimated: %s", exc)
            lam = 0.0
        if not 0 < lam < 1:
            # No pair satisfies a near-certain rule (or too many do): assume one other matching record per
            # record, a conservative prior.
            linker._settings_obj._probability_two_random_records_match = min(1.0 / max(sample_size - 1, 1), 0.5)

        with _quiet("splink.internals.linker_components.training"):  # warns whenever max_pairs == 1e6
            linker.training.estimate_u_using_random_sampling(max_pairs=float(max_pairs_for_u), seed=seed)
        # An identifier such as a phone number agrees in far fewer than one in max_pairs random pairs, so the
        # sample usually holds no agreement at all and Splink would fall back to a default u. For those exact
        # levels the coincidence rate is computed exactly from the value counts instead.
        u_from_value_counts = _fill_unobserved_exact_u(con, linker)

        term_frequencies = _name_term_frequencies(con, _exact_u(linker, "name_key"))
        _register_term_frequencies(db_api, linker, term_frequencies)

        # EM sums floating-point expectations over the pairs; with several threads the summation order, and so
        # the last bits of the estimates, vary from run to run. One thread makes the model bit-for-bit repeatable.
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        con.execute("SET threads = 1")
        sessions = []
        try:
            for cols in TRAINING_BLOCKING_RULES if estimate_m else ():
                rule = _block_on(cols)
                if not _rule_has_pairs(con, rule):
                    log.warning("probabilistic: no record pairs agree on %s; EM session skipped", cols)
                    continue
                # Splink 5 bug: an EM session drops the comparisons of its blocking rule from, and adjusts lambda
                # in, the linker's own settings, and only puts them back when training succeeds.
                before = linker._settings_obj.core_model_settings.copy()
                try:
                    linker.training.estimate_parameters_using_expectation_maximisation(
                        rule, estimate_without_term_frequencies=False
                    )
                    sessions.append(list(cols))
                except EMTrainingException as exc:
                    linker._settings_obj.core_model_settings = before
                    log.warning("probabilistic: EM session blocked on %s skipped: %s", cols, exc)
        finally:
            con.execute(f"SET threads = {int(threads)}")
        if not sessions and prior_m is None:
            raise TrainingError("probabilistic: no EM training session could run; too few related records")
        m_from_prior = _set_prior_m(linker, prior_m) if prior_m is not None else []
        if m_from_prior:
            log.warning("probabilistic: m from the prior (not estimated by EM) for %s", m_from_prior)

        splink_settings = linker.misc.save_model_to_json()
        untrained = _complete_parameters(linker, splink_settings)
        # Splink names each model with a random id; a fingerprint of the parameters keeps the model deterministic.
        splink_settings["linker_uid"] = None
        splink_settings["linker_uid"] = hashlib.sha256(
            json.dumps(splink_settings, sort_keys=True).encode()
        ).hexdigest()[:16]

    log.info("probabilistic: model trained on %s records in %.1fs", sample_size, time.perf_counter() - started)
    model = {
        "format": MODEL_FORMAT,
        "splink_version": splink.__version__,
        "splink_settings": splink_settings,
        "term_frequencies": {"name_key": term_frequencies},
        "training": {
            "seed": seed,
            "records": int(total_records),
            "sample_records": int(sample_size),
            "max_pairs_for_u": int(max_pairs_for_u),
            "deterministic_recall": deterministic_recall,
            "em_blocking_rules": sessions,
            "u_from_value_counts": u_from_value_counts,
            "not_estimated": untrained,
            "prior": not sessions,
            "m_from_prior": m_from_prior,
        },
    }
    if untrained:
        log.warning("probabilistic: parameters not estimated (level never observed): %s", untrained)
    return model


def score_pairs(model: dict, records: pa.Table | Iterable[dict], *, review_threshold: float) -> list[ProbabilisticLink]:
    """Score the pairs with at least one candidate side and different cluster_id that agree on one of the
    model's blocking rules; return those with probability >= review_threshold, ordered by (record_a, record_b).
    """
    from splink import Linker

    if not 0 <= review_threshold <= 1:
        raise ValueError("review_threshold must be a probability")
    _check_model(model)
    table = _as_table(records)
    if table.num_rows < 2:
        return []
    splink_settings = model["splink_settings"]

    with _splink_session(table) as (db_api, con, records_sdf):
        n_candidates = con.execute("SELECT count(*) FROM cdp_records WHERE is_candidate").fetchall()[0][0]
        if n_candidates == 0:
            return []
        linker = Linker(records_sdf, splink_settings, log_level=None)
        _register_term_frequencies(db_api, linker, model.get("term_frequencies", {}).get("name_key", {}))

        rules = [br["blocking_rule"] for br in splink_settings["blocking_rules_to_generate_predictions"]]
        con.execute(_blocked_pairs_sql(rules))
        n_pairs = con.execute("SELECT count(*) FROM cdp_blocked_pairs").fetchall()[0][0]
        if n_pairs == 0:
            return []
        linker.table_management.register_blocked_pairs_for_predict(db_api.register("cdp_blocked_pairs"))
        # Splink filters on the match weight log2(p / (1 - p)), undefined at p = 0 and p = 1.
        threshold = review_threshold if 0 < review_threshold < 1 else None
        predictions = linker.inference.predict(threshold_match_probability=threshold, warning_mode="never")
        result = _fetch_predictions(con, predictions.physical_name, linker)
        predictions.drop_table_from_database_and_remove_from_cache()

    links = _to_links(result, linker, review_threshold)
    log.info("probabilistic: %s candidates, %s blocked pairs, %s pairs >= %s",
             n_candidates, n_pairs, len(links), review_threshold)
    return links


# --- model definition --------------------------------------------------------------------------------------

def _block_on(cols: Iterable[str]):
    from splink import block_on

    return block_on(*cols)


def _comparisons() -> list:
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    def exact_or_else(col: str) -> CustomComparison:
        return CustomComparison(
            output_column_name=col,
            comparison_description=f"{col}: exact / else",
            comparison_levels=[
                cll.NullLevel(col).configure(label_for_charts="missing"),
                cll.ExactMatchLevel(col).configure(label_for_charts="exact"),
                cll.ElseLevel().configure(label_for_charts="different"),
            ],
        )

    name = CustomComparison(
        output_column_name="name_key",
        comparison_description="name_key: exact (term-frequency adjusted) / Jaro-Winkler / else",
        comparison_levels=[
            cll.NullLevel("name_key").configure(label_for_charts="missing"),
            cll.ExactMatchLevel("name_key", term_frequency_adjustments=True).configure(label_for_charts="exact"),
            *[
                cll.JaroWinklerLevel("name_key", t).configure(label_for_charts=f"Jaro-Winkler >={t:.2f}")
                for t in NAME_JARO_WINKLER_THRESHOLDS
            ],
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    # A date typo: day and month transposed, one day apart, or one character different (1985 / 1958 is two
    # edits, so Damerau-Levenshtein: an adjacent transposition counts as one).
    l_date = "try_strptime(birth_date_l, '%Y-%m-%d')"
    r_date = "try_strptime(birth_date_r, '%Y-%m-%d')"
    date_typo = (
        "(substr(birth_date_l, 1, 4) = substr(birth_date_r, 1, 4)"
        " AND substr(birth_date_l, 6, 2) = substr(birth_date_r, 9, 2)"
        " AND substr(birth_date_l, 9, 2) = substr(birth_date_r, 6, 2))"
        f" OR abs(date_diff('day', {l_date}, {r_date})) <= 1"
        " OR damerau_levenshtein(birth_date_l, birth_date_r) <= 1"
    )
    birth_date = CustomComparison(
        output_column_name="birth_date",
        comparison_description="birth_date: exact / date typo / else",
        comparison_levels=[
            cll.NullLevel("birth_date").configure(label_for_charts="missing"),
            cll.ExactMatchLevel("birth_date").configure(label_for_charts="exact"),
            cll.CustomLevel(date_typo, label_for_charts="typo (day/month transposed, +-1 day or 1 character)"),
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    return [name, birth_date, *(exact_or_else(c) for c in ("phone", "email", "postcode", "city"))]


def _rule_has_pairs(con: duckdb.DuckDBPyConnection, rule) -> bool:
    sql = rule.get_blocking_rule("duckdb").blocking_rule_sql
    return bool(con.execute(
        f"SELECT 1 FROM cdp_records AS l JOIN cdp_records AS r ON ({sql}) AND l.record_id < r.record_id LIMIT 1"
    ).fetchall())


def _set_prior_m(linker, prior_m: Callable[[str, list[str]], list[float]]) -> list[str]:
    """Set the m of every level of each comparison that has a level whose m EM did not estimate; return those."""
    replaced = []
    for cc in linker._settings_obj.comparisons:
        levels = [cl for cl in cc.comparison_levels if not cl.is_null_level]
        if all(cl._has_estimated_m_values for cl in levels):
            continue
        for cl, m in zip(levels, prior_m(cc.output_column_name, [cl.label_for_charts for cl in levels]), strict=True):
            cl.m_probability = float(m)
        replaced.append(cc.output_column_name)
    return replaced


def _exact_u(linker, col: str) -> float | None:
    for cc in linker._settings_obj.comparisons:
        if cc.output_column_name == col:
            for cl in cc.comparison_levels:
                if not cl.is_null_level and cl._has_tf_adjustments:
                    return cl.u_probability
    return None


def _fill_unobserved_exact_u(con: duckdb.DuckDBPyConnection, linker) -> dict[str, float]:
    """For each comparison whose exact level had no agreement in the u sample: u = P(two random records with
    values agree) = sum c(c-1) / (M(M-1)) over the value counts c (M records with a value), taken off the
    'different' level so the u values still sum to 1. Returns {column: u}."""
    filled = {}
    for cc in linker._settings_obj.comparisons:
        col = cc.output_column_name
        levels = [cl for cl in cc.comparison_levels if not cl.is_null_level]
        exact = next((cl for cl in levels if cl.label_for_charts == "exact"), None)
        other = next((cl for cl in levels if cl._is_else_level), None)
        if exact is None or other is None or exact._has_estimated_u_values:
            continue
        agreeing, total = con.execute(
            f"SELECT coalesce(sum(c * (c - 1)), 0)::DOUBLE, coalesce(sum(c), 0)::DOUBLE "
            f"FROM (SELECT count(*) AS c FROM cdp_records WHERE {col} IS NOT NULL GROUP BY {col})"
        ).fetchall()[0]
        if total < 2:
            continue
        ordered_pairs = total * (total - 1)
        u = max(agreeing, 2.0) / ordered_pairs  # no shared value at all: as if one pair agreed
        exact.u_probability = u
        other.u_probability = max(other.u_probability - u, u)
        filled[col] = u
    return filled


def _name_term_frequencies(con: duckdb.DuckDBPyConnection, u_exact: float | None) -> dict[str, float]:
    """Frequencies of the names more common than the average coincidence rate u of an exact name match.

    Only those are kept: an exact match on them counts for less than on an average name. Names rarer than
    average are left out on purpose, so they get the average weight rather than a boost (a boost would grow
    with the size of the table and make rare-but-shared garbage values strong evidence).
    """
    if not u_exact or u_exact <= 0:
        return {}
    rows = con.execute(
        """
        SELECT name_key, cnt / total AS tf FROM (
            SELECT name_key, count(*)::DOUBLE AS cnt, sum(count(*)) OVER ()::DOUBLE AS total
            FROM cdp_records WHERE name_key IS NOT NULL GROUP BY name_key
        ) WHERE cnt / total > ? ORDER BY tf DESC, name_key LIMIT ?
        """,
        [u_exact, MAX_TERM_FREQUENCIES],
    ).fetchall()
    return {name: float(tf) for name, tf in rows}


def _register_term_frequencies(db_api, linker, frequencies: dict[str, float]) -> None:
    tf = pa.table({
        "name_key": pa.array(list(frequencies), type=pa.string()),
        "tf_name_key": pa.array(list(frequencies.values()), type=pa.float64()),
    })
    linker.table_management.register_term_frequency_lookup(db_api.register(tf), "name_key")


def _complete_parameters(linker, splink_settings: dict) -> list[str]:
    """Write the m and u values the trained linker uses into the saved settings, including for levels Splink
    leaves out because they were never observed in training (Splink scored them with 1e-6 but would use a default
    after reloading). Returns those levels."""
    by_name = {cc.output_column_name: cc for cc in linker._settings_obj.comparisons}
    missing = []
    for comparison in splink_settings["comparisons"]:
        cc = by_name[comparison["output_column_name"]]
        for level_dict, cl in zip(comparison["comparison_levels"], cc.comparison_levels):
            if cl.is_null_level:
                continue
            for key, value in (("m_probability", cl.m_probability), ("u_probability", cl.u_probability)):
                if key not in level_dict:
                    missing.append(f"{comparison['output_column_name']} {level_dict.get('label_for_charts')}: {key[0]}")
                    level_dict[key] = float(value)
    return missing


def _check_model(model: dict) -> None:
    if not isinstance(model, dict) or model.get("format") != MODEL_FORMAT or "splink_settings" not in model:
        raise ValueError(f"not a model made by train_model (format {MODEL_FORMAT})")


# --- DuckDB / Splink plumbing ------------------------------------------------------------------------------

def _as_table(records: pa.Table | Iterable[dict]) -> pa.Table:
    if isinstance(records, pa.Table):
        missing = [name for name in RECORD_SCHEMA.names if name not in records.column_names]
        if missing:
            raise ValueError(f"records lack columns {missing}")
        return records.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
    return pa.Table.from_pylist(list(records), schema=RECORD_SCHEMA)


def _content_order(table: pa.Table) -> np.ndarray:
    """Row positions in the order of a digest of the values training reads, so that the record sample and the pair
    sample depend on the data alone. By the stored record ids, the same records under higher ids (a load re-run
    after an interrupted one) could train another model."""
    with duckdb.connect(":memory:") as con:
        con.register("cdp_input", table)
        digests = con.execute(f"SELECT hash({', '.join((*COMPARED_COLUMNS, 'gender'))}) FROM cdp_input").fetchnumpy()
    return np.argsort(next(iter(digests.values())), kind="stable")


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _splink_session(table: pa.Table):
    """An in-memory DuckDB holding the records as `cdp_records` (values trimmed, '' -> NULL), a Splink DuckDBAPI
    on it and the records registered with Splink. The connection is closed on exit. Should DuckDB spill to disk
    (memory limit), it spills into a temporary directory that is removed on exit."""
    from splink import DuckDBAPI

    splink_logger = logging.getLogger("splink")
    if splink_logger.level == logging.NOTSET or splink_logger.level < logging.WARNING:
        splink_logger.setLevel(logging.WARNING)

    spill_dir = tempfile.TemporaryDirectory(prefix="cdp-probabilistic-")
    con = duckdb.connect(":memory:", config={"temp_directory": spill_dir.name})
    try:
        con.register("cdp_input", table)
        clean = ",\n".join(f"nullif(trim({c}), '') AS {c}" for c in (*COMPARED_COLUMNS, "gender"))
        con.execute(
            f"""
            CREATE TABLE cdp_records AS
            SELECT record_id, cluster_id, coalesce(is_candidate, FALSE) AS is_candidate, {clean}
            FROM cdp_input
            """
        )
        con.unregister("cdp_input")
        bad = con.execute(
            "SELECT count(*) - count(DISTINCT record_id), count(*) - count(record_id), count(*) - count(cluster_id) "
            "FROM cdp_records"
        ).fetchall()[0]
        if bad != (0, 0, 0):
            raise ValueError("record_id must be unique and not null, cluster_id not null")
        db_api = DuckDBAPI(connection=con)
        yield db_api, con, db_api.register("cdp_records")
    finally:
        con.close()
        spill_dir.cleanup()


def _blocked_pairs_sql(rules: list[str]) -> str:
    """Pairs (join_key_l < join_key_r) with a candidate on at least one side, different clusters, agreeing on a
    blocking rule; `match_key` is the first rule that finds the pair. The rules use Splink's l./r. aliases."""
    selects = [
        f"""
        SELECT '{i}' AS match_key,
               least(l.record_id, r.record_id) AS join_key_l,
               greatest(l.record_id, r.record_id) AS join_key_r
        FROM cdp_candidates AS l JOIN cdp_records AS r ON ({rule})
        WHERE l.record_id <> r.record_id AND l.cluster_id <> r.cluster_id
        """
        for i, rule in enumerate(rules)
    ]
    union = "\nUNION ALL\n".join(selects)
    return f"""
        CREATE OR REPLACE TEMP VIEW cdp_candidates AS SELECT * FROM cdp_records WHERE is_candidate;
        CREATE OR REPLACE TABLE cdp_blocked_pairs AS
        SELECT min(match_key) AS match_key, join_key_l, join_key_r
        FROM ({union}) GROUP BY join_key_l, join_key_r;
    """


def _fetch_predictions(con: duckdb.DuckDBPyConnection, physical_name: str, linker) -> pa.Table:
    cols = ["record_id_l", "record_id_r", "match_probability", "match_weight"]
    for cc in linker._settings_obj.comparisons:
        cols.extend([cc._gamma_column_name, *cc._match_weight_columns_to_sum])
    return con.sql(f"SELECT {', '.join(cols)} FROM {physical_name} ORDER BY record_id_l, record_id_r").to_arrow_table()


def _to_links(result: pa.Table, linker, review_threshold: float) -> list[ProbabilisticLink]:
    comparisons = []
    for cc in linker._settings_obj.comparisons:
        labels = {cl.comparison_vector_value: cl.label_for_charts for cl in cc.comparison_levels}
        comparisons.append((cc.output_column_name, cc._gamma_column_name, cc._match_weight_columns_to_sum, labels))
    data = result.to_pydict()
    links = []
    for i in range(result.num_rows):
        probability = float(data["match_probability"][i])
        if probability < review_threshold:  # the SQL filter is on the match weight; rounding can differ
            continue
        explained = {}
        for name, gamma_col, mw_cols, labels in comparisons:
            parts = [float(data[c][i] or 0.0) for c in mw_cols]  # level weight, then term-frequency adjustment
            label = labels.get(data[gamma_col][i], str(data[gamma_col][i]))
            if len(parts) > 1 and parts[1] < 0:
                label += ", common value"
            explained[name] = f"{label} ({sum(parts):+.1f})"
        a, b = int(data["record_id_l"][i]), int(data["record_id_r"][i])
        links.append(ProbabilisticLink(
            record_a=min(a, b), record_b=max(a, b), probability=probability,
            match_weight=float(data["match_weight"][i]), comparisons=explained,
        ))
    return links

