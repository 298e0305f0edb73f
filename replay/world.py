"""A scenario's world on loopback: the Kubernetes stand-in, a backfilled Prometheus, a Cluster.

Replay feeds Vigil exactly as production does: a Cluster row pointing at the world's addresses,
deploy events through `POST /api/v1/deploys` and the alerts as one Alertmanager notification
through `POST /hooks/alertmanager`. What a scenario says about itself (`description`,
`distractors`, `expected`, even its name) never reaches the pipeline, so analysis cannot peek.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from django.utils import timezone

from incidents.admin import issue_integration_token
from incidents.models import Cluster, Integration

from .kube import KubernetesStandIn
from .prometheus import ReplayPrometheus, prometheus_available
from .scenario import Scenario

logger = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """Vigil refused or could not be reached while the world was being delivered."""


@dataclass
class Delivery:
    incident_ids: list[int]
    deploys: int


class ReplayWorld:
    """Start with `start()` (or `with`), deliver into a Vigil with `deliver(base_url)`, then `stop()`."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        now: datetime | None = None,
        workdir: Path | None = None,
        with_metrics: bool = True,
    ) -> None:
        self.scenario = scenario
        self.now = now or timezone.now()
        self.replay_id = secrets.token_hex(4)
        self._tmp = (
            None
            if workdir
            else tempfile.TemporaryDirectory(prefix=f"vigil-replay-{self.replay_id}-")
        )
        self.workdir = Path(workdir or self._tmp.name)
        self.with_metrics = with_metrics
        self.kube: KubernetesStandIn | None = None
        self.prometheus: ReplayPrometheus | None = None
        self.metrics_note = ""
        self.cluster: Cluster | None = None

    def __enter__(self) -> ReplayWorld:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> ReplayWorld:
        scenario, now = self.scenario, self.now
        self.kube = KubernetesStandIn(
            scenario.kubernetes_objects(now), scenario.kubernetes_logs(now)
        ).start()
        self.kube.write_kubeconfig(self.workdir / "kubeconfig.yaml")
        if not scenario.metrics and not scenario.rules:
            self.metrics_note = "the scenario has no metrics"
        elif not self.with_metrics:
            self.metrics_note = "metrics skipped on request"
        elif not prometheus_available():
            self.metrics_note = "prometheus/promtool are not installed: replaying without metrics"
        else:
            try:
                self.prometheus = ReplayPrometheus(
                    scenario.series(now),
                    scenario.rules,
                    now=now.timestamp(),
                    workdir=self.workdir / "prometheus",
                ).start()
            except Exception:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        if self.prometheus:
            self.prometheus.stop()
            self.prometheus = None
        if self.kube:
            self.kube.stop()
            self.kube = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def register_cluster(self) -> tuple[Cluster, str, str]:
        """A Cluster for this world, with an Alertmanager and a deploy integration; returns their tokens."""
        assert self.kube, "start() the world first"
        self.cluster = Cluster.objects.create(
            name=f"replay-{self.replay_id}",
            prometheus_url=self.prometheus.url if self.prometheus else "",
            kubeconfig=yaml.safe_dump(self.kube.kubeconfig()),
        )
        tokens = []
        for kind in (Integration.Kind.ALERTMANAGER, Integration.Kind.DEPLOY):
            integration = Integration(
                name=f"replay-{self.replay_id}-{kind}", kind=kind, cluster=self.cluster
            )
            tokens.append(issue_integration_token(integration))
            integration.save()
        return self.cluster, tokens[0], tokens[1]

    def deliver(self, base_url: str) -> Delivery:
        """Post the deploys, then the alerts, to a running Vigil, as CI/CD and Alertmanager would."""
        _, alertmanager_token, deploy_token = self.register_cluster()
        base_url = base_url.rstrip("/")
        for body in self.scenario.deploy_bodies(self.now):
            _post_json(f"{base_url}/api/v1/deploys", body, deploy_token)
        incident_ids: list[int] = []
        if self.scenario.alerts:
            notification = self.scenario.alert_notification(self.now, self.replay_id)
            answer = _post_json(f"{base_url}/hooks/alertmanager", notification, alertmanager_token)
            incident_ids = answer.get("incidents", [])
        return Delivery(incident_ids=incident_ids, deploys=len(self.scenario.deploys))

    def addresses(self) -> dict[str, str]:
        return {
            "kubernetes": self.kube.url if self.kube else "",
            "kubeconfig": str(self.workdir / "kubeconfig.yaml"),
            "prometheus": self.prometheus.url if self.prometheus else "",
        }


def _post_json(url: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(  # noqa: S310 (an http URL of the Vigil being fed)
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise ReplayError(f"{url} answered {exc.code}: {exc.read()[:500]!r}") from exc
    except urllib.error.URLError as exc:
        raise ReplayError(f"cannot reach {url}: {exc.reason}") from exc
