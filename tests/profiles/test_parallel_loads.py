"""Loads at the same time as other work: `load_feed core=FILE card=FILE wealth=FILE` loads the feeds of several
sources at once, in a process each, and ends where loading them one after another ends (a bad file among them fails
alone); a load waits for a resolution under way instead of changing records under it."""
import io
import multiprocessing
import os

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from profiles import resolution, sql
from profiles.feeds import feed_load_all
from profiles.models import FeedBatch, SourceRecord
from profiles.resolution import identity_resolve
from profiles.sample_data import CARD_FILE, CORE_FILE, WEALTH_FILE, generate_sample_feeds

from .loads import clear_loaded_data, load_feed_command, snapshot, wait_for_waiting_writers

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

FEEDS = (("core", CORE_FILE), ("card", CARD_FILE), ("wealth", WEALTH_FILE))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite loads one feed at a time")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core loads one feed at a time")
def test_feeds_of_three_sources_load_at_once_and_end_as_one_after_another(tmp_path):
    generate_sample_feeds(out_dir=tmp_path, customers=600, seed=5)
    arguments = [f"{code}={tmp_path / name}" for code, name in FEEDS]

    # A lock the test holds on the source records stops every load at its write: two loads waiting there at the
    # same time are two loads running at once.
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(f"LOCK TABLE {SourceRecord._meta.db_table} IN SHARE MODE")  # reads pass, writes wait
            proc = load_feed_command(*arguments)
            wait_for_waiting_writers(cur, proc, count=2)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    batches = FeedBatch.objects.order_by("pk")
    assert sorted(batch.source.code for batch in batches) == ["card", "core", "wealth"]
    assert all(batch.status == FeedBatch.Status.SUCCEEDED for batch in batches)
    for code, _ in FEEDS:
        assert f" {code}: read " in output
    assert "resolved " in output  # one resolution after the three loads
    at_once = snapshot()

    clear_loaded_data()
    for code, name in FEEDS:
        call_command("load_feed", str(tmp_path / name), source=code, no_resolve=True, stdout=io.StringIO())
    identity_resolve()
    one_after_another = snapshot()
    assert at_once["records"] == one_after_another["records"]
    assert at_once["profiles"] == one_after_another["profiles"]


def test_a_bad_file_among_them_fails_alone_and_the_others_load(write_feed, tmp_path):
    good = write_feed([{"customer_key": "C1", "full_name": "Wang Fang", "phone": "13912345678"}])
    binary = tmp_path / "card.csv"
    binary.write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    out = io.StringIO()
    with pytest.raises(CommandError, match="failed"):
        call_command("load_feed", f"core={good}", f"card={binary}", stdout=out)
    core, card = FeedBatch.objects.get(source__code="core"), FeedBatch.objects.get(source__code="card")
    assert core.status == FeedBatch.Status.SUCCEEDED and core.rows_created == 1
    assert card.status == FeedBatch.Status.FAILED and card.error
    assert list(SourceRecord.objects.values_list("source__code", "customer_key")) == [("core", "C1")]
    assert SourceRecord.objects.get().profile_id is not None  # the good feed was resolved
    assert f"batch {card.pk} card: failed" in out.getvalue()


def test_load_feed_names_an_unknown_source_and_a_malformed_argument(write_feed):
    feed = write_feed([{"customer_key": "C1", "full_name": "Wang Fang"}])
    with pytest.raises(CommandError, match=r"unknown source nosuch \(known: .*core"):
        call_command("load_feed", f"core={feed}", f"nosuch={feed}")
    with pytest.raises(CommandError, match="SOURCE=FILE"):
        call_command("load_feed", str(feed))
    assert not FeedBatch.objects.exists()


def test_inside_a_transaction_the_feeds_load_in_turn_and_come_back_in_order(write_feed):
    core = write_feed([{"customer_key": "C1", "full_name": "Wang Fang"}])
    card = write_feed([{"customer_key": "K1", "full_name": "Wang Fang"}, {"customer_key": "K2", "full_name": "Li Na"}])
    with transaction.atomic():
        batches = feed_load_all([("card", card), ("core", core)])
    assert [(b.source.code, b.rows_created) for b in batches] == [("card", 2), ("core", 1)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer at a time anyway")
def test_a_load_waits_for_a_resolution_under_way_and_the_next_run_resolves_it(write_feed):
    first = write_feed([{"customer_key": "C1", "full_name": "Wang Fang", "phone": "13912345678"}])
    call_command("load_feed", str(first), source="core", stdout=io.StringIO())
    changed = write_feed([{"customer_key": "C1", "full_name": "Wang Fang", "phone": "13987654321"},
                          {"customer_key": "C2", "full_name": "Li Na"}])
    with transaction.atomic():
        identity_resolve(full=True)  # a run whose transaction is still open
        proc = load_feed_command("--source", "core", "--no-resolve", str(changed))
        with connection.cursor() as cur:
            wait_for_waiting_writers(cur, proc)  # it fails if the load ends without waiting
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert set(SourceRecord.objects.filter(needs_resolution=True).values_list("customer_key", flat=True)) == {"C1", "C2"}
    identity_resolve()
    assert not SourceRecord.objects.filter(needs_resolution=True).exists()
    assert SourceRecord.objects.get(customer_key="C1").profile.phone == "+8613987654321"
    assert SourceRecord.objects.get(customer_key="C2").profile_id is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one connection on SQLite")
def test_a_whole_table_run_reads_the_records_in_two_halves_at_once_and_gets_them_all_in_order(tmp_path):
    generate_sample_feeds(out_dir=tmp_path, customers=300, seed=3)
    feed_load_all([(code, tmp_path / name) for code, name in FEEDS])
    with transaction.atomic():
        assert not sql.transaction_has_written()  # so a second connection reads what this one does
        in_halves = resolution._fetch_records("1 = 1", whole_table=True)
        SourceRecord.objects.filter(pk=SourceRecord.objects.first().pk).update(needs_resolution=True)  # as it was
        assert sql.transaction_has_written()
        at_once = resolution._fetch_records("1 = 1")
    assert in_halves.num_rows == SourceRecord.objects.count() > 600
    assert in_halves.equals(at_once)
    ids = in_halves.column("id").to_numpy()
    assert (ids[1:] > ids[:-1]).all()


def _load_two_feeds_and_exit(core, card) -> None:
    from django.db import connections

    batches = feed_load_all([("core", core), ("card", card)])
    connections.close_all()
    os._exit(0 if all(batch.status == FeedBatch.Status.SUCCEEDED for batch in batches) else 1)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite loads one feed at a time anyway")
def test_a_daemonic_process_such_as_a_celery_worker_loads_the_feeds_in_turn(write_feed):
    core = write_feed([{"customer_key": "C1", "full_name": "Wang Fang"}])
    card = write_feed([{"customer_key": "K1", "full_name": "Li Na"}])
    connection.close()  # the child opens its own
    worker = multiprocessing.get_context("fork").Process(target=_load_two_feeds_and_exit, args=(core, card),
                                                         daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == 0  # a daemonic process may not start processes: it must not try
    assert sorted(FeedBatch.objects.values_list("source__code", "rows_created")) == [("card", 1), ("core", 1)]
