"""Profile API throughput: gunicorn serving the real app, wrk on loopback, PostgreSQL with N profiles.

    .venv/bin/python bench/bench_api.py --profiles 1000000

Prints requests/s and latency percentiles for profile retrieve and lookup by source key (with and without
`profiles:read_pii`, the latter writing an audit record per response), and, in the same run and with the same
gunicorn and wrk settings, a baseline: a bare WSGI app that answers each request with the same profile row read
by one plain SQL query. Own database `cdp_bench_api`, seeded set-based with generate_series and kept between runs
of the same size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "cdp_bench_api"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
SERVER_ENV = {
    "DATABASE_URL": DATABASE_URL, "DEBUG": "0", "SECRET_KEY": "bench-secret-key-not-for-production",
    "CDP_PII_KEY": "bench-pii-key-not-for-production", "CDP_API_RATE": "1000000/s", "LOG_LEVEL": "WARNING",
    # Persistent connections, as in production: a new PostgreSQL connection per request costs more than the request.
    "DB_CONN_MAX_AGE": "600",
}
os.environ.update(SERVER_ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

# wrk picks a random profile per request; its `done` hook prints the figures as one JSON line.
WRK_SCRIPT = """
local n = %(profiles)d
local template = "%(template)s"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  return wrk.format("GET", string.format(template, math.random(1, n)))
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "seconds": %%f, "errors": %%d, "non2xx": %%d, "p50": %%f, "p99": %%f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""

# The baseline: the same HTTP stack and database, minus Django: one parameterised SELECT per request.
BASELINE_APP = """
import json, psycopg2
_conn = None
def application(environ, start_response):
    global _conn
    if _conn is None:
        _conn = psycopg2.connect(%(dsn)r)
        _conn.autocommit = True
    public_id = environ["PATH_INFO"].rstrip("/").rsplit("/", 1)[-1]
    with _conn.cursor() as cur:
        cur.execute("SELECT public_id, full_name, gender, birth_date, phone, email, city, updated_at "
                    "FROM profiles_customerprofile WHERE public_id = %%s", [public_id])
        row = cur.fetchone()
    if row is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = json.dumps(dict(zip(("id", "full_name", "gender", "birth_date", "phone", "email", "city", "updated_at"),
                               row)), default=str).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def psql(sql: str, *, url: str = DATABASE_URL) -> str:
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def public_id(n: int) -> str:
    return f"B{n:025d}"


def database_prepare(profiles: int) -> None:
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'", url=ADMIN_URL)
    if exists:
        try:
            if psql("SELECT (SELECT count(*) FROM profiles_customerprofile) || ' ' "
                    "|| (SELECT count(*) FROM profiles_profilemetrics)") == f"{profiles} {profiles}":
                print(f"reusing {DB_NAME} with {profiles:,} profiles")
                return
        except subprocess.CalledProcessError:
            pass
        psql(f"DROP DATABASE {DB_NAME}", url=ADMIN_URL)
    psql(f"CREATE DATABASE {DB_NAME}", url=ADMIN_URL)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    started = time.perf_counter()
    # Profiles with the golden attributes a channel app reads, one core source record each (for lookup by key) and
    # metrics (the lifecycle stage and value tier a retrieve joins in).
    psql(f"""
        BEGIN;
        INSERT INTO profiles_feedbatch (source_id, kind, file_name, file_sha256, status, error, rows_read,
               rows_created, rows_updated, rows_unchanged, rows_rejected, warnings, started_at, finished_at)
        SELECT id, 'customers', 'bench', '', 'succeeded', '', 0, 0, 0, 0, 0, '{{}}', now(), now()
        FROM profiles_source WHERE code = 'core';
        INSERT INTO profiles_customerprofile (public_id, status, full_name, family_name, given_name, gender,
               birth_date, id_type, id_number_masked, phone, email, address, city, postcode, record_count,
               created_at, updated_at)
        SELECT 'B' || lpad(g::text, 25, '0'), 'active', '王' || chr(19968 + g % 2000), '王', chr(19968 + g % 2000),
               CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END, date '1950-01-01' + (g % 18000),
               'CN_RESIDENT', '110***********' || lpad((g % 10000)::text, 4, '0'),
               '+86138' || lpad((g % 100000000)::text, 8, '0'), 'user' || g || '@example.com',
               '北京市朝阳区建国路' || (g % 500) || '号', (ARRAY['北京市','上海市','广州市','深圳市'])[1 + g % 4],
               lpad((100000 + g % 900000)::text, 6, '0'), 1, now(), now()
        FROM generate_series(1, {profiles}) g;
        INSERT INTO profiles_sourcerecord (source_id, customer_key, profile_id, full_name, gender, phone, email,
               city, id_valid, attributes, row_digest, first_batch_id, last_batch_id, needs_resolution, loaded_at)
        SELECT b.source_id, 'C' || substr(p.public_id, 2)::bigint, p.id, p.full_name, p.gender, p.phone, p.email,
               p.city, false, '{{}}', md5(p.public_id), b.id, b.id, false, now()
        FROM profiles_customerprofile p, (SELECT id, source_id FROM profiles_feedbatch LIMIT 1) b;
        INSERT INTO profiles_profilemetrics (profile_id, as_of, total_deposits, aum, loan_balance, card_limit,
               card_spend_30d, card_spend_90d, card_spend_365d, txn_counts_90d, activity_90d, activity_prior_90d,
               net_flow_90d, salary_credited, salary_monthly, product_types, open_products, closed_accounts_90d,
               risk_level, lifecycle_stage, value_tier, clv, churn_risk, churn_signals, next_best_products,
               computed_at)
        SELECT id, current_date, id % 500000, 0, 0, 0, 0, 0, 0, '{{"payment": 3}}', 3, 2, 100, true, 8000,
               '["savings"]', 1, 0, 'C3', (ARRAY['new','active','growing','declining','dormant'])[1 + id % 5],
               (ARRAY['high','mid','low'])[1 + id % 3], 1000, 10, '{{}}', '[]', now()
        FROM profiles_customerprofile;
        COMMIT;
        ANALYZE;
    """)
    print(f"seeded {profiles:,} profiles in {time.perf_counter() - started:.0f} s")


def api_key_create(scopes: list[str]) -> str:
    import django
    django.setup()
    from api.keys import api_key_create as create
    return create(name=f"bench {' '.join(scopes)}", scopes=scopes)[1]


def serve(args: list[str], workers: int, threads: int, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "-w", str(workers), "--threads", str(threads), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", *args], cwd=ROOT, env={**os.environ, **SERVER_ENV})
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return server
        except OSError:
            time.sleep(0.2)
            continue
        return server
    server.kill()
    raise SystemExit("gunicorn did not start")


def load(port: int, template: str, key: str, *, profiles: int, seconds: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % {"profiles": profiles, "template": template, "key": key})
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", fh.name,
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    os.unlink(fh.name)
    figures = json.loads(out.strip().splitlines()[-1])
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (gthread: keep-alive)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent wrk connections")
    options = parser.parse_args()
    database_prepare(options.profiles)
    masked_key = api_key_create(["profiles:read"])
    pii_key = api_key_create(["profiles:read", "profiles:read_pii"])
    run = dict(profiles=options.profiles, seconds=options.seconds, connections=options.connections)
    print(f"{options.profiles:,} profiles; gunicorn {options.workers} workers x {options.threads} threads; wrk 2 threads, "
          f"{options.connections} connections, {options.seconds} s each; {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "baseline_wsgi.py").write_text(BASELINE_APP % {"dsn": DATABASE_URL})
        server = serve(["--chdir", tmp, "baseline_wsgi:application"], options.workers, options.threads, 8790)
        try:
            baseline = load(8790, "/p/B%025d", "-", **run)
        finally:
            server.terminate()
            server.wait()

    server = serve(["cdp.wsgi:application"], options.workers, options.threads, 8791)
    try:
        cases = [
            ("retrieve, masked", "/api/v1/profiles/B%025d/", masked_key),
            ("retrieve, read_pii + audit", "/api/v1/profiles/B%025d/", pii_key),
            ("lookup by source key, masked", "/api/v1/profiles/lookup/?source=core&key=C%d", masked_key),
        ]
        results = [(name, load(8791, template, key, **run)) for name, template, key in cases]
    finally:
        server.terminate()
        server.wait()

    print(f"{'case':34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} {'vs baseline':>11}")
    print(f"{'baseline: bare WSGI + one SELECT':34} {baseline['rps']:8.0f} {baseline['p50']:7.1f} "
          f"{baseline['p99']:7.1f} {baseline['non2xx'] + baseline['errors']:8d} {'1.00':>11}")
    for name, r in results:
        print(f"{name:34} {r['rps']:8.0f} {r['p50']:7.1f} {r['p99']:7.1f} {r['non2xx'] + r['errors']:8d} "
              f"{r['rps'] / baseline['rps']:11.2f}")


if __name__ == "__main__":
    main()
