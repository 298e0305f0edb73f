"""Fixtures for the whole suite: personas, integration tokens, and a real Celery worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

# pytest-django loads the settings before this file: VIGIL_TESTING comes from `make test`, and
# the settings give each test run its own queue and embedded broker file (vigil/settings.py).
os.environ.setdefault("VIGIL_TESTING", "1")

import pytest  # noqa: E402

from tests.support import wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"
ROLES = ("viewer", "responder", "approver")


@pytest.fixture(autouse=True)
def _no_broker_backoff():
    """A publish failure in one test must not make the next test skip publishing."""
    from vigil.celery import reset_broker_backoff

    reset_broker_backoff()
    yield
    reset_broker_backoff()


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache (this process's memory): a Slack rate limit or a
    login throttle noted by an earlier test must not carry over."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    def make(username: str, role: str | None = None):
        user = get_user_model().objects.create_user(username=username, password=PASSWORD)
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def personas(make_user):
    """outsider (no role), viewer, responder, approver."""
    users = {"outsider": make_user("outsider")}
    for role in ROLES:
        users[role] = make_user(role, role)
    return users


@pytest.fixture
def client_as(client, personas):
    """A test client logged in as the named persona (or anonymous for "anonymous")."""

    def login(persona: str):
        client.logout()
        if persona != "anonymous":
            client.force_login(personas[persona])
        return client

    return login


@pytest.fixture
def integration_token(db):
    """Create an integration through the real command and return (integration, token)."""
    from io import StringIO

    from django.core.management import call_command

    from incidents.models import Integration

    def make(name: str = "am", kind: str = "alertmanager") -> tuple[Integration, str]:
        out = StringIO()
        call_command("create_integration", name, kind=kind, stdout=out)
        token = out.getvalue().strip().splitlines()[-1]
        return Integration.objects.get(name=name), token

    return make


@pytest.fixture
def am_token(integration_token) -> str:
    return integration_token("alertmanager")[1]


def _worker_database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{settings_dict['NAME']}"


def _purge_test_queue() -> None:
    from django.conf import settings

    from vigil.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real `celery worker` process on the test database and this run's own queue.

    One per test: a worker left running would act on tasks other tests publish, against rows
    that test owns; and the queue is purged first, so no earlier test's task reaches it.
    """
    from django.conf import settings
    from django.db import connection

    _purge_test_queue()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": _worker_database_url(connection.settings_dict),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_RESULT_BACKEND": settings.CELERY_RESULT_BACKEND,
        "VIGIL_CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "VIGIL_TESTING": "1",
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "vigil",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "--queues",
                settings.CELERY_TASK_DEFAULT_QUEUE,
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"test-{uuid.uuid4().hex[:6]}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: b"ready." in log.read_bytes() or process.poll() is not None,
            timeout=60,
            message="the celery worker to start",
        )
        if process.poll() is not None:
            pytest.fail(f"celery worker exited:\n{log.read_text()[-3000:]}")
        yield process, log
    finally:
        # Every test has awaited what it needed; a warm shutdown would take seconds per test.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="session", autouse=True)
def _drop_test_queue():
    """Remove this run's queue from the broker afterwards, so a shared Redis keeps no leftovers."""
    yield
    from django.conf import settings

    from vigil.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    except Exception as exc:  # the broker may be gone at the end of a fault test; say so
        print(f"could not delete test queue: {exc}")
    for url in (settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND):
        if "sqlite:///" in url and "-test-" in url:  # this run's own embedded broker files
            Path(url.split("sqlite:///", 1)[1]).unlink(missing_ok=True)
