"""Replaying scenarios end to end: the world is served, Vigil is fed through its real endpoints."""

from __future__ import annotations

import os
import re
import signal
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from collectors.models import DeployEvent
from incidents.models import Cluster, Incident
from replay.scenario import load_scenario
from replay.world import ReplayWorld

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_replays_into_one_incident(path, live_server):
    scenario = load_scenario(path)
    with ReplayWorld(scenario, with_metrics=False) as world:
        delivery = world.deliver(live_server.url)
        (incident_id,) = delivery.incident_ids
        incident = Incident.objects.get(pk=incident_id)
        assert incident.cluster == world.cluster
        assert incident.alert_count == len(scenario.alerts)
        assert sorted(incident.alerts.values_list("alertname", flat=True)) == sorted(
            a["labels"]["alertname"] for a in scenario.alerts
        )
        assert DeployEvent.objects.filter(cluster=world.cluster).count() == len(scenario.deploys)
        # The cluster's kubeconfig reaches the stand-in with the official client.
        api = k8s_config.new_client_from_config_dict(yaml.safe_load(world.cluster.kubeconfig))
        pods = k8s.CoreV1Api(api).list_pod_for_all_namespaces().items
        assert len(pods) == sum(1 for o in scenario.objects if o["kind"] == "Pod")


@pytest.mark.django_db(transaction=True)
def test_the_replay_command_prints_the_incident_url_and_the_world_it_serves():
    out = StringIO()
    call_command("replay", str(ROOT / "scenarios/01-bad-deploy.yaml"), stdout=out)
    text = out.getvalue()
    match = re.search(r"incident: (http://127\.0\.0\.1:\d+)/incidents/(\d+)/", text)
    assert match, text
    incident = Incident.objects.get(pk=int(match.group(2)))
    assert incident.title  # the alerts' summary
    assert "kubernetes: http://127.0.0.1:" in text
    cluster = Cluster.objects.get(name__startswith="replay-")
    assert incident.cluster == cluster
    # The scenario's self-description never reaches the pipeline.
    assert "bad-deploy" not in cluster.name and "bad-deploy" not in incident.grouping_key


@pytest.mark.django_db(transaction=True)
def test_sigterm_while_worlds_start_stops_those_started_and_restores_the_handler(monkeypatch):
    """`make run` ends the replay with SIGTERM, possibly while it is still starting worlds: the
    worlds started so far are stopped (their Prometheus servers outlived the process before),
    and the SIGTERM handler the command found is put back."""
    started, stopped, received = [], [], []
    real_start, real_stop = ReplayWorld.start, ReplayWorld.stop

    def start(world):
        if started:  # the second world: SIGTERM arrives while it starts
            os.kill(os.getpid(), signal.SIGTERM)
        started.append(world)
        return real_start(world)

    def stop(world):
        stopped.append(world)
        real_stop(world)

    monkeypatch.setattr(ReplayWorld, "start", start)
    monkeypatch.setattr(ReplayWorld, "stop", stop)

    def outside(signum, frame):  # the handler in force before (pytest's default would kill)
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, outside)
    try:
        with pytest.raises(CommandError, match="interrupted; the worlds started so far"):
            call_command("replay", "--no-metrics", *map(str, SCENARIOS[:3]), stdout=StringIO())
        assert signal.getsignal(signal.SIGTERM) is outside
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(started) == 1  # the interrupt came before the second world started
    assert stopped == started
    assert received == []


@pytest.mark.django_db
def test_a_broken_scenario_is_a_command_error_listing_its_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\ndescription: x\n")
    with pytest.raises(CommandError) as info:
        call_command("replay", str(bad))
    assert "name: must be a slug" in str(info.value)
    assert "expected: is required" in str(info.value)


@pytest.mark.django_db(transaction=True)
def test_with_prometheus_the_world_answers_queries_at_the_printed_address(live_server):
    from tests.support import require_binary

    require_binary("prometheus")
    require_binary("promtool")
    import requests

    scenario = load_scenario(ROOT / "scenarios/02-kv-cache-saturation.yaml")
    with ReplayWorld(scenario) as world:
        world.deliver(live_server.url)
        assert world.cluster.prometheus_url == world.prometheus.url
        name, labels, points = next(
            s
            for s in scenario.series(world.now)
            if s[2] and s[2][-1][0] >= world.now.timestamp() - 1
        )
        selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        answer = requests.get(
            f"{world.prometheus.url}/api/v1/query",
            params={"query": selector, "time": world.now.timestamp()},
            timeout=10,
        ).json()
        (result,) = answer["data"]["result"]
        assert float(result["value"][1]) == pytest.approx(points[-1][1])
