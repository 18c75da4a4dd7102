"""A refresh under concurrency, a refresh process killed midway, and schedules (real commits: transactional_db)."""
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from django.db import connection, connections, transaction

from profiles import sql as profiles_sql
from profiles.models import CustomerProfile
from segments.models import RefreshJob, Segment, SegmentEvent, SegmentMember
from segments.selectors import segment_members
from segments.services import segment_refresh, segment_save, segments_refresh_due
from tags.models import TagDefinition

from tests.profiles.loads import database_url, wait_for_backend_exit

from .conftest import NOW

SHANGHAI = {"field": "city", "op": "eq", "value": "Shanghai"}


def make_segment(slug: str, rule: dict, **fields) -> Segment:
    return segment_save(segment=Segment(name=slug, slug=slug, rule=rule, **fields))


def wait_for_advisory_lock_waiters(count: int, timeout: float = 30) -> None:
    """Until `count` sessions of this database wait for an advisory lock (what the refreshes take first)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cur:
        while True:
            cur.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())")
            if cur.fetchone()[0] >= count:
                return
            assert time.monotonic() < deadline, f"fewer than {count} refreshes reached the lock"
            time.sleep(0.02)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite runs one writer and one worker")
def test_two_concurrent_refreshes_of_one_segment_serialise(people):
    segment = make_segment("shanghai", SHANGHAI)
    key = profiles_sql.advisory_lock_key("segment", segment.pk)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [key])  # a refresh already running elsewhere holds the lock
    jobs = []

    def refresh():
        try:
            jobs.append(segment_refresh(segment=Segment.objects.get(pk=segment.pk)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for_advisory_lock_waiters(2)  # both refreshes queue behind the lock
    assert Segment.objects.get(pk=segment.pk).current_version == 0
    assert all(thread.is_alive() for thread in threads)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", [key])
    for thread in threads:
        thread.join(timeout=30)

    assert sorted((j.status, j.entered) for j in jobs) == [("succeeded", 0), ("succeeded", 2)]
    segment.refresh_from_db()
    assert segment.current_version == 2 and segment.member_count == 2
    assert SegmentEvent.objects.filter(segment=segment).count() == 2  # each entry recorded once
    assert set(SegmentMember.objects.filter(segment=segment).values_list("version", flat=True)) == {2}


def refresh_command(slug: str) -> subprocess.Popen:
    """`manage.py refresh_segments SLUG` in a process of its own, against the test database."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(DATABASE_URL=database_url(), CDP_PII_KEY=settings.CDP_PII_KEY, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "manage.py", "refresh_segments", slug], cwd=settings.BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_blocked_write(cur, proc: subprocess.Popen, table: str) -> int:
    """The server pid of the refresh once it waits to write into `table`."""
    deadline = time.monotonic() + 60
    while True:
        cur.execute("SELECT pid FROM pg_locks WHERE relation = %s::regclass AND NOT granted", [table])
        row = cur.fetchone()
        if row:
            return row[0]
        assert proc.poll() is None, f"the refresh ended before it could be killed: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"the refresh never reached its write into {table}"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the kill is timed by a PostgreSQL table lock")
def test_a_killed_refresh_leaves_the_previous_result_and_the_next_run_completes(people):
    segment = make_segment("shanghai", SHANGHAI)
    segment_refresh(segment=segment, now=NOW)
    CustomerProfile.objects.filter(pk=people["bob"].pk).update(city="Shanghai")

    # The refresh process writes version 2 of the members and commits it; its switch to version 2 starts with the
    # entered/exited events, held here by a lock until the process is SIGKILLed (as when a worker is OOM-killed).
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(f"LOCK TABLE {SegmentEvent._meta.db_table} IN SHARE MODE")  # reads pass, writes wait
            proc = refresh_command("shanghai")
            refresh_pid = wait_for_blocked_write(cur, proc, SegmentEvent._meta.db_table)
        assert SegmentMember.objects.filter(segment=segment, version=2).count() == 3  # written, not switched to
        assert {p.full_name for p in segment_members(segment=segment)} == {"Ann Lee", "Cai Xu"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    wait_for_backend_exit(refresh_pid)  # its session, and the advisory lock it held, are gone

    segment.refresh_from_db()
    assert (segment.current_version, segment.member_count) == (1, 2)
    assert {p.full_name for p in segment_members(segment=segment)} == {"Ann Lee", "Cai Xu"}  # readers unaffected
    assert SegmentEvent.objects.filter(segment=segment).count() == 2  # the first run's entries only
    dead_job = RefreshJob.objects.get(segment=segment, status="running")

    rerun = refresh_command("shanghai")
    output, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, output
    assert "shanghai: succeeded, 3 members, +1 -0" in output

    segment.refresh_from_db()
    assert (segment.current_version, segment.member_count, segment.is_calculating) == (2, 3, False)
    assert {p.full_name for p in segment_members(segment=segment)} == {"Ann Lee", "Bob Wu", "Cai Xu"}
    assert set(SegmentMember.objects.filter(segment=segment).values_list("version", flat=True)) == {2}
    assert list(SegmentEvent.objects.filter(segment=segment, kind="entered").order_by("at")
                .values_list("profile__full_name", flat=True))[-1] == "Bob Wu"
    dead_job.refresh_from_db()
    assert dead_job.status == "failed" and "interrupted" in dead_job.error


@pytest.mark.django_db
def test_a_stale_time_relative_segment_is_refreshed_by_the_schedule(people):
    # "first seen in the last 25 days": Bob (20 days) today, nobody after 6 more days (Dee, 0 days, is still in)
    recent = make_segment("recent", {"field": "created_at", "op": "gte", "value": {"days_ago": 25}})
    static_rule = make_segment("shanghai", SHANGHAI)  # no relative dates and no schedule: refreshed once
    segments_refresh_due(now=NOW)
    assert {p.full_name for p in segment_members(segment=recent)} == {"Bob Wu", "Dee"}

    later_same_day = segments_refresh_due(now=NOW + dt.timedelta(hours=2))
    assert later_same_day.jobs == []

    next_week = segments_refresh_due(now=NOW + dt.timedelta(days=6))
    assert [j.segment_id for j in next_week.jobs] == [recent.pk]
    assert {p.full_name for p in segment_members(segment=recent)} == {"Dee"}
    assert RefreshJob.objects.filter(segment=static_rule).count() == 1


@pytest.mark.django_db
def test_interval_and_cron_schedules(people):
    hourly = make_segment("hourly", SHANGHAI, refresh_every_minutes=60)
    nightly = make_segment("nightly", SHANGHAI, refresh_cron="0 2 * * *")
    segments_refresh_due(now=NOW)  # 12:00: both never refreshed

    assert segments_refresh_due(now=NOW + dt.timedelta(minutes=30)).jobs == []
    assert [j.segment_id for j in segments_refresh_due(now=NOW + dt.timedelta(minutes=61)).jobs] == [hourly.pk]
    # 02:00 the next night has passed at 03:00
    due = segments_refresh_due(now=NOW + dt.timedelta(hours=15)).jobs
    assert {j.segment_id for j in due} == {hourly.pk, nightly.pk}


@pytest.mark.django_db
def test_a_bad_cron_expression_is_refused():
    with pytest.raises(ValueError):
        make_segment("bad", SHANGHAI, refresh_cron="every day")


@pytest.mark.django_db
def test_rule_tags_refresh_daily_and_only_what_uses_a_changed_tag_follows(people):
    TagDefinition.objects.create(code="many", name="Many records", kind="rule",
                                 rule={"field": "record_count", "op": "gte", "value": 2})
    make_segment("uses-tag", {"tag": "many"})
    by_city = make_segment("by-city", SHANGHAI)
    segments_refresh_due(now=NOW)  # first run: everything

    CustomerProfile.objects.filter(pk=people["bob"].pk).update(record_count=4)
    next_day = segments_refresh_due(now=NOW + dt.timedelta(days=1))

    refreshed = {(j.tag.code if j.tag_id else j.segment.slug, j.entered) for j in next_day.jobs}
    # the tag is refreshed daily; Bob gained it, so the segment using it (time-relative: tags expire) follows
    assert refreshed == {("many", 1), ("uses-tag", 1)}
    assert RefreshJob.objects.filter(segment=by_city).count() == 1
