"""Soak test (run by hand, not in CI): the whole platform under steady load for N minutes, then a consistency check.

    .venv/bin/python bench/soak.py                  # 10 minutes
    .venv/bin/python bench/soak.py --minutes 2      # a short run

It starts gunicorn (2 workers), two Celery workers and beat against its own PostgreSQL database (default cdp_soak on
the local server; dropped and created again) and a Redis database (default redis://127.0.0.1:6379/8, flushed). Before
the clock starts it loads and resolves the bank's existing customers (the first resolution of an empty database
rewrites the records table under an exclusive lock: loads running meanwhile deadlock with it). Then, for the given
minutes:
- every minute a new set of sample feeds (`generate_sample_feeds`, a new seed each minute, written before the clock
  starts) is uploaded through the API: the three customer feeds, then the activity files; the workers load them,
  resolve identities, recompute metrics and refresh the affected segments;
- API clients (threads) read and write at a steady rate: profile lists, retrievals and lookups, segment lists,
  members, previews, refreshes, a client-owned segment whose rule they change, a manual tag they add and remove.

When the time is up the clients stop, the queue is drained, every segment is refreshed once more through the API
(manual tags do not trigger refreshes; the segments that were stale before that are counted), and it checks:
- every source record that was loaded is in exactly one profile, an active one, and every row of every uploaded
  file is either a source record of its source or a rejected row of its batch;
- every segment's current members are exactly what its rule selects now (segments.rules.rule_queryset), and for the
  rules without activity conditions, also what the reference evaluator (tests/segments/reference_rules.py) selects
  from the same rows.
It prints requests served, responses by status, jobs run and failed, and exits 1 on any 5xx, failed job or check.
"""
import argparse
import collections
import csv
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchdb import SERVER, recreate_database  # noqa: E402

# The customer key is each file's first column (core's export calls it CUST_NO).
CUSTOMER_FEEDS = (("core", "core_customers.csv"), ("card", "card_customers.csv"), ("wealth", "wealth_customers.csv"))
CLIENT_SEGMENT = "soak-client"
CLIENT_RULES = (
    {"all": [{"tag": "vip"}, {"field": "gender", "op": "eq", "value": "F"}]},
    {"any": [{"tag": "vip"}, {"field": "record_count", "op": "gte", "value": 3}]},
    {"all": [{"field": "city", "op": "startswith", "value": "北京"}, {"not": {"field": "email", "op": "is_null"}}]},
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long the load runs (default 10)")
    parser.add_argument("--initial-customers", type=int, default=5000,
                        help="people loaded and resolved before the clock starts (the bank's existing customers)")
    parser.add_argument("--customers-per-load", type=int, default=300, help="people in each minute's feeds")
    parser.add_argument("--clients", type=int, default=4, help="API client threads")
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second of each client")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database", default="cdp_soak")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8", help="broker; this Redis database is flushed")
    parser.add_argument("--drain-minutes", type=float, default=15, help="how long to wait for the queue to empty")
    return parser.parse_args()


# --- set-up ----------------------------------------------------------------------------------------------------

def environment(args, work: Path) -> dict:
    env = dict(os.environ)
    env.update(DATABASE_URL=f"{SERVER}/{args.database}", CELERY_BROKER_URL=args.redis, DEBUG="false",
               SECRET_KEY=secrets.token_urlsafe(32), CDP_PII_KEY=secrets.token_urlsafe(32),
               ALLOWED_HOSTS="127.0.0.1,localhost", CDP_VAR_DIR=str(work / "var"),
               CDP_FEED_UPLOAD_DIR=str(work / "uploads"), DJANGO_SETTINGS_MODULE="cdp.settings", LOG_LEVEL="INFO")
    return env


def set_up(args, env: dict, work: Path) -> tuple[str, list[Path]]:
    """Fresh database with the sample tags and segments, an API key, and every minute's feeds written."""
    recreate_database(args.database)
    os.environ.update(env)
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from django.utils import timezone

    from api.keys import api_key_create
    from api.models import Scope
    from profiles.feeds import feed_load_all
    from profiles.metrics import profile_metrics_recompute
    from profiles.resolution import identity_resolve
    from profiles.sample_activity import generate_sample_activity
    from profiles.sample_data import generate_sample_feeds
    from segments.sample_data import sample_segments_create

    call_command("migrate", verbosity=0)
    initial = work / "feeds" / "initial"
    generate_sample_feeds(out_dir=initial, customers=args.initial_customers, seed=999)
    batches = feed_load_all([(source, initial / name) for source, name in CUSTOMER_FEEDS])
    assert all(batch.status == "succeeded" for batch in batches), [batch.error for batch in batches]
    identity_resolve()
    profile_metrics_recompute()
    sample_segments_create()
    _, key = api_key_create(name="soak", scopes=Scope.values, rate="100000/s", created_by="bench/soak.py")
    redis.Redis.from_url(args.redis).flushdb()
    loads = max(1, int(args.minutes))
    folders = []
    for n in range(loads):
        folder = work / "feeds" / f"{n:03d}"
        generate_sample_feeds(out_dir=folder, customers=args.customers_per_load, seed=1000 + n)
        generate_sample_activity(out_dir=folder, seed=1000 + n, today=timezone.localdate())
        folders.append(folder)
    print(f"set up: database {args.database}, {args.initial_customers} people loaded and resolved, {loads} feed "
          f"sets of {args.customers_per_load} people in {work}", flush=True)
    return key, folders


def start_processes(args, env: dict, work: Path) -> dict[str, subprocess.Popen]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    python = str(ROOT / ".venv" / "bin" / "python")
    commands = {
        "gunicorn": [python, "-m", "gunicorn", "cdp.wsgi", "--workers", "2", "--bind", f"127.0.0.1:{args.port}",
                     "--timeout", "120", "--access-logfile", str(logs / "access.log")],
        "worker1": [python, "-m", "celery", "-A", "cdp", "worker", "-l", "INFO", "-c", "1", "-n", "soak1@%h"],
        "worker2": [python, "-m", "celery", "-A", "cdp", "worker", "-l", "INFO", "-c", "1", "-n", "soak2@%h"],
        "beat": [python, "-m", "celery", "-A", "cdp", "beat", "-l", "INFO", "-s", str(work / "beat-schedule")],
    }
    processes = {}
    for name, command in commands.items():
        out = open(logs / f"{name}.log", "w")
        processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return processes


def stop_processes(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


# --- load ------------------------------------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_status = collections.Counter()
        self.by_route = collections.Counter()
        self.failures = []  # (route, status or exception, first bytes of the body)

    def record(self, route: str, status, body: str = "") -> None:
        with self.lock:
            self.by_status[status] += 1
            self.by_route[(route, status)] += 1
            if not isinstance(status, int) or status >= 500:
                self.failures.append((route, status, body[:300]))


class Api:
    def __init__(self, base: str, key: str, tally: Tally):
        import requests

        self.base, self.tally = base, tally
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, route: str, path: str, **kwargs):
        try:
            response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        except Exception as exc:  # a refused or dropped connection counts as an error, not a crash of the soak
            self.tally.record(route, type(exc).__name__, str(exc))
            return None
        self.tally.record(route, response.status_code, response.text if response.status_code >= 500 else "")
        return response


def wait_until_serving(api: Api, seconds: float = 120) -> None:
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if api.session.get(api.base + "/api/v1/segments/", timeout=30).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit("gunicorn did not answer within two minutes: see the logs")


def upload(api: Api, folder: Path) -> list[int]:
    """One minute's feeds: customers first, then the activity files; returns the batch ids."""
    from profiles.sample_activity import ACTIVITY_FILES

    files = [(source, "customers", name) for source, name in CUSTOMER_FEEDS]
    files += [(source, kind, name) for kind, (source, name, _header) in ACTIVITY_FILES.items()]
    batches = []
    for source, kind, name in files:
        with open(folder / name, "rb") as handle:
            response = api.call("POST", "feeds/upload", "/api/v1/feeds/batches/upload/",
                                data={"source": source, "kind": kind}, files={"file": (name, handle, "text/csv")})
        if response is not None and response.status_code == 202:
            batches.append(response.json()["job_id"])
    return batches


def loader(api: Api, folders: list[Path], stop: threading.Event, uploaded: list) -> None:
    started = time.monotonic()
    for n, folder in enumerate(folders):
        if stop.wait(max(0.0, started + 60 * n - time.monotonic())):
            return
        uploaded.append((folder, upload(api, folder)))
        print(f"  minute {n}: uploaded {folder.name}", flush=True)


def client(api: Api, number: int, rate: float, stop: threading.Event) -> None:
    rnd = random.Random(number)
    public_ids, slugs = [], ["shanghai-women", "seniors", "new-customers", "travel-spenders", CLIENT_SEGMENT]

    def list_profiles():
        response = api.call("GET", "profiles/list", "/api/v1/profiles/", params={"page_size": 50})
        if response is not None and response.status_code == 200:
            public_ids[:] = [p["id"] for p in response.json()["results"]] or public_ids

    def retrieve():
        if public_ids:
            api.call("GET", "profiles/retrieve", f"/api/v1/profiles/{rnd.choice(public_ids)}/")

    def lookup():
        api.call("GET", "profiles/lookup", "/api/v1/profiles/lookup/",
                 params={"source": "core", "key": str(rnd.randrange(10 ** 9, 2 * 10 ** 9))})

    def members():
        api.call("GET", "segments/members", f"/api/v1/segments/{rnd.choice(slugs)}/members/")

    def preview():
        api.call("POST", "segments/preview", "/api/v1/segments/preview/", json={"rule": rnd.choice(CLIENT_RULES)})

    def refresh():
        api.call("POST", "segments/refresh", f"/api/v1/segments/{rnd.choice(slugs)}/refresh/")

    def change_rule():
        api.call("PATCH", "segments/update", f"/api/v1/segments/{CLIENT_SEGMENT}/",
                 json={"rule": rnd.choice(CLIENT_RULES)})

    def tag():
        if public_ids:
            profile = rnd.choice(public_ids)
            if rnd.random() < 0.6:
                api.call("POST", "profiles/tag-add", f"/api/v1/profiles/{profile}/tags/", json={"code": "vip"})
            else:
                api.call("DELETE", "profiles/tag-remove", f"/api/v1/profiles/{profile}/tags/vip/")

    actions = [(list_profiles, 3), (retrieve, 6), (lookup, 3), (members, 4), (preview, 2),
               (lambda: api.call("GET", "segments/list", "/api/v1/segments/"), 2), (tag, 2), (refresh, 1),
               (change_rule, 0.3)]
    functions, weights = zip(*actions)
    list_profiles()
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            rnd.choices(functions, weights)[0]()
        except Exception as exc:  # an unexpected body: counted, and the client goes on
            api.tally.record("client", type(exc).__name__, str(exc))
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))


def drain(args, seconds: float) -> bool:
    """Wait until the broker queue is empty and no load or refresh job is queued or running, twice in a row."""
    import redis

    from profiles.models import FeedBatch
    from segments.models import RefreshJob

    broker = redis.Redis.from_url(args.redis)
    busy_batches = [FeedBatch.Status.QUEUED, FeedBatch.Status.RUNNING]
    busy_jobs = [RefreshJob.Status.QUEUED, RefreshJob.Status.RUNNING]
    deadline, quiet = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        idle = (broker.llen("celery") == 0 and not broker.hlen("unacked")
                and not FeedBatch.objects.filter(status__in=busy_batches).exists()
                and not RefreshJob.objects.filter(status__in=busy_jobs).exists())
        quiet = quiet + 1 if idle else 0
        if quiet >= 3:
            return True
        time.sleep(5)
    return False


# --- checks ----------------------------------------------------------------------------------------------------

def check_records(uploaded: list) -> list[str]:
    """Every loaded source record in exactly one active profile; every uploaded customer row loaded or rejected."""
    from django.db.models import Q

    from profiles.models import CustomerProfile, FeedBatch, RejectedRow, SourceRecord

    problems = []
    unplaced = SourceRecord.objects.filter(Q(profile__isnull=True) | ~Q(profile__status=CustomerProfile.Status.ACTIVE))
    if unplaced.exists():
        problems.append(f"{unplaced.count()} source records are in no active profile, e.g. "
                        f"{list(unplaced.values_list('source__code', 'customer_key')[:5])}")
    known = set(SourceRecord.objects.values_list("source__code", "customer_key"))
    for folder, batch_ids in uploaded:
        rejected = collections.Counter(
            RejectedRow.objects.filter(batch_id__in=batch_ids).values_list("batch__source__code", flat=True))
        for source, name in CUSTOMER_FEEDS:
            with open(folder / name, encoding="utf-8-sig", newline="") as handle:
                rows = csv.reader(handle)
                next(rows)
                missing = sum((source, row[0].strip()) not in known for row in rows)
            if missing > rejected[source]:
                problems.append(f"{folder.name}/{name}: {missing} rows are neither loaded nor all rejected "
                                f"({rejected[source]} rejected)")
    # A load that failed on a transient error is retried by its task as a new batch of the same file.
    succeeded = FeedBatch.objects.filter(status=FeedBatch.Status.SUCCEEDED)
    for batch in FeedBatch.objects.filter(pk__in=[pk for _, ids in uploaded for pk in ids]):
        if not succeeded.filter(source_id=batch.source_id, kind=batch.kind, file_sha256=batch.file_sha256,
                                pk__gte=batch.pk).exists():
            problems.append(f"upload {batch.pk} ({batch.source.code} {batch.kind}) never loaded: {batch.error}")
    return problems


def stale_segments() -> list[str]:
    from segments.models import Segment
    from segments.rules import RuleContext, rule_queryset
    from segments.selectors import segment_members

    stale = []
    for segment in Segment.objects.filter(kind=Segment.Kind.RULE).order_by("slug"):
        members = set(segment_members(segment=segment).values_list("pk", flat=True))
        selected = set(rule_queryset(segment.rule, RuleContext()).values_list("pk", flat=True))
        if members != selected:
            stale.append(f"{segment.slug}: {len(members - selected)} members the rule does not select, "
                         f"{len(selected - members)} selected profiles not members")
    return stale


def reference_mismatches() -> tuple[list[str], int]:
    """The segments without activity conditions, against the reference evaluator over the same profiles."""
    sys.path.insert(0, str(ROOT / "tests" / "segments"))
    import reference_rules as ref
    from django.utils import timezone

    from profiles.models import CustomerProfile
    from segments.models import Segment
    from segments.rules import FIELDS, activity_catalogue, catalogue
    from segments.selectors import segment_members
    from tags.models import TagAssignment

    world = ref.World(tz=timezone.get_current_timezone(), field_types={f["name"]: f["type"] for f in catalogue()},
                      activity_types={k: {f["name"]: f["type"] for f in v} for k, v in activity_catalogue().items()})
    names, paths = zip(*((name, field.path) for name, field in FIELDS.items()))
    for pk, status, *values in CustomerProfile.objects.values_list("pk", "status", *paths).iterator():
        world.profiles[pk] = ref.Profile(id=pk, live=status == CustomerProfile.Status.ACTIVE,
                                         values=dict(zip(names, values)))
    world.tags = list(TagAssignment.objects.values_list("profile_id", "tag__code", "expires_at"))
    segments = Segment.objects.filter(kind=Segment.Kind.RULE)
    world.segments = {s.slug: set(segment_members(segment=s).values_list("pk", flat=True)) for s in segments}
    now, mismatches, compared = timezone.now(), [], 0
    for segment in segments:
        if "activity" in repr(segment.rule):
            continue
        compared += 1
        expected = ref.evaluate(segment.rule, world, now)
        if world.segments[segment.slug] != expected:
            mismatches.append(f"{segment.slug}: members differ from the reference evaluator "
                              f"({len(world.segments[segment.slug] ^ expected)} profiles)")
    return mismatches, compared


def job_counts(logs: Path) -> tuple[collections.Counter, collections.Counter]:
    """Tasks by outcome from the workers' logs, and per task name."""
    outcomes, failed = collections.Counter(), collections.Counter()
    pattern = re.compile(r"Task ([\w.]+)\[[\w-]+\] (succeeded|raised|retry)")
    for name in ("worker1.log", "worker2.log"):
        for line in open(logs / name, encoding="utf-8", errors="replace"):
            match = pattern.search(line)
            if match:
                outcomes[match.group(2)] += 1
                if match.group(2) == "raised":
                    failed[match.group(1)] += 1
    return outcomes, failed


# --- run -------------------------------------------------------------------------------------------------------

def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="cdp-soak-"))
    env = environment(args, work)
    key, folders = set_up(args, env, work)
    tally = Tally()
    processes = start_processes(args, env, work)
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_until_serving(Api(base, key, Tally()))
        api = Api(base, key, tally)
        api.call("POST", "segments/create", "/api/v1/segments/",
                 json={"slug": CLIENT_SEGMENT, "name": "Soak client's segment", "rule": CLIENT_RULES[0]})
        stop, uploaded = threading.Event(), []
        threads = [threading.Thread(target=loader, args=(Api(base, key, tally), folders, stop, uploaded))]
        threads += [threading.Thread(target=client, args=(Api(base, key, tally), n, args.rate, stop))
                    for n in range(args.clients)]
        started = time.monotonic()
        print(f"running {args.minutes:g} minutes: {args.clients} clients at {args.rate:g} requests/s each, "
              f"a feed set every minute", flush=True)
        for thread in threads:
            thread.start()
        time.sleep(args.minutes * 60)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        drained = drain(args, args.drain_minutes * 60)
        stale = stale_segments()
        from segments.models import Segment

        for slug in Segment.objects.filter(kind=Segment.Kind.RULE).values_list("slug", flat=True):
            api.call("POST", "segments/refresh", f"/api/v1/segments/{slug}/refresh/")
        drained = drain(args, args.drain_minutes * 60) and drained
    finally:
        stop_processes(processes)
    return report(args, tally, elapsed, drained, stale, uploaded, work / "logs")


def report(args, tally: Tally, elapsed: float, drained: bool, stale: list[str], uploaded: list, logs: Path) -> int:
    from profiles.models import CustomerProfile, FeedBatch, SourceRecord
    from segments.models import RefreshJob

    served = sum(n for status, n in tally.by_status.items() if isinstance(status, int))
    errors_5xx = sum(n for status, n in tally.by_status.items() if not isinstance(status, int) or status >= 500)
    outcomes, failed_tasks = job_counts(logs)
    record_problems = check_records(uploaded)
    segment_problems = stale_segments()
    reference_problems, compared = reference_mismatches()
    print(f"\nrequests served: {served} in {elapsed:.0f} s ({served / elapsed:.1f}/s); by status: "
          f"{dict(sorted(tally.by_status.items(), key=str))}")
    for (route, status), n in sorted(tally.by_route.items(), key=str):
        print(f"  {route:22} {status}: {n}")
    print(f"5xx or connection errors: {errors_5xx}")
    for route, status, body in tally.failures[:10]:
        print(f"  {route} {status}: {body}")
    print(f"tasks (worker logs): {dict(outcomes)}; failed by task: {dict(failed_tasks)}")
    print(f"feed batches by status: {dict(collections.Counter(FeedBatch.objects.values_list('status', flat=True)))} "
          f"(a failed one was retried as a new batch of the same file; every upload is checked to have loaded)")
    print(f"refresh jobs by status: {dict(collections.Counter(RefreshJob.objects.values_list('status', flat=True)))}")
    print(f"source records: {SourceRecord.objects.count()}, active profiles: "
          f"{CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE).count()}")
    print(f"queue drained: {drained}")
    print(f"segments stale after the drain, before the final refresh: {len(stale)}")
    for line in stale:
        print(f"  {line}")
    checks = record_problems + segment_problems + reference_problems
    print(f"checks: records in exactly one profile, uploads loaded or rejected, segments equal to their rules "
          f"(compiler: all; reference evaluator: {compared}): {'OK' if not checks else 'FAILED'}")
    for problem in checks:
        print(f"  {problem}")
    bad = errors_5xx or failed_tasks or checks or not drained
    print(f"logs: {logs}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
