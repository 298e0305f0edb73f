"""Benchmark 6: peak RSS of each gunicorn worker and each Celery worker child (target ≤ 250 MB).

Sampled from /proc/<pid>/status during benchmarks 1 and 3 (no dependency): VmHWM is the kernel's
own high-water mark of a process's resident set, so a short peak between samples still counts;
sampling only has to see each process once before it exits. RSS counts pages shared with the
parent after fork (copy-on-write), so it is an upper bound of what each process adds.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .common import descendants, proc_table, table, target

LIMIT_MB = 250.0


def _status_kib(pid: int) -> dict[str, int]:
    values = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


class PeakRSS:
    """Samples every process of the named trees; `peaks()` is per process, with its role."""

    def __init__(self, roots: dict[str, int], interval: float = 0.25) -> None:
        self.roots = roots
        self.interval = interval
        self.seen: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> PeakRSS:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        """Take a last sample (call before stopping the servers) and return the peaks."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        return self.peaks()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        procs = proc_table()
        for server, root in self.roots.items():
            for pid in descendants(root, procs):
                kib = _status_kib(pid)
                if not kib:
                    continue
                entry = self.seen.get(pid)
                if entry is None:
                    role = f"{server} master" if pid == root else f"{server} child"
                    entry = self.seen[pid] = {
                        "pid": pid,
                        "server": server,
                        "role": role,
                        "cmdline": _cmdline(pid),
                        "hwm_kib": 0,
                        "rss_kib": 0,
                    }
                entry["hwm_kib"] = max(entry["hwm_kib"], kib.get("VmHWM", 0))
                entry["rss_kib"] = max(entry["rss_kib"], kib.get("VmRSS", 0))

    def peaks(self) -> list[dict]:
        return [
            {**e, "peak_mb": round(e["hwm_kib"] / 1024, 1)}
            for e in sorted(self.seen.values(), key=lambda e: (e["server"], e["role"], e["pid"]))
        ]


def summarize(results: dict) -> dict:
    """Benchmark 6 from the peaks recorded by benchmarks 1 and 3 (whichever ran)."""
    processes = []
    for source in ("ingest", "analysis"):
        for entry in (results.get(source) or {}).get("memory", []):
            processes.append({**entry, "benchmark": source})
    measured = [p for p in processes if p["role"].endswith("child")]
    worst = max((p["peak_mb"] for p in measured), default=None)
    return {
        "processes": processes,
        "max_child_mb": worst,
        "limit_mb": LIMIT_MB,
        "sources": [s for s in ("ingest", "analysis") if results.get(s)],
    }


def report(result: dict) -> str:
    rows = [
        [p["benchmark"], p["role"], p["pid"], p["peak_mb"], round(p["rss_kib"] / 1024, 1)]
        for p in result["processes"]
    ]
    return table(
        ["during", "process", "pid", "peak RSS MB (VmHWM)", "max sampled RSS MB"],
        rows,
        title="6. Memory: peak RSS per process (target ≤ 250 MB per gunicorn worker / Celery child)",
    )


def targets(result: dict) -> list[dict]:
    worst = result["max_child_mb"]
    by_server: dict[str, float] = {}
    for p in result["processes"]:
        if p["role"].endswith("child"):
            by_server[p["server"]] = max(by_server.get(p["server"], 0.0), p["peak_mb"])
    out = [
        target(
            "6 memory",
            f"peak RSS, worst {server} process (MB)",
            mb,
            f"≤ {LIMIT_MB:.0f}",
            mb <= LIMIT_MB,
        )
        for server, mb in sorted(by_server.items())
    ]
    if not out:
        out.append(target("6 memory", "peak RSS (MB)", worst, f"≤ {LIMIT_MB:.0f}", None))
    return out
