"""A throwaway Prometheus that holds a scenario's metrics, for replays and tests.

A scenario describes its metrics relative to "now" (the last sample of a series lands at now).
Scraping a fake exporter could not produce an hour of history in seconds, so the replay writes
the samples with absolute timestamps as OpenMetrics, turns them into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics` and starts the real `prometheus` binary on that
data directory. Collectors then query it over the ordinary HTTP API, exactly as in production.

Pitfalls this module handles (reference §2.3):

- TSDB retention counts back from the NEWEST block, not the wall clock, so the server runs with
  `--storage.tsdb.retention.time=100y` and never drops a backfilled block.
- OpenMetrics timestamps are seconds (not milliseconds) and the file must end with `# EOF`;
  no `# TYPE` lines are written, because a `counter` family would demand `_total` names.
- Blocks cannot carry staleness markers: a series that goes `stale` simply has no samples from
  then on, and (as with a real scrape gap) instant queries still see its last sample for the
  5 minute lookback.
- Prometheus 2.42 allows overlapping blocks without a flag; none is passed.

Only the standard library is used, so the replay command needs no extra dependency.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from replay.notation import (
    NotationError,
    Stale,
    expand_values,
    parse_duration,
    parse_series_selector,
)

__all__ = [
    "BackfillError",
    "PrometheusReplayError",
    "ReplayPrometheus",
    "Series",
    "backfill",
    "prometheus_available",
    "sample_points",
    "write_openmetrics",
]

Point = tuple[float, float]
"""(unix seconds, value)."""

Series = tuple[str, dict[str, str], list[Point]]
"""(metric name, labels without __name__, points in ascending time)."""

DEFAULT_DURATION = "60m"
DEFAULT_INTERVAL = "1m"
EVALUATION_INTERVAL = "15s"
MAX_BLOCK_DURATION = "24h"

_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class PrometheusReplayError(RuntimeError):
    """The replay Prometheus could not be prepared or started; the message says why."""


class BackfillError(PrometheusReplayError):
    """`promtool tsdb create-blocks-from openmetrics` failed; the message carries its output."""


def prometheus_available() -> bool:
    """Whether both `prometheus` and `promtool` are on PATH.

    Callers check this first so that a machine without them can still replay the rest of a
    scenario (alerts, Kubernetes) and report that metrics were left out, instead of failing.
    """
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def sample_points(
    values: Sequence[float | None | Stale], *, interval: float, now: float
) -> list[Point]:
    """Timestamps for expanded values: the LAST slot lands at `now`, each earlier one
    `interval` seconds before it.

    Anchoring at the end (rather than at t=0 as promtool unit tests do) is what makes a
    scenario mean "the incident is happening now" on any day it is replayed. `None` leaves its
    slot empty (a missed scrape). `STALE` ends the series: nothing is written at or after it,
    because backfilled blocks cannot hold staleness markers.
    """
    if not interval > 0:
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
    last = len(values) - 1
    points: list[Point] = []
    for slot, value in enumerate(values):
        if isinstance(value, Stale):
            break
        if value is not None:
            points.append((now - (last - slot) * interval, float(value)))
    return points


def _escape_label_value(value: str) -> str:
    # OpenMetrics and PromQL share these three escapes; everything else is literal UTF-8.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    value = float(value)  # callers may pass ints, which have no is_integer() before Python 3.12
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # counters read as 1520344, not 1520344.0
    return repr(value)


def _format_timestamp(seconds: float) -> str:
    # The TSDB keeps milliseconds. Round DOWN to one, so a sample laid at a fractional `now`
    # (datetime.timestamp()) is never stored after now and an instant query at now sees it;
    # the 1e-3 ms allowance keeps 0.123 from becoming 0.122 through binary float noise.
    millis = math.floor(seconds * 1000 + 1e-3)
    sign = "-" if millis < 0 else ""
    whole, fraction = divmod(abs(millis), 1000)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:03d}".rstrip("0")


def _selector(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    pairs = ",".join(f'{key}="{_escape_label_value(value)}"' for key, value in labels.items())
    return f"{name}{{{pairs}}}"


def write_openmetrics(series: Iterable[Series], path: str | Path) -> Path:
    """Write `series` as an OpenMetrics text file that promtool can backfill; return its path.

    One line per sample, `name{labels} value timestamp` with the timestamp in seconds, series of
    one metric name kept together, each series' samples in ascending time, and the mandatory
    `# EOF` last. Series without points are left out. No `# TYPE` lines: every family is then
    `unknown`, which accepts any name (a `counter` TYPE would require `_total` samples).

    Raises ValueError for an invalid metric or label name, a series given twice, or points not
    in strictly ascending time: promtool would otherwise fail with a less helpful message.
    """
    path = Path(path)
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    lines: list[str] = []
    # sorted() is stable: series keep their given order within a metric name.
    for name, labels, points in sorted(series, key=lambda item: item[0]):
        if not _METRIC_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if label == "__name__" or not _LABEL_NAME_RE.fullmatch(label):
                raise ValueError(f"invalid label name {label!r} in series {name}")
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ValueError(f"series {_selector(name, labels)} is given twice")
        seen.add(key)
        selector = _selector(name, labels)
        previous = -math.inf
        for timestamp, value in points:
            if not timestamp > previous:
                raise ValueError(f"series {selector}: timestamps must be strictly ascending")
            previous = timestamp
            lines.append(f"{selector} {_format_value(value)} {_format_timestamp(timestamp)}\n")
    lines.append("# EOF\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def backfill(openmetrics_path: str | Path, data_dir: str | Path) -> None:
    """Turn an OpenMetrics file into TSDB blocks under `data_dir` with promtool.

    `--max-block-duration=24h` makes one block per day touched instead of one per 2 hours,
    so Prometheus opens fewer blocks at start. Raises BackfillError with promtool's output
    when it fails, and PrometheusReplayError when promtool is not installed.
    """
    command = [
        "promtool",
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        f"--max-block-duration={MAX_BLOCK_DURATION}",
        "--quiet",
        str(openmetrics_path),
        str(data_dir),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise PrometheusReplayError(
            "promtool is not installed (Debian package prometheus)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise BackfillError(f"promtool backfill of {openmetrics_path} took over 120s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise BackfillError(
            f"promtool tsdb create-blocks-from openmetrics {openmetrics_path} failed "
            f"(exit {result.returncode}):\n{output[-4000:]}"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReplayPrometheus:
    """A real Prometheus on loopback, preloaded with backfilled series and the scenario's rules.

    Use as a context manager (or call `start()` / `stop()`):

        with ReplayPrometheus.from_scenario_metrics(scenario["metrics"], now=now) as prom:
            collect(prometheus_url=prom.url)

    `start()` returns once an instant query for the series with the newest sample returns that
    sample's value, i.e. the blocks are loaded and queryable (about 0.2 s for an hour of a
    scenario's metrics).
    Everything it writes lives in `workdir`: `metrics.om`, `data/`, `rules.yml`,
    `prometheus.yml` and `prometheus.log`. Without a `workdir` a temporary directory is used and
    removed by `stop()`; a given `workdir` is kept for inspection, but its `data/` is replaced
    at every start so that no block from an earlier replay leaks in.
    """

    START_TIMEOUT = 30.0
    """Seconds to wait for readiness; a healthy start takes a fraction of one."""

    PORT_ATTEMPTS = 5
    """Ports tried when another process grabs the chosen free port before Prometheus binds it."""

    def __init__(
        self,
        series: Sequence[Series],
        rules: dict[str, Any] | None = None,
        *,
        now: float | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.series = list(series)
        self.rules = rules
        # Whole seconds: promtool keeps milliseconds, and integral times are exact in both.
        self.now = float(math.floor(time.time())) if now is None else float(now)
        self._workdir = Path(workdir) if workdir is not None else None
        self._owns_workdir = False
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @classmethod
    def from_scenario_metrics(
        cls,
        metrics: Sequence[dict[str, Any]] | None,
        *,
        duration: str | None = DEFAULT_DURATION,
        interval: str | None = DEFAULT_INTERVAL,
        rules: dict[str, Any] | None = None,
        now: float | None = None,
        workdir: Path | None = None,
    ) -> ReplayPrometheus:
        """Build a replay from a scenario's raw `metrics` list (SCENARIO_FORMAT.md).

        Each item's `series` is parsed as a selector and its `values` expanded; its own
        `interval` overrides the scenario's. A series whose slots reach further back than
        `duration` is refused, as the scenario validator does. Raises NotationError naming
        the item (`metrics[3] ...`) for anything malformed.
        """
        now = float(math.floor(time.time())) if now is None else float(now)
        history = parse_duration(duration or DEFAULT_DURATION)
        default_step = parse_duration(interval or DEFAULT_INTERVAL)
        if default_step <= 0:
            raise NotationError(f"interval must be positive, not {interval!r}")
        series: list[Series] = []
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for index, item in enumerate(metrics or []):
            where = f"metrics[{index}]"
            if not isinstance(item, dict) or "series" not in item or "values" not in item:
                raise NotationError(f"{where}: each item needs `series` and `values`")
            try:
                name, labels = parse_series_selector(str(item["series"]))
                where = f"{where} {name}"
                step = parse_duration(item["interval"]) if "interval" in item else default_step
                if step <= 0:
                    raise NotationError(f"interval must be positive, not {item['interval']!r}")
                values = expand_values(str(item["values"]))
            except NotationError as exc:
                raise NotationError(f"{where}: {exc}") from exc
            if len(values) * step > history:
                raise NotationError(
                    f"{where}: {len(values)} samples x {step:g}s reach further back than the "
                    f"duration of {history:g}s"
                )
            key = (name, tuple(sorted(labels.items())))
            if key in seen:
                raise NotationError(f"{where}: same series as metrics[{seen[key]}]")
            seen[key] = index
            series.append((name, labels, sample_points(values, interval=step, now=now)))
        return cls(series, rules, now=now, workdir=workdir)

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. `http://127.0.0.1:41234` (no trailing slash)."""
        if self._port is None:
            raise PrometheusReplayError("the replay Prometheus is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def workdir(self) -> Path:
        """The directory holding the OpenMetrics file, data, config and log."""
        if self._dir is None:
            raise PrometheusReplayError("the replay Prometheus is not started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Prometheus' own log, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, PrometheusReplayError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> ReplayPrometheus:
        """Backfill, configure and start Prometheus; return self once it answers queries.

        Raises BackfillError when promtool refuses the data and PrometheusReplayError when the
        server exits or is not ready within START_TIMEOUT (with the tail of its log). Whatever
        happens, a failed start leaves no process behind.
        """
        if self._process is not None:
            raise PrometheusReplayError("the replay Prometheus is already started")
        try:
            self._prepare()
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the server (kill it if it ignores SIGTERM) and remove a temporary workdir.

        Safe to call more than once and after a failed start.
        """
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
        self._port = None
        if self._owns_workdir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._owns_workdir = False

    def __enter__(self) -> ReplayPrometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Write the OpenMetrics file, backfill it into a fresh data dir, write config and rules."""
        if self._workdir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vigil-prometheus-"))
            self._owns_workdir = True
        else:
            self._dir = self._workdir
            self._dir.mkdir(parents=True, exist_ok=True)
        data = self._dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        openmetrics = write_openmetrics(self.series, self._dir / "metrics.om")
        if any(points for _, _, points in self.series):
            backfill(openmetrics, data)

        # YAML is a superset of JSON, so json.dumps writes valid Prometheus config and rule
        # files without a YAML library.
        config: dict[str, Any] = {
            "global": {"evaluation_interval": EVALUATION_INTERVAL},
            "scrape_configs": [],
        }
        if self.rules:
            rules_path = self._dir / "rules.yml"
            rules_path.write_text(json.dumps(self.rules, indent=2), encoding="utf-8")
            config["rule_files"] = [str(rules_path)]
        (self._dir / "prometheus.yml").write_text(json.dumps(config, indent=2), encoding="utf-8")

    def _launch(self) -> None:
        """Start the server on a free loopback port, trying another if that one gets taken."""
        assert self._dir is not None
        for _attempt in range(self.PORT_ATTEMPTS):
            port = _free_port()
            with open(self.log_path, "wb") as log:
                self._process = subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={self._dir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={self._dir / 'data'}",
                        "--storage.tsdb.retention.time=100y",
                        f"--web.listen-address=127.0.0.1:{port}",
                        # generatorURLs and links then point at this server, not at the hostname.
                        f"--web.external-url=http://127.0.0.1:{port}/",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                )
            self._port = port
            if self._wait_until_ready():
                return
            if "address already in use" not in self.log_tail():
                raise PrometheusReplayError(
                    f"prometheus exited with status {self._process.returncode} during start:\n"
                    f"{self.log_tail()}"
                )
            self._process = None
            self._port = None
        raise PrometheusReplayError(
            f"prometheus found no free port in {self.PORT_ATTEMPTS} attempts:\n{self.log_tail()}"
        )

    def _readiness_probe(self) -> tuple[str, float, float] | None:
        """(selector, time, value) of the newest sample of all series, or None without samples.

        Querying at that sample's own time works whatever `now` is, even when every series
        ended more than the 5 minute lookback before it.
        """
        newest: tuple[str, float, float] | None = None
        for name, labels, points in self.series:
            if points and (newest is None or points[-1][0] > newest[1]):
                newest = (_selector(name, labels), points[-1][0], points[-1][1])
        return newest

    def _wait_until_ready(self) -> bool:
        """True once queryable; False if the process exited; raise on timeout."""
        assert self._process is not None
        probe = self._readiness_probe()
        if probe is None:
            query = {"query": "vector(1)"}
        else:
            query = {"query": probe[0], "time": _format_timestamp(probe[1])}
        endpoint = f"{self.url}/api/v1/query?{urllib.parse.urlencode(query)}"
        deadline = time.monotonic() + self.START_TIMEOUT
        last_answer = "no answer yet"
        while True:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(endpoint, timeout=2) as response:  # noqa: S310
                    body = json.load(response)
                result = body["data"]["result"]
                if probe is None or (result and _same_value(result[0]["value"][1], probe[2])):
                    return True
                last_answer = f"query {probe[0]} at {probe[1]} returned {result}"
            except urllib.error.HTTPError as exc:  # 503 until the TSDB is open
                last_answer = f"HTTP {exc.code}"
            except (OSError, ValueError, KeyError) as exc:  # refused, reset, or half-written
                last_answer = repr(exc)
            if time.monotonic() > deadline:
                raise PrometheusReplayError(
                    f"prometheus was not ready after {self.START_TIMEOUT:g}s ({last_answer}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)


def _same_value(answer: str, expected: float) -> bool:
    got = float(answer)
    return (math.isnan(got) and math.isnan(expected)) or got == expected


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
