"""The scenario loader: every shipped scenario loads; each check rejects a broken copy, naming the path."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from replay.scenario import ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_loads(path):
    scenario = load_scenario(path)
    assert scenario.name and scenario.expected["root_cause"]["category"]
    objects = scenario.kubernetes_objects(NOW)
    assert len(objects) == len(scenario.objects)
    text = yaml.safe_dump(objects)
    assert "-5m" not in text and "'now'" not in text  # every relative time was resolved


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load((ROOT / "scenarios/01-bad-deploy.yaml").read_text())


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(yaml.safe_dump(data), source="broken.yaml")
    assert str(info.value).startswith("broken.yaml: ")
    return [str(p) for p in info.value.problems]


def broken(base: dict, mutate) -> list[str]:
    data = copy.deepcopy(base)
    mutate(data)
    return problems_of(data)


def first_pod(data: dict) -> dict:
    return next(o for o in data["kubernetes"]["objects"] if o["kind"] == "Pod")


def owned(data: dict, kind: str) -> dict:
    return next(
        o
        for o in data["kubernetes"]["objects"]
        if o["kind"] == kind and o["metadata"].get("ownerReferences")
    )


def index_of(data: dict, obj: dict) -> int:
    return next(i for i, o in enumerate(data["kubernetes"]["objects"]) if o is obj)


def test_a_missing_required_key(base):
    assert "expected: is required" in broken(base, lambda d: d.pop("expected"))


def test_an_unknown_top_level_key(base):
    assert "colour: unknown key" in broken(base, lambda d: d.update(colour="blue"))


def test_a_name_that_is_not_a_slug(base):
    assert "name: must be a slug (lowercase letters, digits, hyphens)" in broken(
        base, lambda d: d.update(name="Bad Deploy")
    )


def test_a_bad_relative_time_in_an_alert(base):
    def mutate(d):
        d["alerts"][0]["startsAt"] = "5 minutes ago"

    assert (
        "alerts[0].startsAt: '5 minutes ago' is not a relative time (now, -90s, -8m, -2h)"
        in broken(base, mutate)
    )


def test_an_absolute_time_in_a_kubernetes_object(base):
    def mutate(d):
        first_pod(d)["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"

    problems = broken(base, mutate)
    assert any(
        p.endswith(
            ".metadata.creationTimestamp: '2026-01-01T00:00:00Z' is not a relative time (now, -90s, -8m, -2h)"
        )
        and p.startswith("kubernetes.objects[")
        for p in problems
    )


def test_an_alert_that_ends_before_it_starts(base):
    def mutate(d):
        d["alerts"][0].update(startsAt="-5m", endsAt="-10m")

    assert "alerts[0].endsAt: is before startsAt" in broken(base, mutate)


def test_an_alert_without_alertname(base):
    assert "alerts[0].labels.alertname: is required" in broken(
        base, lambda d: d["alerts"][0]["labels"].pop("alertname")
    )


def test_a_label_value_that_is_not_a_string(base):
    assert "alerts[0].labels.port: must be a string, not int (quote it)" in broken(
        base, lambda d: d["alerts"][0]["labels"].update(port=8080)
    )


def test_a_bad_series_selector(base):
    def mutate(d):
        d["metrics"][0]["series"] = 'http_requests_total{status!="5xx"}'

    (problem,) = [p for p in broken(base, mutate) if p.startswith("metrics[0].series")]
    assert "!=" in problem or "matcher" in problem


def test_bad_value_notation(base):
    def mutate(d):
        d["metrics"][2]["values"] = "1+2x3 banana"

    (problem,) = [p for p in broken(base, mutate) if p.startswith("metrics[2].values")]
    assert "banana" in problem


def test_a_bad_duration(base):
    assert any(
        p.startswith("duration: ") for p in broken(base, lambda d: d.update(duration="an hour"))
    )


def test_an_owner_reference_that_points_nowhere(base):
    def mutate(d):
        pod = owned(d, "Pod")
        pod["metadata"]["ownerReferences"][0]["name"] = "chat-api-doesnotexist"
        mutate.index = index_of(d, pod)

    problems = broken(base, mutate)
    assert (
        f"kubernetes.objects[{mutate.index}].metadata.ownerReferences[0]: points nowhere: "
        "no ReplicaSet chat-api-doesnotexist in the scenario"
    ) in problems


def test_an_owner_reference_with_the_wrong_uid(base):
    def mutate(d):
        rs = owned(d, "ReplicaSet")
        rs["metadata"]["ownerReferences"][0]["uid"] = "00000000-0000-0000-0000-000000000000"
        mutate.index = index_of(d, rs)

    problems = broken(base, mutate)
    assert any(
        p.startswith(f"kubernetes.objects[{mutate.index}].metadata.ownerReferences[0].uid: ")
        for p in problems
    )


def test_an_unsupported_kind(base):
    def mutate(d):
        d["kubernetes"]["objects"].append(
            {"kind": "CronJob", "metadata": {"name": "x", "namespace": "llm"}}
        )
        mutate.index = len(d["kubernetes"]["objects"]) - 1

    problems = broken(base, mutate)
    assert any(
        p.startswith(f"kubernetes.objects[{mutate.index}].kind: 'CronJob' is not one of")
        for p in problems
    )


def test_a_namespaced_object_without_namespace(base):
    def mutate(d):
        first_pod(d)["metadata"].pop("namespace")
        mutate.index = index_of(d, first_pod(d))

    problems = broken(base, mutate)
    assert (
        f"kubernetes.objects[{mutate.index}].metadata.namespace: is required for a Pod" in problems
    )


def test_a_log_for_a_pod_that_does_not_exist(base):
    def mutate(d):
        d["kubernetes"]["logs"][0]["pod"] = "ghost"

    assert any(p.startswith("kubernetes.logs[0].pod: no Pod") for p in broken(base, mutate))


def test_a_log_for_a_container_the_pod_does_not_have(base):
    def mutate(d):
        d["kubernetes"]["logs"][0]["container"] = "sidecar-that-is-not-there"

    assert (
        "kubernetes.logs[0].container: 'sidecar-that-is-not-there' is not a container of that pod"
        in broken(base, mutate)
    )


def test_a_deploy_with_an_unknown_key(base):
    def mutate(d):
        d.setdefault("deploys", [{"service": "chat-api", "version": "1"}])[0]["branch"] = "main"

    assert (
        "deploys[0].branch: unknown key (a deploy is the body of POST /api/v1/deploys)"
        in broken(base, mutate)
    )


def test_a_category_outside_the_taxonomy(base):
    def mutate(d):
        d["expected"]["root_cause"]["category"] = "cosmic-rays"

    assert "expected.root_cause.category: 'cosmic-rays' is not a category of TAXONOMY.md" in broken(
        base, mutate
    )


def test_an_action_outside_the_taxonomy(base):
    def mutate(d):
        d["expected"]["remediation"]["action"] = "reboot-cluster"

    assert (
        "expected.remediation.action: 'reboot-cluster' is not an action of TAXONOMY.md"
        in broken(base, mutate)
    )


def test_an_entity_of_the_wrong_kind_for_the_category(base):
    def mutate(d):
        d["expected"]["root_cause"]["entity"] = {
            "kind": "Node",
            "namespace": None,
            "name": "gpu-node-2",
        }

    assert (
        "expected.root_cause.entity.kind: a bad-deploy root cause is a Deployment or StatefulSet"
        in broken(base, mutate)
    )


def test_rules_that_are_not_a_rule_file(base):
    assert "rules: must be a mapping with `groups:` as in a Prometheus rule file" in broken(
        base, lambda d: d.update(rules=["not", "groups"])
    )


def test_a_duplicated_key_is_refused():
    with pytest.raises(ScenarioError, match="duplicate key 'name'"):
        parse_scenario("name: a\nname: b\n")


def test_every_problem_is_reported_at_once(base):
    def mutate(d):
        d["name"] = "Not A Slug"
        d["alerts"][0]["startsAt"] = "yesterday"
        d["expected"]["remediation"]["action"] = "nope"

    assert len(broken(base, mutate)) >= 3


def test_the_notification_never_carries_the_scenarios_self_description(base):
    scenario = parse_scenario(yaml.safe_dump(base))
    notification = scenario.alert_notification(NOW, "abc123")
    text = yaml.safe_dump(notification)
    assert scenario.name not in notification["groupKey"]
    assert "distractor" not in text and base["description"][:40] not in text
    assert notification["groupKey"] == '{}:{replay="abc123"}'
    assert len(notification["alerts"]) == len(base["alerts"])


def test_the_shared_validator_agrees_with_the_loader_on_the_shipped_scenarios():
    import subprocess
    import sys

    validator = ROOT.parent / "shared/tools/validate_scenarios.py"
    if not validator.exists():
        pytest.skip("the shared validator is not beside this checkout")
    result = subprocess.run(
        [sys.executable, str(validator), *map(str, SCENARIOS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
