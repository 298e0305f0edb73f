"""Load generators on loopback: wrk with a Lua script (preferred), or an asyncio client.

Both send the same bodies: a template whose `@ID@` becomes an id unique to the run and `@GRP@`
the request counter modulo the number of groups, or a list of prepared bodies cycled through.
Both report requests/s, latency percentiles, errors by kind, the hook's own count of alerts
created/updated in 2xx answers, and the CPU time the generator itself used.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .common import ROOT, latency_summary

LUA = ROOT / "bench" / "wrk_bodies.lua"
HTTPS_PROXY_HEADER = ("X-Forwarded-Proto", "https")


@dataclass
class Bodies:
    mode: str  # "template" or "list"
    template: str = ""
    items: list[str] = field(default_factory=list)
    groups: int = 1
    alerts_per_body: int = 1

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.mode == "list":
            path.write_text("\n".join(self.items) + "\n")
        else:
            path.write_text(self.template)
        return path

    def body(self, worker: int, counter: int, workers: int = 1) -> bytes:
        if self.mode == "list":
            offset = worker * len(self.items) // max(workers, 1)
            return self.items[(offset + counter) % len(self.items)].encode()
        # Same shape as the Lua ids; the high worker numbers keep them apart from wrk threads'.
        ident = f"{0x80 + worker:02x}{counter:08x}"
        # Each sender from its own offset, as in the Lua: Alertmanager sends a group's
        # notifications one after the other, never several of one group at once.
        group = (counter + worker * self.groups // max(workers, 1)) % self.groups
        return self.template.replace("@ID@", ident).replace("@GRP@", str(group)).encode()


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def choose_client(requested: str) -> str:
    if requested == "wrk" and not wrk_available():
        raise RuntimeError("BENCH_CLIENT=wrk but wrk is not installed (apt-get install wrk)")
    if requested in ("wrk", "asyncio"):
        return requested
    return "wrk" if wrk_available() else "asyncio"


def run_load(
    client: str,
    url: str,
    bodies: Bodies,
    *,
    seconds: float,
    concurrency: int,
    auth: str | None,
    workdir: Path,
    label: str,
    wrk_threads: int = 1,
) -> dict:
    if client == "wrk":
        result = _run_wrk(url, bodies, seconds, concurrency, auth, workdir, label, wrk_threads)
    else:
        result = asyncio.run(_run_async(url, bodies, seconds, concurrency, auth))
    result["client"] = client
    result["concurrency"] = concurrency
    result["alerts_per_request"] = bodies.alerts_per_body
    duration = result["duration_s"] or 1e-9
    result["rps"] = round(result["ok2xx"] / duration, 1)
    result["alerts_per_s"] = round(result["ok2xx"] * bodies.alerts_per_body / duration, 1)
    result["error_count"] = sum(result["errors"].values())
    return result


def _run_wrk(
    url: str,
    bodies: Bodies,
    seconds: float,
    concurrency: int,
    auth: str | None,
    workdir: Path,
    label: str,
    threads: int,
) -> dict:
    body_file = bodies.write(workdir / f"bodies-{label}.txt")
    threads = max(1, min(threads, concurrency))
    argv = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        bodies.mode,
        str(body_file),
        str(bodies.groups),
        str(threads),
        auth or "-",
    ]
    process = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # wait4 gives the generator's own CPU time (user + system), as the issue asks.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {process.returncode}):\n{out}\n{err}")
    raw = json.loads(line.removeprefix("BENCHJSON "))
    lat = raw["latency_us"]
    return {
        "requests": raw["requests"],
        "ok2xx": raw["ok2xx"],
        "statuses": raw["statuses"],
        "errors": {
            "non_2xx": sum(n for code, n in raw["statuses"].items() if not code.startswith("2")),
            "connect": raw["errors"]["connect"],
            "read": raw["errors"]["read"],
            "write": raw["errors"]["write"],
            "timeout": raw["errors"]["timeout"],
        },
        "duration_s": round(raw["duration_us"] / 1e6, 3),
        "latency_ms": {
            "n": raw["requests"],
            "p50": lat["p50"] / 1000,
            "p95": lat["p95"] / 1000,
            "p99": lat["p99"] / 1000,
            "max": lat["max"] / 1000,
            "mean": round(lat["mean"] / 1000, 2),
        },
        "alerts_created": raw["alerts_created"],
        "alerts_updated": raw["alerts_updated"],
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wrk_threads": threads,
    }


# -- asyncio client -----------------------------------------------------------------------------


class HttpAnswer:
    __slots__ = ("status", "body", "close")

    def __init__(self, status: int, body: bytes, close: bool) -> None:
        self.status = status
        self.body = body
        self.close = close


class Connection:
    """One HTTP/1.1 connection to loopback; reconnects when the server closes (sync workers do
    after every answer, threaded ones after their keep-alive timeout)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict | None = None
    ) -> HttpAnswer:
        reused = self.writer is not None
        try:
            return await self._request(method, path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            # A kept-alive connection the server closed while idle (gunicorn's threaded workers
            # do after their keep-alive timeout) fails before any answer: send again, once, on
            # a new connection. Anything else, or a fresh connection failing, is an error.
            partial = getattr(exc, "partial", b"")
            if not reused or partial:
                raise
            self.close()
            return await self._request(method, path, body, headers)

    async def _request(
        self, method: str, path: str, body: bytes, headers: dict | None
    ) -> HttpAnswer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        length, close = 0, False
        for line in header_lines:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "content-length":
                length = int(value.strip())
            elif key == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return HttpAnswer(status, payload, close)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


async def _run_async(
    url: str, bodies: Bodies, seconds: float, concurrency: int, auth: str | None
) -> dict:
    host, port, path = split_url(url)
    headers = {"Content-Type": "application/json", HTTPS_PROXY_HEADER[0]: HTTPS_PROXY_HEADER[1]}
    if auth:
        headers["Authorization"] = auth
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = {"non_2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    totals = {"ok2xx": 0, "created": 0, "updated": 0}
    cpu0 = time.process_time()
    started = time.monotonic()
    deadline = started + seconds

    async def worker(index: int) -> None:
        conn = Connection(host, port)
        counter = 0
        while time.monotonic() < deadline:
            counter += 1
            body = bodies.body(index, counter, concurrency)
            t0 = time.perf_counter()
            try:
                answer = await asyncio.wait_for(
                    conn.request("POST", path, body, headers), timeout=10
                )
            except TimeoutError:
                errors["timeout"] += 1
                conn.close()
                continue
            except (ConnectionError, OSError):
                errors["connect" if conn.writer is None else "read"] += 1
                conn.close()
                continue
            except asyncio.IncompleteReadError:
                errors["read"] += 1
                conn.close()
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
            if 200 <= answer.status < 300:
                totals["ok2xx"] += 1
                try:
                    data = json.loads(answer.body)
                except ValueError:
                    data = {}
                totals["created"] += int(data.get("alerts_created", 0) or 0)
                totals["updated"] += int(data.get("alerts_updated", 0) or 0)
            else:
                errors["non_2xx"] += 1
        conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    duration = time.monotonic() - started
    return {
        "requests": len(latencies),
        "ok2xx": totals["ok2xx"],
        "statuses": statuses,
        "errors": errors,
        "duration_s": round(duration, 3),
        "latency_ms": latency_summary(latencies),
        "alerts_created": totals["created"],
        "alerts_updated": totals["updated"],
        "client_cpu_s": round(time.process_time() - cpu0, 2),
    }


async def post_all(
    url: str, bodies: list[bytes], *, concurrency: int, auth: str | None
) -> dict[str, int]:
    """Send each body once (seeding, not measured); the status counts."""
    host, port, path = split_url(url)
    headers = {"Content-Type": "application/json", HTTPS_PROXY_HEADER[0]: HTTPS_PROXY_HEADER[1]}
    if auth:
        headers["Authorization"] = auth
    queue = list(enumerate(bodies))
    statuses: dict[str, int] = {}

    async def worker() -> None:
        conn = Connection(host, port)
        while queue:
            _, body = queue.pop()
            try:
                answer = await conn.request("POST", path, body, headers)
                key = str(answer.status)
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn.close()
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses
