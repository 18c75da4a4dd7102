"""The set-up every benchmark shares: its own, fresh PostgreSQL database, migrated, with Django configured."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"


def recreate_database(name: str, server: str = SERVER, *, template: str | None = None) -> None:
    """Drop `name` and create it again, empty or as a copy of `template`."""
    import psycopg2

    admin = psycopg2.connect(f"{server}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    admin.close()


def fresh_database(name: str, server: str = SERVER) -> None:
    """Drop and create `name`, point Django at it, set Django up and migrate."""
    recreate_database(name, server)
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = f"{server}/{name}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
