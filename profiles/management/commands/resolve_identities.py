from django.core.management.base import BaseCommand

from profiles.resolution import identity_resolve


class Command(BaseCommand):
    help = "Resolve loaded source records into customer profiles (only what loads touched, or --full)."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="re-resolve every record (the model is retrained by its rule, see train_identity_model)")

    def handle(self, *args, full, **options):
        self.stdout.write(identity_resolve(full=full).summary())
