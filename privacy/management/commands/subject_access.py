import json

from django.core.management.base import BaseCommand, CommandError

from privacy.policy import Viewer
from privacy.rights import SubjectEncoder, subject_access
from profiles.models import CustomerProfile


class Command(BaseCommand):
    help = ("Write everything the platform holds on a customer (PIPL subject access) as JSON; the read is audited. "
            "An absorbed profile id stands for the profile that absorbed it.")

    def add_arguments(self, parser):
        parser.add_argument("profile_id", help="the profile's public id")
        parser.add_argument("--out", help="file to write (default: standard output)")

    def handle(self, *args, profile_id, out, **options):
        profile = CustomerProfile.objects.filter(public_id=profile_id).first()
        if profile is None:
            raise CommandError(f"no profile {profile_id}")
        data = subject_access(profile=profile, viewer=Viewer(sees_clear=True, method="CLI", path="subject_access"))
        text = json.dumps(data, cls=SubjectEncoder, ensure_ascii=False, indent=2)
        if out:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            self.stdout.write(f"wrote {out}")
        else:
            self.stdout.write(text)
