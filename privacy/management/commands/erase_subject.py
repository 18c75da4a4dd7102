import getpass

from django.core.management.base import BaseCommand, CommandError

from privacy.rights import erase_subject
from profiles.models import CustomerProfile


class Command(BaseCommand):
    help = ("Erase a customer everywhere (PIPL deletion) and keep do-not-reload markers so the next feed does not "
            "bring them back. An absorbed profile id stands for the profile that absorbed it.")

    def add_arguments(self, parser):
        parser.add_argument("profile_id", help="the profile's public id")
        parser.add_argument("--reason", required=True, help="the request or ticket reference (no personal data)")
        parser.add_argument("--by", default=None, help="who runs the erasure (default: the operating-system user)")

    def handle(self, *args, profile_id, reason, by, **options):
        profile = CustomerProfile.objects.filter(public_id=profile_id).first()
        if profile is None:
            raise CommandError(f"no profile {profile_id}")
        try:
            log = erase_subject(profile=profile, reason=reason, by=by or f"cli:{getpass.getuser()}")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        counts = ", ".join(f"{kind} {n}" for kind, n in log.counts.items())
        self.stdout.write(f"erasure #{log.pk}: {counts}")
