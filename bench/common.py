"""Shared by the runner and the benchmark children: configuration, statistics, tables, the machine.

Nothing here imports Django: the runner never configures it (each child does, for its own
database).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# The numbers; BENCH_SCALE multiplies the sizes and durations (never the concurrency).
CONCURRENCY = 16
INGEST_SECONDS = 15.0
STORM_ALERTS = 20_000
STORM_GROUPS = 200
STORM_SECONDS = 60.0
PAGES_INCIDENTS = 10_000
PAGES_ALERTS = 500_000
PAGES_EVENTS = 200_000
PAGES_TARGET_ALERTS = 500


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass
class Config:
    """Everything a child needs; the runner writes it as JSON beside the child's result."""

    run_id: str
    scale: float
    workdir: str  # this run's scratch folder (logs, static files, wrk bodies)
    pg_url: str  # the server, without a database: postgres://postgres@127.0.0.1:5432
    redis_url: str  # the server, without a database number: redis://127.0.0.1:6379
    redis_db: int
    queue: str
    gunicorn_workers: int
    gunicorn_class: str
    gunicorn_threads: int
    celery_concurrency: int
    client: str  # wrk | asyncio
    wrk_threads: int
    scenarios: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls(**json.loads(Path(path).read_text()))

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    def scaled(self, value: float, minimum: float) -> float:
        return max(minimum, value * self.scale)

    def database_url(self, name: str) -> str:
        return f"{self.pg_url.rstrip('/')}/{name}"

    def broker_url(self) -> str:
        return f"{self.redis_url.rstrip('/')}/{self.redis_db}"


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: list[float]) -> dict:
    """Milliseconds: p50/p95/p99/max/mean of latencies given in seconds."""
    if not seconds:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p95": round(percentile(ms, 95), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
        "mean": round(sum(ms) / len(ms), 2),
    }


# -- tables -------------------------------------------------------------------------------------


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 10:
            return f"{value:.2f}"
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list], title: str = "") -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and i > 0
        for i in range(len(headers))
    ]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if numeric[i] else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def target(benchmark: str, figure: str, value, goal: str, met: bool | None) -> dict:
    """One line of the summary: what was measured, against what, and whether it was met."""
    return {"benchmark": benchmark, "figure": figure, "value": value, "target": goal, "met": met}


# -- the machine --------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def loadavg() -> list[float]:
    return [float(x) for x in _read("/proc/loadavg").split()[:3]] or [0.0, 0.0, 0.0]


def machine_info(pg_version: str = "", redis_version: str = "") -> dict:
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = _read("/proc/meminfo")
    total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    versions = {}
    for package in ("django", "gunicorn", "celery", "psycopg"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:
            versions[package] = ""
    wrk = ""
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        wrk = wrk.splitlines()[0].split(" Copyright")[0] if wrk else ""
    except OSError:
        pass
    status = _git("status", "--porcelain")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(total.group(1)) / 1024 / 1024, 1) if total else None,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "wrk": wrk,
        "packages": versions,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status),
        "loadavg_start": loadavg(),
    }


# -- CPU accounting by component (who used the two cores during a measurement) -------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, cpu seconds) for every process we can read."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        row = proc_table_entry(pid)
        if row is not None:
            out[pid] = row
    return out


def process_cpu_seconds(pid: int) -> float | None:
    """One process's CPU seconds so far (user + system), None when it cannot be read here."""
    entry = proc_table_entry(pid)
    return None if entry is None else entry[2]


def proc_table_entry(pid: int) -> tuple[int, str, float] | None:
    """(ppid, comm, cpu seconds) of one process, None when /proc does not show it."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    close = raw.rfind(")")
    fields = raw[close + 2 :].split()
    try:
        return (
            int(fields[1]),
            raw[raw.find("(") + 1 : close],
            (int(fields[11]) + int(fields[12])) / CLK_TCK,
        )
    except (IndexError, ValueError):
        return None


def descendants(root: int, procs: dict[int, tuple[int, str, float]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _cpu_ticks() -> list[int]:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal (guest ...)."""
    values = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:]]
    return values + [0] * (8 - len(values))


def machine_cpu_seconds(ticks: list[int] | None = None) -> float:
    """All CPU time the machine spent (every process, ours or not) since boot, busy only, from
    `ticks` (_cpu_ticks) or read now.

    Stolen time is not in it: that is the hypervisor running another guest while this VM's
    vCPU waited (stolen_cpu_seconds), time nothing here spent."""
    user, nice, system, _idle, _iowait, irq, softirq, _steal = (ticks or _cpu_ticks())[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK


def stolen_cpu_seconds(ticks: list[int] | None = None) -> float:
    """CPU time the hypervisor took from this VM since boot, from `ticks` or read now. On the
    shared 2-core VMs the benchmarks ran on, up to 10% of a loaded machine's time over some 15 s
    spans, none in others: the same code's figures move with it."""
    return (ticks or _cpu_ticks())[7] / CLK_TCK


def stolen_share(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """The share of the machine's time stolen between two `cpu_clock()` readings."""
    wall = (after[1] - before[1]) * (os.cpu_count() or 1)
    return round((after[0] - before[0]) / wall, 3) if wall > 0 else None


def cpu_clock() -> tuple[float, float]:
    """(stolen CPU seconds, monotonic seconds) now, for stolen_share."""
    return stolen_cpu_seconds(), time.monotonic()


def cpu_snapshot(roots: dict[str, int]) -> dict[str, dict[int, float]]:
    """CPU seconds used so far, per process, by each named tree, by PostgreSQL and by Redis.

    PostgreSQL and Redis are found by process name, so other users of the same servers on this
    machine count too; `machine` is every process's time (ours or not), so comparing it with the
    rest shows outside load; `stolen` is the time the hypervisor gave other guests meanwhile.
    """
    procs = proc_table()
    snap = {name: {p: procs[p][2] for p in descendants(pid, procs)} for name, pid in roots.items()}
    snap["postgres"] = {p: c for p, (_, comm, c) in procs.items() if comm.startswith("postgres")}
    snap["redis"] = {p: c for p, (_, comm, c) in procs.items() if comm.startswith("redis")}
    ticks = _cpu_ticks()  # one reading for both, so that they add up to the same instant
    snap["machine"] = {0: machine_cpu_seconds(ticks)}
    snap["stolen"] = {0: stolen_cpu_seconds(ticks)}
    return snap


def merge_snapshots(earlier: dict, later: dict) -> dict[str, dict[int, float]]:
    """Per group, each process's latest CPU seconds in either snapshot: a process that has
    exited by `later` keeps what `earlier` last saw of it."""
    merged = {group: dict(procs) for group, procs in earlier.items()}
    for group, procs in later.items():
        merged.setdefault(group, {}).update(procs)
    return merged


class CpuTally:
    """CPU seconds per group over a measured span, sampled every `interval` seconds meanwhile.

    Two snapshots alone (before and after) lose every process that exits in between: a
    PostgreSQL backend whose connection reached its CONN_MAX_AGE during a 15 s case took its
    CPU with it, a third of PostgreSQL's in one run of ingest (a) (2026-12-07). Sampled, such
    a process loses at most its last interval's.
    """

    def __init__(self, roots: dict[str, int], interval: float = 0.25) -> None:
        self.roots = roots
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self.before: dict = {}
        self.seen: dict = {}

    def __enter__(self) -> CpuTally:
        self.before = cpu_snapshot(self.roots)
        self.seen = merge_snapshots({}, self.before)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.seen = merge_snapshots(self.seen, cpu_snapshot(self.roots))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.seen = merge_snapshots(self.seen, cpu_snapshot(self.roots))

    def seconds(self) -> dict[str, float]:
        """cpu_delta over the span, exited processes included (up to their last sample)."""
        return cpu_delta(self.before, self.seen)


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    """Per group, the CPU seconds its processes used in between.

    A process that exited in between is not counted at all (its time since `before` is lost with
    it); one that started in between counts in full. So a figure can be low, never negative.
    """
    out = {}
    for group, procs in after.items():
        earlier = before.get(group, {})
        out[group] = round(sum(max(0.0, c - earlier.get(p, 0.0)) for p, c in procs.items()), 2)
    return out
