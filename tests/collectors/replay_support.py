"""Shared by the metric collectors' tests: scenario replays and a misbehaving HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from collectors.base import AlertFacts, ClusterSources, CollectionContext, Scope, Window
from replay.prometheus import ReplayPrometheus
from replay.scenario import Scenario, absolute, load_scenario
from tests.support import require_binary

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def now_utc() -> datetime:
    """Whole seconds: promtool stores milliseconds, and integral times are exact in both."""
    return datetime.now(UTC).replace(microsecond=0)


@contextmanager
def replay(series: list, now: datetime) -> Iterator[ReplayPrometheus]:
    """A real Prometheus holding `series` (skips the test without the Debian binaries)."""
    require_binary("prometheus")
    require_binary("promtool")
    with ReplayPrometheus(series, now=now.timestamp()) as prom:
        yield prom


def scenario(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.yaml")


def scenario_alerts(loaded: Scenario, now: datetime) -> tuple[AlertFacts, ...]:
    return tuple(
        AlertFacts(
            labels={k: str(v) for k, v in a["labels"].items()},
            annotations={k: str(v) for k, v in (a.get("annotations") or {}).items()},
            starts_at=absolute(a["startsAt"], now),
            ends_at=None,
            status="firing",
            generator_url=a.get("generatorURL", ""),
        )
        for a in loaded.alerts
    )


def context(
    url: str,
    scope: Scope,
    now: datetime,
    *,
    alerts: tuple[AlertFacts, ...] = (),
    first_alert_at: datetime | None = None,
    lookback: timedelta = timedelta(hours=1),
    timeout: float = 5.0,
    cluster: str = "test",
) -> CollectionContext:
    """A context as the runner builds it: the window runs from a lookback before the first
    alert to now."""
    if first_alert_at is None:
        first_alert_at = min((a.starts_at for a in alerts), default=now - timedelta(minutes=10))
    return CollectionContext(
        incident_id=1,
        cluster=ClusterSources(name=cluster, prometheus_url=url),
        scope=scope,
        window=Window(start=first_alert_at - lookback, end=now, first_alert_at=first_alert_at),
        alerts=alerts,
        timeout=timeout,
    )


@dataclass
class FakeServer:
    """An HTTP server that answers every request with one canned answer, maybe after a delay."""

    status: int = 200
    body: bytes = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
    content_type: str = "application/json"
    delay: float = 0.0
    requests: list[dict] = field(default_factory=list)

    @contextmanager
    def running(self) -> Iterator[str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.requests.append({"path": parts.path, "params": parse_qs(parts.query)})
                if fake.delay:
                    time.sleep(fake.delay)
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", fake.content_type)
                    self.send_header("Content-Length", str(len(fake.body)))
                    self.end_headers()
                    self.wfile.write(fake.body)
                except OSError:  # the client gave up first, as it should
                    pass

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
