"""Helpers shared by the suite: binaries that must exist in CI, free ports, waiting."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable

import pytest


def require_binary(name: str) -> str:
    """The binary's path; a missing one skips the test, or fails it when VIGIL_STRICT_BINARIES=1."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian package; .ci/run installs it)"
    if os.environ.get("VIGIL_STRICT_BINARIES") == "1":
        pytest.fail(f"VIGIL_STRICT_BINARIES=1 and {message}")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float = 20,
    interval: float = 0.1,
    message: str = "condition",
) -> object:
    """Poll until `condition()` is truthy and return it; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
