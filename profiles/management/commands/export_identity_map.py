from django.core.management.base import BaseCommand

from profiles.services import identity_map_export


class Command(BaseCommand):
    help = "Write the identity crosswalk profile_id,source,customer_key as CSV."

    def add_arguments(self, parser):
        parser.add_argument("out")

    def handle(self, *args, out, **options):
        rows = identity_map_export(path=out)
        self.stdout.write(f"wrote {rows} rows to {out}")
