"""The NVML agent against a fake pynvml: what it reads, how it posts, how it stops.

No GPU is needed: tests/agent/fake_pynvml.py stands in for the binding (same names, same error
type), injected as `pynvml` through sys.modules. The last test posts into the live Django server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent import vigil_gpu_agent as agent
from tests.agent import fake_pynvml
from tests.agent.fake_pynvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    FakeGpu,
)
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
GIB = 2**30
FAST = agent.RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.01, timeout_s=2)


def two_gpus() -> list[FakeGpu]:
    """GPU 0: hot, power-capped, a pending row remap. GPU 1: no ECC, no row remapper."""
    return [
        FakeGpu(
            name="NVIDIA H100 80GB HBM3",
            uuid="GPU-0a0a0a0a-1111-2222-3333-444444444444",
            temperature_c=87,
            power_mw=698_500,
            power_limit_mw=700_000,
            utilization=(100, 61),
            memory=(70 * GIB, 80 * GIB),
            clocks_event_reasons=0x4 | 0x20,
            ecc=(0, 12),
            retired_pages=([], []),
            remapped_rows=(2, 1, 1, 0),
            fail={
                "nvmlDeviceGetRetiredPages": NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetRetiredPagesPendingStatus": NVML_ERROR_NOT_SUPPORTED,
            },
        ),
        FakeGpu(
            name="NVIDIA H100 80GB HBM3",
            uuid="GPU-1b1b1b1b-1111-2222-3333-444444444444",
            temperature_c=41,
            power_mw=71_250,
            power_limit_mw=700_000,
            utilization=(0, 0),
            memory=(512 * 2**20, 80 * GIB),
            clocks_event_reasons=0x1,
            fail={
                "nvmlDeviceGetTotalEccErrors": NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetRemappedRows": NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetRetiredPages": NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetRetiredPagesPendingStatus": NVML_ERROR_NOT_SUPPORTED,
            },
        ),
    ]


@pytest.fixture
def nvml(monkeypatch):
    """The fake binding, as `pynvml`, with two GPUs."""
    fake_pynvml.configure(two_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml)
    return fake_pynvml


def open_session(nvml) -> agent.NvmlSession:
    return agent.NvmlSession(nvml, now=lambda: NOW)


# --- what the agent reads ---------------------------------------------------------------------


def test_the_snapshot_holds_exactly_what_nvml_reported(nvml):
    session = open_session(nvml)
    nvml.raise_xid(1, 79)  # GPU 1 falls off the bus after the agent started watching
    snapshot = agent.take_snapshot(session, "gpu-node-1")
    session.close()

    assert snapshot == {
        "node": "gpu-node-1",
        "taken_at": "2026-11-23T10:00:00Z",
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "agent_version": agent.AGENT_VERSION,
        "gpus": [
            {
                "index": 0,
                "uuid": "GPU-0a0a0a0a-1111-2222-3333-444444444444",
                "name": "NVIDIA H100 80GB HBM3",
                "temperature_c": 87,
                "power_w": 698.5,
                "power_limit_w": 700.0,
                "utilization_pct": 100,
                "memory_utilization_pct": 61,
                "memory_used_bytes": 70 * GIB,
                "memory_total_bytes": 80 * GIB,
                "clocks_event_reasons": ["SwPowerCap", "SwThermalSlowdown"],
                "clocks_event_reasons_mask": 0x24,
                "ecc_volatile_double_bit": 0,
                "ecc_volatile_single_bit": 12,
                "retired_pages_single_bit": None,
                "retired_pages_double_bit": None,
                "retired_pages_pending": None,
                "remapped_rows_correctable": 2,
                "remapped_rows_uncorrectable": 1,
                "remapped_rows_pending": True,
                "remapped_rows_failure": False,
                "xid_events": [],
                "errors": {},
            },
            {
                "index": 1,
                "uuid": "GPU-1b1b1b1b-1111-2222-3333-444444444444",
                "name": "NVIDIA H100 80GB HBM3",
                "temperature_c": 41,
                "power_w": 71.25,
                "power_limit_w": 700.0,
                "utilization_pct": 0,
                "memory_utilization_pct": 0,
                "memory_used_bytes": 512 * 2**20,
                "memory_total_bytes": 80 * GIB,
                "clocks_event_reasons": ["GpuIdle"],
                "clocks_event_reasons_mask": 0x1,
                "ecc_volatile_double_bit": None,
                "ecc_volatile_single_bit": None,
                "retired_pages_single_bit": None,
                "retired_pages_double_bit": None,
                "retired_pages_pending": None,
                "remapped_rows_correctable": None,
                "remapped_rows_uncorrectable": None,
                "remapped_rows_pending": None,
                "remapped_rows_failure": None,
                "xid_events": [{"code": 79, "at": "2026-11-23T10:00:00Z"}],
                "errors": {},
            },
        ],
    }
    assert json.loads(json.dumps(snapshot)) == snapshot  # plain JSON, nothing NVML-typed
    assert nvml.calls[0] == "nvmlInit" and nvml.calls[-1] == "nvmlShutdown"
    assert nvml.open_event_sets() == 0


def test_unsupported_queries_are_none_other_failures_are_reported(nvml):
    gpus = two_gpus()
    gpus[0].fail = {
        "nvmlDeviceGetTemperature": NVML_ERROR_GPU_IS_LOST,
        "nvmlDeviceGetTemperatureV": NVML_ERROR_GPU_IS_LOST,
        "nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetRemappedRows": NVML_ERROR_NO_PERMISSION,
    }
    gpus[1].fail = {"nvmlDeviceGetHandleByIndex": NVML_ERROR_GPU_IS_LOST}
    nvml.configure(gpus)
    session = open_session(nvml)
    first, second = agent.take_snapshot(session, "n")["gpus"]
    session.close()

    assert (first["temperature_c"], first["power_w"], first["remapped_rows_pending"]) == (
        None,
        None,
        None,
    )
    assert first["errors"] == {
        "temperature_c": "GPU is lost",
        "remapped_rows": "Insufficient Permissions",
    }
    assert first["power_limit_w"] == 700.0  # the neighbours of a failed query are still read
    # A GPU without a handle is still listed, so "GPU 1 is lost" reaches the incident.
    assert second == {**agent.empty_gpu(1), "errors": {"handle": "GPU is lost"}}


def test_a_binding_without_a_function_is_as_good_as_unsupported(nvml, monkeypatch):
    monkeypatch.delattr(nvml, "nvmlDeviceGetRemappedRows")
    session = open_session(nvml)
    gpu = agent.take_snapshot(session, "n")["gpus"][0]
    session.close()
    assert gpu["remapped_rows_correctable"] is None
    assert gpu["errors"] == {}


def test_an_unexpected_exception_costs_one_field(nvml, monkeypatch):
    def broken(handle):
        raise RuntimeError("binding bug")

    monkeypatch.setattr(nvml, "nvmlDeviceGetName", broken)
    session = open_session(nvml)
    gpu = agent.take_snapshot(session, "n")["gpus"][0]
    session.close()
    assert gpu["name"] is None
    assert gpu["errors"] == {"name": "RuntimeError: binding bug"}
    assert gpu["temperature_c"] == 87


def test_old_drivers_fall_back_to_throttle_reasons(nvml):
    nvml.configure(two_gpus(), legacy_driver=True)
    session = open_session(nvml)
    gpu = agent.take_snapshot(session, "n")["gpus"][0]
    session.close()
    assert gpu["clocks_event_reasons"] == ["SwPowerCap", "SwThermalSlowdown"]
    assert gpu["errors"] == {}
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls


def test_temperature_falls_back_to_the_successor_query(nvml, monkeypatch):
    """nvmlDeviceGetTemperature is deprecated, to be removed with CUDA 14."""
    monkeypatch.delattr(nvml, "nvmlDeviceGetTemperature")
    session = open_session(nvml)
    gpu = agent.take_snapshot(session, "n")["gpus"][0]
    session.close()
    assert gpu["temperature_c"] == 87
    assert "nvmlDeviceGetTemperatureV" in nvml.calls


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        (0, []),
        (0x1, ["GpuIdle"]),
        (0x4, ["SwPowerCap"]),
        (0xE8, ["HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown"]),
        (
            0x1FF,
            [
                "GpuIdle",
                "ApplicationsClocksSetting",
                "SwPowerCap",
                "HwSlowdown",
                "SyncBoost",
                "SwThermalSlowdown",
                "HwThermalSlowdown",
                "HwPowerBrakeSlowdown",
                "DisplayClockSetting",
            ],
        ),
        (0x4 | 0x200 | 0x8000, ["SwPowerCap", "Unknown0x200", "Unknown0x8000"]),
    ],
)
def test_clock_event_reasons_are_decoded_by_name(mask, names):
    assert agent.decode_clock_event_reasons(mask) == names


@pytest.mark.parametrize(("raw", "text"), [(12040, "12.4"), (12080, "12.8"), (13000, "13.0")])
def test_cuda_versions_read_as_people_write_them(raw, text):
    assert agent.cuda_version_text(raw) == text


def test_xid_events_are_none_where_the_gpu_cannot_report_them(nvml):
    gpus = two_gpus()
    gpus[1].event_types = 0  # e.g. a GPU or driver without Xid events
    nvml.configure(gpus)
    session = open_session(nvml)
    nvml.raise_xid(0, 48)
    nvml.raise_xid(0, 63)
    first, second = agent.take_snapshot(session, "n")["gpus"]
    session.close()
    assert [event["code"] for event in first["xid_events"]] == [48, 63]
    assert second["xid_events"] is None


def test_xid_events_stay_pending_until_a_post_succeeds(nvml):
    session = open_session(nvml)
    nvml.raise_xid(0, 94)
    assert [e["code"] for e in agent.take_snapshot(session, "n")["gpus"][0]["xid_events"]] == [94]
    # The post failed: the next snapshot still carries it, plus what came since.
    nvml.raise_xid(0, 95)
    snapshot = agent.take_snapshot(session, "n")
    assert [e["code"] for e in snapshot["gpus"][0]["xid_events"]] == [94, 95]
    session.watcher.acknowledge()
    assert agent.take_snapshot(session, "n")["gpus"][0]["xid_events"] == []
    session.close()


def test_no_event_set_means_no_xid_watching_but_a_full_snapshot(nvml, monkeypatch):
    monkeypatch.delattr(nvml, "nvmlEventSetCreate")
    session = open_session(nvml)
    snapshot = agent.take_snapshot(session, "n")
    session.close()
    assert [gpu["xid_events"] for gpu in snapshot["gpus"]] == [None, None]
    assert snapshot["gpus"][0]["temperature_c"] == 87


# --- configuration and the command line -------------------------------------------------------


def test_config_from_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("vgi_from_file\n")
    config = agent.Config.from_env(
        {
            "VIGIL_URL": "https://vigil.example/",
            "VIGIL_AGENT_TOKEN_FILE": str(token_file),
            "NODE_NAME": "gpu-node-3",
            "VIGIL_AGENT_INTERVAL": "15",
        }
    )
    assert config.url == "https://vigil.example/api/v1/gpu-snapshots"
    assert (config.token, config.node, config.interval_s) == ("vgi_from_file", "gpu-node-3", 15.0)
    env_token = agent.Config.from_env({"VIGIL_URL": "http://v", "VIGIL_AGENT_TOKEN": "vgi_env"})
    assert env_token.token == "vgi_env"
    assert env_token.interval_s == 30.0
    assert env_token.node  # the host name when the downward API gives none


@pytest.mark.parametrize(
    "env",
    [
        {"VIGIL_AGENT_TOKEN": "t"},
        {"VIGIL_URL": "http://v"},
        {"VIGIL_URL": "file:///etc/passwd", "VIGIL_AGENT_TOKEN": "t"},
        {"VIGIL_URL": "http://v", "VIGIL_AGENT_TOKEN_FILE": "/nonexistent/token"},
        {"VIGIL_URL": "http://v", "VIGIL_AGENT_TOKEN": "t", "VIGIL_AGENT_INTERVAL": "0"},
        {"VIGIL_URL": "http://v", "VIGIL_AGENT_TOKEN": "t", "VIGIL_AGENT_INTERVAL": "soon"},
    ],
)
def test_bad_configuration_is_refused_before_anything_runs(env, capsys):
    assert agent.main([], env=env) == 2


def test_once_dry_run_prints_the_snapshot_and_needs_no_server(nvml, capsys):
    assert agent.main(["--once", "--dry-run"], env={"NODE_NAME": "gpu-node-9"}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["node"] == "gpu-node-9"
    assert [gpu["index"] for gpu in printed["gpus"]] == [0, 1]


def test_once_without_a_driver_fails_cleanly(nvml, capsys):
    nvml.configure(two_gpus(), init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    assert agent.main(["--once", "--dry-run"], env={}) == 1
    assert capsys.readouterr().out == ""


# --- posting ----------------------------------------------------------------------------------


class StubVigil:
    """A local HTTP server that records requests and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}{agent.ENDPOINT_PATH}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                if stub.delay_s and len(stub.requests) == 1:
                    time.sleep(stub.delay_s)
                status = stub.statuses.pop(0) if stub.statuses else 201
                payload = json.dumps({"id": len(stub.requests)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> StubVigil:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[StubVigil]:
    with StubVigil() as server:
        yield server


SNAPSHOT = {"node": "n", "taken_at": "2026-11-23T10:00:00Z", "gpus": [{"index": 0}]}


def test_a_post_carries_the_token_and_the_snapshot(stub):
    waits: list[float] = []
    assert agent.post_snapshot(stub.url, "vgi_secret", SNAPSHOT, wait=waits.append) is True
    (request,) = stub.requests
    assert request["path"] == "/api/v1/gpu-snapshots"
    assert request["headers"]["Authorization"] == "Bearer vgi_secret"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["User-Agent"] == f"vigil-gpu-agent/{agent.AGENT_VERSION}"
    assert request["body"] == SNAPSHOT
    assert waits == []


def test_5xx_is_retried_with_backoff_until_it_succeeds(stub):
    stub.statuses = [503, 502]
    waits: list[float] = []
    policy = agent.RetryPolicy(attempts=4, base_delay_s=1, max_delay_s=30)
    assert agent.post_snapshot(stub.url, "t", SNAPSHOT, policy=policy, wait=waits.append) is True
    assert len(stub.requests) == 3
    assert all(r["body"] == SNAPSHOT for r in stub.requests)
    assert len(waits) == 2
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0  # exponential, jittered


def test_retries_end_after_the_last_attempt(stub):
    stub.statuses = [500] * 10
    assert agent.post_snapshot(stub.url, "t", SNAPSHOT, policy=FAST, wait=lambda s: False) is False
    assert len(stub.requests) == FAST.attempts


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_client_errors_are_not_retried(stub, status):
    stub.statuses = [status]
    assert agent.post_snapshot(stub.url, "t", SNAPSHOT, policy=FAST, wait=lambda s: False) is False
    assert len(stub.requests) == 1


def test_connection_errors_are_retried():
    url = f"http://127.0.0.1:{free_port()}{agent.ENDPOINT_PATH}"  # nobody listening
    waits: list[float] = []
    assert agent.post_snapshot(url, "t", SNAPSHOT, policy=FAST, wait=waits.append) is False
    assert len(waits) == FAST.attempts - 1


def test_a_timeout_is_retried():
    policy = agent.RetryPolicy(attempts=2, base_delay_s=0.01, timeout_s=0.3)
    with StubVigil(delay_s=1.0) as slow:
        assert agent.post_snapshot(slow.url, "t", SNAPSHOT, policy=policy, wait=lambda s: False)
        assert len(slow.requests) == 2


def test_stopping_during_backoff_abandons_the_retries(stub):
    stub.statuses = [503] * 10
    assert agent.post_snapshot(stub.url, "t", SNAPSHOT, policy=FAST, wait=lambda s: True) is False
    assert len(stub.requests) == 1


# --- the loop ---------------------------------------------------------------------------------


def start_loop(config: agent.Config, nvml) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(config, stop, nvml), daemon=True)
    thread.start()
    return stop, thread


def test_the_loop_survives_a_failing_vigil_and_posts_again(nvml, stub):
    stub.statuses = [503] * 4 + [401]
    config = agent.Config(url=stub.url, token="t", node="n", interval_s=0.05, retry=FAST)
    stop, thread = start_loop(config, nvml)
    wait_for(lambda: len(stub.requests) >= 6, message="posts after failures")
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert nvml.calls[-1] == "nvmlShutdown"
    assert nvml.open_event_sets() == 0


def test_the_loop_survives_a_failing_cycle(nvml, stub, monkeypatch):
    real = agent.take_snapshot
    failures = iter([RuntimeError("boom")])

    def flaky(session, node):
        for exc in failures:
            raise exc
        return real(session, node)

    monkeypatch.setattr(agent, "take_snapshot", flaky)
    config = agent.Config(url=stub.url, token="t", node="n", interval_s=0.05, retry=FAST)
    stop, thread = start_loop(config, nvml)
    wait_for(lambda: stub.requests, message="a post after a failed cycle")
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_loop_waits_for_the_driver(nvml, stub):
    nvml.configure(two_gpus(), init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    config = agent.Config(url=stub.url, token="t", node="n", interval_s=0.05, retry=FAST)
    stop, thread = start_loop(config, nvml)
    wait_for(lambda: nvml.calls.count("nvmlInit") >= 3, message="NVML init retries")
    assert stub.requests == []
    nvml._state.init_error = None  # the driver finished loading
    wait_for(lambda: stub.requests, message="a post once NVML starts")
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_xids_seen_by_the_loop_are_posted_once(nvml, stub):
    config = agent.Config(url=stub.url, token="t", node="n", interval_s=0.05, retry=FAST)
    stop, thread = start_loop(config, nvml)
    wait_for(lambda: stub.requests, message="a first post")
    nvml.raise_xid(0, 48)
    wait_for(lambda: len(stub.requests) >= 4, message="later posts")
    stop.set()
    thread.join(timeout=5)
    codes = [[e["code"] for e in r["body"]["gpus"][0]["xid_events"]] for r in list(stub.requests)]
    assert codes.count([48]) == 1


def test_sigterm_stops_the_agent_process(stub, tmp_path):
    """The real entry point, as the DaemonSet runs it, with the fake binding on its path."""
    shim = tmp_path / "pynvml.py"
    shim.write_text(
        "from tests.agent.fake_pynvml import *  # noqa\n"
        "from tests.agent.fake_pynvml import FakeGpu, configure\n"
        "configure([FakeGpu(uuid='GPU-a'), FakeGpu(uuid='GPU-b')])\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "VIGIL_URL": stub.url.removesuffix(agent.ENDPOINT_PATH),
        "VIGIL_AGENT_TOKEN": "vgi_agent",
        "NODE_NAME": "gpu-node-5",
        "VIGIL_AGENT_INTERVAL": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.vigil_gpu_agent"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: stub.requests or process.poll() is not None, message="a first post")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "SIGTERM received: stopping" in stderr
    assert stderr.rstrip().endswith("stopped")
    body = stub.requests[0]["body"]
    assert body["node"] == "gpu-node-5"
    assert [gpu["uuid"] for gpu in body["gpus"]] == ["GPU-a", "GPU-b"]
    assert stub.requests[0]["headers"]["Authorization"] == "Bearer vgi_agent"


# --- into Vigil -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_from_the_agent_lands_in_vigil(nvml, live_server, integration_token):
    from collectors.models import GpuSnapshot

    integration, token = integration_token("gpu-agent", kind="agent")
    url = live_server.url + agent.ENDPOINT_PATH
    session = open_session(nvml)
    nvml.raise_xid(1, 79)
    snapshot = agent.take_snapshot(session, "gpu-node-7")
    assert agent.post_snapshot(url, token, snapshot, policy=FAST) is True
    session.close()

    stored = GpuSnapshot.objects.get()
    assert stored.integration == integration
    assert stored.cluster == integration.cluster
    assert stored.node == "gpu-node-7"
    assert stored.taken_at == NOW
    assert (stored.driver_version, stored.cuda_version, stored.agent_version) == (
        "550.54.15",
        "12.4",
        agent.AGENT_VERSION,
    )
    assert stored.gpus == snapshot["gpus"]
    assert stored.gpus[1]["xid_events"] == [{"code": 79, "at": "2026-11-23T10:00:00Z"}]
    assert stored.gpus[1]["ecc_volatile_double_bit"] is None

    # And the command line, end to end: --once posts and says so by its exit status.
    config = agent.Config(url=url, token=token, node="gpu-node-8", retry=FAST)
    assert agent.run_once(config, nvml, post=True) == 0
    assert GpuSnapshot.objects.filter(node="gpu-node-8").count() == 1
    refused = agent.Config(url=url, token="vgi_wrong", node="gpu-node-8", retry=FAST)
    assert agent.run_once(refused, nvml, post=True) == 1


# --- packaging --------------------------------------------------------------------------------


def test_the_agent_imports_without_django():
    code = (
        "import sys, agent.vigil_gpu_agent; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'vigil')], 'django'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_daemonset_runs_the_agent_with_the_environment_it_reads():
    import yaml

    manifest = yaml.safe_load((ROOT / "deploy/gpu-agent-daemonset.yaml").read_text())
    assert manifest["kind"] == "DaemonSet"
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "agent.vigil_gpu_agent"]
    env = {item["name"]: item for item in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "secretKeyRef" in env["VIGIL_AGENT_TOKEN"]["valueFrom"]
    assert {"VIGIL_URL", "VIGIL_AGENT_INTERVAL"} <= env.keys()
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})  # takes no GPU


def test_the_fake_and_the_agent_use_the_real_bindings_names_and_signatures():
    """The fake is only worth what its likeness is: same functions, same parameters."""
    import inspect
    import re

    real = pytest.importorskip("pynvml")
    if real is fake_pynvml:
        pytest.skip("the fake is installed as pynvml")
    faked = [
        name
        for name, value in vars(fake_pynvml).items()
        if name.startswith("nvml") and inspect.isfunction(value)
    ]
    for name in faked:
        real_params = list(inspect.signature(getattr(real, name)).parameters.values())
        fake_params = list(inspect.signature(getattr(fake_pynvml, name)).parameters.values())
        assert len(fake_params) == len(real_params), name
        assert [p.default is p.empty for p in fake_params] == [
            p.default is p.empty for p in real_params
        ], name
    source = Path(agent.__file__).read_text()
    called = set(re.findall(r'"(nvml\w+)"', source))
    assert called - {"nvmlEventSetWait"} <= set(faked)  # the fallback of nvmlEventSetWait_v2
    assert called <= set(dir(real))
    for constant in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_TIMEOUT", "NVML_VOLATILE_ECC"):
        assert getattr(agent, constant) == getattr(real, constant)
    assert real.nvmlEventTypeXidCriticalError == agent.NVML_EVENT_TYPE_XID_CRITICAL_ERROR
    for bit, name in agent.CLOCK_EVENT_REASONS:
        assert getattr(real, f"nvmlClocksEventReason{name}") == bit
