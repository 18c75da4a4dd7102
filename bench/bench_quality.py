"""Identity-resolution quality on data the platform did not generate: the public FEBRL sets 1 and 2 (with and
without their id numbers) and the generator's hard mode, each loaded through `load_feed` into a fresh database,
all sources at once (twice, into two fresh databases, to compare the partitions) and then source by source, and
scored with `evaluate_identity` against its truth; beside them two plain baselines computed over the same feeds.

    .venv/bin/python bench/bench_quality.py [--hard-customers 5000] [--no-febrl] [--no-hard]

It uses its own database (default cdp_bench_quality, and cdp_bench_quality_template holding the migrated schema;
both dropped and created again). Feeds are written under var/bench/quality/.
"""
import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchdb import SERVER, fresh_database, recreate_database  # noqa: E402
from bench.febrl import baseline_scores, febrl_dir, febrl_feeds  # noqa: E402

FEBRL_SETS = (("dataset1.csv", "FEBRL set 1", False), ("dataset2.csv", "FEBRL set 2", True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hard-customers", type=int, default=5000, help="people in the generator's hard mode")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=str(ROOT / "var" / "bench" / "quality"))
    parser.add_argument("--febrl", help="folder with the FEBRL dataset1.csv and dataset2.csv")
    parser.add_argument("--no-febrl", action="store_true")
    parser.add_argument("--no-hard", action="store_true")
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="cdp_bench_quality")
    args = parser.parse_args()
    quality_report(args)


def quality_report(args) -> None:
    bench = _Databases(args.database, args.server)
    data = Path(args.data)
    if not args.no_febrl:
        folder = Path(args.febrl) if args.febrl else febrl_dir(ROOT)
        if folder is None:
            print("FEBRL data not found (give --febrl DIR); skipped")
        else:
            for file_name, title, spread in FEBRL_SETS:
                for with_ids in (False, True):
                    label = f"{title}, {'with' if with_ids else 'without'} id numbers"
                    out = data / f"{Path(file_name).stem}-{'ids' if with_ids else 'no-ids'}"
                    feeds = febrl_feeds(folder / file_name, out, with_ids=with_ids, spread=spread, seed=args.seed)
                    _print_case(bench, label, feeds, out / "truth.csv")
                    _print_baselines(feeds, out / "truth.csv", with_ids=with_ids)
    if not args.no_hard:
        from profiles.sample_data import CARD_FILE, CORE_FILE, HARD_TRUTH_FILE, WEALTH_FILE, generate_sample_feeds

        out = data / f"hard-{args.hard_customers}-{args.seed}"
        generate_sample_feeds(out_dir=out, customers=args.hard_customers, seed=args.seed, mode="hard")
        feeds = {"core": out / CORE_FILE, "card": out / CARD_FILE, "wealth": out / WEALTH_FILE}
        _print_case(bench, f"generator hard mode, {args.hard_customers:,} people", feeds, out / HARD_TRUTH_FILE)
        _print_baselines(feeds, out / HARD_TRUTH_FILE, with_ids=True)


def _print_baselines(feeds: dict[str, Path], truth: Path, *, with_ids: bool) -> None:
    baselines = [("baseline: same id number", False)] if with_ids else []
    baselines.append(("baseline: id, or name + birth date, or surname + birth date + postcode" if with_ids
                      else "baseline: name + birth date, or surname + birth date + postcode", True))
    for name, with_name_rules in baselines:
        print(f"    {name:<68} {baseline_scores(feeds, truth, with_name_rules=with_name_rules).line()}")


class _Databases:
    """One migrated template; every case starts from a fresh copy of it."""

    def __init__(self, name: str, server: str):
        self.name, self.server, self.template = name, server, f"{name}_template"
        fresh_database(name, server)
        self._disconnect()
        recreate_database(self.template, server, template=name)

    @staticmethod
    def _disconnect() -> None:
        from django.db import connections

        connections.close_all()

    def fresh(self) -> None:
        self._disconnect()
        recreate_database(self.name, self.server, template=self.template)


def _print_case(bench: _Databases, label: str, feeds: dict[str, Path], truth: Path) -> None:
    """Load the feeds all at once, then again into another fresh database, then source by source; print the quality
    of the first and last, and whether the partitions agree."""
    print(label)
    first = _load_and_score(bench, "together", feeds, truth)
    again = _load_and_score(bench, "together, again", feeds, truth, quiet=True)
    in_turn = _load_and_score(bench, "in turn", feeds, truth)
    if first is not None:
        print(f"    {'partitions':<68} a second load at once: {_difference(first, again)}; "
              f"in turn against at once: {_difference(first, in_turn)}")


def _load_and_score(bench: _Databases, how: str, feeds: dict[str, Path], truth: Path, *,
                    quiet: bool = False) -> set[frozenset] | None:
    """The partition of the records into profiles after the load, or None when the load crashed."""
    from django.core.management import call_command

    from profiles.evaluation import identity_evaluate

    bench.fresh()
    started = time.perf_counter()
    try:
        if how.startswith("together"):
            call_command("load_feed", *(f"{source}={path}" for source, path in feeds.items()), stdout=io.StringIO())
        else:
            for source, path in feeds.items():
                call_command("load_feed", str(path), source=source, stdout=io.StringIO())
    except Exception as exc:  # a crash is a result to report, not a reason to stop measuring
        print(f"    {'platform, ' + how:<68} crash: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return None
    seconds = time.perf_counter() - started
    if not quiet:
        evaluation = identity_evaluate(truth_path=truth, show=0)
        pairs, bcubed = evaluation.pairs, evaluation.bcubed
        print(f"    {'platform, ' + how:<68} pairs P {pairs.precision:.4f}  R {pairs.recall:.4f}  F1 {pairs.f1:.4f}  "
              f"| B-cubed F1 {bcubed.f1:.4f} | exact clusters F1 {evaluation.clusters.f1:.4f} "
              f"| {evaluation.records:,} records, {evaluation.entities:,} people, {evaluation.profiles:,} profiles, "
              f"{seconds:.1f}s")
    return _partition()


def _partition() -> set[frozenset]:
    from profiles.models import SourceRecord

    groups: dict[int, set] = {}
    for profile_id, source, key in SourceRecord.objects.values_list("profile_id", "source__code", "customer_key"):
        groups.setdefault(profile_id, set()).add((source, key))
    return {frozenset(group) for group in groups.values()}


def _difference(a: set[frozenset], b: set[frozenset] | None) -> str:
    if b is None:
        return "crashed"
    return "identical" if a == b else f"{len(a - b):,} profiles of {len(a):,} differ"


if __name__ == "__main__":
    main()
