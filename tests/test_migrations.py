"""Every migration has a way back, on SQLite (the demo's database) as on PostgreSQL. Whether index builds block
writes is checked on every migration by bin/lint-migrations (cdp/migration_lint.py), which CI runs."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a process of its own: the suite's Django is bound to PostgreSQL. Back to before profiles 0006 (the one that
# could not be unapplied on SQLite), which takes every later migration and its dependants of other apps with it.
ROUND_TRIP = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("migrate", "profiles", "0005", verbosity=0)
call_command("migrate", verbosity=0)
"""


def test_the_migrations_unapply_and_apply_again_on_sqlite(tmp_path):
    # given an empty SQLite database
    env = os.environ | {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                        "DJANGO_SETTINGS_MODULE": "cdp.settings"}
    # when every migration is applied, the later ones unapplied, and all applied again
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP], cwd=ROOT, env=env, capture_output=True, text=True)
    # then every step succeeds
    assert result.returncode == 0, result.stderr[-3000:]
