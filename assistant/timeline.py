"""One time-ordered story of the incident: changes, events, metric steps, log errors, GPU faults, alerts.

An engineer's first question is "what happened first?"; every collector answers a piece of it in
its own shape, so this flattens them into one list, each entry pointing at its evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .base import Facts, parse_time

MAX_ENTRIES = 80


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # alert | change | event | metric-step | log | gpu
    title: str
    evidence_id: int | None = None


def build_timeline(facts: Facts) -> list[Entry]:
    entries: list[Entry] = []
    for alert in facts.alerts:
        name = alert.labels.get("alertname", "alert")
        entries.append(Entry(alert.starts_at, "alert", f"{name} started firing"))
        if alert.ends_at:
            entries.append(Entry(alert.ends_at, "alert", f"{name} resolved"))
    for item in facts.evidence:
        if item.status != "ok":
            continue
        entries.extend(_entries_of(item))
    entries = [e for e in entries if e.at is not None]
    entries.sort(key=lambda e: (e.at, e.kind))
    return entries[-MAX_ENTRIES:]


def _entries_of(item) -> list[Entry]:
    extract = {
        "deploys": _changes,
        "rollout_history": _rollouts,
        "k8s_events": _events,
        "metric": _metric_steps,
        "log_signatures": _log_errors,
        "gpu_health": _gpu_faults,
    }.get(item.kind)
    return extract(item) if extract else []


def _entry(at: object, kind: str, title: str, item) -> list[Entry]:
    moment = parse_time(at)
    return [Entry(moment, kind, title, item.id)] if moment else []


def _changes(item) -> list[Entry]:
    found = []
    for change in item.data.get("changes", []):
        what = change.get("version") or change.get("replicaset") or "a change"
        found += _entry(
            change.get("at"),
            "change",
            f"{item.entity}: {change.get('source')} deployed {what}",
            item,
        )
    return found


def _rollouts(item) -> list[Entry]:
    found = []
    for rs in item.data.get("replicaSets", []):
        if rs.get("createdInWindow"):
            images = ", ".join(rs.get("images") or [])
            found += _entry(
                rs.get("createdAt"),
                "change",
                f"{item.entity}: revision {rs.get('revision')} ({images})",
                item,
            )
    return found


def _events(item) -> list[Entry]:
    found = []
    for event in item.data.get("events", []):
        if event.get("type") == "Warning" or event.get("reason") in (
            "ScalingReplicaSet",
            "NodeNotReady",
            "Killing",
        ):
            title = f"{event.get('reason')}: {event.get('kind')} {event.get('name')}: {(event.get('message') or '')[:140]}"
            found += _entry(event.get("first") or event.get("last"), "event", title, item)
    return found


def _metric_steps(item) -> list[Entry]:
    found = []
    for series in item.data.get("series", [])[:3]:
        summary = series.get("summary") or {}
        if summary.get("step_at"):
            title = f"{item.title.split(' — ')[0][:80]} stepped {summary.get('step_direction')}"
            found += _entry(summary["step_at"], "metric-step", title, item)
            break
    return found


def _log_errors(item) -> list[Entry]:
    found = []
    for signature in item.data.get("signatures", [])[:3]:
        if signature.get("level") in ("error", "fatal"):
            title = f"{item.data.get('pod')}: {signature.get('count')}× {signature.get('signature', '')[:120]}"
            found += _entry(signature.get("first"), "log", title, item)
    return found


def _troubling(reason: str) -> bool:
    """Thermal and hardware slowdowns are faults; idle, power capping and app clocks are not."""
    return "Thermal" in reason or reason in ("HwSlowdown", "HwPowerBrakeSlowdown")


def _gpu_faults(item) -> list[Entry]:
    found = []
    for gpu in item.data.get("gpus", []):
        xid = gpu.get("xid")
        if xid:
            found += _entry(
                xid.get("first_seen"),
                "gpu",
                f"{item.entity} GPU {gpu.get('gpu')}: Xid {xid.get('code')}",
                item,
            )
        for reason in gpu.get("throttle_reasons_seen") or []:
            if (
                isinstance(reason, dict)
                and reason.get("first_seen")
                and _troubling(reason.get("reason", ""))
            ):
                title = f"{item.entity} GPU {gpu.get('gpu')}: {reason['reason']}"
                found += _entry(reason["first_seen"], "gpu", title, item)
    return found
