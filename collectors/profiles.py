"""Query profiles: which PromQL the Prometheus collector runs for which entity of the scope.

Profiles are data (collectors/profiles.yaml, plus the file VIGIL_QUERY_PROFILES names) because
metric and label names differ between teams: one fixes a template for its conventions, or adds
the signals of its own services, without touching code. The format is described at the top of
profiles.yaml.

A profile is bound to entities of the scope (`bindings`), and each binding fills the template's
placeholders (`render`). Values are escaped for a PromQL string, so a label value coming from an
alert can never change the query's structure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .base import Entity, Scope

BUILTIN_PATH = Path(__file__).with_name("profiles.yaml")

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
COMMON_PLACEHOLDERS = frozenset({"rate_window", "step"})
_WORKLOAD = frozenset({"namespace", "workload", "pod_regex", "selector"})
PROVIDES: dict[str, frozenset[str]] = {
    "workload": _WORKLOAD,
    "deployment": _WORKLOAD | {"deployment"},
    "statefulset": _WORKLOAD | {"statefulset"},
    "daemonset": _WORKLOAD | {"daemonset"},
    "pod": frozenset({"namespace", "pod", "pod_regex", "selector"}),
    "namespace": frozenset({"namespace", "selector"}),
    "node": frozenset({"node", "node_regex", "selector"}),
    "job": frozenset({"job", "selector"}),
    "model": frozenset({"model", "selector"}),
}
"""The placeholders each kind of binding fills in (plus COMMON_PLACEHOLDERS for all)."""

# Pod names each workload kind generates: Deployment pods are <name>-<template hash>-<suffix>,
# StatefulSet pods <name>-<ordinal>, DaemonSet pods <name>-<suffix>. PromQL regexes are anchored.
POD_PATTERNS = {
    "Deployment": "-[a-z0-9]+-[a-z0-9]+",
    "StatefulSet": "-[0-9]+",
    "DaemonSet": "-[a-z0-9]+",
}


class ProfileError(ValueError):
    """A profiles file that cannot be used; the message names the file and the profile."""


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    applies_to: tuple[str, ...]
    query: str
    unit: str = ""
    source: str = "built-in"
    enabled: bool = True


@dataclass
class Profiles:
    """The usable profiles, and what was wrong with the user's file (shown as evidence)."""

    profiles: list[Profile]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Binding:
    """One entity a profile is run for: its kind, the Entity (if any) and placeholder values."""

    kind: str
    entity: Entity | None
    values: dict[str, str]
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label}


# -- loading ------------------------------------------------------------------------------------


def load_profiles(extra_path: str | Path | None = None) -> Profiles:
    """The built-in profiles, overridden and extended by the file at `extra_path`.

    A broken built-in file raises ProfileError (a bug, caught by the tests). A user file that is
    missing, unreadable or has invalid profiles is reported in `problems`: its valid profiles are
    still used, and the built-ins always are, so one typo does not cost every metric.
    """
    builtin = {p.name: p for p in _parse_file(BUILTIN_PATH, strict=True)[0]}
    if not extra_path:
        return Profiles(list(builtin.values()))
    path = Path(extra_path)
    try:
        extra, disabled, problems = _parse_user_file(path)
    except ProfileError as exc:
        return Profiles(list(builtin.values()), [str(exc)])
    merged = dict(builtin)
    for name in disabled:
        merged.pop(name, None)
    merged.update({p.name: p for p in extra})
    return Profiles(list(merged.values()), problems)


def _parse_user_file(path: Path) -> tuple[list[Profile], set[str], list[str]]:
    profiles, problems = _parse_file(path, strict=False)
    disabled = {p.name for p in profiles if not p.enabled}
    return [p for p in profiles if p.enabled], disabled, problems


def _parse_file(path: Path, *, strict: bool) -> tuple[list[Profile], list[str]]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"query profiles {path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"query profiles {path}: not valid YAML: {exc}") from exc
    items = document.get("profiles") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ProfileError(f"query profiles {path}: expected a `profiles:` list")
    profiles: list[Profile] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            profile = parse_profile(item, source=str(path))
            if profile.name in seen:
                raise ProfileError(f"name {profile.name!r} is used twice")
            seen.add(profile.name)
            profiles.append(profile)
        except ProfileError as exc:
            name = item.get("name") if isinstance(item, dict) else None
            problems.append(f"query profiles {path}: profiles[{index}] {name or ''}: {exc}")
    if strict and problems:
        raise ProfileError("; ".join(problems))
    return profiles, problems


def parse_profile(item: Any, *, source: str = "built-in") -> Profile:
    """One profile from its YAML mapping; ProfileError says what is wrong with it."""
    if not isinstance(item, dict):
        raise ProfileError("each profile must be a mapping")
    unknown = set(item) - {"name", "title", "applies_to", "query", "unit", "enabled"}
    if unknown:
        raise ProfileError(f"unknown field(s): {', '.join(sorted(unknown))}")
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ProfileError("`name` must be a slug of letters, digits, _ and -")
    if item.get("enabled", True) is False:
        return Profile(name, "", (), "", source=source, enabled=False)
    title, query, unit = item.get("title"), item.get("query"), item.get("unit", "")
    if not isinstance(title, str) or not title.strip():
        raise ProfileError("`title` is required")
    if not isinstance(query, str) or not query.strip():
        raise ProfileError("`query` is required")
    applies_to = item.get("applies_to")
    if isinstance(applies_to, str):
        applies_to = [applies_to]
    if not isinstance(applies_to, list) or not applies_to:
        raise ProfileError("`applies_to` must list entity kinds")
    kinds = tuple(str(kind) for kind in applies_to)
    unknown_kinds = [kind for kind in kinds if kind not in PROVIDES]
    if unknown_kinds:
        raise ProfileError(
            f"unknown kind(s) in applies_to: {', '.join(unknown_kinds)} "
            f"(known: {', '.join(PROVIDES)})"
        )
    _check_placeholders(query, kinds)
    return Profile(name, title.strip(), kinds, query.strip(), str(unit), source)


def _check_placeholders(query: str, kinds: Iterable[str]) -> None:
    used = set(PLACEHOLDER.findall(query))
    for kind in kinds:
        missing = used - PROVIDES[kind] - COMMON_PLACEHOLDERS
        if missing:
            names = ", ".join("{" + m + "}" for m in sorted(missing))
            raise ProfileError(f"placeholder(s) {names} are not provided for kind {kind!r}")


# -- binding and rendering ----------------------------------------------------------------------


def bindings(profile: Profile, scope: Scope) -> list[Binding]:
    """The profile's bindings: every entity of the first kind in `applies_to` the scope has.

    Ordered alternatives rather than all kinds at once, so a profile listing [workload, model]
    runs per workload when workloads are known and per model only as a fallback, instead of
    fetching the same series twice.
    """
    for kind in profile.applies_to:
        found = scope_bindings(scope, kind)
        if found:
            return found
    return []


def scope_bindings(scope: Scope, kind: str) -> list[Binding]:
    """All bindings of one kind for this scope, in a stable order."""
    if kind == "workload":
        workloads = [_workload_binding(e) for e in scope.workloads()]
        return workloads + [
            _pod_binding(pod, as_workload=True)
            for pod in scope.pods
            if not any(_owns(w, pod) for w in workloads)
        ]
    if kind in ("deployment", "statefulset", "daemonset"):
        entities = getattr(scope, kind + "s")
        return [_workload_binding(e, extra=kind) for e in entities]
    if kind == "pod":
        return [_pod_binding(pod) for pod in scope.pods]
    if kind == "namespace":
        return [
            Binding(
                "namespace",
                Entity("Namespace", None, ns),
                {"namespace": quote(ns), "selector": f'namespace="{quote(ns)}"'},
                f"namespace {ns}",
            )
            for ns in _namespaces(scope)
        ]
    if kind == "node":
        return [_node_binding(node.name) for node in _unique(scope.nodes)]
    if kind in ("job", "model"):
        label = "job" if kind == "job" else "model_name"
        values = scope.jobs if kind == "job" else scope.models
        return [
            Binding(
                kind, None, {kind: quote(v), "selector": f'{label}="{quote(v)}"'}, f"{kind} {v}"
            )
            for v in dict.fromkeys(values)
        ]
    raise ValueError(f"unknown binding kind {kind!r}")


def render(profile: Profile, binding: Binding, *, step: int, rate_window: str) -> str:
    """The profile's query with this binding's values filled in."""
    values = {**binding.values, "step": f"{step}s", "rate_window": rate_window}

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return PLACEHOLDER.sub(fill, profile.query)


def quote(value: str) -> str:
    """`value` escaped to sit between double quotes in PromQL (Go string-literal rules)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_literal(value: str) -> str:
    """`value` as an RE2 regex that matches only itself.

    Only the metacharacters are escaped (re.escape would also escape `-`, harmless to RE2 but
    it makes every query with a Kubernetes name harder to read).
    """
    return re.sub(r"([.\\+*?()|\[\]{}^$])", r"\\\1", value)


def _workload_binding(entity: Entity, extra: str | None = None) -> Binding:
    namespace = entity.namespace or ""
    regex = regex_literal(entity.name) + POD_PATTERNS.get(entity.kind, "-.+")
    values = {
        "namespace": quote(namespace),
        "workload": quote(entity.name),
        "pod_regex": quote(regex),
        "selector": f'namespace="{quote(namespace)}",pod=~"{quote(regex)}"',
    }
    if extra:
        values[extra] = quote(entity.name)
    return Binding(extra or "workload", entity, values, str(entity))


def _pod_binding(pod: Entity, *, as_workload: bool = False) -> Binding:
    namespace = pod.namespace or ""
    regex = regex_literal(pod.name)
    values = {
        "namespace": quote(namespace),
        "pod": quote(pod.name),
        "pod_regex": quote(regex),
        "selector": f'namespace="{quote(namespace)}",pod=~"{quote(regex)}"',
    }
    if as_workload:
        values["workload"] = quote(pod.name)
    return Binding("workload" if as_workload else "pod", pod, values, str(pod))


def _node_binding(name: str) -> Binding:
    values = {
        "node": quote(name),
        "node_regex": quote(regex_literal(name)),
        "selector": f'node="{quote(name)}"',
    }
    return Binding("node", Entity("Node", None, name), values, f"Node {name}")


def _owns(workload: Binding, pod: Entity) -> bool:
    """Whether `pod` is one of the workload's pods, judged by namespace and generated name."""
    entity = workload.entity
    if entity is None or entity.namespace != pod.namespace:
        return False
    pattern = regex_literal(entity.name) + POD_PATTERNS.get(entity.kind, "-.+")
    return re.fullmatch(pattern, pod.name) is not None


def _namespaces(scope: Scope) -> list[str]:
    found = list(scope.namespaces)
    found += [e.namespace for e in scope.entities() if e.namespace]
    return list(dict.fromkeys(found))


def _unique(entities: Iterable[Entity]) -> list[Entity]:
    return list(dict.fromkeys(entities))
