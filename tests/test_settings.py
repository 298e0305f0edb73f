"""Settings come from the environment; production settings pass `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_check_deploy(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        VIGIL_SECRET_KEY="k" * 20 + "-Qz9$#production-secret-key-that-is-long-and-random",
        VIGIL_ALLOWED_HOSTS="vigil.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = run_manage("check")
    assert result.returncode != 0
    assert "VIGIL_SECRET_KEY must be set" in result.stderr


def print_settings(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` after django.setup() in a fresh interpreter whose environment is only `env`."""
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "vigil.settings", **env},
        timeout=60,
    )


def test_database_and_broker_urls_switch_backends():
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CELERY_RESULT_BACKEND)"
    )
    result = print_settings(
        code,
        VIGIL_DEBUG="1",
        DATABASE_URL="postgres://u@db:5432/vigil",
        CELERY_BROKER_URL="redis://r:6379/0",
    )
    assert result.stdout.split() == [
        "vigil.backends.postgresql",
        "redis://r:6379/0",
        "redis://r:6379/0",
    ]
    result = print_settings(code, VIGIL_DEBUG="1", VIGIL_VAR_DIR="/tmp/vigil-var")
    engine, broker, backend = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert broker == "sqla+sqlite:////tmp/vigil-var/celery-broker.sqlite3"
    assert backend.startswith("db+sqlite:///")


def _database_options(**env: str) -> subprocess.CompletedProcess:
    code = (
        "from django.conf import settings as s; o = s.DATABASES['default']['OPTIONS'];"
        "print(o.get('server_side_binding'), o.get('prepare_threshold'))"
    )
    return print_settings(code, VIGIL_DEBUG="1", DATABASE_URL="postgres://u@db:5432/vigil", **env)


def test_postgresql_binds_on_the_server_and_prepares_unless_told_not_to():
    assert _database_options().stdout.split() == ["True", "5"]
    assert _database_options(VIGIL_DB_PREPARE_THRESHOLD="2").stdout.split() == ["True", "2"]
    assert _database_options(VIGIL_DB_PREPARE_THRESHOLD="off").stdout.split() == ["True", "None"]
    bad = _database_options(VIGIL_DB_PREPARE_THRESHOLD="sometimes")
    assert bad.returncode != 0
    assert "VIGIL_DB_PREPARE_THRESHOLD='sometimes' is not a count of runs" in bad.stderr


def test_a_bad_duration_is_a_clear_error():
    result = run_manage("check", VIGIL_DEBUG="1", VIGIL_GROUP_WINDOW="soon")
    assert result.returncode != 0
    assert "VIGIL_GROUP_WINDOW='soon' is not a duration" in result.stderr


def test_checking_migrations_needs_no_production_secrets():
    result = run_manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


def _setting(name: str, **env: str) -> str:
    result = print_settings(f"from django.conf import settings; print(settings.{name})", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_four_eyes_is_on_in_production_and_off_in_development_unless_set():
    production = {"VIGIL_SECRET_KEY": "s" * 50, "VIGIL_ALLOWED_HOSTS": "vigil.example.com"}
    assert _setting("VIGIL_FOUR_EYES", **production) == "True"
    assert _setting("VIGIL_FOUR_EYES", **production, VIGIL_FOUR_EYES="0") == "False"
    assert _setting("VIGIL_FOUR_EYES", VIGIL_DEBUG="1") == "False"
    assert _setting("VIGIL_FOUR_EYES", VIGIL_DEBUG="1", VIGIL_FOUR_EYES="1") == "True"


def test_a_bad_worker_nice_is_a_clear_error():
    for value in ("low", "-5", "20"):
        result = run_manage("check", VIGIL_DEBUG="1", VIGIL_WORKER_NICE=value)
        assert result.returncode != 0
        assert f"VIGIL_WORKER_NICE={value!r} is not a nice increment from 0 to 19" in result.stderr
