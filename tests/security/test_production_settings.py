"""Production settings (VIGIL_DEBUG off, VIGIL_SECRET_KEY set): `check --deploy` clean, and a
running instance behaves as one behind a TLS-terminating proxy should.

Each check runs in a fresh process with only production variables set (the test run's own
settings are the test ones), with static files collected as `make run`/the image does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import tally

ROOT = Path(__file__).resolve().parents[2]
HOST = "vigil.example.com"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DJANGO_SETTINGS_MODULE": "vigil.settings",
        "VIGIL_SECRET_KEY": "Zq7-production-only-" + "x9$Lm2#Vw4" * 5,
        "VIGIL_ALLOWED_HOSTS": HOST,
        "VIGIL_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/vigil.sqlite3",
    }


def _manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_deploy_is_clean_in_production(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    tally("production settings: check --deploy runs")


PROBE = r"""
import json, django
django.setup()
from django.conf import settings as s
from django.test import Client

c = Client(HTTP_HOST="{host}")
out = {{"DEBUG": s.DEBUG, "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
       "SESSION_COOKIE_HTTPONLY": s.SESSION_COOKIE_HTTPONLY,
       "SESSION_COOKIE_SAMESITE": s.SESSION_COOKIE_SAMESITE,
       "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE, "CSRF_COOKIE_HTTPONLY": s.CSRF_COOKIE_HTTPONLY,
       "SECURE_PROXY_SSL_HEADER": list(s.SECURE_PROXY_SSL_HEADER)}}
plain = c.get("/accounts/login/")
out["http_page"] = [plain.status_code, plain.get("Location", "")]
tls = c.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
out["https_page"] = [tls.status_code, dict(tls.headers)]
cookie = tls.cookies.get("csrftoken")
out["csrf_cookie"] = {{k: cookie[k] for k in ("secure", "httponly", "samesite")}} if cookie else None
schema = c.get("/api/v1/schema")
out["http_api"] = schema.status_code
hook = c.post("/hooks/alertmanager", data="{{}}", content_type="application/json")
out["http_hook"] = hook.status_code
missing = c.get("/no/such/page", HTTP_X_FORWARDED_PROTO="https")
out["not_found"] = [missing.status_code, missing.content.decode()[:2000]]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("production")
    collected = _manage(tmp_path, "collectstatic", "--noinput")
    assert collected.returncode == 0, collected.stderr
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(host=HOST)],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_debug_is_off_and_errors_show_nothing_of_the_code(production):
    assert production["DEBUG"] is False
    status, body = production["not_found"]
    assert status == 404
    assert "Traceback" not in body and "urlpatterns" not in body and "DEBUG" not in body


def test_plain_http_pages_are_redirected_to_https(production):
    status, location = production["http_page"]
    assert status == 301 and location == f"https://{HOST}/accounts/login/"


def test_machines_are_not_redirected(production):
    """Alertmanager and API clients do not follow redirects: hooks and API answer over http
    too (TLS is the proxy's job; their tokens are what authenticates)."""
    assert production["http_api"] == 200
    assert production["http_hook"] not in (301, 302, 307, 308)


def test_behind_tls_the_security_headers_are_set(production):
    status, headers = production["https_page"]
    assert status == 200
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]


def test_cookies_are_secure_httponly_and_samesite(production):
    assert production["SESSION_COOKIE_SECURE"] and production["CSRF_COOKIE_SECURE"]
    assert production["SESSION_COOKIE_HTTPONLY"] and production["CSRF_COOKIE_HTTPONLY"]
    assert production["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert production["csrf_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert production["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
