"""GPU collector: the health of every GPU on the nodes in scope, from DCGM and the NVML agent.

A GPU fault looks like an application problem from everywhere else (a crash loop, slow tokens),
so for each node the incident touches this reads what the GPUs themselves report: the last Xid
and when it appeared, ECC and row-remap state, temperature, power, clock-event (throttle)
reasons decoded into names, utilisation and framebuffer. Problems an engineer acts on become
`flags` ("xid-79", "thermal", "ecc-dbe"…); things that are normal under load (power capping,
a warm but unthrottled GPU, corrected single-bit ECC errors) are reported but not flagged.

Sources, merged per GPU (matched by UUID, then index):

- dcgm-exporter series in Prometheus, one range query for all fields and nodes. The node is
  matched by any label that may carry it: `Hostname` (the exporter's host, usually the node
  name, sometimes its FQDN), `node`, `kubernetes_node`, or the host part of `instance`.
- the latest GpuSnapshot the NVML agent pushed for the node within the window (source
  "nvml-agent"): it fills what DCGM does not export or did not report.

One EvidenceDraft of kind "gpu_health" per node with any GPU data; nodes without (CPU nodes)
give nothing. Prometheus failing raises CollectorError, unless NVML snapshots exist for the
scope: then they are reported and the DCGM failure is written beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.vigil_gpu_agent import CLOCK_EVENT_REASONS

from .base import CollectionContext, CollectorError, Entity, EvidenceDraft, Scope
from .models import GpuSnapshot
from .profiles import quote, regex_literal
from .series import (
    Point,
    QueryRejected,
    Series,
    choose_step,
    downsample,
    iso,
    number,
    range_query,
)
from .sources import prometheus_client

NAME = "gpu"

DCGM_FIELDS = {
    "DCGM_FI_DEV_XID_ERRORS": "xid",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "ecc_dbe",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "ecc_sbe",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "remapped_rows",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "row_remap_failure",
    "DCGM_FI_DEV_GPU_TEMP": "temperature",
    "DCGM_FI_DEV_POWER_USAGE": "power",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock",
    # The same bitmask under its DCGM < 3.3 and >= 3.3 names (reference §3).
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "clock_events",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "clock_events",
    "DCGM_FI_DEV_GPU_UTIL": "utilization",
    "DCGM_FI_DEV_FB_USED": "fb_used",
    "DCGM_FI_DEV_FB_FREE": "fb_free",
}
NODE_LABELS = ("Hostname", "node", "kubernetes_node")
TELEMETRY_FIELDS = ("temperature", "power", "utilization", "fb_used", "fb_free", "sm_clock")

# DCGM's clock-event bits are NVML's: one table, named as the NVML agent sends them.
# Reasons that mean trouble (DCGM diagnostics count 0xE8 as failures). SwPowerCap is a busy
# GPU at its power limit and GpuIdle an idle one: reported, never flagged.
REASON_FLAGS = {
    "SwThermalSlowdown": "thermal",
    "HwThermalSlowdown": "thermal",
    "HwSlowdown": "hw-slowdown",
    "HwPowerBrakeSlowdown": "power-brake",
}

XID_MEANINGS = {
    13: "graphics engine exception (usually an application bug)",
    31: "GPU memory page fault (usually an application's illegal address)",
    43: "GPU stopped processing (after an application fault)",
    45: "preemptive cleanup after an earlier error",
    48: "double-bit ECC error: cordon and drain, reset the GPU",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt: drain, reset the GPU",
    63: "ECC page retirement or row remap recorded: schedule drain and reset",
    64: "ECC page retirement or row remap failure: cordon, drain, RMA",
    74: "NVLink error: drain, reset",
    79: "GPU has fallen off the bus: cordon, drain, reboot the node",
    92: "high single-bit ECC error rate",
    94: "contained uncorrectable ECC error: drain, reset the GPU",
    95: "uncontained uncorrectable ECC error: cordon, drain, reset",
    109: "context-switch timeout",
    119: "GSP RPC timeout: drain, reset or reboot",
    120: "GSP error: drain, reset or reboot",
    154: "GPU recovery action changed: follow the driver's stated action",
}

SNAPSHOT_SLACK = timedelta(minutes=2)
"""NVML snapshots up to this long after the window's end still count (agent clock skew)."""

LOOKBACK_SECONDS = 300
"""Prometheus repeats a series' last sample for 5 minutes, so a range query hides a series
that stopped for that long; telemetry older than this plus two steps is stale."""

MIB = 1024 * 1024


@dataclass
class GpuSeries:
    """All DCGM series of one GPU, merged per field (a GPU's series change when its pod does)."""

    node: str
    gpu: str
    uuid: str
    model: str
    fields: dict[str, list[Point]] = field(default_factory=dict)


def collect(ctx: CollectionContext) -> list[EvidenceDraft]:
    """One gpu_health draft per node in scope that has GPU data; see the module docstring."""
    nodes = scope_nodes(ctx.scope)
    if not nodes:
        return []
    snapshots = latest_snapshots(ctx, nodes)
    step = choose_step(ctx.window.start, ctx.window.end)
    try:
        dcgm, dcgm_error = read_dcgm(ctx, nodes, step), ""
    except CollectorError as exc:
        if not snapshots:
            raise
        dcgm, dcgm_error = {}, exc.reason
    drafts = []
    for node in nodes:
        draft = node_draft(
            node, dcgm.get(node, []), snapshots.get(node), ctx, step, dcgm_error=dcgm_error
        )
        if draft is not None:
            drafts.append(draft)
    return drafts


def scope_nodes(scope: Scope) -> list[str]:
    """Node names from the scope's Nodes and GPUs, first-seen order."""
    names = [node.name for node in scope.nodes] + [gpu.node for gpu in scope.gpus if gpu.node]
    return list(dict.fromkeys(names))


# -- DCGM via Prometheus ------------------------------------------------------------------------


def dcgm_query(nodes: list[str]) -> str:
    """One selector per label that may name the node, joined with `or`.

    `or` keeps one copy of a series several selectors match. A Hostname or instance may carry a
    domain or port after the node name; the regexes allow for both.
    """
    names = "|".join(sorted({name.removeprefix("DCGM_FI_DEV_") for name in DCGM_FIELDS}))
    metric = f'__name__=~"DCGM_FI_DEV_({names})"'
    alternation = "|".join(regex_literal(node) for node in nodes)
    host = quote(f"({alternation})(\\..+)?")
    selectors = [f'{{{metric},{label}=~"{host}"}}' for label in NODE_LABELS]
    selectors.append(f'{{{metric},instance=~"{quote(f"({alternation})(:[0-9]+)?")}"}}')
    return " or ".join(selectors)


def read_dcgm(ctx: CollectionContext, nodes: list[str], step: int) -> dict[str, list[GpuSeries]]:
    """DCGM series of the nodes' GPUs over the window, grouped by node and GPU."""
    client = prometheus_client(ctx.cluster, ctx.timeout)
    try:
        result = range_query(
            client,
            dcgm_query(nodes),
            start=ctx.window.start,
            end=ctx.window.end,
            step=step,
            timeout=ctx.timeout,
        )
    except QueryRejected as exc:
        raise CollectorError(f"Prometheus refused the DCGM query: {exc.message}") from exc
    return group_by_gpu(result, nodes)


def group_by_gpu(result: list[Series], nodes: list[str]) -> dict[str, list[GpuSeries]]:
    """Series by node and GPU (index + UUID), each field's series merged into one.

    A GPU's DCGM series carry the labels of the pod using it, so they change identity when the
    pod does; MIG instances of one GPU are merged the same way (the larger value wins).
    """
    gpus: dict[tuple[str, str, str], GpuSeries] = {}
    for series in result:
        field_name = DCGM_FIELDS.get(series.labels.get("__name__", ""))
        node = node_of(series.labels, nodes)
        if field_name is None or node is None:
            continue
        gpu = series.labels.get("gpu", "")
        uuid = series.labels.get("UUID", "")
        key = (node, gpu, uuid)
        if key not in gpus:
            gpus[key] = GpuSeries(node, gpu, uuid, series.labels.get("modelName", ""))
        existing = gpus[key].fields.get(field_name, [])
        gpus[key].fields[field_name] = _merge_points(existing, series.points)
    grouped: dict[str, list[GpuSeries]] = {}
    for gpu in gpus.values():
        grouped.setdefault(gpu.node, []).append(gpu)
    for found in grouped.values():
        found.sort(key=lambda g: (_index(g.gpu), g.uuid))
    return grouped


def node_of(labels: dict[str, str], nodes: list[str]) -> str | None:
    """The node a DCGM series belongs to, by Hostname, node, kubernetes_node, then instance."""
    candidates = [labels.get(label, "") for label in NODE_LABELS]
    instance = labels.get("instance", "")
    candidates.append(instance.rsplit(":", 1)[0] if ":" in instance else instance)
    for value in candidates:
        if not value:
            continue
        for node in nodes:
            if value == node or value.split(".", 1)[0] == node:
                return node
    return None


def _merge_points(first: list[Point], second: list[Point]) -> list[Point]:
    """Union by time; at a shared time the larger value wins (two pods' series of one GPU)."""
    merged: dict[float, float | None] = dict(first)
    for ts, value in second:
        old = merged.get(ts)
        merged[ts] = value if old is None or (value is not None and value > old) else old
    return sorted(merged.items())


# -- one GPU, from DCGM ---------------------------------------------------------------------------


def gpu_from_dcgm(gpu: GpuSeries, ctx: CollectionContext, step: int) -> dict[str, Any]:
    """The per-GPU facts DCGM gives, in the evidence's shape."""
    f = gpu.fields
    xid, history = xid_from_points(f.get("xid", []))
    fb_used, fb_free = _last(f.get("fb_used")), _last(f.get("fb_free"))
    telemetry = [ts for name in TELEMETRY_FIELDS for ts, v in f.get(name, []) if v is not None]
    until = max(telemetry) if telemetry else None
    stale_before = ctx.window.end.timestamp() - (LOOKBACK_SECONDS + 2 * step)
    return {
        "gpu": gpu.gpu,
        "uuid": gpu.uuid,
        "model": gpu.model or None,
        "sources": ["dcgm-exporter"],
        "xid": xid,
        "xid_history": history,
        "ecc_dbe": _int(_last(f.get("ecc_dbe"))),
        "ecc_dbe_increase": _int(_increase(f.get("ecc_dbe"))),
        "ecc_sbe": _int(_last(f.get("ecc_sbe"))),
        "ecc_sbe_increase": _int(_increase(f.get("ecc_sbe"))),
        "remapped_rows": _int(_last(f.get("remapped_rows"))),
        "remapped_rows_increase": _int(_increase(f.get("remapped_rows"))),
        "row_remap_failure": _int(_last(f.get("row_remap_failure"))),
        "temperature": _last_max(f.get("temperature")),
        "power": number(_last(f.get("power"))),
        "sm_clock": _last_max(f.get("sm_clock")),
        "throttle_reasons": decode_clock_events(_last(f.get("clock_events"))),
        "throttle_reasons_seen": reasons_seen(f.get("clock_events", [])),
        "utilization": number(_last(f.get("utilization"))),
        "fb_used": number(fb_used),
        "fb_free": number(fb_free),
        "fb_used_ratio": _ratio(fb_used, fb_free),
        "telemetry_until": iso(until),
        "stale_telemetry": until is not None and until < stale_before,
    }


def xid_from_points(points: list[Point]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The last Xid in the window and when it first/last showed, plus every code seen in order.

    DCGM_FI_DEV_XID_ERRORS is a gauge holding the code of the LAST Xid (0: none), not a count.
    """
    history: dict[int, float] = {}
    last_code: int | None = None
    for ts, value in points:
        if value:
            code = int(value)
            history.setdefault(code, ts)
            last_code = code
    if last_code is None:
        return None, []
    times = [ts for ts, value in points if value is not None and int(value) == last_code]
    xid = xid_info(last_code, min(times), max(times))
    return xid, [xid_info(code, ts, None) for code, ts in history.items()]


def xid_info(code: int, first_seen: float | None, last_seen: float | None) -> dict[str, Any]:
    meaning = XID_MEANINGS.get(code, "see NVIDIA's Xid catalogue")
    return {
        "code": code,
        "meaning": meaning,
        "first_seen": iso(first_seen),
        "last_seen": iso(last_seen),
    }


def decode_clock_events(mask: float | None) -> list[str]:
    """Names of the bits set in a clock-event (throttle) reason mask."""
    if mask is None or mask < 0:
        return []
    bits = int(mask)
    return [name for bit, name in CLOCK_EVENT_REASONS if bits & bit]


def reasons_seen(points: list[Point]) -> list[dict[str, Any]]:
    """Every reason set at some point in the window, with when it first was."""
    first: dict[str, float] = {}
    for ts, mask in points:
        for name in decode_clock_events(mask):
            first.setdefault(name, ts)
    return [{"reason": name, "first_seen": iso(ts)} for name, ts in first.items()]


# -- the NVML agent -------------------------------------------------------------------------------


def latest_snapshots(ctx: CollectionContext, nodes: list[str]) -> dict[str, GpuSnapshot]:
    """Each node's newest NVML snapshot taken within the window (one indexed query per node)."""
    found = {}
    for node in nodes:
        snapshot = (
            GpuSnapshot.objects.filter(
                cluster__name=ctx.cluster.name,
                node=node,
                taken_at__gte=ctx.window.start,
                taken_at__lte=ctx.window.end + SNAPSHOT_SLACK,
            )
            .order_by("-taken_at", "-id")
            .first()
        )
        if snapshot is not None:
            found[node] = snapshot
    return found


def gpu_from_nvml(gpu: dict[str, Any], snapshot: GpuSnapshot, window_start: datetime) -> dict:
    """The per-GPU facts of one NVML reading, in the same shape as gpu_from_dcgm's."""
    events = []
    for event in gpu.get("xid_events") or []:
        at = _parse_time(event.get("at"))
        if at is not None and at >= window_start:
            events.append((at.timestamp(), float(event["code"])))
    xid, history = xid_from_points(sorted(events))
    used, total = gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")
    free = total - used if used is not None and total is not None else None
    reasons = gpu.get("clocks_event_reasons")
    if reasons is None:
        reasons = decode_clock_events(gpu.get("clocks_event_reasons_mask"))
    failure = gpu.get("remapped_rows_failure")
    temperature = gpu.get("temperature_c")
    return {
        "gpu": str(gpu.get("index", "")),
        "uuid": gpu.get("uuid") or "",
        "model": gpu.get("name"),
        "xid": xid,
        "xid_history": history,
        "ecc_dbe": gpu.get("ecc_volatile_double_bit"),
        "ecc_sbe": gpu.get("ecc_volatile_single_bit"),
        "remapped_rows": gpu.get("remapped_rows_uncorrectable"),
        "row_remap_failure": None if failure is None else int(bool(failure)),
        "temperature": None if temperature is None else {"last": temperature, "max": temperature},
        "power": number(gpu.get("power_w")),
        "throttle_reasons": list(reasons),
        "throttle_reasons_seen": [
            {"reason": r, "first_seen": iso(snapshot.taken_at)} for r in reasons
        ],
        "utilization": gpu.get("utilization_pct"),
        "fb_used": number(used / MIB) if used is not None else None,
        "fb_free": number(free / MIB) if free is not None else None,
        "fb_used_ratio": _ratio(used, free),
        "nvml": {
            "taken_at": iso(snapshot.taken_at),
            "remapped_rows_pending": gpu.get("remapped_rows_pending"),
            "retired_pages_pending": gpu.get("retired_pages_pending"),
            "errors": gpu.get("errors") or {},
        },
    }


def merge_nvml(gpus: list[dict], snapshot: GpuSnapshot | None, window_start: datetime) -> None:
    """Fill what DCGM left empty from the snapshot, GPU by GPU (UUID first, then index).

    DCGM comes first because its series cover the whole window; the snapshot is one moment.
    GPUs only the agent reports are added.
    """
    if snapshot is None:
        return
    for reading in snapshot.gpus or []:
        nvml = gpu_from_nvml(reading, snapshot, window_start)
        target = _find_gpu(gpus, nvml["uuid"], nvml["gpu"])
        if target is None:
            gpus.append({**nvml, "sources": ["nvml-agent"]})
            continue
        for key, value in nvml.items():
            if target.get(key) in (None, [], {}) and value not in (None, [], {}):
                target[key] = value
        target["nvml"] = nvml["nvml"]
        target["sources"] = [*target.get("sources", []), "nvml-agent"]


def _find_gpu(gpus: list[dict], uuid: str, index: str) -> dict | None:
    if uuid:
        for gpu in gpus:
            if gpu.get("uuid") == uuid:
                return gpu
    for gpu in gpus:
        if index and gpu.get("gpu") == index and (not uuid or not gpu.get("uuid")):
            return gpu
    return None


# -- flags and the draft --------------------------------------------------------------------------


def gpu_flags(gpu: dict[str, Any]) -> list[str]:
    """The problems on this GPU an engineer acts on, most serious first."""
    flags = []
    if gpu.get("xid"):
        flags.append(f"xid-{gpu['xid']['code']}")
    if (gpu.get("ecc_dbe") or 0) > 0:
        flags.append("ecc-dbe")
    if (gpu.get("row_remap_failure") or 0) >= 1:
        flags.append("row-remap-failure")
    if (gpu.get("remapped_rows_increase") or 0) > 0:
        flags.append("remapped-rows")
    nvml = gpu.get("nvml") or {}
    if nvml.get("remapped_rows_pending"):
        flags.append("row-remap-pending")
    seen = {item["reason"] for item in gpu.get("throttle_reasons_seen") or []}
    seen |= set(gpu.get("throttle_reasons") or [])
    raised = {REASON_FLAGS.get(name) or _spelled_thermal(name) for name in seen}
    flags += [flag for flag in ("thermal", "hw-slowdown", "power-brake") if flag in raised]
    if gpu.get("stale_telemetry"):
        flags.append("stale-telemetry")
    if nvml.get("errors"):
        flags.append("nvml-error")
    return flags


def _spelled_thermal(name: str) -> str | None:
    """Agents may spell reasons differently ("SwThermal", "sw_thermal"): any *thermal* counts."""
    return "thermal" if "thermal" in name.lower() else None


def node_draft(
    node: str,
    dcgm: list[GpuSeries],
    snapshot: GpuSnapshot | None,
    ctx: CollectionContext,
    step: int,
    *,
    dcgm_error: str = "",
) -> EvidenceDraft | None:
    """The node's gpu_health draft, or None when neither source knows a GPU on it."""
    gpus = [gpu_from_dcgm(gpu, ctx, step) for gpu in dcgm]
    merge_nvml(gpus, snapshot, ctx.window.start)
    if not gpus:
        return None
    named = [g for g in ctx.scope.gpus if g.node == node]
    for gpu in gpus:
        gpu["in_scope"] = any(
            (g.uuid and g.uuid == gpu["uuid"]) or (g.index and g.index == gpu["gpu"]) for g in named
        )
        gpu["flags"] = gpu_flags(gpu)
    gpus.sort(key=lambda g: (_index(g["gpu"]), g["uuid"]))
    sources = sorted({s for g in gpus for s in g["sources"]})
    data: dict[str, Any] = {
        "node": node,
        "source": ", ".join(sources),
        "gpus": gpus,
        "flags": sorted({f for g in gpus for f in g["flags"]}),
        "series": chart_series(dcgm, gpus),
        "first_alert_at": iso(ctx.window.first_alert_at),
        "start": iso(ctx.window.start),
        "end": iso(ctx.window.end),
        "step": step,
    }
    if snapshot is not None:
        data["nvml_snapshot"] = {
            "taken_at": iso(snapshot.taken_at),
            "driver_version": snapshot.driver_version,
            "agent_version": snapshot.agent_version,
        }
    if dcgm_error:
        data["dcgm_error"] = dcgm_error
    return EvidenceDraft(
        kind="gpu_health", title=_title(node, gpus), entity=Entity("Node", None, node), data=data
    )


def chart_series(dcgm: list[GpuSeries], gpus: list[dict]) -> list[dict[str, Any]]:
    """Temperature, then utilisation, per GPU, flagged GPUs first (a chart shows six lines)."""
    flagged = {(g["gpu"], g["uuid"]) for g in gpus if g["flags"]}
    ordered = sorted(dcgm, key=lambda g: ((g.gpu, g.uuid) not in flagged, _index(g.gpu)))
    series = []
    for name in ("temperature", "utilization"):
        for gpu in ordered:
            points = gpu.fields.get(name)
            if points:
                series.append(
                    {
                        "labels": {"metric": name, "gpu": gpu.gpu},
                        "points": [[int(t), number(v)] for t, v in downsample(points)],
                    }
                )
    return series


def _title(node: str, gpus: list[dict]) -> str:
    flagged = [f"GPU {g['gpu']}: {', '.join(g['flags'])}" for g in gpus if g["flags"]]
    if not flagged:
        return f"GPU health of {node}: no problems flagged on {len(gpus)} GPU(s)"
    return f"GPU health of {node}: " + "; ".join(flagged)


# -- small helpers --------------------------------------------------------------------------------


def _last(points: list[Point] | None) -> float | None:
    for _, value in reversed(points or []):
        if value is not None:
            return value
    return None


def _last_max(points: list[Point] | None) -> dict[str, Any] | None:
    values = [v for _, v in points or [] if v is not None]
    if not values:
        return None
    return {"last": number(values[-1]), "max": number(max(values))}


def _increase(points: list[Point] | None) -> float | None:
    """Growth of a counter over the window; None if it went down (driver reload) or is absent."""
    values = [v for _, v in points or [] if v is not None]
    if not values or values[-1] < values[0]:
        return None
    return values[-1] - values[0]


def _ratio(used: float | None, free: float | None) -> float | None:
    if used is None or free is None or used + free <= 0:
        return None
    return number(used / (used + free))


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _index(gpu: str) -> int:
    return int(gpu) if str(gpu).isdigit() else 1_000_000


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
