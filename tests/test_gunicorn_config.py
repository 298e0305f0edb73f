"""vigil/gunicorn.py as gunicorn itself reads it (`--print-config`), the way production starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def printed_config(**env: str) -> dict[str, str]:
    """gunicorn's resolved settings for `-c python:vigil.gunicorn` under `env`."""
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:vigil.gunicorn", "--print-config"]
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WEB_CONCURRENCY", "VIGIL_WEB_THREADS", "VIGIL_WEB_CONNECTIONS")
    }
    out = subprocess.run(
        [*argv, "vigil.wsgi"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    settings = {}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = value.strip()
    return settings


def test_production_defaults_are_threaded_workers_with_a_connection_cap():
    settings = printed_config()
    assert settings["worker_class"] == "gthread"
    assert settings["workers"] == "3"
    assert settings["threads"] == "2"
    # Keep-alive connections spread over the workers instead of piling onto one, with room for
    # a load generator's 16 over three workers.
    assert settings["worker_connections"] == "8"


@pytest.mark.parametrize(("threads", "cap"), [("1", "8"), ("4", "8"), ("8", "16")])
def test_the_connection_cap_is_eight_or_twice_the_threads(threads, cap):
    settings = printed_config(WEB_CONCURRENCY="5", VIGIL_WEB_THREADS=threads)
    assert settings["workers"] == "5"
    assert settings["threads"] == threads
    assert settings["worker_connections"] == cap


def test_the_connection_cap_can_be_set():
    settings = printed_config(VIGIL_WEB_CONNECTIONS="12")
    assert settings["threads"] == "2"
    assert settings["worker_connections"] == "12"


def test_the_default_the_benchmarks_read_is_the_one_gunicorn_runs():
    """`make bench` takes vigil.gunicorn.DEFAULT_THREADS, so that it measures production's
    set-up unless told otherwise."""
    from vigil import gunicorn

    assert int(printed_config()["threads"]) == gunicorn.DEFAULT_THREADS


def in_a_loaded_worker(*lines: str) -> subprocess.CompletedProcess:
    """Run `lines` in a fresh interpreter that has loaded vigil.wsgi, as a gunicorn worker has
    when it calls post_worker_init (`gc` imported)."""
    script = "\n".join(["import gc", "from vigil.wsgi import application", *lines, ""])
    env = {**os.environ, "VIGIL_SECRET_KEY": "test", "DJANGO_SETTINGS_MODULE": "vigil.settings"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_a_worker_freezes_what_loading_the_application_made():
    """post_worker_init, as gunicorn calls it once the worker has loaded vigil.wsgi: the loaded
    application's objects are out of the collector's sight, so a full collection no longer walks
    them with the interpreter lock held."""
    assert printed_config()["post_worker_init"] == "<post_worker_init()>"
    out = in_a_loaded_worker(
        "assert gc.get_freeze_count() == 0",
        "from vigil import gunicorn",
        "gunicorn.post_worker_init(None)",
        "print(gc.get_freeze_count(), len(gc.get_objects()))",
    )
    frozen, still_tracked = map(int, out.stdout.split())
    assert frozen > 50_000
    assert still_tracked < frozen / 10


def test_a_broken_url_configuration_does_not_stop_a_worker_from_starting():
    """The hook only freezes: an error it meets while importing the views is logged and left to
    the first request to report, as without the hook, instead of failing the worker's boot."""
    out = in_a_loaded_worker(
        "from django.conf import settings",
        "settings.ROOT_URLCONF = 'vigil.no_such_urls'",
        "from vigil import gunicorn",
        "gunicorn.post_worker_init(None)",
        "print(gc.get_freeze_count())",
    )
    assert int(out.stdout.split()[-1]) > 50_000
    assert "URL configuration not loadable at worker start" in out.stderr
    assert "vigil.no_such_urls" in out.stderr
