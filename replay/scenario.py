"""Scenario files (SCENARIO_FORMAT.md): load, check every field, and turn relative times absolute.

The loader reports every problem at once, each with its path in the file
(`kubernetes.objects[4].metadata.ownerReferences[0]`), because a scenario author fixes them all in
one pass. A loaded Scenario hands out its world for a given "now": Kubernetes objects and logs,
metric series, the Alertmanager notification and the deploy events.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from assistant.taxonomy import ACTIONS, CATEGORIES
from incidents.demo import alert as am_alert
from incidents.demo import notification as am_notification

from .notation import NotationError, expand_values, parse_duration, parse_series_selector

TOP_KEYS = {
    "name",
    "description",
    "duration",
    "interval",
    "metrics",
    "rules",
    "alerts",
    "kubernetes",
    "deploys",
    "expected",
    "distractors",
}
REQUIRED_TOP = ("name", "description", "expected")
DEPLOY_KEYS = {
    "service",
    "namespace",
    "version",
    "previous_version",
    "model",
    "at",
    "author",
    "description",
    "url",
}
# kind -> (apiVersion, namespaced)
KINDS = {
    "Pod": ("v1", True),
    "Service": ("v1", True),
    "Event": ("v1", True),
    "Node": ("v1", False),
    "Deployment": ("apps/v1", True),
    "ReplicaSet": ("apps/v1", True),
    "StatefulSet": ("apps/v1", True),
    "DaemonSet": ("apps/v1", True),
}
TIME_FIELDS = {
    "creationTimestamp",
    "deletionTimestamp",
    "firstTimestamp",
    "lastTimestamp",
    "eventTime",
    "startedAt",
    "finishedAt",
    "lastTransitionTime",
    "lastHeartbeatTime",
    "lastProbeTime",
    "lastUpdateTime",
    "startTime",
    "completionTime",
    "lastScheduleTime",
    "timeAdded",
}
RELATIVE = re.compile(r"^(?:now|-(\d+(?:\.\d+)?)([smh]))$")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ScenarioError(ValueError):
    """A scenario that cannot be replayed, with every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{listing}")


def relative_seconds(value: object) -> float:
    """Seconds before now of `now` / `-90s` / `-8m` / `-2h`; ValueError otherwise."""
    match = RELATIVE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a relative time (now, -90s, -8m, -2h)")
    if value == "now":
        return 0.0
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def absolute(value: str, now: datetime) -> datetime:
    return now - timedelta(seconds=relative_seconds(value))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Scenario:
    source: str
    name: str
    description: str
    duration: float
    interval: float
    metrics: list[dict] = field(default_factory=list)
    rules: dict | None = None
    alerts: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)
    deploys: list[dict] = field(default_factory=list)
    expected: dict = field(default_factory=dict)
    distractors: list[str] = field(default_factory=list)

    # --- the world at a given moment -------------------------------------------------------

    def kubernetes_objects(self, now: datetime) -> list[dict]:
        """The objects as the API would return them at `now`: every relative time made absolute."""
        return [_resolve_times(copy.deepcopy(obj), now) for obj in self.objects]

    def kubernetes_logs(self, now: datetime) -> list[dict]:
        return [
            {
                "namespace": log["namespace"],
                "pod": log["pod"],
                "container": log["container"],
                "previous": bool(log.get("previous", False)),
                "lines": [
                    {"at": absolute(line["at"], now), "text": line["text"]} for line in log["lines"]
                ],
            }
            for log in self.logs
        ]

    def series(self, now: datetime) -> list[tuple[str, dict[str, str], list[tuple[float, float]]]]:
        """Metric samples with absolute Unix times, the last value of each series at `now`."""
        from .prometheus import sample_points

        result = []
        for item in self.metrics:
            name, labels = parse_series_selector(item["series"])
            interval = parse_duration(item["interval"]) if item.get("interval") else self.interval
            points = sample_points(
                expand_values(item["values"]), interval=interval, now=now.timestamp()
            )
            result.append((name, labels, points))
        return result

    def alert_notification(self, now: datetime, replay_id: str) -> dict:
        """All the scenario's alerts as ONE Alertmanager v4 notification, so they form one incident.

        The group is named by the replay's id, never the scenario's name, which would hint at the
        answer.
        """
        alerts = [
            am_alert(
                {k: str(v) for k, v in a["labels"].items()},
                {k: str(v) for k, v in (a.get("annotations") or {}).items()},
                absolute(a["startsAt"], now),
                absolute(a["endsAt"], now) if a.get("endsAt") else None,
            )
            | ({"generatorURL": a["generatorURL"]} if a.get("generatorURL") else {})
            for a in self.alerts
        ]
        return am_notification({"replay": replay_id}, alerts)

    def deploy_bodies(self, now: datetime) -> list[dict]:
        """`POST /api/v1/deploys` bodies, oldest first (CI/CD sends them as they happen)."""
        bodies = []
        for deploy in self.deploys:
            body = {k: v for k, v in deploy.items() if k != "at"}
            body["at"] = rfc3339(absolute(deploy.get("at", "now"), now))
            bodies.append(body)
        return sorted(bodies, key=lambda b: b["at"])


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError lists every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(
            str(path), [Problem("", f"cannot read the file: {exc.strerror}")]
        ) from exc
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [Problem("", f"not valid YAML: {exc}")]) from exc
    checker = _Checker()
    checker.check(data)
    if checker.problems:
        raise ScenarioError(source, checker.problems)
    kubernetes = data.get("kubernetes") or {}
    return Scenario(
        source=source,
        name=data["name"],
        description=data["description"],
        duration=parse_duration(str(data.get("duration", "60m"))),
        interval=parse_duration(str(data.get("interval", "1m"))),
        metrics=data.get("metrics") or [],
        rules=data.get("rules"),
        alerts=data.get("alerts") or [],
        objects=kubernetes.get("objects") or [],
        logs=kubernetes.get("logs") or [],
        deploys=data.get("deploys") or [],
        expected=data["expected"],
        distractors=data.get("distractors") or [],
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A duplicated key silently overwrites in plain YAML; in a scenario it is always a mistake."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _resolve_times(value: Any, now: datetime, key: str = "", in_annotations: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            k: _resolve_times(v, now, k, in_annotations=in_annotations or k == "annotations")
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_times(v, now, key) for v in value]
    if isinstance(value, str) and (key in TIME_FIELDS or in_annotations) and RELATIVE.match(value):
        return rfc3339(absolute(value, now))
    return value


class _Checker:
    """Collects every problem with its path; never stops at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def check(self, data: object) -> None:
        if not isinstance(data, dict):
            self.add("", "a scenario is a YAML mapping of the keys in SCENARIO_FORMAT.md")
            return
        for key in sorted(set(data) - TOP_KEYS, key=str):
            self.add(str(key), "unknown key")
        for key in REQUIRED_TOP:
            if key not in data:
                self.add(key, "is required")
        if "name" in data and not (isinstance(data["name"], str) and SLUG.match(data["name"])):
            self.add("name", "must be a slug (lowercase letters, digits, hyphens)")
        if "description" in data and not (
            isinstance(data["description"], str) and data["description"].strip()
        ):
            self.add("description", "must be a non-empty string")
        for key in ("duration", "interval"):
            if key in data:
                self.duration(key, data[key])
        self.list_of(data, "metrics", self.metric)
        if data.get("rules") is not None:
            self.rules(data["rules"])
        self.list_of(data, "alerts", self.alert)
        self.list_of(data, "deploys", self.deploy)
        if data.get("kubernetes") is not None:
            self.kubernetes(data["kubernetes"])
        if "distractors" in data and not (
            isinstance(data["distractors"], list)
            and all(isinstance(d, str) for d in data["distractors"])
        ):
            self.add("distractors", "must be a list of strings")
        if "expected" in data:
            self.expected(data["expected"])

    # --- helpers ---------------------------------------------------------------------------

    def list_of(self, data: dict, key: str, check_item) -> None:
        items = data.get(key)
        if items is None:
            return
        if not isinstance(items, list):
            self.add(key, "must be a list")
            return
        for i, item in enumerate(items):
            path = f"{key}[{i}]"
            if not isinstance(item, dict):
                self.add(path, "must be a mapping")
            else:
                check_item(path, item)

    def duration(self, path: str, value: object) -> None:
        try:
            parse_duration(str(value))
        except NotationError as exc:
            self.add(path, str(exc))

    def relative_time(self, path: str, value: object) -> float | None:
        try:
            return relative_seconds(value)
        except ValueError as exc:
            self.add(path, str(exc))
            return None

    def string_map(self, path: str, value: object, *, required: bool = False) -> dict:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            self.add(path, "must be a mapping of strings")
            return {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.add(f"{path}.{k}", f"must be a string, not {type(v).__name__} (quote it)")
        return value

    # --- sections --------------------------------------------------------------------------

    def metric(self, path: str, item: dict) -> None:
        for key in sorted(set(item) - {"series", "values", "interval"}):
            self.add(f"{path}.{key}", "unknown key")
        try:
            parse_series_selector(item.get("series") if isinstance(item.get("series"), str) else "")
        except NotationError as exc:
            self.add(f"{path}.series", str(exc))
        try:
            values = item.get("values")
            expand_values(
                values if isinstance(values, str) else str(values) if values is not None else ""
            )
        except NotationError as exc:
            self.add(f"{path}.values", str(exc))
        if "interval" in item:
            self.duration(f"{path}.interval", item["interval"])

    def rules(self, rules: object) -> None:
        groups = rules.get("groups") if isinstance(rules, dict) else None
        if not isinstance(groups, list):
            self.add("rules", "must be a mapping with `groups:` as in a Prometheus rule file")
            return
        for g, group in enumerate(groups):
            gpath = f"rules.groups[{g}]"
            if not isinstance(group, dict) or not isinstance(group.get("name"), str):
                self.add(gpath, "needs a `name`")
                continue
            for r, rule in enumerate(group.get("rules") or []):
                rpath = f"{gpath}.rules[{r}]"
                if not isinstance(rule, dict) or not (rule.get("alert") or rule.get("record")):
                    self.add(rpath, "needs `alert` or `record`")
                elif not isinstance(rule.get("expr"), str | int | float):
                    self.add(f"{rpath}.expr", "is required")

    def alert(self, path: str, item: dict) -> None:
        for key in sorted(
            set(item) - {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
        ):
            self.add(f"{path}.{key}", "unknown key")
        labels = self.string_map(f"{path}.labels", item.get("labels"), required=True)
        if isinstance(item.get("labels"), dict) and not labels.get("alertname"):
            self.add(f"{path}.labels.alertname", "is required")
        self.string_map(f"{path}.annotations", item.get("annotations"))
        starts = self.relative_time(f"{path}.startsAt", item.get("startsAt"))
        if item.get("endsAt") is not None:
            ends = self.relative_time(f"{path}.endsAt", item["endsAt"])
            if starts is not None and ends is not None and ends > starts:
                self.add(f"{path}.endsAt", "is before startsAt")
        if "generatorURL" in item and not isinstance(item["generatorURL"], str):
            self.add(f"{path}.generatorURL", "must be a string")

    def deploy(self, path: str, item: dict) -> None:
        for key in sorted(set(item) - DEPLOY_KEYS):
            self.add(f"{path}.{key}", "unknown key (a deploy is the body of POST /api/v1/deploys)")
        for key in ("service", "version"):
            if not isinstance(item.get(key), str) or not item.get(key):
                self.add(f"{path}.{key}", "is required (a string)")
        if "at" in item:
            self.relative_time(f"{path}.at", item["at"])

    def kubernetes(self, section: object) -> None:
        if not isinstance(section, dict):
            self.add("kubernetes", "must be a mapping with `objects` and `logs`")
            return
        for key in sorted(set(section) - {"objects", "logs"}):
            self.add(f"kubernetes.{key}", "unknown key")
        objects = section.get("objects") or []
        index: dict[tuple[str, str | None, str], dict] = {}
        for i, obj in enumerate(objects if isinstance(objects, list) else []):
            key = self.k8s_object(f"kubernetes.objects[{i}]", obj)
            if key:
                if key in index:
                    self.add(f"kubernetes.objects[{i}]", f"duplicate {key[0]} {key[2]}")
                index[key] = obj
        for i, obj in enumerate(objects if isinstance(objects, list) else []):
            if isinstance(obj, dict):
                self.owner_references(f"kubernetes.objects[{i}]", obj, index)
        logs = section.get("logs") or []
        for i, log in enumerate(logs if isinstance(logs, list) else []):
            self.log(f"kubernetes.logs[{i}]", log, index)

    def k8s_object(self, path: str, obj: object) -> tuple[str, str | None, str] | None:
        if not isinstance(obj, dict):
            self.add(path, "must be a Kubernetes object (a mapping)")
            return None
        kind = obj.get("kind")
        if kind not in KINDS:
            self.add(f"{path}.kind", f"{kind!r} is not one of {', '.join(sorted(KINDS))}")
            return None
        api_version, namespaced = KINDS[kind]
        if obj.get("apiVersion", api_version) != api_version:
            self.add(f"{path}.apiVersion", f"a {kind} is {api_version}")
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            self.add(f"{path}.metadata.name", "is required")
            return None
        namespace = meta.get("namespace")
        if namespaced and not isinstance(namespace, str):
            self.add(f"{path}.metadata.namespace", f"is required for a {kind}")
        if not namespaced and namespace:
            self.add(f"{path}.metadata.namespace", f"a {kind} has no namespace")
        self.object_times(path, obj)
        return (kind, namespace if namespaced else None, meta["name"])

    def object_times(self, path: str, value: object, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "annotations" and isinstance(v, dict):
                    continue  # annotation values may be relative times but need not be
                self.object_times(f"{path}.{k}", v, k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.object_times(f"{path}[{i}]", v, key)
        elif key in TIME_FIELDS and value is not None:
            self.relative_time(path, value)

    def owner_references(self, path: str, obj: dict, index: dict) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        for r, ref in enumerate(meta.get("ownerReferences") or []):
            rpath = f"{path}.metadata.ownerReferences[{r}]"
            if not isinstance(ref, dict) or not ref.get("kind") or not ref.get("name"):
                self.add(rpath, "needs kind and name")
                continue
            owner_namespace = None if ref["kind"] == "Node" else namespace
            owner = index.get((ref["kind"], owner_namespace, ref["name"]))
            if owner is None:
                self.add(rpath, f"points nowhere: no {ref['kind']} {ref['name']} in the scenario")
                continue
            owner_uid = (owner.get("metadata") or {}).get("uid")
            if ref.get("uid") and owner_uid and ref["uid"] != owner_uid:
                self.add(
                    f"{rpath}.uid", f"{ref['uid']} is not the uid of {ref['kind']} {ref['name']}"
                )

    def log(self, path: str, log: object, index: dict) -> None:
        if not isinstance(log, dict):
            self.add(path, "must be a mapping")
            return
        for key in sorted(set(log) - {"namespace", "pod", "container", "previous", "lines"}):
            self.add(f"{path}.{key}", "unknown key")
        pod = index.get(("Pod", log.get("namespace"), log.get("pod")))
        if pod is None:
            self.add(
                f"{path}.pod",
                f"no Pod {log.get('namespace')}/{log.get('pod')} in kubernetes.objects",
            )
        else:
            spec = pod.get("spec") or {}
            names = {
                c.get("name")
                for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
            }
            if log.get("container") not in names:
                self.add(
                    f"{path}.container", f"{log.get('container')!r} is not a container of that pod"
                )
        lines = log.get("lines")
        if not isinstance(lines, list):
            self.add(f"{path}.lines", "must be a list of {at, text}")
            return
        for i, line in enumerate(lines):
            if not isinstance(line, dict) or not isinstance(line.get("text"), str):
                self.add(f"{path}.lines[{i}]", "needs `at` and a string `text`")
                continue
            self.relative_time(f"{path}.lines[{i}].at", line.get("at"))

    def expected(self, expected: object) -> None:
        if not isinstance(expected, dict):
            self.add("expected", "must be a mapping with root_cause and remediation")
            return
        root = expected.get("root_cause")
        if not isinstance(root, dict):
            self.add("expected.root_cause", "is required")
        else:
            category = root.get("category")
            if category not in CATEGORIES:
                self.add(
                    "expected.root_cause.category", f"{category!r} is not a category of TAXONOMY.md"
                )
            entity = self.entity("expected.root_cause.entity", root.get("entity"))
            kinds = CATEGORIES.get(category)
            if entity and kinds and entity.get("kind") not in kinds:
                self.add(
                    "expected.root_cause.entity.kind",
                    f"a {category} root cause is a {' or '.join(sorted(kinds))}",
                )
        remediation = expected.get("remediation")
        if not isinstance(remediation, dict):
            self.add("expected.remediation", "is required")
            return
        action = remediation.get("action")
        if action not in ACTIONS:
            self.add("expected.remediation.action", f"{action!r} is not an action of TAXONOMY.md")
            return
        target_kind, params = ACTIONS[action]
        if target_kind and target_kind != "Alertmanager":
            target = self.entity("expected.remediation.target", remediation.get("target"))
            if target and target.get("kind") != target_kind:
                self.add("expected.remediation.target.kind", f"{action} targets a {target_kind}")
        for key in sorted(set(remediation.get("params") or {}) - params):
            self.add(f"expected.remediation.params.{key}", f"is not a parameter of {action}")

    def entity(self, path: str, entity: object) -> dict | None:
        if not isinstance(entity, dict) or not entity.get("kind") or not entity.get("name"):
            self.add(path, "needs kind, namespace (null for a Node) and name")
            return None
        if entity["kind"] == "Node" and entity.get("namespace"):
            self.add(f"{path}.namespace", "a Node has no namespace (null)")
        return entity
