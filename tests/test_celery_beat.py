"""The one beat schedule (cdp/celery.py): every entry names a task the worker knows, and what an entry sends does
its job: the due-refresh entry refreshes a time-relative segment left from yesterday, and leaves the rest."""
import datetime as dt

import pytest
from django.utils import timezone

from cdp.celery import app
from profiles.models import CustomerProfile
from segments.models import RefreshJob, Segment
from segments.selectors import segment_members
from segments.services import segment_refresh, segment_save


def _send(entry: dict):
    """What beat sends for an entry, run in-process."""
    return app.tasks[entry["task"]].apply(args=entry.get("args", ()), kwargs=entry.get("kwargs", {}))


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()  # what a worker does at start: the tasks of every installed app
    schedule = app.conf.beat_schedule
    assert schedule, "no beat schedule"
    assert {name: entry["task"] for name, entry in schedule.items() if entry["task"] not in app.tasks} == {}


@pytest.mark.django_db
def test_the_due_refresh_entry_refreshes_a_stale_time_relative_segment():
    now = timezone.now()
    newcomer = CustomerProfile.objects.create(public_id="PBEAT1", city="Shanghai")
    turning = CustomerProfile.objects.create(public_id="PBEAT2", city="Shanghai")
    # First seen a minute before the first day of "the last 25 days": inside them yesterday, not today.
    first_day = timezone.localdate(now) - dt.timedelta(days=25)
    CustomerProfile.objects.filter(pk=turning.pk).update(
        created_at=timezone.make_aware(dt.datetime.combine(first_day, dt.time.min)) - dt.timedelta(minutes=1))
    recent = segment_save(segment=Segment(name="Recent", slug="recent",
                                          rule={"field": "created_at", "op": "gte", "value": {"days_ago": 25}}))
    segment_refresh(segment=recent, now=now - dt.timedelta(days=1))  # yesterday's answer
    by_city = segment_save(segment=Segment(name="Shanghai", slug="shanghai",
                                           rule={"field": "city", "op": "eq", "value": "Shanghai"}))
    segment_refresh(segment=by_city)  # no relative dates, no schedule: never due again
    assert {p.public_id for p in segment_members(segment=recent)} == {"PBEAT1", "PBEAT2"}

    result = _send(app.conf.beat_schedule["segments-refresh-due"])

    assert result.successful()
    [job] = RefreshJob.objects.filter(trigger="schedule")
    assert (job.segment, job.status, job.entered, job.exited) == (recent, "succeeded", 0, 1)
    assert {p.public_id for p in segment_members(segment=recent)} == {newcomer.public_id}
    assert RefreshJob.objects.filter(segment=by_city).count() == 1
