import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from profiles.activity import activity_feed_load
from profiles.feeds import feed_load_all
from profiles.metrics import profile_metrics_recompute
from profiles.models import CustomerProfile, PossibleDuplicate, SourceRecord
from profiles.resolution import identity_resolve
from profiles.sample_activity import ACTIVITY_FILES, generate_sample_activity
from profiles.sample_data import generate_sample_feeds
from segments.sample_data import sample_segments_create
from tags.services import system_tags_sync

SAMPLE_FEEDS = (("core", "core_customers.csv"), ("card", "card_customers.csv"), ("wealth", "wealth_customers.csv"))


class Command(BaseCommand):
    help = "The main job: migrate, generate and load the sample feeds, unify them, then serve the admin."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=3000)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--out", default=str(settings.VAR_DIR / "sample"))
        parser.add_argument("--addr", default="127.0.0.1:8000", help="address and port to serve on")
        parser.add_argument("--no-serve", action="store_true", help="stop after loading and unifying")

    def handle(self, *args, customers, seed, out, addr, no_serve, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        out_dir = Path(out)
        if not (out_dir / "core_customers.csv").exists():
            counts = generate_sample_feeds(out_dir=out_dir, customers=customers, seed=seed)
            self.stdout.write(f"generated sample feeds in {out_dir}: {counts}")
        batches = feed_load_all([(source, out_dir / name) for source, name in SAMPLE_FEEDS])
        for (_, name), batch in zip(SAMPLE_FEEDS, batches):
            if batch.status != batch.Status.SUCCEEDED:
                raise CommandError(f"loading {name} failed: {batch.error}")
            self.stdout.write(
                f"loaded {name}: created {batch.rows_created}, updated {batch.rows_updated}, "
                f"unchanged {batch.rows_unchanged}, rejected {batch.rows_rejected}"
            )
        self.stdout.write(identity_resolve().summary())
        if not (out_dir / "core_transactions.csv").exists():
            counts = generate_sample_activity(out_dir=out_dir, seed=seed, today=timezone.localdate())
            self.stdout.write(f"generated sample activity: {counts}")
        for kind, (source, name, _header) in ACTIVITY_FILES.items():
            batch = activity_feed_load(source=source, kind=kind, path=out_dir / name)
            if batch.status != batch.Status.SUCCEEDED:
                raise CommandError(f"loading {name} failed: {batch.error}")
            self.stdout.write(f"loaded {name}: created {batch.rows_created}, unchanged {batch.rows_unchanged}, "
                              f"rejected {batch.rows_rejected}")
        self.stdout.write(
            f"{SourceRecord.objects.count()} source records -> "
            f"{CustomerProfile.objects.filter(status='active').count()} profiles; "
            f"{PossibleDuplicate.objects.filter(status='open').count()} possible duplicates to review"
        )
        self.stdout.write(f"metrics: {profile_metrics_recompute().profiles} profiles computed; system tags "
                          f"{', '.join(sorted(system_tags_sync())) or 'unchanged'}")
        for job in sample_segments_create().jobs:
            target = f"segment {job.segment.slug}" if job.segment_id else f"tag {job.tag.code}"
            self.stdout.write(f"{target}: {job.member_count} members ({job.status})")
        if not settings.DEBUG:  # with DEBUG on, WhiteNoise serves the apps' static files where they are
            call_command("collectstatic", interactive=False, verbosity=0)
        password = self._admin_password()
        if no_serve:
            self.stdout.write(self.style.SUCCESS(
                f"\nAdmin user: admin  password: {password}  (serve it with `bin/demo` or `bin/manage runserver`)\n"
            ))
            return
        self.stdout.write(self.style.SUCCESS(
            f"\nAdmin: http://{addr}/admin/  user: admin  password: {password}  (stop with Ctrl-C)\n"
        ))
        call_command("runserver", addr, use_reloader=False)

    def _admin_password(self) -> str:
        """A fresh password for the local `admin` user on every run, printed once."""
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(password)
        user.save()
        return password
