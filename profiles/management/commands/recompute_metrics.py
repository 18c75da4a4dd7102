from django.core.management.base import BaseCommand, CommandError

from profiles.metrics import profile_metrics_recompute
from profiles.models import CustomerProfile


class Command(BaseCommand):
    help = "Recompute profile metrics and derived attributes: of the given profiles (public ids), or of all."

    def add_arguments(self, parser):
        parser.add_argument("--profile", action="append", default=[], metavar="PUBLIC_ID")

    def handle(self, *args, profile, **options):
        profile_ids = None
        if profile:
            found = dict(CustomerProfile.objects.filter(public_id__in=profile).values_list("public_id", "pk"))
            if missing := sorted(set(profile) - set(found)):
                raise CommandError(f"unknown profile(s): {', '.join(missing)}")
            profile_ids = list(found.values())
        report = profile_metrics_recompute(profile_ids=profile_ids)
        self.stdout.write(f"{report.profiles} profiles recomputed in {report.seconds:.1f} s")
