"""The probabilistic tier's model over time: when a new one is estimated, what scores when none can be, what is kept.

- A model is estimated (`model_estimate`) on the first resolution, when the records grew by `RETRAIN_GROWTH` or more
  since the stored model was estimated, when a source has records the stored model never saw, or on demand
  (`manage.py train_identity_model`). Otherwise the stored model scores: a delta of a few hundred records would
  estimate m and u from too little, and two models would score one data set two ways.
- When expectation maximisation cannot run (one clean source holds no related records to learn from), the last
  trained model scores; on an installation without one, a prior model: lambda and u from the records (u needs no
  duplicates, only random pairs) and m from `PRIOR_M`, keyed by comparison and level label, with a generic fallback
  (`prior_m`) for comparisons and levels it does not name.
- Every estimated model is stored (`ProbabilisticModel`) with what it was estimated from (records per source and the
  last batch of each, a digest of the compared values), why, how long it took and the warnings of the run.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
from django.db.models import Exists, OuterRef

from . import probabilistic
from .models import ProbabilisticModel, Source, SourceRecord

# Records grown by this share since the stored model was estimated: estimate a new one. A fifth more records
# changes the value frequencies (u, term frequencies) and adds enough new pairs for EM to move m; a smaller
# delta does neither measurably, and a new model re-scores every record (a full resolution).
RETRAIN_GROWTH = 0.20
# Fewer records than this say too little even about u (random pairs) for a prior: the tier waits for more.
MIN_RECORDS_FOR_MODEL = 100
# Fewer records than this give EM too little to estimate match and non-match rates from: the prior m is used.
MIN_RECORDS_TO_TRAIN = 1000

# Prior m (the share of true matches at each level), by comparison and level label, for a model that cannot be
# trained. Chosen from what bank records of one person look like across systems, not from any data set: names are
# mostly typed the same (a typo or transliteration in about one record in five); a birth date is rarely wrong;
# phones and e-mails change over the years and differ between systems in a third or more of true pairs;
# people move (postcode), less often to another city. A comparison or level not named here gets `_generic_prior_m`.
PRIOR_M = {
    "name": {"exact": 0.70, "same in pinyin": 0.06, "given and family swapped": 0.03,
             "both parts alike (Jaro-Winkler >=0.92)": 0.05, "family exact, same given initial": 0.03,
             "alike (Jaro-Winkler >=0.88)": 0.03, "family name only": 0.03, "given name only": 0.02,
             "loosely alike (Jaro-Winkler >=0.70)": 0.02, "different": 0.03},
    "birth_date": {"exact": 0.90, "day and month transposed": 0.02, "one character": 0.03, "within a year": 0.02,
                   "different": 0.03},
    "contact": {"phone, and e-mail or address": 0.30, "phone": 0.15, "e-mail and address": 0.05, "e-mail": 0.05,
                "address": 0.10, "address: same number, most words": 0.04,
                "address: most words (moved in the street)": 0.03,
                "address: same number, alike (Jaro-Winkler >=0.88)": 0.03, "different": 0.25},
    "postcode": {"exact": 0.70, "one character": 0.05, "different": 0.25},
    "city": {"exact": 0.82, "alike (Jaro-Winkler >=0.88)": 0.03, "different": 0.15},
    "id_number": {"exact": 0.90, "different": 0.10},
}
# Generic prior: the last level (the comparison's "else") holds this share of true matches; the levels above it
# share the rest, each half the one before (the most exact level first).
GENERIC_ELSE_M = 0.05


def prior_m(comparison: str, labels: list[str]) -> list[float]:
    """Prior m of a comparison's levels (null level excepted, most exact first), summing to 1."""
    known = PRIOR_M.get(comparison, {})
    if labels and all(label in known for label in labels):
        values = [known[label] for label in labels]
        total = sum(values)
        return [value / total for value in values]
    return _generic_prior_m(len(labels))


def _generic_prior_m(levels: int) -> list[float]:
    if levels <= 1:
        return [1.0] * levels
    halves = [0.5 ** i for i in range(levels - 1)]
    return [(1 - GENERIC_ELSE_M) * h / sum(halves) for h in halves] + [GENERIC_ELSE_M]


@dataclass(frozen=True)
class ModelChoice:
    """Which model scores a resolution: `stored` unless `train_reason` says why a new one is estimated."""

    stored: ProbabilisticModel | None
    train_reason: str | None


def model_latest() -> ProbabilisticModel | None:
    """The model that scores unless a new one is estimated: the latest of this code's format. (A prior is stored
    only while no trained model exists, so the latest is the latest trained one whenever there is one.)"""
    return (ProbabilisticModel.objects.filter(parameters__format=probabilistic.MODEL_FORMAT)
            .order_by("-created_at", "-id").first())


def model_choice(*, train: bool | None) -> ModelChoice:
    """`train`: True estimates a new model (on demand), False never does unless there is none, None by the rule
    in the module docstring. With fewer than `MIN_RECORDS_FOR_MODEL` records none is estimated (and without a
    stored model the tier does not run)."""
    stored = model_latest()
    if train is False and stored is not None:
        return ModelChoice(stored, None)
    records = SourceRecord.objects.count()
    if records < MIN_RECORDS_FOR_MODEL:
        return ModelChoice(stored, None)
    if stored is None:
        return ModelChoice(None, ProbabilisticModel.Reason.FIRST_LOAD)
    if train:
        return ModelChoice(stored, ProbabilisticModel.Reason.ON_DEMAND)
    seen = set(stored.training_data.get("sources", {}))
    present = set(Source.objects.filter(Exists(SourceRecord.objects.filter(source_id=OuterRef("pk"))))
                  .values_list("code", flat=True))
    if present - seen:
        return ModelChoice(stored, ProbabilisticModel.Reason.NEW_SOURCE)
    if records >= (1 + RETRAIN_GROWTH) * stored.trained_on_records:
        return ModelChoice(stored, ProbabilisticModel.Reason.NEW_DATA)
    return ModelChoice(stored, None)


@dataclass(frozen=True)
class Estimate:
    """A model estimated from a universe of records (see `model_estimate`), not yet stored."""

    parameters: dict
    kind: str
    warnings: list[str]
    digest: str
    seconds: float


def model_estimate(universe: pa.Table) -> Estimate:
    """Estimate a model from the records of `universe` (probabilistic.RECORD_SCHEMA): trained by EM when the
    records allow, else the prior. Touches no database (it runs in the resolution's scoring thread)."""
    started = time.perf_counter()
    with _warnings_of_this_thread() as warnings:
        parameters = probabilistic.train_model(
            universe, prior_m=prior_m, estimate_m=universe.num_rows >= MIN_RECORDS_TO_TRAIN)
    kind = ProbabilisticModel.Kind.PRIOR if parameters["training"].get("prior") else ProbabilisticModel.Kind.TRAINED
    return Estimate(parameters=parameters, kind=kind, warnings=warnings, digest=_values_digest(universe),
                    seconds=round(time.perf_counter() - started, 3))


def model_store(estimate: Estimate, *, reason: str, records: pa.Table) -> ProbabilisticModel:
    """Store an estimated model with what it was estimated from: `records` are the fetched source records
    (columns source_id and last_batch_id)."""
    codes = dict(Source.objects.values_list("id", "code"))
    by_source = records.group_by("source_id").aggregate([("source_id", "count"), ("last_batch_id", "max")])
    sources = {
        codes[source_id]: {"records": count, "last_batch": last_batch}
        for source_id, count, last_batch in zip(*(by_source.column(c).to_pylist() for c in
                                                 ("source_id", "source_id_count", "last_batch_id_max")))
    }
    return ProbabilisticModel.objects.create(
        parameters=estimate.parameters, kind=estimate.kind, reason=reason, trained_on_records=records.num_rows,
        training_data={"sources": dict(sorted(sources.items())), "digest": estimate.digest},
        warnings=estimate.warnings, training_seconds=estimate.seconds,
    )


def model_use(model: ProbabilisticModel, *, trained_now: bool) -> str:
    """How a resolution report names the model that scored: prior, stored or trained."""
    if model.kind == ProbabilisticModel.Kind.PRIOR:
        return "prior"
    return "trained" if trained_now else "stored"


def _values_digest(universe: pa.Table) -> str:
    """A digest of the compared values of the records, whatever their order or ids: two models estimated from
    the same records show the same digest."""
    values = [name for name in universe.column_names if name not in ("record_id", "cluster_id", "is_candidate")]
    with duckdb.connect(":memory:") as con:
        con.register("universe", universe)
        hashes = con.execute(f"SELECT hash({', '.join(values)}) FROM universe").fetchnumpy()
    # The sum of the row hashes wraps around at 2**64: order-free, and unlike XOR, a repeated row still counts.
    total = np.sum(next(iter(hashes.values())).astype(np.uint64), dtype=np.uint64)
    return f"{int(total):016x}"


@contextlib.contextmanager
def _warnings_of_this_thread() -> Iterator[list[str]]:
    """Collect the warnings that training logs (probabilistic.py and Splink) in the calling thread."""
    collected: list[str] = []
    thread = threading.get_ident()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                collected.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    loggers = [logging.getLogger(name) for name in (probabilistic.__name__, "splink")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield collected
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
