"""A load killed midway leaves the database consistent, and re-running it gives exactly the result of an
uninterrupted load.

`manage.py load_feed` runs in a subprocess against the test database and is SIGKILLed while its batch is
running (no chance to clean up, as when a worker is OOM-killed or a machine goes down). The data must be as if
the load never started; the re-run must end in the same source records and profiles as a clean load of the same
file. The kill does not depend on timing: a table lock held by the test stops the load at its write into the
source records, and the load is killed there.
"""
import io
import signal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from profiles.models import CustomerProfile, FeedBatch, MatchKey, RejectedRow, SourceRecord
from profiles.sample_data import CORE_FILE, FeedRates, generate_sample_feeds

from .loads import clear_loaded_data, load_feed_command, snapshot, wait_for_backend_exit, wait_for_waiting_writers

# The sources and rules that migrations create are restored before this test (an earlier transactional test
# may have flushed them).
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CUSTOMERS = 10_000  # ~10,200 core records, some people with two CIFs


def run_to_completion(path: Path) -> str:
    proc = load_feed_command("--source", "core", str(path))
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    return output


def test_a_killed_load_leaves_no_trace_and_a_rerun_equals_an_uninterrupted_load(tmp_path):
    rates = FeedRates(card_holder=0.0, wealth_holder=0.0)  # core only
    generate_sample_feeds(out_dir=tmp_path, customers=CUSTOMERS, seed=11, rates=rates)
    feed = tmp_path / CORE_FILE

    # the reference: an uninterrupted load (and resolution) into a clean state
    call_command("load_feed", str(feed), source="core", stdout=io.StringIO())
    expected = snapshot()
    assert len(expected["records"]) > CUSTOMERS
    assert len(expected["profiles"]) < len(expected["records"])  # duplicate CIFs were merged
    clear_loaded_data()

    # Kill the load while it writes: rows read and normalised, the batch running, the write into the source
    # records under way. A lock the test holds on that table keeps the load there until it is killed.
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(f"LOCK TABLE {SourceRecord._meta.db_table} IN SHARE MODE")  # reads pass, writes wait
            proc = load_feed_command("--source", "core", str(feed))
            (writer_pid,) = wait_for_waiting_writers(cur, proc)
        assert FeedBatch.objects.get().status == FeedBatch.Status.RUNNING
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    wait_for_backend_exit(writer_pid)  # its server side has noticed the dead client and rolled back

    killed = FeedBatch.objects.get()
    assert killed.status == FeedBatch.Status.RUNNING  # never marked succeeded
    for model in (SourceRecord, RejectedRow, MatchKey, CustomerProfile):
        assert not model.objects.exists(), f"{model.__name__} rows were kept from a killed load"

    run_to_completion(feed)

    killed.refresh_from_db()
    assert killed.status == FeedBatch.Status.FAILED and "interrupted" in killed.error
    rerun = FeedBatch.objects.exclude(pk=killed.pk).get()
    assert rerun.status == FeedBatch.Status.SUCCEEDED and rerun.rows_created == len(expected["records"])
    assert not SourceRecord.objects.exclude(first_batch=rerun).exists()
    actual = snapshot()
    assert actual["records"] == expected["records"]
    assert actual["profiles"] == expected["profiles"]
