from django.core.management.base import BaseCommand, CommandError

from api.keys import ApiKeyError, api_key_create
from api.models import Scope


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--scopes", required=True, help=f"comma-separated, from: {', '.join(Scope.values)}")
        parser.add_argument("--expires-in-days", type=int, default=None)
        parser.add_argument("--rate", default="", help="this key's rate limit, e.g. 500/s (default: CDP_API_RATE)")

    def handle(self, *args, name, scopes, expires_in_days, rate, **options):
        try:
            api_key, key = api_key_create(name=name, scopes=scopes.split(","), expires_in_days=expires_in_days,
                                          rate=rate, created_by="create_api_key")
        except ApiKeyError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"API key {api_key.name} ({api_key.prefix}), scopes {', '.join(api_key.scopes)}"
                          + (f", expires {api_key.expires_at:%Y-%m-%d %H:%M}" if api_key.expires_at else "")
                          + ". Store it now: it cannot be shown again.")
        self.stdout.write(key)
