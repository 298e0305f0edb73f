"""A real `prometheus-alertmanager` process for end-to-end tests, and a small client for it.

The process listens on a free loopback port with gossip off and its own storage directory; its
only receiver is a webhook to Vigil's `/hooks/alertmanager` with a Bearer integration token.
Every failure message (start, API call, wait) carries the tail of Alertmanager's own log.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.support import free_port, require_binary, wait_for

START_TIMEOUT = 20
LOG_TAIL = 6000


def rfc3339(moment: datetime) -> str:
    """Millisecond RFC 3339 in UTC, as Alertmanager's API v2 takes it (and Vigil stores exactly)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_config(
    webhook_url: str,
    token: str,
    *,
    group_by: tuple[str, ...] = ("alertname", "namespace"),
    group_wait: str = "1s",
    group_interval: str = "2s",
    repeat_interval: str = "4h",
) -> str:
    """alertmanager.yml with one webhook receiver; JSON is valid YAML and needs no quoting rules."""
    config = {
        "route": {
            "receiver": "vigil",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "vigil",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": token},
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(config, indent=2)


class AlertmanagerServer:
    """One Alertmanager process; `start()` returns once `GET /api/v2/status` answers."""

    def __init__(self, binary: str, workdir: Path, config: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(config)
        self.log_path = workdir / "alertmanager.log"
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.http = requests.Session()
        self.http.trust_env = False  # never route loopback calls through an HTTP(S)_PROXY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return text[-LOG_TAIL:]

    def with_log(self, message: str) -> str:
        return f"{message}\n--- alertmanager log (tail) ---\n{self.log()}"

    def start(self, attempts: int = 3) -> None:
        """Start on a free port; retry on another port if one was taken between probe and bind."""
        for _ in range(attempts):
            self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return
            self.stop()
            if "address already in use" not in self.log():
                break
        pytest.fail(self.with_log("alertmanager did not start"))

    def _spawn(self) -> None:
        storage = self.workdir / f"data-{self.port}"
        storage.mkdir()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.path={storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _wait_ready(self) -> bool:
        deadline_message = "alertmanager's /api/v2/status to answer"

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                return True  # exited: stop polling, the caller reports the log
            try:
                return self.http.get(f"{self.url}/api/v2/status", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(ready, timeout=START_TIMEOUT, interval=0.1, message=deadline_message)
        except pytest.fail.Exception:
            return False
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    # --- API v2 -----------------------------------------------------------------------------

    def status(self) -> dict:
        response = self.http.get(f"{self.url}/api/v2/status", timeout=5)
        assert response.status_code == 200, self.with_log(f"GET /api/v2/status: {response.text}")
        return response.json()

    def post_alerts(self, alerts: list[dict]) -> None:
        response = self.http.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=5)
        assert response.status_code == 200, self.with_log(
            f"POST /api/v2/alerts answered {response.status_code}: {response.text}"
        )

    def alerts(self) -> list[dict]:
        response = self.http.get(f"{self.url}/api/v2/alerts", timeout=5)
        assert response.status_code == 200, self.with_log(f"GET /api/v2/alerts: {response.text}")
        return response.json()

    # --- waiting ----------------------------------------------------------------------------

    def wait(
        self,
        condition: Callable[[], object],
        *,
        message: str,
        timeout: float = 30,
        diagnostics: Callable[[], str] | None = None,
    ) -> object:
        """`tests.support.wait_for`, failing with Alertmanager's log (and `diagnostics()`) attached."""
        try:
            return wait_for(condition, timeout=timeout, interval=0.1, message=message)
        except pytest.fail.Exception as exc:
            timed_out = exc.msg
        if self.process is not None and self.process.poll() is not None:
            detail = f"alertmanager exited with {self.process.returncode}"
        else:
            detail = "alertmanager still running"
        extra = f"\n--- diagnostics ---\n{diagnostics()}" if diagnostics else ""
        pytest.fail(self.with_log(f"{timed_out} ({detail}){extra}"))


@contextmanager
def running_alertmanager(
    workdir: Path, webhook_url: str, token: str
) -> Iterator[AlertmanagerServer]:
    """An Alertmanager started for the block and always terminated after it."""
    binary = require_binary("prometheus-alertmanager")
    server = AlertmanagerServer(binary, workdir, alertmanager_config(webhook_url, token))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.http.close()
