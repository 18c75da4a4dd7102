"""Deployment (README, "Deploying"): compose.yaml's production settings pass `check --deploy`, and static files are
served by the WSGI app under gunicorn with DEBUG off. This machine cannot build the image; these run the same
settings and commands outside it.

No django_db mark: every check runs in a subprocess with settings of its own.
"""
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())
APP_SERVICES = ("migrate", "web", "worker", "beat")
# The variables a deployer provides (compose refuses to start without them), with values as a deployer makes them.
SECRETS = {"SECRET_KEY": secrets.token_urlsafe(50), "CDP_PII_KEY": secrets.token_urlsafe(32),
           "ALLOWED_HOSTS": "cdp.bank.example", "POSTGRES_PASSWORD": secrets.token_urlsafe(16)}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def _compose_environment(service: str, provided: dict[str, str]) -> dict[str, str]:
    """The environment compose gives a service: `${VAR:?message}` must be provided, `${VAR:-default}` may be."""
    def interpolate(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if name in provided:
            return provided[name]
        assert kind == "-", f"{service}: {name} is required but not provided"
        return rest

    return {name: _INTERPOLATION.sub(interpolate, str(value))
            for name, value in COMPOSE["services"][service]["environment"].items()}


def _clean_environment(**settings) -> dict[str, str]:
    """This process's environment without the platform's settings (those of the test run), plus `settings`."""
    names = set(COMPOSE["services"]["web"]["environment"]) | {"CELERY_RESULT_BACKEND", "CELERY_TEST_BROKER_URL",
                                                             "STATIC_ROOT", "CDP_VAR_DIR"}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **settings}


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_with_the_production_settings_of_compose():
    result = _check_deploy(_clean_environment(**_compose_environment("web", SECRETS)))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_with_the_development_defaults():
    result = _check_deploy(_clean_environment())

    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W009", "security.W010", "security.W018"):
        assert warning in result.stderr, (warning, result.stderr)  # HSTS, HTTPS, secret key, cookies, DEBUG


def test_check_deploy_fails_without_the_admins_csrf_middleware(tmp_path):
    (tmp_path / "settings_without_csrf.py").write_text(
        "from cdp.settings import *  # noqa: F403\n"
        "MIDDLEWARE = [m for m in MIDDLEWARE if m != 'api.middleware.CsrfViewMiddleware']  # noqa: F405\n")
    env = _clean_environment(**_compose_environment("web", SECRETS), DJANGO_SETTINGS_MODULE="settings_without_csrf",
                             PYTHONPATH=os.pathsep.join([str(tmp_path), str(PROJECT_DIR)]))

    result = _check_deploy(env)

    assert result.returncode != 0 and "api.W001" in result.stderr, result.stderr


def test_every_production_setting_of_compose_is_documented():
    readme = (PROJECT_DIR / "README.md").read_text()
    deploying = readme.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    provided = {name for match in _INTERPOLATION.finditer(yaml.safe_dump(COMPOSE)) for name in [match.group(1)]}

    undocumented = sorted(name for name in set(COMPOSE["services"]["web"]["environment"]) | provided
                          if f"`{name}`" not in deploying)
    assert undocumented == []


def test_compose_runs_web_worker_and_beat_from_one_image_with_shared_uploads():
    services = COMPOSE["services"]
    assert {"db", "redis", *APP_SERVICES} <= set(services)
    assert {services[s]["build"] for s in APP_SERVICES} == {"."}
    assert len({services[s]["image"] for s in APP_SERVICES}) == 1
    assert services["web"]["command"][0] == "gunicorn"
    assert services["worker"]["command"][:4] == ["celery", "-A", "cdp", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "cdp", "beat"]
    # The web server stores an uploaded feed where a worker loads it.
    upload_dir = services["web"]["environment"]["CDP_FEED_UPLOAD_DIR"]
    assert f"uploads:{upload_dir}" in services["web"]["volumes"]
    assert f"uploads:{upload_dir}" in services["worker"]["volumes"]
    # The image installs as a checkout does.
    assert "RUN bin/setup-venv" in (PROJECT_DIR / "Dockerfile").read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, host: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Host": host, "X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def gunicorn_in_production(tmp_path):
    """gunicorn serving the app with compose's production settings, after collectstatic into a fresh directory."""
    env = _clean_environment(**{**_compose_environment("web", SECRETS), "STATIC_ROOT": str(tmp_path / "static"),
                                "DATABASE_URL": f"sqlite:///{tmp_path / 'cdp.sqlite3'}", "CACHE_URL": "",
                                "CELERY_BROKER_URL": "", "CDP_VAR_DIR": str(tmp_path)})
    collected = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                               cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stderr
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "cdp.wsgi", "--bind",
                               f"127.0.0.1:{port}", "--workers", "1"],
                              cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.1)
        yield base, tmp_path / "static"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_admin_and_the_segment_builder_get_their_static_files_under_gunicorn(gunicorn_in_production):
    base, static_root = gunicorn_in_production
    host = SECRETS["ALLOWED_HOSTS"]

    status, _, page = _get(f"{base}/admin/login/", host)
    assert status == 200, page[:500]
    assets = re.findall(r"(?:href|src)=\"(/static/[^\"]+)\"", page.decode())
    assert any(a.endswith(".css") for a in assets), assets
    for asset in [*assets, "/static/segments/rule_builder.js", "/static/drf_spectacular_sidecar/redoc/bundles/"
                  "redoc.standalone.js"]:
        status, headers, body = _get(base + asset, host)
        assert status == 200, asset
        assert body == (static_root / asset.removeprefix("/static/")).read_bytes(), asset
        assert headers["Content-Type"].split(";")[0] in ("text/css", "text/javascript", "application/javascript")

    status, headers, body = _get(f"{base}/favicon.ico", host)
    assert status == 200 and body[:4] == b"\x00\x00\x01\x00"
