"""The logs collector: container logs (and Loki) of the affected pods, as error signatures."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from collectors import logs
from collectors.base import ClusterSources, CollectorError, Entity, Scope, Window
from collectors.scope import resolve_scope
from tests.collectors.conftest import forbidden


def collect(world, scope: Scope | None = None, **context) -> list:
    scope = scope or resolve_scope(world.alerts, world.cluster, timeout=5)
    drafts = logs.collect(world.context(scope, **context))
    for draft in drafts:
        json.dumps(draft.data)
    return drafts


def read(drafts: list) -> dict[tuple[str, str, bool], dict]:
    return {
        (d.data["pod"], d.data["container"], d.data["previous"]): d.data
        for d in drafts
        if d.kind == "log_signatures"
    }


def signatures(data: dict) -> dict[str, dict]:
    return {s["signature"]: s for s in data["signatures"]}


def test_bad_deploy_new_pods_log_the_type_error_and_the_500s(open_world):
    drafts = collect(open_world("01-bad-deploy"))
    found = read(drafts)
    # restartCount 0: the current instance only
    assert set(found) == {
        ("chat-api-6f4d9b8c7d-4kq2v", "vllm", False),
        ("chat-api-6f4d9b8c7d-h7xwp", "vllm", False),
    }
    first = found[("chat-api-6f4d9b8c7d-4kq2v", "vllm", False)]
    assert first["lines_read"] == 16 and not first["truncated"] and first["no_log"] is None
    type_error = signatures(first)[
        "TypeError: sequence item <n>: expected str instance, NoneType found"
    ]
    assert type_error["count"] == 2 and type_error["level"] == "error"
    assert type_error["first"] < type_error["last"]
    assert "detokenizer.py" in type_error["examples"][0]
    assert signatures(first)["HTTP 500 POST /v1/chat/completions"]["count"] == 2
    second = signatures(found[("chat-api-6f4d9b8c7d-h7xwp", "vllm", False)])
    assert second["HTTP 500 POST /v1/chat/completions"]["category"] == "http-5xx"
    assert all(d.entity.kind == "Pod" for d in drafts)


def test_crash_loop_reads_the_previous_instance_and_finds_the_app_error(open_world):
    drafts = collect(open_world("05-crash-loop"))
    found = read(drafts)
    # waiting to restart: the previous instance is the only one (reading "current" too would
    # serve the same lines again and double every count)
    assert set(found) == {
        ("ingest-worker-7d9c8b6f5-nq4wz", "worker", True),
        ("ingest-worker-7d9c8b6f5-b8rtc", "worker", True),
    }
    previous = found[("ingest-worker-7d9c8b6f5-nq4wz", "worker", True)]
    [key_error] = previous["signatures"]
    assert key_error["signature"] == "KeyError: <str>"
    assert key_error["count"] == 1 and key_error["category"] == "python-exception"
    assert key_error["examples"][0].endswith("KeyError: 'VECTOR_DB_URL'")
    assert "Logs of rag/ingest-worker-7d9c8b6f5-nq4wz worker (previous instance)" in drafts[0].title


def test_oom_killed_pod_gets_both_instances_read(open_world):
    found = read(collect(open_world("04-oom-killed")))
    assert ("embedder-6c8f9b7d5-lq8zn", "embedder", False) in found
    previous = found[("embedder-6c8f9b7d5-lq8zn", "embedder", True)]
    assert previous["lines_read"] == 9 and previous["signatures"] == []


def test_gpu_fault_pod_logs_show_the_lost_gpu(open_world):
    found = read(collect(open_world("03-gpu-hardware-fault")))
    crashed = signatures(found[("summarizer-7b5c9d8f4-fq7ln", "vllm", True)])
    lost = crashed["pynvml.NVMLError_GpuIsLost: GPU is lost"]
    assert (lost["level"], lost["category"]) == ("fatal", "gpu-fault")
    assert crashed["RuntimeError: CUDA error: unknown error"]["category"] == "cuda-error"
    healthy = found[("summarizer-7b5c9d8f4-9xkzt", "vllm", False)]
    assert healthy["signatures"] == [] and healthy["lines_read"] == 3


def test_a_container_that_never_started_has_no_log_and_that_is_not_a_failure(open_world):
    drafts = collect(open_world("09-image-pull-failure"))
    found = read(drafts)
    pulling = found[("pdf-extractor-78c4f9d6b-qk5vd", "extractor", False)]
    assert pulling["no_log"].startswith("no log: ")
    assert "waiting to start" in pulling["no_log"]
    assert pulling["lines_read"] == 0
    assert not any(d.kind == "collection_note" for d in drafts)


def test_troubled_pods_are_read_first_when_capped(open_world, monkeypatch):
    monkeypatch.setattr(logs, "MAX_PODS", 2)
    world = open_world("09-image-pull-failure")
    found = read(collect(world))
    # five pods in scope; the two that cannot pull their image come first
    assert {pod for pod, _, _ in found} == {
        "pdf-extractor-78c4f9d6b-qk5vd",
        "pdf-extractor-78c4f9d6b-w9ftx",
    }


def test_reads_are_bounded_by_the_window_and_the_tail(open_world, monkeypatch):
    world = open_world("01-bad-deploy")
    scope = Scope(pods=[Entity("Pod", "llm", "chat-api-6f4d9b8c7d-4kq2v")])
    recent = Window(world.now - timedelta(minutes=3), world.now, world.now)
    [data] = read(collect(world, scope, window=recent)).values()
    assert data["lines_read"] == 2  # the lines of the last 3 minutes
    assert {s["signature"] for s in data["signatures"]} == {
        "TypeError: sequence item <n>: expected str instance, NoneType found",
        "HTTP 500 POST /v1/chat/completions",
    }
    monkeypatch.setattr(logs, "TAIL_LINES", 4)
    [data] = read(collect(world, scope)).values()
    assert data["lines_read"] == 4 and data["truncated"]


# --- Loki --------------------------------------------------------------------------------------


def loki_answer(now: datetime):
    def ns(minutes_ago: float) -> str:
        return str(int((now - timedelta(minutes=minutes_ago)).timestamp() * 1e9))

    def answer(path: str):
        if not path.startswith("/loki/api/v1/query_range"):
            return 404, {"error": "not found"}
        # backward: newest first, as Loki answers
        values = [
            [ns(1), "TypeError: sequence item 1: expected str instance, NoneType found"],
            [ns(2), '  File "/app/detokenizer.py", line 290, in detokenize_incrementally'],
            [ns(2.1), "Traceback (most recent call last):"],
            [
                ns(3),
                'INFO:     10.42.0.31:41907 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
            ],
        ]
        stream = {"namespace": "llm", "pod": "chat-api-6f4d9b8c7d-4kq2v", "container": "vllm"}
        body = {
            "status": "success",
            "data": {"resultType": "streams", "result": [{"stream": stream, "values": values}]},
        }
        return 200, body

    return answer


def test_loki_logs_are_grouped_the_same_way(open_world, fake_server):
    world = open_world("01-bad-deploy")
    loki = fake_server(loki_answer(world.now))
    cluster = ClusterSources(name="replay", kubeconfig=world.cluster.kubeconfig, loki_url=loki.url)
    drafts = collect(world, cluster=cluster)
    from_loki = [d.data for d in drafts if d.data.get("source") == "loki"]
    [data] = from_loki
    assert data["pod"] == "chat-api-6f4d9b8c7d-4kq2v" and data["lines_read"] == 4
    grouped = signatures(data)
    assert (
        grouped["TypeError: sequence item <n>: expected str instance, NoneType found"]["count"] == 1
    )
    assert grouped["HTTP 500 POST /v1/chat/completions"]["count"] == 1
    query = parse_qs(urlsplit(loki.paths[0]).query)
    assert query["query"][0].startswith(
        "{namespace=`llm`, pod=~`chat-api-6f4d9b8c7d-4kq2v|chat-api-6f4d9b8c7d-h7xwp`} |~ `(?i)"
    )
    assert query["direction"] == ["backward"]
    assert int(query["start"][0]) == int(world.window.start.timestamp() * 1e9)
    assert any(d.data.get("source") == "kubernetes" for d in drafts)


def test_a_loki_failure_is_a_note_when_kubernetes_logs_were_read(open_world, fake_server):
    world = open_world("05-crash-loop")
    loki = fake_server(lambda path: (500, "too many outstanding requests"))
    cluster = ClusterSources(name="replay", kubeconfig=world.cluster.kubeconfig, loki_url=loki.url)
    drafts = collect(world, cluster=cluster)
    [note] = [d for d in drafts if d.kind == "collection_note"]
    assert note.data["source"] == "loki"
    assert "Loki answered 500" in note.data["problems"][0]
    assert len(read(drafts)) == 2


def test_both_sources_failing_fails_the_collector_with_both_reasons(
    open_world, fake_server, closed_port_cluster
):
    world = open_world("05-crash-loop")
    loki = fake_server(lambda path: (502, "bad gateway"))
    cluster = ClusterSources(
        name="gone", kubeconfig=closed_port_cluster.kubeconfig, loki_url=loki.url
    )
    scope = Scope(pods=[Entity("Pod", "rag", "ingest-worker-7d9c8b6f5-nq4wz")])
    with pytest.raises(CollectorError) as failure:
        logs.collect(world.context(scope, cluster=cluster, timeout=2))
    assert "kubernetes: Kubernetes API unreachable" in failure.value.reason
    assert "loki: Loki answered 502" in failure.value.reason


# --- when Kubernetes cannot be read ------------------------------------------------------------

SCOPE = Scope(pods=[Entity("Pod", "llm", "chat-api-6f4d9b8c7d-4kq2v")])


def test_an_unreachable_api_fails_the_collector(open_world, closed_port_cluster):
    world = open_world(objects=[])
    with pytest.raises(CollectorError, match="unreachable"):
        logs.collect(world.context(SCOPE, cluster=closed_port_cluster, timeout=2))


def pod_readable_logs_forbidden(path: str):
    if path.endswith("/log") or "/log?" in path:
        return forbidden(path)
    return 200, {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "chat-api-6f4d9b8c7d-4kq2v", "namespace": "llm"},
        "spec": {"containers": [{"name": "vllm", "image": "vllm:1"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "vllm", "ready": True, "restartCount": 0}],
        },
    }


def test_rbac_forbidding_pod_logs_names_the_subresource(open_world, fake_server):
    server = fake_server(pod_readable_logs_forbidden)
    world = open_world(objects=[])
    with pytest.raises(CollectorError) as failure:
        logs.collect(world.context(SCOPE, cluster=server.cluster(), timeout=2))
    assert "forbids get pods/log llm/chat-api-6f4d9b8c7d-4kq2v container vllm (RBAC)" in (
        failure.value.reason
    )


def test_a_slow_api_times_out(open_world, fake_server):
    server = fake_server(forbidden, delay=3)
    world = open_world(objects=[])
    started = time.monotonic()
    with pytest.raises(CollectorError, match="timed out"):
        logs.collect(world.context(SCOPE, cluster=server.cluster(), timeout=0.5))
    assert time.monotonic() - started < 2


def test_nothing_in_scope_reads_nothing():
    from collectors.base import CollectionContext

    now = datetime.now(UTC)
    ctx = CollectionContext(
        1, ClusterSources(name="c", kubeconfig="x"), Scope(), Window(now, now, now), (), 1.0
    )
    assert logs.collect(ctx) == []


def test_the_runners_deadline_stops_reading_logs_and_keeps_what_was_read(open_world):
    from tests.collectors.test_kubernetes_collector import running_out

    world = open_world("01-bad-deploy")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    # two pod reads, one log read, then time is up
    drafts = logs.collect(running_out(world.context(scope), allowed=3))
    assert [d.kind for d in drafts] == ["log_signatures", "collection_note"]
    assert "out of time" in drafts[-1].data["problems"][0]
