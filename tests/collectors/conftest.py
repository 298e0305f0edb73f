"""Worlds for the collectors: a scenario served by the Kubernetes stand-in, and broken APIs.

A collector under test talks HTTP through the official client to the stand-in (or to a tiny
fake server that forbids, stalls or is not there), exactly as it would to a real cluster.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from collectors.base import (
    AlertFacts,
    ClusterSources,
    CollectionContext,
    Scope,
    Window,
)
from replay.kube import KubernetesStandIn
from replay.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[2]


@cache
def scenario(stem: str) -> Scenario:
    return load_scenario(ROOT / "scenarios" / f"{stem}.yaml")


def kubeconfig_for(url: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "t", "cluster": {"server": url}}],
        "users": [{"name": "t", "user": {"token": "test"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        "current-context": "t",
    }
    return yaml.safe_dump(config)


def alert_facts(alert: dict) -> AlertFacts:
    """An Alertmanager v4 alert as collectors see it (absolute times parsed)."""
    ends = datetime.fromisoformat(alert["endsAt"]) if alert.get("endsAt") else None
    return AlertFacts(
        labels=dict(alert["labels"]),
        annotations=dict(alert.get("annotations") or {}),
        starts_at=datetime.fromisoformat(alert["startsAt"]),
        ends_at=ends if ends and ends.year > 1 else None,
        status=alert.get("status", "firing"),
        generator_url=alert.get("generatorURL", ""),
    )


def alert(labels: dict[str, str], *, ago: timedelta = timedelta(minutes=5)) -> AlertFacts:
    """A firing alert with these labels, started `ago` before now."""
    return AlertFacts(labels, {}, datetime.now(UTC) - ago, None, "firing", "")


@dataclass
class World:
    """A started stand-in with a scenario's objects and logs, and its alerts at the same `now`."""

    kube: KubernetesStandIn
    now: datetime
    alerts: list[AlertFacts] = field(default_factory=list)

    @property
    def cluster(self) -> ClusterSources:
        return ClusterSources(name="replay", kubeconfig=yaml.safe_dump(self.kube.kubeconfig()))

    @property
    def window(self) -> Window:
        first = min((a.starts_at for a in self.alerts), default=self.now - timedelta(minutes=5))
        return Window(start=first - timedelta(hours=1), end=self.now, first_alert_at=first)

    def context(
        self,
        scope: Scope,
        *,
        window: Window | None = None,
        cluster: ClusterSources | None = None,
        timeout: float = 5.0,
    ) -> CollectionContext:
        return CollectionContext(
            incident_id=1,
            cluster=cluster or self.cluster,
            scope=scope,
            window=window or self.window,
            alerts=tuple(self.alerts),
            timeout=timeout,
        )


@pytest.fixture
def open_world() -> Any:
    """`open_world("01-bad-deploy")` or `open_world(objects=[…], logs=[…])`; stopped afterwards."""
    opened: list[KubernetesStandIn] = []

    def open_(
        stem: str | None = None,
        *,
        objects: list[dict] | None = None,
        logs: list[dict] | None = None,
    ) -> World:
        now = datetime.now(UTC).replace(microsecond=0)
        alerts: list[AlertFacts] = []
        if stem is not None:
            world = scenario(stem)
            objects, logs = world.kubernetes_objects(now), world.kubernetes_logs(now)
            alerts = [alert_facts(a) for a in world.alert_notification(now, "test")["alerts"]]
        kube = KubernetesStandIn(objects or [], logs).start()
        opened.append(kube)
        return World(kube=kube, now=now, alerts=alerts)

    yield open_
    for kube in opened:
        kube.stop()


# --- APIs that misbehave -----------------------------------------------------------------------

Answer = Callable[[str], tuple[int, Any]]


def forbidden(path: str) -> tuple[int, Any]:
    """Every request refused as RBAC refuses it, with the API server's `Status` body."""
    return 403, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'forbidden: User "system:serviceaccount:vigil:vigil" cannot get {path}',
        "reason": "Forbidden",
        "details": {},
        "code": 403,
    }


@dataclass
class FakeServer:
    """A loopback HTTP server answering each GET with `answer(path)`, after `delay` seconds."""

    answer: Answer
    delay: float = 0.0
    paths: list[str] = field(default_factory=list)

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                fake.paths.append(self.path)
                time.sleep(fake.delay)
                status, body = fake.answer(self.path)
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                content_type = "text/plain" if isinstance(body, str) else "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (the timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def cluster(self, **extra: Any) -> ClusterSources:
        return ClusterSources(name="fake", kubeconfig=kubeconfig_for(self.url), **extra)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server() -> Any:
    started: list[FakeServer] = []

    def start(answer: Answer, *, delay: float = 0.0) -> FakeServer:
        server = FakeServer(answer, delay).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def closed_port_cluster() -> ClusterSources:
    """A cluster whose API address has nothing listening (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return ClusterSources(name="gone", kubeconfig=kubeconfig_for(f"http://127.0.0.1:{port}"))
