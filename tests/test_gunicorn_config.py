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
        k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "VIGIL_WEB_THREADS")
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
    assert settings["threads"] == "4"
    # Keep-alive connections spread over the workers instead of piling onto one.
    assert settings["worker_connections"] == "8"


@pytest.mark.parametrize(("threads", "cap"), [("2", "4"), ("8", "16")])
def test_the_connection_cap_follows_the_threads(threads, cap):
    settings = printed_config(WEB_CONCURRENCY="5", VIGIL_WEB_THREADS=threads)
    assert settings["workers"] == "5"
    assert settings["threads"] == threads
    assert settings["worker_connections"] == cap
