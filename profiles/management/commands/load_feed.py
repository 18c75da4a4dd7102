import sys

from django.core.management.base import BaseCommand, CommandError

from profiles.activity import KINDS, activity_batch_profile_ids, activity_feed_load
from profiles.feeds import feed_load, feed_load_all
from profiles.metrics import profile_metrics_recompute
from profiles.models import Source
from profiles.resolution import identity_resolve


class Command(BaseCommand):
    help = ("Load a customer or activity feed (CSV or JSON Lines, optionally gzipped) for a source; then resolve "
            "identities (customers) and recompute the metrics of the profiles it touched. Customer feeds of several "
            "sources load at once, then resolve once: load_feed core=core.csv card=card.csv wealth=wealth.csv")

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="+", help="FILE with --source; else SOURCE=FILE, one or more")
        parser.add_argument("--source", help="source code: core, card, wealth, ...")
        parser.add_argument("--kind", default="customers", choices=["customers", *KINDS])
        parser.add_argument("--encoding", default="utf-8-sig", help="utf-8 (default, BOM or not) or gb18030")
        parser.add_argument("--no-resolve", action="store_true", help="load only; run resolve_identities later")

    def handle(self, *args, file, source, kind, encoding, no_resolve, **options):
        if source is None:
            self._load_several(_source_files(file), kind=kind, encoding=encoding, no_resolve=no_resolve)
            return
        if len(file) != 1:
            raise CommandError("--source takes one file; load several as SOURCE=FILE arguments without --source")
        _check_sources([source])
        file = file[0]
        progress = sys.stderr.isatty()
        if kind == "customers":
            batch = feed_load(source=source, path=file, encoding=encoding, progress=progress)
        else:
            batch = activity_feed_load(source=source, kind=kind, path=file, encoding=encoding, progress=progress)
        if batch.status != batch.Status.SUCCEEDED:
            raise CommandError(f"batch {batch.pk} failed: {batch.error}")
        self._report(batch, source)
        if kind != "customers":
            report = profile_metrics_recompute(profile_ids=activity_batch_profile_ids(batch=batch))
            self.stdout.write(f"metrics recomputed for {report.profiles} profiles")
        elif not no_resolve:
            self.stdout.write(identity_resolve().summary())

    def _load_several(self, feeds: list[tuple[str, str]], *, kind: str, encoding: str, no_resolve: bool) -> None:
        if kind != "customers":
            raise CommandError("activity feeds load one at a time, with --source")
        _check_sources([code for code, _ in feeds])
        batches = feed_load_all(feeds, encoding=encoding)
        for (code, _), batch in zip(feeds, batches):
            self._report(batch, code)
        failed = [batch for batch in batches if batch.status != batch.Status.SUCCEEDED]
        if not no_resolve and len(failed) < len(batches):
            self.stdout.write(identity_resolve().summary())
        if failed:
            raise CommandError("; ".join(f"batch {batch.pk} failed: {batch.error}" for batch in failed))

    def _report(self, batch, source: str) -> None:
        if batch.status != batch.Status.SUCCEEDED:
            self.stdout.write(f"batch {batch.pk} {source}: failed: {batch.error}")
            return
        self.stdout.write(
            f"batch {batch.pk} {source}: read {batch.rows_read}, created {batch.rows_created}, "
            f"updated {batch.rows_updated}, unchanged {batch.rows_unchanged}, rejected {batch.rows_rejected}"
            + (f", warnings {batch.warnings}" if batch.warnings else "")
        )
        for rejected in batch.rejected_rows.all()[:10]:
            self.stdout.write(f"  row {rejected.row_number}: {rejected.reason}")
        if batch.rows_rejected > 10:
            stored = batch.rejected_rows.count()  # at most CDP_FEED_MAX_STORED_REJECTS of them
            self.stdout.write(f"  ... {batch.rows_rejected - 10} more rejected rows; the first {stored} are kept "
                              "for review in the admin")


def _source_files(arguments: list[str]) -> list[tuple[str, str]]:
    feeds = []
    for argument in arguments:
        code, separator, path = argument.partition("=")
        if not separator or not code or not path:
            raise CommandError(f"{argument!r}: give SOURCE=FILE, or one FILE with --source")
        feeds.append((code, path))
    return feeds


def _check_sources(codes: list[str]) -> None:
    known = list(Source.objects.order_by("code").values_list("code", flat=True))
    unknown = sorted(set(codes) - set(known))
    if unknown:
        raise CommandError(f"unknown source {', '.join(unknown)} (known: {', '.join(known)})")
