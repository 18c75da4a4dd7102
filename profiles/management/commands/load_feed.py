import sys

from django.core.management.base import BaseCommand, CommandError

from profiles.activity import KINDS, activity_batch_profile_ids, activity_feed_load
from profiles.feeds import feed_load
from profiles.metrics import profile_metrics_recompute
from profiles.resolution import identity_resolve


class Command(BaseCommand):
    help = ("Load a customer or activity feed (CSV or JSON Lines, optionally gzipped) for a source; then resolve "
            "identities (customers) and recompute the metrics of the profiles it touched.")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--source", required=True, help="source code: core, card, wealth, ...")
        parser.add_argument("--kind", default="customers", choices=["customers", *KINDS])
        parser.add_argument("--encoding", default="utf-8-sig", help="utf-8 (default, BOM or not) or gb18030")
        parser.add_argument("--no-resolve", action="store_true", help="load only; run resolve_identities later")

    def handle(self, *args, file, source, kind, encoding, no_resolve, **options):
        progress = sys.stderr.isatty()
        if kind == "customers":
            batch = feed_load(source=source, path=file, encoding=encoding, progress=progress)
        else:
            batch = activity_feed_load(source=source, kind=kind, path=file, encoding=encoding, progress=progress)
        if batch.status != batch.Status.SUCCEEDED:
            raise CommandError(f"batch {batch.pk} failed: {batch.error}")
        self.stdout.write(
            f"batch {batch.pk} {source}: read {batch.rows_read}, created {batch.rows_created}, "
            f"updated {batch.rows_updated}, unchanged {batch.rows_unchanged}, rejected {batch.rows_rejected}"
            + (f", warnings {batch.warnings}" if batch.warnings else "")
        )
        for rejected in batch.rejected_rows.all()[:10]:
            self.stdout.write(f"  row {rejected.row_number}: {rejected.reason}")
        if batch.rows_rejected > 10:
            self.stdout.write(f"  ... {batch.rows_rejected - 10} more rejected rows in the admin")
        if kind != "customers":
            report = profile_metrics_recompute(profile_ids=activity_batch_profile_ids(batch=batch))
            self.stdout.write(f"metrics recomputed for {report.profiles} profiles")
        elif not no_resolve:
            self.stdout.write(identity_resolve().summary())

