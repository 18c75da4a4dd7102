from django.core.management.base import BaseCommand

from privacy.retention import retention_enforce


class Command(BaseCommand):
    help = "Delete what is older than its retention window (README, 'Retention'); prints the counts."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    def handle(self, *args, dry_run=False, **options):
        report = retention_enforce(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for category, count in report.deleted.items():
            cutoff = report.cutoffs[category]
            window = f"before {cutoff:%Y-%m-%d %H:%M:%S %Z}" if cutoff else "kept forever"
            self.stdout.write(f"{category}: {verb} {count} ({window})")
