"""Probabilistic tier of identity resolution (Fellegi-Sunter model, estimated with Splink 5 on in-process DuckDB).

Deterministic rules link most records; this module scores the records that no rule links (`is_candidate`)
against every other record that shares a blocking key with them, and explains each score.

    model = train_model(records)                      # unsupervised: lambda, u by random sampling, m by EM
    links = score_pairs(model, records, review_threshold=0.80)

`records` is a pyarrow.Table (or a list of dicts) with the columns of `RECORD_SCHEMA`.

The model is built for person records typed by hand in several systems, with Splink's comparison library:
- the name, on the family and given name apart (pinyin keys from `profiles.names`, computed once per distinct
  name, so 张伟 and "ZHANG Wei" compare equal): exact (term-frequency adjusted), the same in pinyin, given and
  family swapped, both parts close (Jaro-Winkler), family name and given initial, one part only (term-frequency
  adjusted), the whole name roughly alike;
- the birth date: exact, day and month transposed, one character different, within a year;
- contact data, as one comparison because a household shares it (summed, a shared phone, e-mail and address would
  outweigh a different name and birth date): phone with e-mail or address, phone, e-mail and address, e-mail,
  the street address exact, the same number and most street words, most street words (a move within the street),
  the same number and alike as text;
- the postcode (exact, one character), the city (exact, Jaro-Winkler), and the id number (the keyed hash: equal or
  not) where present.
Every level's m is estimated by expectation maximisation over several blocked samples of pairs; a level that no
training pair reached takes the weight of its nearest weaker estimated level (else none), and the model lists which
(`training.merged_levels`).

The model is a JSON-serialisable dict (see `train_model`), stored by the caller so every link can be traced to
the model that made it. It wraps the Splink settings dict (`model["splink_settings"]`) with the frequencies of
common values this module uses for its term-frequency adjustments, the prediction blocking rules and a
description of the training run.

Prediction does not use Splink's own blocking: Splink would self-join all records on each blocking rule and
only then could drop the pairs without a candidate, whereas only pairs with a candidate on at least one side,
from different clusters, are wanted. The blocked pairs are built here in DuckDB SQL by joining the candidates to
all records on each of the model's blocking keys (a key held by more than `MAX_BLOCK_SIZE` records, such as the
most common name, is left out, so the pairs stay near-linear in the number of records), then handed to Splink to
score (`register_blocked_pairs_for_predict`). Every key but `BLOCKING_RULES_OUTSIDE_UNIVERSE` includes one of
`UNIVERSE_COLUMNS`: a record that shares none of these with any candidate can be left out of `records` without
changing the result, except for pairs found through the postcode, the name in pinyin or the house number and
street word alone.

Splink 5 notes (differences from v4 that this module depends on):
- tables are registered on the DuckDBAPI (`db_api.register(table)` -> SplinkDataFrame) and the Linker takes those
  SplinkDataFrames; `Linker(..., log_level=None)` leaves logging configuration alone (else Splink installs its
  own handler on the "splink" logger);
- per-comparison match weights are `mw_<col>` (+ `mw_tf_adj_<col>`), no longer Bayes factors (`bf_`); the level
  columns `gamma_<col>` are only in predictions with `retain_matching_columns=True`;
- u sampling counts a level seen 0 times as "not observed", and EM a level no pair reached; Splink then scores
  it with 1e-6 (a level never seen in training would veto every pair that reaches it): see `_fill_unobserved`;
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

from profiles.names import name_parts

log = logging.getLogger(__name__)

MODEL_FORMAT = "cdp.profiles.probabilistic/2"

RECORD_SCHEMA = pa.schema([
    ("record_id", pa.int64()),
    ("cluster_id", pa.int64()),
    ("is_candidate", pa.bool_()),
    ("name_key", pa.string()),
    ("full_name", pa.string()),
    ("family_name", pa.string()),
    ("given_name", pa.string()),
    ("birth_date", pa.string()),
    ("id_number", pa.string()),  # id type and keyed hash, e.g. "OTHER:5f1c..."
    ("phone", pa.string()),
    ("email", pa.string()),
    ("address", pa.string()),
    ("postcode", pa.string()),
    ("city", pa.string()),
    ("gender", pa.string()),
])
# The comparisons, by output name; each link explains its score by these.
COMPARED_COLUMNS = ("name", "birth_date", "contact", "postcode", "city", "id_number")
# A record that shares none of these values with a candidate is never paired with it, but by one of the
# `BLOCKING_RULES_OUTSIDE_UNIVERSE`. Not the postcode: thousands share one, and a delta would read most records.
UNIVERSE_COLUMNS = ("name_key", "birth_date", "address", "phone", "email", "id_number")

# Prediction blocking: a pair is scored if it agrees on one of these keys (expressions over the prepared records,
# ANDed). Their union keeps a pair that carries a typo in any one field: a wrong birth date still agrees on the
# postcode and an initial, a mistyped name on the birth date and the other initial, a moved person on the name
# and birth date; `initials` (the two initials in alphabetical order) and `name_sorted` (the two parts in
# alphabetical order) keep swapped given and family names together. Keys on the address words and the name
# find the pairs whose birth date is wrong or missing. Not the postcode with both initials: its blocks are as
# many as the records and hold half of all pairs, for the few swapped names with a wrong birth date.
PREDICTION_BLOCKING_RULES = (
    ("birth_date", "substr(family, 1, 1)"),
    ("birth_date", "substr(given, 1, 1)"),
    ("birth_date", "initials"),
    ("postcode", "substr(family, 1, 1)"),
    ("postcode", "substr(given, 1, 1)"),
    ("name_sorted",),
    ("address_street",),
    ("phone",),
    ("email",),
    ("id_number",),
)
# Keys that draw no records into a delta's universe: computed here (the name in pinyin, the house number and
# street word: no stored column to find their records by) or too coarse (the postcode). In a delta they pair a
# candidate only with records that another shared value draws in.
BLOCKING_RULES_OUTSIDE_UNIVERSE = (
    ("postcode", "substr(family, 1, 1)"), ("postcode", "substr(given, 1, 1)"), ("name_sorted",), ("address_street",),
)
# A blocking key held by more records than this (the most common name, a large block of flats) pairs every one
# of them with every other; it is left out, so the compared pairs stay near-linear in the number of records.
MAX_BLOCK_SIZE = 30
# EM training: each comparison is left out of the blocking rule of at least one session, so its m values are
# estimated (birth date: all but the birth date; name and postcode: the birth date and the rest). Contact data and
# the id number are estimated in both; a session blocked on them would repeat that at the cost of another pass.
TRAINING_BLOCKING_RULES = (
    ("birth_date",),
    ("name_sorted", "postcode"),
)
# Rules that admit (almost) no false positives, for the direct estimate of lambda, the probability that two
# random records match; their recall is an assumption (`deterministic_recall`).
LAMBDA_RULES = (
    ("name_sorted", "birth_date"),
    ("phone", "birth_date"),
    ("email", "birth_date"),
    ("id_number",),
)
# Columns with a term-frequency adjusted exact level: a common value agreeing counts for less.
TERM_FREQUENCY_COLUMNS = ("name_key", "family", "given")
# At most this many of the most frequent values per column keep their own frequency in the model.
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
    max_training_records: int | None = 50_000,
    deterministic_recall: float = 0.8,
    prior_m: Callable[[str, list[str]], list[float]] | None = None,
    estimate_m: bool = True,
) -> dict:
    """Estimate the model from the data being loaded (unsupervised).

    - lambda (probability two random records match): pairs found by near-certain rules (`LAMBDA_RULES`),
      divided by `deterministic_recall`, over all pairs;
    - u: random sampling of `max_pairs_for_u` record pairs (seeded); an exact level no sampled pair reached from
      the value counts, any other such level as if one sampled pair had reached it;
    - m: expectation maximisation over the pairs of each of `TRAINING_BLOCKING_RULES`; a level no training pair
      reached takes the match weight of its nearest weaker estimated level (else weight 0).
    With more than `max_training_records` records, a seeded sample of that many records is used (None: all).
    When no EM session can run (no related records, e.g. one clean source), `TrainingError` is raised; with
    `prior_m` the model is returned instead with lambda and u estimated from the data as above and the m of each
    comparison's levels (null level excepted, in order) from `prior_m(comparison, level labels)`, and
    `training["prior"]` true. With `prior_m`, a comparison that EM left a level of unestimated takes all its m
    from `prior_m` too (listed in `training["m_from_prior"]`), rather than scoring that level with m = 1e-6. `estimate_m=False` (too few records for EM to be trusted) goes straight to `prior_m`.

    Returns a JSON-serialisable dict: {"format", "splink_version", "splink_settings", "term_frequencies",
    "blocking", "training"}.
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
        # matching pairs: several hundred even at a million customers, enough to separate two classes.
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
        # EM needs related records: with no pair that a near-certain rule links (one clean source), it would fit
        # its two classes to noise, so m is not estimated at all (the caller's prior, else TrainingError).
        related = 0 < lam < 1
        if not related:
            # No pair satisfies a near-certain rule (or too many do): assume one other matching record per
            # record, a conservative prior.
            linker._settings_obj._probability_two_random_records_match = min(1.0 / max(sample_size - 1, 1), 0.5)

        with _quiet("splink.internals.linker_components.training"):  # warns whenever max_pairs == 1e6
            # The sample is a function of the record ids (a hash), and u counts pairs: the same on any thread count.
            linker.training.estimate_u_using_random_sampling(max_pairs=float(max_pairs_for_u), seed=seed)
        u_filled = _fill_unobserved_u(con, linker, max_pairs_for_u)
        term_frequencies = {col: _term_frequencies(con, col, _exact_u(linker, col)) for col in TERM_FREQUENCY_COLUMNS}
        _register_term_frequencies(db_api, linker, term_frequencies)

        # EM sums floating-point expectations over the pairs; with several threads the summation order, and so
        # the last bits of the estimates, vary from run to run. One thread makes the model bit-for-bit repeatable.
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        con.execute("SET threads = 1")
        sessions = []
        try:
            for cols in TRAINING_BLOCKING_RULES if estimate_m and related else ():
                rule = _block_on(cols)
                if not _rule_has_pairs(con, rule):
                    log.info("probabilistic: no record pairs agree on %s; EM session skipped", cols)
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
        # A comparison no EM session estimated at all takes the prior; a level EM missed within an estimated
        # comparison takes its weaker neighbour's weight.
        m_from_prior = _set_prior_m(linker, prior_m) if prior_m is not None else []
        if m_from_prior:
            log.warning("probabilistic: m from the prior (not estimated by EM) for %s", m_from_prior)
        merged = _merge_unobserved_m(linker)

        splink_settings = linker.misc.save_model_to_json()
        _complete_parameters(linker, splink_settings)
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
        "term_frequencies": term_frequencies,
        "blocking": _blocking(),
        "training": {
            "seed": seed,
            "records": int(total_records),
            "sample_records": int(sample_size),
            "max_pairs_for_u": int(max_pairs_for_u),
            "deterministic_recall": deterministic_recall,
            "em_blocking_rules": sessions,
            "u_not_sampled": u_filled,
            "merged_levels": merged,
            "prior": not sessions,
            "m_from_prior": m_from_prior,
        },
    }
    if merged:
        log.warning("probabilistic: levels no training pair reached, given their neighbour's weight: %s", merged)
    return model


def score_pairs(model: dict | Callable[[], dict], records: pa.Table | Iterable[dict], *,
                review_threshold: float) -> list[ProbabilisticLink]:
    """Score the pairs with at least one candidate side and different cluster_id that agree on one of the
    model's blocking keys; return those with probability >= review_threshold, ordered by (record_a, record_b).

    `model` may be a function that returns it, called once the records are prepared and their pairs blocked (on
    `PREDICTION_BLOCKING_RULES`, as every model `train_model` makes; again should its model block otherwise): a
    model still being estimated in another thread then overlaps that work.
    """
    from splink import Linker

    if not 0 <= review_threshold <= 1:
        raise ValueError("review_threshold must be a probability")
    if not callable(model):
        _check_model(model)
    table = _as_table(records)
    if table.num_rows < 2:
        return []

    with _splink_session(table) as (db_api, con, records_sdf):
        n_candidates = con.execute("SELECT count(*) FROM cdp_records WHERE is_candidate").fetchall()[0][0]
        if n_candidates == 0:
            return []
        blocking = model["blocking"] if not callable(model) else _blocking()
        con.execute(_blocked_pairs_sql(blocking["rules"], blocking["max_block_size"]))
        if callable(model):
            model = model()
            _check_model(model)
            if model["blocking"] != blocking:
                con.execute(_blocked_pairs_sql(model["blocking"]["rules"], model["blocking"]["max_block_size"]))
        linker = Linker(records_sdf, model["splink_settings"], log_level=None)
        _register_term_frequencies(db_api, linker, model["term_frequencies"])
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


def _blocking() -> dict:
    """The prediction blocking of the models this code trains, as stored in them."""
    return {"rules": [list(cols) for cols in PREDICTION_BLOCKING_RULES], "max_block_size": MAX_BLOCK_SIZE}


# --- model definition --------------------------------------------------------------------------------------

def _block_on(cols: Iterable[str]):
    from splink import block_on

    return block_on(*cols)


# Token overlap of two address word lists (the Jaccard index of their sets).
_ADDRESS_JACCARD = (
    "array_length(list_intersect(address_tokens_l, address_tokens_r))"
    " / greatest(array_length(list_distinct(list_concat(address_tokens_l, address_tokens_r))), 1)"
)
_L_DATE = "try_strptime(birth_date_l, '%Y-%m-%d')"
_R_DATE = "try_strptime(birth_date_r, '%Y-%m-%d')"


def _comparisons() -> list:
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    def exact_or_else(col: str, description: str) -> CustomComparison:
        return CustomComparison(
            output_column_name=col,
            comparison_description=f"{col}: {description}",
            comparison_levels=[
                cll.NullLevel(col).configure(label_for_charts="missing"),
                cll.ExactMatchLevel(col).configure(label_for_charts="exact"),
                cll.ElseLevel().configure(label_for_charts="different"),
            ],
        )

    name = CustomComparison(
        output_column_name="name",
        comparison_description="name: family and given name apart and together, as written and in pinyin",
        comparison_levels=[
            cll.NullLevel("name_pinyin").configure(label_for_charts="missing"),
            cll.ExactMatchLevel("name_key", term_frequency_adjustments=True).configure(label_for_charts="exact"),
            cll.ExactMatchLevel("name_pinyin").configure(label_for_charts="same in pinyin"),
            cll.ColumnsReversedLevel("family", "given", symmetrical=True).configure(
                label_for_charts="given and family swapped"),
            cll.And(cll.JaroWinklerLevel("family", 0.92), cll.JaroWinklerLevel("given", 0.92)).configure(
                label_for_charts="both parts alike (Jaro-Winkler >=0.92)"),
            cll.CustomLevel(
                "family_l = family_r AND substr(given_l, 1, 1) = substr(given_r, 1, 1)",
                label_for_charts="family exact, same given initial",
            ),
            cll.JaroWinklerLevel("name_sorted", 0.88).configure(label_for_charts="alike (Jaro-Winkler >=0.88)"),
            cll.ExactMatchLevel("family", term_frequency_adjustments=True).configure(
                label_for_charts="family name only"),
            cll.ExactMatchLevel("given", term_frequency_adjustments=True).configure(
                label_for_charts="given name only"),
            cll.JaroWinklerLevel("name_sorted", 0.70).configure(
                label_for_charts="loosely alike (Jaro-Winkler >=0.70)"),
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    birth_date = CustomComparison(
        output_column_name="birth_date",
        comparison_description="birth_date: exact / day and month transposed / one character / within a year",
        comparison_levels=[
            cll.NullLevel("birth_date").configure(label_for_charts="missing"),
            cll.ExactMatchLevel("birth_date").configure(label_for_charts="exact"),
            cll.CustomLevel(
                "substr(birth_date_l, 1, 4) = substr(birth_date_r, 1, 4)"
                " AND substr(birth_date_l, 6, 2) = substr(birth_date_r, 9, 2)"
                " AND substr(birth_date_l, 9, 2) = substr(birth_date_r, 6, 2)",
                label_for_charts="day and month transposed",
            ),
            cll.DamerauLevenshteinLevel("birth_date", 1).configure(label_for_charts="one character"),
            cll.CustomLevel(f"abs(date_diff('day', {_L_DATE}, {_R_DATE})) <= 366",
                            label_for_charts="within a year"),
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    # Phone, e-mail and street address in one comparison: a household shares all three, so they are not
    # independent evidence, and summing their weights would link a parent and child on contact data alone.
    contact = CustomComparison(
        output_column_name="contact",
        comparison_description="contact: phone, e-mail and street address (number and street words) together",
        comparison_levels=[
            cll.CustomLevel(
                "(phone_l IS NULL AND email_l IS NULL AND address_l IS NULL)"
                " OR (phone_r IS NULL AND email_r IS NULL AND address_r IS NULL)"
            ).configure(is_null_level=True, label_for_charts="missing"),
            cll.CustomLevel("phone_l = phone_r AND (email_l = email_r OR address_l = address_r)",
                            label_for_charts="phone, and e-mail or address"),
            cll.ExactMatchLevel("phone").configure(label_for_charts="phone"),
            cll.CustomLevel("email_l = email_r AND address_l = address_r", label_for_charts="e-mail and address"),
            cll.ExactMatchLevel("email").configure(label_for_charts="e-mail"),
            cll.ExactMatchLevel("address").configure(label_for_charts="address"),
            cll.CustomLevel(f"address_number_l = address_number_r AND {_ADDRESS_JACCARD} >= 0.5",
                            label_for_charts="address: same number, most words"),
            cll.CustomLevel(f"{_ADDRESS_JACCARD} >= 0.5", label_for_charts="address: most words (moved in the street)"),
            # typos inside the words; the number first, so the text is compared for few pairs
            cll.CustomLevel("address_number_l = address_number_r AND jaro_winkler_similarity(address_l, address_r) >= 0.88",
                            label_for_charts="address: same number, alike (Jaro-Winkler >=0.88)"),
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    postcode = CustomComparison(
        output_column_name="postcode",
        comparison_description="postcode: exact / one character / else",
        comparison_levels=[
            cll.NullLevel("postcode").configure(label_for_charts="missing"),
            cll.ExactMatchLevel("postcode").configure(label_for_charts="exact"),
            cll.DamerauLevenshteinLevel("postcode", 1).configure(label_for_charts="one character"),
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    city = CustomComparison(
        output_column_name="city",
        comparison_description="city: exact / alike / else",
        comparison_levels=[
            cll.NullLevel("city").configure(label_for_charts="missing"),
            cll.ExactMatchLevel("city").configure(label_for_charts="exact"),
            cll.JaroWinklerLevel("city", 0.88).configure(label_for_charts="alike (Jaro-Winkler >=0.88)"),
            cll.ElseLevel().configure(label_for_charts="different"),
        ],
    )
    return [name, birth_date, contact, postcode, city, exact_or_else("id_number", "the same keyed hash / else")]


# Levels whose u is the coincidence rate of one column's values: computed from the value counts when the random
# pairs held no agreement (identifiers such as a phone number agree in far fewer than one in a million pairs).
_VALUE_COUNT_LEVELS = {("name", "exact"): "name_key", ("birth_date", "exact"): "birth_date",
                       ("contact", "phone"): "phone", ("contact", "e-mail"): "email", ("contact", "address"): "address",
                       ("postcode", "exact"): "postcode", ("city", "exact"): "city", ("id_number", "exact"): "id_number"}


def _rule_has_pairs(con: duckdb.DuckDBPyConnection, rule) -> bool:
    sql = rule.get_blocking_rule("duckdb").blocking_rule_sql
    return bool(con.execute(
        f"SELECT 1 FROM cdp_records AS l JOIN cdp_records AS r ON ({sql}) AND l.record_id < r.record_id LIMIT 1"
    ).fetchall())


def _set_prior_m(linker, prior_m: Callable[[str, list[str]], list[float]]) -> list[str]:
    """Set the m of every level of each comparison none of whose levels EM estimated; return those comparisons.
    (A level with an m set counts as trained: no neighbour's weight replaces a prior.)"""
    replaced = []
    for comparison, levels in _levels(linker):
        if any(cl._has_estimated_m_values for cl in levels):
            continue
        for cl, m in zip(levels, prior_m(comparison, [cl.label_for_charts for cl in levels]), strict=True):
            cl.m_probability = float(m)
        replaced.append(comparison)
    return replaced


def _levels(linker):
    """(comparison output name, non-null levels) of each comparison."""
    for cc in linker._settings_obj.comparisons:
        yield cc.output_column_name, [cl for cl in cc.comparison_levels if not cl.is_null_level]


def _exact_u(linker, col: str) -> float | None:
    for _, levels in _levels(linker):
        for cl in levels:
            if cl._has_tf_adjustments and cl._tf_adjustment_input_column_name == col:
                return cl.u_probability
    return None


def _fill_unobserved_u(con: duckdb.DuckDBPyConnection, linker, max_pairs: int) -> dict[str, float]:
    """Set u for the levels no sampled pair reached, taken off the 'different' level so the u values still sum to
    1: an exact level's from the value counts, sum c(c-1) / (M(M-1)) over the counts c of M records with a
    value; any other as if one sampled pair had reached it. Returns {"comparison level": u}."""
    filled = {}
    for comparison, levels in _levels(linker):
        other = next(cl for cl in levels if cl._is_else_level)
        if not any(cl._u_is_trained for cl in levels):
            # No pair has values on both sides (no phone anywhere): the comparison is always 'missing'.
            for cl in levels:
                cl.u_probability = cl.m_probability = 1.0
            filled[comparison] = "no values"
            continue
        for cl in levels:
            if cl._is_else_level or cl._u_is_trained:
                continue
            col = _VALUE_COUNT_LEVELS.get((comparison, cl.label_for_charts))
            u = 1.0 / max_pairs
            if col is not None:
                agreeing, total = con.execute(
                    f"SELECT coalesce(sum(c * (c - 1)), 0)::DOUBLE, coalesce(sum(c), 0)::DOUBLE "
                    f"FROM (SELECT count(*) AS c FROM cdp_records WHERE {col} IS NOT NULL GROUP BY {col})"
                ).fetchall()[0]
                if total >= 2:
                    u = max(agreeing, 2.0) / (total * (total - 1))  # no shared value at all: as if one pair agreed
            cl.u_probability = u
            other.u_probability = max(other.u_probability - u, u)
            filled[f"{comparison} {cl.label_for_charts}"] = u
    return filled


def _merge_unobserved_m(linker) -> dict[str, str]:
    """Give each level that no EM training pair reached the match weight (m/u) of the nearest weaker estimated
    level other than 'different'; with none, weight 0 (m = u: no evidence either way). Never a stronger
    level's: a one-character birth-date typo never observed must not count as an exact date.
    Returns {"comparison level": neighbour}."""
    merged = {}
    for comparison, levels in _levels(linker):
        trained = [cl._m_is_trained for cl in levels]
        for i, cl in enumerate(levels):
            if trained[i]:
                continue
            below = [lv for lv, t in zip(levels[i + 1:], trained[i + 1:]) if t and not lv._is_else_level]
            neighbour = below[0] if below else None
            if neighbour is None:
                cl.m_probability = cl.u_probability
                merged[f"{comparison} {cl.label_for_charts}"] = "none (weight 0)"
            else:
                cl.m_probability = min(neighbour.m_probability * cl.u_probability / neighbour.u_probability, 1.0)
                merged[f"{comparison} {cl.label_for_charts}"] = neighbour.label_for_charts
    return merged


def _term_frequencies(con: duckdb.DuckDBPyConnection, col: str, u_exact: float | None) -> dict[str, float]:
    """Frequencies of the values of `col` more common than the average coincidence rate u of its exact level.

    Only those are kept: an exact match on them counts for less than on an average value. Rarer values are left
    out on purpose, so they get the average weight rather than a boost (a boost would grow with the size of the
    table and make rare-but-shared garbage values strong evidence).
    """
    if not u_exact or u_exact <= 0:
        return {}
    rows = con.execute(
        f"""
        SELECT {col}, cnt / total AS tf FROM (
            SELECT {col}, count(*)::DOUBLE AS cnt, sum(count(*)) OVER ()::DOUBLE AS total
            FROM cdp_records WHERE {col} IS NOT NULL GROUP BY {col}
        ) WHERE cnt / total > ? ORDER BY tf DESC, {col} LIMIT ?
        """,
        [u_exact, MAX_TERM_FREQUENCIES],
    ).fetchall()
    return {value: float(tf) for value, tf in rows}


def _register_term_frequencies(db_api, linker, frequencies: dict[str, dict[str, float]]) -> None:
    for col in TERM_FREQUENCY_COLUMNS:
        values = frequencies.get(col, {})
        tf = pa.table({
            col: pa.array(list(values), type=pa.string()),
            f"tf_{col}": pa.array(list(values.values()), type=pa.float64()),
        })
        linker.table_management.register_term_frequency_lookup(db_api.register(tf), col)


def _complete_parameters(linker, splink_settings: dict) -> None:
    """Write the m and u values the trained linker uses into the saved settings, including those this module set
    (Splink saves only what it estimated and would use a default after reloading)."""
    by_name = {cc.output_column_name: cc for cc in linker._settings_obj.comparisons}
    for comparison in splink_settings["comparisons"]:
        cc = by_name[comparison["output_column_name"]]
        for level_dict, cl in zip(comparison["comparison_levels"], cc.comparison_levels):
            if not cl.is_null_level:
                level_dict["m_probability"] = float(cl.m_probability)
                level_dict["u_probability"] = float(cl.u_probability)


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
    sample depend on the data alone. By the stored record ids, the same records under other ids (loads of several
    sources at once number their records in whatever order they arrive; a re-run after an interrupted load)
    could train another model."""
    values = [name for name in RECORD_SCHEMA.names if name not in ("record_id", "cluster_id", "is_candidate")]
    with duckdb.connect(":memory:") as con:
        con.register("cdp_input", table)
        digests = con.execute(f"SELECT hash({', '.join(values)}) FROM cdp_input").fetchnumpy()
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


def _name_keys(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The family and given name of each distinct (full_name, family_name, given_name) of `cdp_named` as pinyin
    keys (`profiles.names.name_parts`): Python once per distinct name, not once per record."""
    names = con.sql(
        "SELECT DISTINCT full_name, family_name, given_name FROM cdp_named "
        "WHERE full_name IS NOT NULL OR family_name IS NOT NULL OR given_name IS NOT NULL"
    ).to_arrow_table()
    parts = [name_parts(*triple) for triple in zip(*(names.column(i).to_pylist() for i in range(3)))]
    return names.append_column("family", pa.array([p[0] for p in parts], pa.string())).append_column(
        "given", pa.array([p[1] for p in parts], pa.string()))


@contextlib.contextmanager
def _splink_session(table: pa.Table):
    """An in-memory DuckDB holding the records as `cdp_records` (values trimmed, '' -> NULL; the name as pinyin
    family and given keys; the address lower-cased with its number and words), a Splink DuckDBAPI on it and the
    records registered with Splink. The connection is closed on exit. Should DuckDB spill to disk (memory limit),
    it spills into a temporary directory that is removed on exit."""
    from splink import DuckDBAPI

    splink_logger = logging.getLogger("splink")
    if splink_logger.level == logging.NOTSET or splink_logger.level < logging.WARNING:
        splink_logger.setLevel(logging.WARNING)

    spill_dir = tempfile.TemporaryDirectory(prefix="cdp-probabilistic-")
    con = duckdb.connect(":memory:", config={"temp_directory": spill_dir.name})
    try:
        con.register("cdp_input", table)
        # A record with only a name key (no name as written) is split from its key.
        con.execute("CREATE TEMP VIEW cdp_named AS "
                    "SELECT * REPLACE (coalesce(full_name, name_key) AS full_name) FROM cdp_input")
        con.register("cdp_names", _name_keys(con))
        clean = ",\n".join(
            f"nullif(trim(i.{c}), '') AS {c}"
            for c in ("name_key", "birth_date", "id_number", "phone", "email", "postcode", "city", "gender")
        )
        con.execute(
            f"""
            CREATE TABLE cdp_records AS
            WITH prepared AS (
                SELECT i.record_id, i.cluster_id, coalesce(i.is_candidate, FALSE) AS is_candidate, {clean},
                       nullif(n.family, '') AS family, nullif(n.given, '') AS given,
                       nullif(regexp_replace(lower(trim(i.address)), '\\s+', ' ', 'g'), '') AS address
                FROM cdp_named AS i LEFT JOIN cdp_names AS n
                  ON n.full_name IS NOT DISTINCT FROM i.full_name AND n.family_name IS NOT DISTINCT FROM i.family_name
                 AND n.given_name IS NOT DISTINCT FROM i.given_name
            ), words AS (
                SELECT *, nullif(concat(family, given), '') AS name_pinyin,
                       nullif(array_to_string(list_sort(list_filter([family, given], lambda x: x IS NOT NULL)), ' '),
                              '') AS name_sorted,
                       nullif(array_to_string(list_sort(list_filter([substr(family, 1, 1), substr(given, 1, 1)],
                                                                    lambda x: x IS NOT NULL)), ''), '') AS initials,
                       nullif(regexp_extract(address, '[0-9]+'), '') AS address_number,
                       list_filter(regexp_split_to_array(address, '[\\s,.;:#/()-]+'),
                                   lambda w: w <> '' AND NOT regexp_full_match(w, '[0-9]+')) AS address_tokens
                FROM prepared
            )
            SELECT *, CASE WHEN address_number IS NOT NULL AND array_length(address_tokens) > 0
                           THEN address_number || ' ' || address_tokens[1] END AS address_street
            FROM words
            """
        )
        con.execute("DROP VIEW cdp_named")
        con.unregister("cdp_input")
        con.unregister("cdp_names")
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


def _blocked_pairs_sql(rules: list[list[str]], max_block_size: int) -> str:
    """Pairs (join_key_l < join_key_r) with a candidate on at least one side, different clusters, agreeing on a
    blocking key held by at most `max_block_size` records; `match_key` is the first rule that finds the pair."""
    selects = []
    for i, expressions in enumerate(rules):
        key = f"[{', '.join(f'({e})::VARCHAR' for e in expressions)}]"
        present = " AND ".join(f"({e}) IS NOT NULL" for e in expressions)
        selects.append(
            f"""
            SELECT '{i}' AS match_key,
                   least(l.record_id, r.record_id) AS join_key_l,
                   greatest(l.record_id, r.record_id) AS join_key_r
            FROM (SELECT record_id, cluster_id, is_candidate, {key} AS k, count(*) OVER (PARTITION BY {key}) AS n
                  FROM cdp_records WHERE {present}) AS l
            JOIN (SELECT record_id, cluster_id, {key} AS k FROM cdp_records WHERE {present}) AS r
              ON r.k = l.k
            WHERE l.is_candidate AND l.n <= {int(max_block_size)}
              AND l.record_id <> r.record_id AND l.cluster_id <> r.cluster_id
            """
        )
    union = "\nUNION ALL\n".join(selects)
    return f"""
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

