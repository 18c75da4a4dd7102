"""The README's main job on the embedded default (SQLite, Celery in-process), run as a user runs it.

No django_db mark: this test never touches the PostgreSQL test database; the job gets its own SQLite file.
"""
import csv
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from django.contrib.auth.hashers import check_password

PROJECT_DIR = Path(__file__).resolve().parent.parent
CUSTOMERS = 300


def test_main_job_generates_loads_and_unifies_the_sample_feeds_on_sqlite(tmp_path):
    db_file = tmp_path / "cdp.sqlite3"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_TEST_BROKER_URL")}
    env.update(DATABASE_URL=f"sqlite:///{db_file}", CDP_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    out_dir = tmp_path / "sample"

    result = subprocess.run(
        [sys.executable, "manage.py", "run_main_job", "--no-serve", "--customers", str(CUSTOMERS), "--out",
         str(out_dir)],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert db_file.exists()
    for name in ("core_customers.csv", "card_customers.csv", "wealth_customers.csv"):
        assert (out_dir / name).exists(), name
        assert re.search(rf"^loaded {name}: created \d+, updated 0, unchanged 0, rejected \d+$", result.stdout,
                         re.MULTILINE), result.stdout
    summary = re.search(r"^(\d+) source records -> (\d+) profiles; (\d+) possible duplicates to review$",
                        result.stdout, re.MULTILINE)
    assert summary, result.stdout
    printed_records, printed_profiles, printed_duplicates = map(int, summary.groups())

    with open(out_dir / "ground_truth.csv", encoding="utf-8") as fh:
        people = len({row["person_id"] for row in csv.DictReader(fh)})
    assert people == CUSTOMERS

    with sqlite3.connect(db_file) as db:
        def one(query: str) -> int:
            return db.execute(query).fetchone()[0]

        records = one("SELECT COUNT(*) FROM profiles_sourcerecord")
        profiles = one("SELECT COUNT(*) FROM profiles_customerprofile WHERE status = 'active'")
        assert records > CUSTOMERS  # every person has a core record, most also a card, some wealth
        assert 0 < profiles < records  # records of one person were unified
        assert abs(profiles - people) <= people * 0.05  # ... close to one profile per person of the ground truth
        assert one("SELECT COUNT(*) FROM profiles_sourcerecord WHERE profile_id IS NULL") == 0
        assert one("SELECT COUNT(*) FROM profiles_sourcerecord WHERE needs_resolution") == 0
        # every record points at a live profile, and every live profile holds its records
        assert one("SELECT COUNT(*) FROM profiles_sourcerecord r JOIN profiles_customerprofile p "
                   "ON p.id = r.profile_id WHERE p.status <> 'active'") == 0
        assert one("SELECT COUNT(*) FROM profiles_customerprofile p WHERE p.status = 'active' AND p.record_count "
                   "<> (SELECT COUNT(*) FROM profiles_sourcerecord r WHERE r.profile_id = p.id)") == 0
        assert one("SELECT COUNT(DISTINCT source_id) FROM profiles_sourcerecord") == 3
        assert one("SELECT COUNT(*) FROM profiles_feedbatch WHERE status = 'succeeded'") == 3 + 6  # + activity
        # Activity reached profiles through the identity map, and every live profile has its metrics.
        assert one("SELECT COUNT(DISTINCT r.profile_id) FROM profiles_cardtransaction c JOIN profiles_sourcerecord r "
                   "ON r.source_id = c.source_id AND r.customer_key = c.customer_key") > CUSTOMERS / 2
        assert one("SELECT COUNT(*) FROM profiles_profilemetrics") == profiles
        assert one("SELECT COUNT(DISTINCT lifecycle_stage) FROM profiles_profilemetrics") >= 3
        assert one("SELECT COUNT(*) FROM profiles_cardtransaction WHERE pan_bin IS NOT NULL") > 0
        assert (printed_records, printed_profiles) == (records, profiles)
        assert printed_duplicates == one("SELECT COUNT(*) FROM profiles_possibleduplicate WHERE status = 'open'")
        # --no-serve resets the admin's password too, so it prints the new one.
        password = re.search(r"^Admin user: admin  password: (\S+)", result.stdout, re.MULTILINE)
        assert password, result.stdout
        stored, = db.execute("SELECT password FROM auth_user WHERE username = 'admin'").fetchone()
        assert check_password(password.group(1), stored)
