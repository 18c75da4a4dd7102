from pathlib import Path

from django.core.management.base import BaseCommand
from django.utils import timezone

from profiles.sample_activity import generate_sample_activity
from profiles.sample_data import MODES, generate_sample_feeds


class Command(BaseCommand):
    help = ("Write sample customer feeds of the core, card and wealth systems (with their ground truth) and the "
            "same people's activity, deterministic for a seed.")

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=10_000, help="people to generate")
        parser.add_argument("--out", default="sample_feeds", help="folder to write the files to")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--mode", choices=MODES, default="default",
                            help="hard: a share of people have no identifier in common across systems and carry "
                                 "the errors of real files; the truth is written as truth.csv "
                                 "(source,customer_key,entity) for evaluate_identity")
        parser.add_argument("--hard", action="store_const", const="hard", dest="mode", help="the same as --mode hard")

    def handle(self, *args, customers, out, seed, mode, **options):
        out_dir = Path(out)
        counts = generate_sample_feeds(out_dir=out_dir, customers=customers, seed=seed, mode=mode)
        self.stdout.write(f"customer feeds: {counts}")
        activity = generate_sample_activity(out_dir=out_dir, seed=seed, today=timezone.localdate())
        self.stdout.write(f"activity: {activity}")
