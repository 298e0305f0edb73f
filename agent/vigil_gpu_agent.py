"""Vigil's NVML node agent: read every GPU on this node and post a snapshot to Vigil.

Runs as a DaemonSet on GPU nodes (deploy/gpu-agent-daemonset.yaml) because some GPU facts never
reach Prometheus, or reach it too late: Xid events as the driver raises them, row-remap pending
or failed, clock-event reasons by name, ECC counts on GPUs where DCGM's fields are commented out.

Stdlib only, apart from `pynvml` (PyPI `nvidia-ml-py`), so the image stays small and nothing of
Django is needed on the node. Every NVML query is guarded: a query this GPU or driver does not
support is `None` in the snapshot, any other failure (no permission, GPU is lost) is `None` plus
an entry in the GPU's `errors`; neither costs the rest of the snapshot.

Environment: VIGIL_URL (Vigil's base URL), VIGIL_AGENT_TOKEN or VIGIL_AGENT_TOKEN_FILE (an `agent`
integration's bearer token), NODE_NAME (downward API; default the host name),
VIGIL_AGENT_INTERVAL (seconds, default 30).

    python -m agent.vigil_gpu_agent              # loop until SIGTERM
    python -m agent.vigil_gpu_agent --once       # print one snapshot as JSON and post it
    python -m agent.vigil_gpu_agent --once --dry-run   # print only; needs no URL or token
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType, ModuleType
from typing import Any

AGENT_VERSION = "0.1.0"
USER_AGENT = f"vigil-gpu-agent/{AGENT_VERSION}"
ENDPOINT_PATH = "/api/v1/gpu-snapshots"

log = logging.getLogger("vigil.gpu_agent")

# NVML's numbers are part of its C ABI; fixing them here keeps decoding independent of which
# nvidia-ml-py release (or test double) is installed.
NVML_TEMPERATURE_GPU = 0
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_EVENT_TYPE_XID_CRITICAL_ERROR = 0x8
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13

# nvmlClocksEventReason* (formerly nvmlClocksThrottleReason*); same bits as DCGM's field.
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "GpuIdle"),
    (0x2, "ApplicationsClocksSetting"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermalSlowdown"),
    (0x40, "HwThermalSlowdown"),
    (0x80, "HwPowerBrakeSlowdown"),
    (0x100, "DisplayClockSetting"),
)
KNOWN_CLOCK_EVENT_BITS = sum(bit for bit, _ in CLOCK_EVENT_REASONS)

# The server's bounds (collectors/api.py): past them it would refuse the whole snapshot.
MAX_GPUS = 64
MAX_XID_EVENTS_PER_GPU = 256
MAX_ERROR_LENGTH = 500

NOT_SUPPORTED_CODES = frozenset({NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND})


class ConfigError(Exception):
    """The environment does not say where to post or with which token."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with a `Z`, the form every Vigil contract uses."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the bits set in a clocks-event (throttle) mask; unknown bits by value.

    Unknown bits are kept (as `Unknown0x…`) rather than dropped, so a newer driver's reason
    still shows up in the incident instead of looking like an unthrottled GPU.
    """
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    unknown = mask & ~KNOWN_CLOCK_EVENT_BITS
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append(f"Unknown0x{bit:x}")
        bit <<= 1
    return names


def cuda_version_text(version: int | None) -> str | None:
    """NVML's CUDA driver version integer (12040) as people write it ("12.4")."""
    if version is None:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def text(value: Any, limit: int) -> str | None:
    """NVML strings come as bytes from older bindings; cut to the server's bound."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:limit]


class Reader:
    """pynvml behind one guard: a failed query is `None`, never an exception."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        self.error_class: type[BaseException] = getattr(nvml, "NVMLError", Exception)

    def query(self, errors: dict[str, str], field: str, function: str, *args: Any) -> Any:
        """`pynvml.<function>(*args)`, or None when it fails.

        "Not supported" (this GPU, driver or binding lacks the query) is normal and leaves no
        trace; any other failure is recorded under `errors[field]`, because "GPU is lost" or
        "insufficient permissions" is evidence in itself.
        """
        fn = getattr(self.nvml, function, None)
        if fn is None:  # an nvidia-ml-py too old to know the function: as good as unsupported
            return None
        try:
            return fn(*args)
        except self.error_class as exc:
            if getattr(exc, "value", None) not in NOT_SUPPORTED_CODES:
                errors[field] = str(exc)[:MAX_ERROR_LENGTH]
            return None
        except Exception as exc:  # a binding bug must cost one field, not the snapshot
            log.warning("NVML %s failed unexpectedly: %r", function, exc)
            errors[field] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
            return None

    def query_first(
        self, errors: dict[str, str], field: str, *calls: tuple[str, tuple[Any, ...]]
    ) -> Any:
        """The first of several equivalent queries that answers: NVML renames functions
        across driver generations, and a node may run either side of the rename."""
        for function, args in calls:
            value = self.query(errors, field, function, *args)
            if value is not None:
                errors.pop(field, None)
                return value
        return None


def empty_gpu(index: int) -> dict[str, Any]:
    """Every field the server knows, unknown until read: the shape never depends on support."""
    return {
        "index": index,
        "uuid": None,
        "name": None,
        "temperature_c": None,
        "power_w": None,
        "power_limit_w": None,
        "utilization_pct": None,
        "memory_utilization_pct": None,
        "memory_used_bytes": None,
        "memory_total_bytes": None,
        "clocks_event_reasons": None,
        "clocks_event_reasons_mask": None,
        "ecc_volatile_double_bit": None,
        "ecc_volatile_single_bit": None,
        "retired_pages_single_bit": None,
        "retired_pages_double_bit": None,
        "retired_pages_pending": None,
        "remapped_rows_correctable": None,
        "remapped_rows_uncorrectable": None,
        "remapped_rows_pending": None,
        "remapped_rows_failure": None,
        "xid_events": None,
        "errors": {},
    }


def milliwatts_to_watts(value: int | None) -> float | None:
    return None if value is None else value / 1000


def read_identity(reader: Reader, errors: dict[str, str], handle: Any) -> dict[str, Any]:
    return {
        "uuid": text(reader.query(errors, "uuid", "nvmlDeviceGetUUID", handle), 96),
        "name": text(reader.query(errors, "name", "nvmlDeviceGetName", handle), 200),
    }


def read_thermal_and_power(reader: Reader, errors: dict[str, str], handle: Any) -> dict[str, Any]:
    sensor = (handle, NVML_TEMPERATURE_GPU)
    temperature = reader.query_first(
        errors,
        "temperature_c",
        ("nvmlDeviceGetTemperature", sensor),
        ("nvmlDeviceGetTemperatureV", sensor),  # the successor, for when the old one is gone
    )
    usage = reader.query(errors, "power_w", "nvmlDeviceGetPowerUsage", handle)
    limit = reader.query(errors, "power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", handle)
    return {
        "temperature_c": None if temperature is None else int(temperature),
        "power_w": milliwatts_to_watts(usage),
        "power_limit_w": milliwatts_to_watts(limit),
    }


def read_utilization_and_memory(
    reader: Reader, errors: dict[str, str], handle: Any
) -> dict[str, Any]:
    rates = reader.query(errors, "utilization_pct", "nvmlDeviceGetUtilizationRates", handle)
    memory = reader.query(errors, "memory_used_bytes", "nvmlDeviceGetMemoryInfo", handle)
    return {
        "utilization_pct": None if rates is None else int(rates.gpu),
        "memory_utilization_pct": None if rates is None else int(rates.memory),
        "memory_used_bytes": None if memory is None else int(memory.used),
        "memory_total_bytes": None if memory is None else int(memory.total),
    }


def read_clock_events(reader: Reader, errors: dict[str, str], handle: Any) -> dict[str, Any]:
    """Current clocks-event reasons; the "throttle" name is what drivers before 535 export."""
    mask = reader.query_first(
        errors,
        "clocks_event_reasons",
        ("nvmlDeviceGetCurrentClocksEventReasons", (handle,)),
        ("nvmlDeviceGetCurrentClocksThrottleReasons", (handle,)),
    )
    if mask is None:
        return {}
    return {
        "clocks_event_reasons": decode_clock_event_reasons(mask),
        "clocks_event_reasons_mask": mask,
    }


def read_ecc(reader: Reader, errors: dict[str, str], handle: Any) -> dict[str, Any]:
    """Volatile (since driver load) ECC totals; None where ECC is off or absent (consumer GPUs)."""
    return {
        "ecc_volatile_double_bit": reader.query(
            errors,
            "ecc_volatile_double_bit",
            "nvmlDeviceGetTotalEccErrors",
            handle,
            NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            NVML_VOLATILE_ECC,
        ),
        "ecc_volatile_single_bit": reader.query(
            errors,
            "ecc_volatile_single_bit",
            "nvmlDeviceGetTotalEccErrors",
            handle,
            NVML_MEMORY_ERROR_TYPE_CORRECTED,
            NVML_VOLATILE_ECC,
        ),
    }


def read_retired_pages(reader: Reader, errors: dict[str, str], handle: Any) -> dict[str, Any]:
    """Page retirement: the pre-Ampere mechanism (Ampere and later remap rows instead)."""
    single = reader.query(
        errors,
        "retired_pages_single_bit",
        "nvmlDeviceGetRetiredPages",
        handle,
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    )
    double = reader.query(
        errors,
        "retired_pages_double_bit",
        "nvmlDeviceGetRetiredPages",
        handle,
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    )
    pending = reader.query(
        errors, "retired_pages_pending", "nvmlDeviceGetRetiredPagesPendingStatus", handle
    )
    return {
        "retired_pages_single_bit": None if single is None else len(single),
        "retired_pages_double_bit": None if double is None else len(double),
        "retired_pages_pending": None if pending is None else bool(pending),
    }


def read_remapped_rows(reader: Reader, errors: dict[str, str], handle: Any) -> dict[str, Any]:
    """Row remapping (Ampere+): pending means a GPU reset is due, failure means replace the GPU."""
    rows = reader.query(errors, "remapped_rows", "nvmlDeviceGetRemappedRows", handle)
    if rows is None:
        return {}
    correctable, uncorrectable, pending, failure = rows
    return {
        "remapped_rows_correctable": int(correctable),
        "remapped_rows_uncorrectable": int(uncorrectable),
        "remapped_rows_pending": bool(pending),
        "remapped_rows_failure": bool(failure),
    }


GPU_READERS: tuple[Callable[[Reader, dict[str, str], Any], dict[str, Any]], ...] = (
    read_identity,
    read_thermal_and_power,
    read_utilization_and_memory,
    read_clock_events,
    read_ecc,
    read_retired_pages,
    read_remapped_rows,
)


def read_gpu(reader: Reader, index: int, xid_events: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One GPU's dict; a GPU whose handle fails is still listed, with the reason in `errors`."""
    gpu = empty_gpu(index)
    errors: dict[str, str] = gpu["errors"]
    handle = reader.query(errors, "handle", "nvmlDeviceGetHandleByIndex", index)
    if handle is not None:
        for read in GPU_READERS:
            gpu.update(read(reader, errors, handle))
    gpu["xid_events"] = xid_events
    return gpu


class XidWatcher:
    """Xid (critical error) events the driver raised since the last successful post.

    NVML queues events on a registered event set; draining it with a short wait at each snapshot
    catches every Xid in between. The event carries no time, so `at` is when the agent drained
    it (within one interval of the Xid). Events stay pending until a post succeeds, so a Vigil
    outage does not lose them; `xid_events` is None for a GPU that cannot report Xids.
    """

    def __init__(self, reader: Reader, now: Callable[[], datetime] = utc_now) -> None:
        self.reader = reader
        self.now = now
        self.event_set: Any = None
        self.watched: set[int] = set()
        self.index_by_uuid: dict[str, int] = {}
        self.pending: dict[int, list[dict[str, Any]]] = {}

    def start(self, device_count: int) -> None:
        errors: dict[str, str] = {}
        self.event_set = self.reader.query(errors, "event_set", "nvmlEventSetCreate")
        if self.event_set is None:
            log.info("Xid events unavailable: %s", errors.get("event_set", "not supported"))
            return
        for index in range(device_count):
            self._register(index)
        if not self.watched:
            self.close()

    def _register(self, index: int) -> None:
        errors: dict[str, str] = {}
        handle = self.reader.query(errors, "handle", "nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            return
        supported = self.reader.query(
            errors, "supported", "nvmlDeviceGetSupportedEventTypes", handle
        )
        if supported is not None and not supported & NVML_EVENT_TYPE_XID_CRITICAL_ERROR:
            log.info("GPU %d does not report Xid events", index)
            return
        if not self._register_xid_events(index, handle):
            return
        self.watched.add(index)
        self.pending.setdefault(index, [])
        uuid = text(self.reader.query(errors, "uuid", "nvmlDeviceGetUUID", handle), 96)
        if uuid:
            self.index_by_uuid[uuid] = index

    def _register_xid_events(self, index: int, handle: Any) -> bool:
        """Called directly, not through the guard: here success itself is the answer."""
        register = getattr(self.reader.nvml, "nvmlDeviceRegisterEvents", None)
        if register is None:
            return False
        try:
            register(handle, NVML_EVENT_TYPE_XID_CRITICAL_ERROR, self.event_set)
        except Exception as exc:
            log.info("GPU %d: Xid events not available: %s", index, exc)
            return False
        return True

    def drain(self, timeout_ms: int = 50, limit: int = 1024) -> None:
        """Move queued events into `pending`; stop at the first wait that times out."""
        if self.event_set is None:
            return
        wait = getattr(self.reader.nvml, "nvmlEventSetWait_v2", None) or getattr(
            self.reader.nvml, "nvmlEventSetWait", None
        )
        if wait is None:
            return
        for _ in range(limit):
            try:
                data = wait(self.event_set, timeout_ms)
            except self.reader.error_class as exc:
                if getattr(exc, "value", None) != NVML_ERROR_TIMEOUT:
                    log.warning("waiting for NVML events failed: %s", exc)
                return
            except Exception as exc:
                log.warning("waiting for NVML events failed unexpectedly: %r", exc)
                return
            self._record(data)

    def _record(self, data: Any) -> None:
        if not int(data.eventType) & NVML_EVENT_TYPE_XID_CRITICAL_ERROR:
            return
        index = self._index_of(data.device)
        if index is None:
            log.warning("Xid %d on a GPU the agent cannot identify", int(data.eventData))
            return
        events = self.pending.setdefault(index, [])
        events.append({"code": int(data.eventData), "at": rfc3339(self.now())})
        if len(events) > MAX_XID_EVENTS_PER_GPU:
            del events[: len(events) - MAX_XID_EVENTS_PER_GPU]  # keep the newest
        log.warning("GPU %d: Xid %d", index, int(data.eventData))

    def _index_of(self, device: Any) -> int | None:
        errors: dict[str, str] = {}
        index = self.reader.query(errors, "index", "nvmlDeviceGetIndex", device)
        if index is not None:
            return int(index)
        uuid = text(self.reader.query(errors, "uuid", "nvmlDeviceGetUUID", device), 96)
        return self.index_by_uuid.get(uuid or "")

    def collect(self) -> dict[int, list[dict[str, Any]]]:
        """Drain, then a copy of what is pending per watched GPU index."""
        self.drain()
        return {index: list(self.pending.get(index, [])) for index in self.watched}

    def acknowledge(self) -> None:
        """The snapshot carrying the pending events reached Vigil: forget them."""
        for events in self.pending.values():
            events.clear()

    def close(self) -> None:
        if self.event_set is not None:
            self.reader.query({}, "event_set", "nvmlEventSetFree", self.event_set)
        self.event_set = None
        self.watched.clear()


class NvmlSession:
    """nvmlInit … nvmlShutdown, with the Xid watcher that lives exactly as long."""

    def __init__(self, nvml: ModuleType, now: Callable[[], datetime] = utc_now) -> None:
        self.reader = Reader(nvml)
        self.now = now
        nvml.nvmlInit()  # raises when the driver is absent: the caller decides what that means
        count = self.device_count()
        self.watcher = XidWatcher(self.reader, now)
        self.watcher.start(min(count, MAX_GPUS))

    def device_count(self) -> int:
        errors: dict[str, str] = {}
        count = self.reader.query(errors, "count", "nvmlDeviceGetCount")
        if count is None:
            log.warning("cannot count GPUs: %s", errors.get("count", "not supported"))
            return 0
        return int(count)

    def close(self) -> None:
        self.watcher.close()
        self.reader.query({}, "shutdown", "nvmlShutdown")


def take_snapshot(session: NvmlSession, node: str) -> dict[str, Any]:
    """One node's GPUs, in the shape `POST /api/v1/gpu-snapshots` takes."""
    reader = session.reader
    xids = session.watcher.collect()
    taken_at = session.now()
    count = session.device_count()
    if count > MAX_GPUS:
        log.warning("%d GPUs on this node; the snapshot carries the first %d", count, MAX_GPUS)
    errors: dict[str, str] = {}
    return {
        "node": node,
        "taken_at": rfc3339(taken_at),
        "gpus": [read_gpu(reader, index, xids.get(index)) for index in range(min(count, MAX_GPUS))],
        "driver_version": text(reader.query(errors, "driver", "nvmlSystemGetDriverVersion"), 80),
        "cuda_version": cuda_version_text(
            reader.query(errors, "cuda", "nvmlSystemGetCudaDriverVersion")
        ),
        "agent_version": AGENT_VERSION,
    }


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 5xx, 429 and connection errors; other 4xx are final (a token or schema fault)."""

    attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    timeout_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Exponential with jitter, so a fleet of agents does not retry in step."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * random.uniform(
            0.5, 1.0
        )


@dataclass(frozen=True)
class PostOutcome:
    status: int | None
    retryable: bool
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post_once(url: str, token: str, body: bytes, timeout_s: float) -> PostOutcome:
    request = urllib.request.Request(  # noqa: S310 - Config allows only http(s) URLs
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return PostOutcome(
                response.status, False, response.read(2000).decode("utf-8", "replace")
            )
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode("utf-8", "replace")
        return PostOutcome(exc.code, exc.code >= 500 or exc.code == 429, detail)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        return PostOutcome(None, True, repr(getattr(exc, "reason", exc)))


def post_snapshot(
    url: str,
    token: str,
    snapshot: Mapping[str, Any],
    *,
    policy: RetryPolicy | None = None,
    wait: Callable[[float], bool] | None = None,
) -> bool:
    """POST with retries; True once Vigil stored it. `wait(seconds)` returns True to give up."""
    policy = policy or RetryPolicy()
    wait = wait or (lambda seconds: bool(time.sleep(seconds)))
    body = json.dumps(snapshot).encode()
    for attempt in range(1, policy.attempts + 1):
        outcome = post_once(url, token, body, policy.timeout_s)
        if outcome.ok:
            log.info("posted snapshot of %d GPUs: %s", len(snapshot["gpus"]), outcome.status)
            return True
        if not outcome.retryable:
            log.error("Vigil refused the snapshot (%s): %s", outcome.status, outcome.detail)
            return False
        if attempt == policy.attempts:
            break
        delay = policy.delay(attempt)
        log.warning(
            "posting failed (%s %s); retry %d in %.1fs",
            outcome.status or "no response",
            outcome.detail[:200],
            attempt,
            delay,
        )
        if wait(delay):
            return False
    log.error("giving up on this snapshot after %d attempts", policy.attempts)
    return False


@dataclass(frozen=True)
class Config:
    url: str | None
    token: str | None
    node: str
    interval_s: float = 30.0
    retry: RetryPolicy = RetryPolicy()

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, need_server: bool = True) -> Config:
        base = env.get("VIGIL_URL", "").strip()
        url = None
        if base:
            url = base.rstrip("/") + ENDPOINT_PATH
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"VIGIL_URL must be http(s)://…, not {base!r}")
        token = read_token(env)
        if need_server and not url:
            raise ConfigError("VIGIL_URL is not set")
        if need_server and not token:
            raise ConfigError("set VIGIL_AGENT_TOKEN or VIGIL_AGENT_TOKEN_FILE")
        return cls(
            url=url,
            token=token,
            node=env.get("NODE_NAME") or socket.gethostname(),
            interval_s=parse_interval(env.get("VIGIL_AGENT_INTERVAL", "30")),
        )


def read_token(env: Mapping[str, str]) -> str | None:
    """The token from the environment, else from a file (a mounted Secret)."""
    token = env.get("VIGIL_AGENT_TOKEN", "").strip()
    if token:
        return token
    path = env.get("VIGIL_AGENT_TOKEN_FILE", "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError as exc:
        raise ConfigError(f"cannot read VIGIL_AGENT_TOKEN_FILE: {exc}") from exc


def parse_interval(value: str) -> float:
    try:
        interval = float(value)
    except ValueError as exc:
        raise ConfigError(f"VIGIL_AGENT_INTERVAL must be seconds, not {value!r}") from exc
    if interval < 1:
        raise ConfigError("VIGIL_AGENT_INTERVAL must be at least 1 second")
    return interval


def load_pynvml() -> ModuleType:
    """Imported late so that `--help` and config errors work without the binding installed."""
    return importlib.import_module("pynvml")


def run_cycle(
    config: Config, session: NvmlSession, stop: threading.Event, *, dry_run: bool = False
) -> None:
    snapshot = take_snapshot(session, config.node)
    if dry_run:
        print(json.dumps(snapshot), flush=True)
        session.watcher.acknowledge()
        return
    assert config.url and config.token
    if post_snapshot(config.url, config.token, snapshot, policy=config.retry, wait=stop.wait):
        session.watcher.acknowledge()


def open_session(
    nvml: ModuleType, now: Callable[[], datetime], *, retry_in: float
) -> NvmlSession | None:
    """A session, or None with one line of log: a missing driver is a state, not a crash."""
    try:
        return NvmlSession(nvml, now)
    except Exception as exc:
        log.error("NVML could not start (%s); retrying in %.0fs", exc, retry_in)
        return None


def run(
    config: Config,
    stop: threading.Event,
    nvml: ModuleType,
    *,
    dry_run: bool = False,
    now: Callable[[], datetime] = utc_now,
) -> None:
    """Snapshot and post every interval until `stop` is set; no failure ends the loop.

    NVML that cannot start (driver not loaded yet, after an upgrade) is retried each interval.
    """
    session: NvmlSession | None = None
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                session = session or open_session(nvml, now, retry_in=config.interval_s)
                if session is not None:
                    run_cycle(config, session, stop, dry_run=dry_run)
            except Exception:
                log.exception("snapshot cycle failed; next try in %.0fs", config.interval_s)
            stop.wait(max(0.0, config.interval_s - (time.monotonic() - started)))
    finally:
        if session is not None:
            session.close()
        log.info("stopped")


def run_once(config: Config, nvml: ModuleType, *, post: bool) -> int:
    """Print one snapshot as JSON (stdout) and post it unless a dry run; 0 when all went well.

    The Xid watcher starts with this run, so only events raised during it can appear.
    """
    try:
        session = NvmlSession(nvml)
    except Exception as exc:
        log.error("NVML could not start: %s", exc)
        return 1
    try:
        snapshot = take_snapshot(session, config.node)
    finally:
        session.close()
    print(json.dumps(snapshot, indent=2), flush=True)
    if not post:
        return 0
    assert config.url and config.token
    return 0 if post_snapshot(config.url, config.token, snapshot, policy=config.retry) else 1


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM (the kubelet stopping the pod) and SIGINT end the loop after the current cycle."""

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agent.vigil_gpu_agent",
        description="Read NVML on this node and post GPU snapshots to Vigil.",
    )
    parser.add_argument("--once", action="store_true", help="one snapshot, printed as JSON")
    parser.add_argument("--dry-run", action="store_true", help="print snapshots, post nothing")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = Config.from_env(os.environ if env is None else env, need_server=not args.dry_run)
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2
    try:
        nvml = load_pynvml()
    except ImportError:
        log.error("pynvml is not installed: pip install nvidia-ml-py")
        return 2
    if args.once:
        return run_once(config, nvml, post=not args.dry_run)
    stop = threading.Event()
    install_signal_handlers(stop)
    log.info(
        "agent %s on node %s: every %.0fs to %s",
        AGENT_VERSION,
        config.node,
        config.interval_s,
        config.url or "stdout (dry run)",
    )
    run(config, stop, nvml, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
