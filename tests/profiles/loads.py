"""Helpers for tests that run loads in other processes against the test database and compare what they leave."""
import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from profiles.models import (
    CustomerProfile, DoNotLink, FeedBatch, MatchKey, PossibleDuplicate, ProbabilisticModel,
    RecordLink, RejectedRow, SourceRecord, SuppressedIdentifier,
)

PROJECT_DIR = Path(settings.BASE_DIR)


def database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def load_feed_command(*arguments: str) -> subprocess.Popen:
    """`manage.py load_feed ARGUMENTS` in a subprocess on the test database, its tasks in-process."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(DATABASE_URL=database_url(), CDP_PII_KEY=settings.CDP_PII_KEY, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "manage.py", "load_feed", *arguments],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def snapshot() -> dict:
    """Everything a load and resolution decide, without ids and timestamps that differ between runs: each record
    (its digest and normalised values), the partition of records into profiles, and each profile's golden
    attributes and where (which record) each came from."""
    record_fields = ("row_digest", "full_name", "name_key", "gender", "birth_date", "id_type", "id_number_hash",
                     "id_valid", "phone", "email", "address", "city", "postcode", "cif_ref", "attributes",
                     "source_updated_at", "needs_resolution")
    records = {}
    members: dict[int, set] = {}
    for r in SourceRecord.objects.select_related("source").order_by("pk"):
        key = (r.source.code, r.customer_key)
        records[key] = tuple(getattr(r, f) for f in record_fields)
        members.setdefault(r.profile_id, set()).add(key)
    assert None not in members, "every record belongs to a profile"
    key_of = {r.pk: (r.source.code, r.customer_key) for r in SourceRecord.objects.select_related("source")}
    profiles = {
        frozenset(members[p.pk]): (tuple(getattr(p, f) for f in CustomerProfile.GOLDEN_FIELDS), p.record_count,
                                   {g: key_of.get(getattr(p, f"{g}_record_id")) for g in CustomerProfile.LINEAGE_GROUPS})
        for p in CustomerProfile.objects.filter(status="active")
    }
    assert set().union(*profiles) == set(records), "the active profiles cover exactly the records"
    return {"records": records, "profiles": profiles}


def clear_loaded_data() -> None:
    """Back to a freshly migrated database: what loads and resolution wrote goes (and, by CASCADE, anything
    that refers to it); configuration that migrations created (sources, match rules ...) stays."""
    written = (FeedBatch, RejectedRow, SourceRecord, CustomerProfile, MatchKey, SuppressedIdentifier, RecordLink,
               DoNotLink, PossibleDuplicate, ProbabilisticModel)
    tables = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in written)
    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def wait_for_backend_exit(pid: int) -> None:
    deadline = time.monotonic() + 30
    with connection.cursor() as cur:
        while True:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if cur.fetchone()[0] == 0:
                return
            assert time.monotonic() < deadline, "the killed session did not end"
            time.sleep(0.05)


def wait_for_waiting_writers(cur, proc: subprocess.Popen, count: int = 1) -> set[int]:
    """The server pids of the sessions waiting to write into the source records, once there are `count` of them
    (`proc`, the command that runs them, must not end first)."""
    deadline = time.monotonic() + 60
    while True:
        cur.execute("SELECT pid FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                    [SourceRecord._meta.db_table])
        waiting = {pid for (pid,) in cur.fetchall()}
        if len(waiting) >= count:
            return waiting
        assert proc.poll() is None, f"the command ended before {count} writer(s) waited: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{count} writer(s) never waited to write into the source records"
        time.sleep(0.05)
