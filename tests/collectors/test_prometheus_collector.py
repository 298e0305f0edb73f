"""The Prometheus collector against a real Prometheus (scenario replays) and broken servers."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote_plus

import pytest

from collectors import prometheus
from collectors.base import AlertFacts, CollectorError, Entity, Scope
from collectors.profiles import (
    Profile,
    ProfileError,
    bindings,
    load_profiles,
    parse_profile,
    render,
)
from tests.collectors.replay_support import (
    FakeServer,
    context,
    now_utc,
    replay,
    scenario,
    scenario_alerts,
)
from tests.support import free_port

NOW = now_utc()
RAG_CHAT = Entity("Deployment", "llm", "rag-chat")
KV_POD = Entity("Pod", "llm", "rag-chat-5b8d7f6c9-kx4wd")


def alert(name: str, expr: str, starts_at: datetime, **labels: str) -> AlertFacts:
    return AlertFacts(
        labels={"alertname": name, **labels},
        annotations={},
        starts_at=starts_at,
        ends_at=None,
        status="firing",
        generator_url=f"http://prometheus:9090/graph?g0.expr={quote_plus(expr)}&g0.tab=1",
    )


def by_profile(drafts, name: str):
    return [d for d in drafts if d.data.get("profile") == name]


@pytest.fixture(scope="module")
def kv_cache():
    """Scenario 02: vLLM's KV cache fills on both replicas of llm/rag-chat."""
    with replay(scenario("02-kv-cache-saturation").series(NOW), NOW) as prom:
        yield prom


@pytest.fixture(scope="module")
def generated():
    """Generated series for what the scenarios do not cover: HTTP signals, containers, errors."""
    minutes = 60

    def points(values):
        return [(NOW.timestamp() - (len(values) - 1 - i) * 60, v) for i, v in enumerate(values)]

    pod = {"namespace": "shop", "pod": "api-7c9f8d6b54-x2k9p", "job": "api"}
    other = {"namespace": "shop", "pod": "worker-0", "job": "worker"}
    counter = [1000.0 + 10 * i for i in range(minutes)]
    errors = [0.0] * 40 + [5.0 * i for i in range(1, 21)]
    memory = [2e9] * 45 + [3.9e9] * 15
    series = [
        ("http_requests_total", {**pod, "code": "200"}, points(counter)),
        ("http_requests_total", {**pod, "code": "500"}, points(errors)),
        ("http_requests_total", {**other, "code": "200"}, points(counter)),
        ("container_memory_working_set_bytes", {**pod, "container": "app"}, points(memory)),
        ("container_memory_working_set_bytes", {**pod, "container": ""}, points(memory)),
        ("kube_pod_container_resource_limits", {**pod, "container": "app", "resource": "memory"},
         points([4e9] * minutes)),
        ("gen_pair", {"side": "a", "i": "1"}, points([1.0] * minutes)),
        ("gen_pair", {"side": "a", "i": "2"}, points([1.0] * minutes)),
        ("gen_other", {"i": "1"}, points([1.0] * minutes)),
        ("gen_other", {"i": "2"}, points([1.0] * minutes)),
    ]  # fmt: skip
    with replay(series, NOW) as prom:
        yield prom


# -- scenario 02: the KV cache fills -------------------------------------------------------------


@pytest.fixture(scope="module")
def kv_drafts(kv_cache):
    loaded = scenario("02-kv-cache-saturation")
    scope = Scope(namespaces=["llm"], deployments=[RAG_CHAT], models=["llama-3.3-70b"])
    ctx = context(kv_cache.url, scope, NOW, alerts=scenario_alerts(loaded, NOW))
    return ctx, prometheus.collect(ctx)


def test_kv_cache_usage_steps_up_on_both_replicas_before_the_alert(kv_drafts):
    ctx, drafts = kv_drafts
    [draft] = by_profile(drafts, "vllm_kv_cache_usage")
    assert draft.kind == "metric"
    assert draft.entity == RAG_CHAT
    assert draft.data["unit"] == "ratio"
    assert "vllm:gpu_cache_usage_perc" in draft.data["query"]
    assert {s["labels"]["pod"] for s in draft.data["series"]} == {
        "rag-chat-5b8d7f6c9-kx4wd",
        "rag-chat-5b8d7f6c9-p2mzs",
    }
    first_alert = ctx.window.first_alert_at
    assert draft.data["first_alert_at"] == first_alert.isoformat().replace("+00:00", "Z")
    for series in draft.data["series"]:
        summary = series["summary"]
        assert summary["step_direction"] == "up"
        step_at = datetime.fromisoformat(summary["step_at"].replace("Z", "+00:00"))
        # The cache began filling about 25 minutes ago, the first alert fired 11 minutes ago.
        assert NOW - timedelta(minutes=28) <= step_at <= NOW - timedelta(minutes=20)
        assert step_at < first_alert
        assert 0.45 < summary["baseline"] < 0.6 and summary["recent"] == 0.99
        assert summary["ratio"] > 1.6
        assert len(series["points"]) <= 120


def test_every_range_query_covers_the_window_in_at_most_120_points(kv_drafts):
    ctx, drafts = kv_drafts
    assert all(d.data["step"] == 60 for d in drafts if d.kind == "metric")
    for draft in drafts:
        for series in draft.data.get("series", []):
            assert len(series["points"]) <= 120
            assert series["points"][-1][0] <= ctx.window.end.timestamp()


def test_the_alerts_expressions_are_graphed_without_their_threshold(kv_drafts):
    _, drafts = kv_drafts
    alert_drafts = [d for d in drafts if d.data.get("profile") == "alert"]
    assert drafts[: len(alert_drafts)] == alert_drafts  # the alerts' own graphs come first
    queue = next(d for d in alert_drafts if d.data["alerts"] == ["VLLMRequestQueueGrowing"])
    assert queue.data["query"] == (
        'sum by (namespace, job, model_name) (vllm:num_requests_waiting{namespace="llm"})'
    )
    assert queue.data["threshold"] == {"op": ">", "value": 20.0}
    assert queue.data["alert_expr"].endswith("> 20")
    [series] = queue.data["series"]
    assert series["firing"] is True
    assert series["summary"]["baseline"] == 0 and series["summary"]["recent"] > 100
    ttft = next(d for d in alert_drafts if d.data["alerts"] == ["VLLMTimeToFirstTokenHigh"])
    assert ttft.data["threshold"] == {"op": ">", "value": 5.0}
    assert ttft.data["series"][0]["summary"]["recent"] > 5


def test_profiles_with_no_series_leave_no_trace(kv_drafts):
    _, drafts = kv_drafts
    profiles = {d.data["profile"] for d in drafts}
    assert "http_request_rate" not in profiles  # vLLM exposes no http_requests_total here
    assert "container_memory" not in profiles
    assert {"vllm_requests_waiting", "vllm_preemptions", "vllm_ttft_p95"} <= profiles
    assert not [d for d in drafts if d.kind == "metric_error"]


def test_a_model_is_queried_when_no_workload_is_known(kv_cache):
    scope = Scope(models=["llama-3.3-70b"])
    drafts = prometheus.collect(context(kv_cache.url, scope, NOW))
    [draft] = by_profile(drafts, "vllm_requests_running")
    assert 'model_name="llama-3.3-70b"' in draft.data["query"]
    assert draft.entity is None and draft.data["binding"]["kind"] == "model"
    assert len(draft.data["series"]) == 2


def test_alerts_sharing_an_expression_are_one_query(kv_cache):
    expr = 'sum by (pod) (vllm:num_requests_waiting{namespace="llm"}) > 20'
    alerts = (
        alert("QueueA", expr, NOW - timedelta(minutes=8), pod="rag-chat-5b8d7f6c9-kx4wd"),
        alert("QueueB", expr, NOW - timedelta(minutes=5), pod="rag-chat-5b8d7f6c9-p2mzs"),
    )
    drafts = prometheus.collect(context(kv_cache.url, Scope(), NOW, alerts=alerts))
    [draft] = drafts
    assert draft.data["alerts"] == ["QueueA", "QueueB"]
    assert all(s["firing"] for s in draft.data["series"])
    assert draft.entity is None  # the two alerts name different pods


def test_a_query_prometheus_refuses_becomes_a_metric_error(kv_cache):
    alerts = (alert("Broken", "sum(rate(vllm:num_preemptions_total[5m])", NOW),)
    drafts = prometheus.collect(context(kv_cache.url, Scope(), NOW, alerts=alerts))
    [draft] = drafts
    assert draft.kind == "metric_error"
    assert draft.data["error_type"] == "bad_data" and draft.data["status"] == 400
    assert "parse error" in draft.data["message"]
    assert draft.data["query"] == "sum(rate(vllm:num_preemptions_total[5m])"


@pytest.mark.parametrize(
    ("expr", "query", "threshold"),
    [
        ("up == 0", "up", {"op": "==", "value": 0.0}),
        ('rate(x{a=~"b|c"}[5m]) >= 1.5', 'rate(x{a=~"b|c"}[5m])', {"op": ">=", "value": 1.5}),
        (
            'sum(x{code!="200"}) / sum(x) > 0.05',
            'sum(x{code!="200"}) / sum(x)',
            {"op": ">", "value": 0.05},
        ),
        ("a > b", "a > b", None),  # not a constant
        ("a > 1 and b < 2", "a > 1 and b < 2", None),  # two comparisons
        ("a > bool 1", "a > bool 1", None),  # a 0/1 series already shows the baseline
        ('max(x{l=">"})', 'max(x{l=">"})', None),  # inside a string
    ],
)
def test_an_alerts_comparison_with_a_constant_is_split_off(expr, query, threshold):
    assert prometheus.split_threshold(expr) == (query, threshold)


def test_the_expression_comes_from_the_generator_url():
    url = "http://p:9090/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+1&g0.tab=1"
    assert prometheus.alert_expression(url) == "rate(x[5m]) > 1"
    assert prometheus.alert_expression("http://p:9090/graph?g0.tab=1") == ""
    assert prometheus.alert_expression("") == ""


# -- generated series: golden signals, containers, user profiles ---------------------------------


def test_golden_signals_and_container_memory_of_a_workload(generated):
    api = Entity("Deployment", "shop", "api")
    drafts = prometheus.collect(context(generated.url, Scope(deployments=[api]), NOW))
    [rate] = by_profile(drafts, "http_request_rate")
    assert rate.entity == api
    [series] = rate.data["series"]  # the worker pod is not one of api's pods
    assert series["labels"]["pod"] == "api-7c9f8d6b54-x2k9p"
    [errors] = by_profile(drafts, "http_error_ratio")
    summary = errors.data["series"][0]["summary"]
    assert summary["baseline"] == 0 and summary["recent"] > 0.3
    assert summary["step_direction"] == "up"
    [memory] = by_profile(drafts, "container_memory_of_limit")
    [series] = memory.data["series"]  # the pod-level series (container="") is left out
    assert series["labels"]["container"] == "app"
    assert series["summary"]["recent"] == pytest.approx(0.975)
    # The most telling evidence first: the drafts with a step before the flat ones.
    steps = [bool(d.data["series"][0]["summary"]["step_at"]) for d in drafts]
    assert steps == sorted(steps, reverse=True)


def test_a_service_without_errors_shows_an_error_ratio_of_zero(generated):
    worker = Entity("Pod", "shop", "worker-0")
    drafts = prometheus.collect(context(generated.url, Scope(pods=[worker]), NOW))
    [errors] = by_profile(drafts, "http_error_ratio")
    assert errors.entity == worker
    assert errors.data["series"][0]["summary"]["max"] == 0


def test_user_profiles_add_replace_and_disable(generated, tmp_path, settings):
    path = tmp_path / "profiles.yaml"
    path.write_text(
        """
profiles:
  - name: pairs
    title: Pairs that cannot be matched
    applies_to: [namespace]
    unit: ""
    query: 'gen_pair / on() gen_other'
  - name: http_request_rate
    title: Requests per minute
    applies_to: [workload]
    unit: req/min
    query: 'sum by (pod) (rate(http_requests_total{{selector}}[{rate_window}])) * 60'
  - name: container_memory
    enabled: false
  - name: broken
    title: Uses a placeholder a namespace does not have
    applies_to: [namespace]
    query: 'up{pod="{pod}"}'
""",
        encoding="utf-8",
    )
    settings.VIGIL_QUERY_PROFILES = str(path)
    scope = Scope(namespaces=["shop"], deployments=[Entity("Deployment", "shop", "api")])
    drafts = prometheus.collect(context(generated.url, scope, NOW))
    [replaced] = by_profile(drafts, "http_request_rate")
    assert replaced.data["unit"] == "req/min"
    assert replaced.data["series"][0]["summary"]["last"] == pytest.approx(15)  # 10 + 5 a minute
    assert not by_profile(drafts, "container_memory")
    [pairs] = by_profile(drafts, "pairs")
    assert pairs.kind == "metric_error" and pairs.data["error_type"] == "execution"
    assert pairs.entity == Entity("Namespace", None, "shop")
    [problem] = [d for d in drafts if d.data.get("error_type") == "profile"]
    assert "broken" in problem.data["message"] and "{pod}" in problem.data["message"]


def test_a_missing_user_profiles_file_is_reported_and_the_built_ins_still_run(
    generated, settings, tmp_path
):
    settings.VIGIL_QUERY_PROFILES = str(tmp_path / "nope.yaml")
    api = Entity("Deployment", "shop", "api")
    drafts = prometheus.collect(context(generated.url, Scope(deployments=[api]), NOW))
    assert by_profile(drafts, "http_request_rate")
    [problem] = [d for d in drafts if d.data.get("error_type") == "profile"]
    assert "cannot read" in problem.data["message"]


# -- profiles: loading and binding ----------------------------------------------------------------


def test_the_built_in_profiles_load_and_cover_the_required_signals():
    names = {p.name for p in load_profiles().profiles}
    assert {
        "http_request_rate",
        "http_error_ratio",
        "http_latency_p95",
        "container_cpu",
        "container_memory",
        "container_restarts",
        "vllm_requests_running",
        "vllm_requests_waiting",
        "vllm_kv_cache_usage",
        "vllm_preemptions",
        "vllm_ttft_p95",
        "vllm_generation_throughput",
    } <= names


def test_a_profile_is_checked_when_loaded():
    base = {"name": "x", "title": "X", "applies_to": ["job"], "query": "up{{selector}}"}
    assert parse_profile(base).applies_to == ("job",)
    for broken, message in [
        ({**base, "applies_to": ["cluster"]}, "unknown kind"),
        ({**base, "query": 'up{pod="{pod}"}'}, "{pod}"),
        ({**base, "name": "bad name"}, "slug"),
        ({**base, "colour": "red"}, "unknown field"),
        ({k: v for k, v in base.items() if k != "query"}, "query"),
    ]:
        with pytest.raises(ProfileError, match=message):
            parse_profile(broken)


def test_pods_of_a_bound_workload_are_not_queried_twice():
    profile = Profile("p", "P", ("workload",), "up{{selector}}")
    scope = Scope(
        deployments=[RAG_CHAT],
        pods=[KV_POD, Entity("Pod", "llm", "loner"), Entity("Pod", "other", "rag-chat-a-b")],
    )
    found = bindings(profile, scope)
    assert [b.label for b in found] == [
        "Deployment llm/rag-chat",
        "Pod llm/loner",
        "Pod other/rag-chat-a-b",
    ]
    assert render(profile, found[0], step=60, rate_window="5m") == (
        'up{namespace="llm",pod=~"rag-chat-[a-z0-9]+-[a-z0-9]+"}'
    )


def test_label_values_cannot_change_the_query():
    profile = Profile("p", "P", ("job",), "rate(x{{selector}}[{rate_window}])")
    [binding] = bindings(profile, Scope(jobs=['a"} or vector(1) or x{b="']))
    query = render(profile, binding, step=60, rate_window="5m")
    assert query == 'rate(x{job="a\\"} or vector(1) or x{b=\\""}[5m])'


# -- the source failing ---------------------------------------------------------------------------


def scope_with_work() -> Scope:
    return Scope(deployments=[RAG_CHAT])


def test_an_unreachable_prometheus_is_a_collector_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CollectorError, match="Prometheus unreachable") as caught:
        prometheus.collect(context(url, scope_with_work(), NOW, timeout=1))
    assert caught.value.retryable


def test_a_prometheus_slower_than_the_timeout_is_a_collector_error():
    fake = FakeServer(delay=3)
    timed_out = pytest.raises(CollectorError, match=r"Prometheus timed out after 0\.5s")
    with fake.running() as url, timed_out:
        prometheus.collect(context(url, scope_with_work(), NOW, timeout=0.5))


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b"internal proxy failure", "HTTP 500: internal proxy failure"),
        (403, b"Forbidden: no access to /api/v1", "HTTP 403 .forbidden.*: Forbidden: no access"),
        (
            503,
            b'{"status":"error","errorType":"unavailable","error":"TSDB not ready"}',
            "HTTP 503: TSDB not ready",
        ),
    ],
)
def test_an_http_error_from_prometheus_is_a_collector_error_with_its_status(status, body, message):
    fake = FakeServer(status=status, body=body, content_type="text/plain")
    with fake.running() as url, pytest.raises(CollectorError, match=message) as caught:
        prometheus.collect(context(url, scope_with_work(), NOW))
    assert caught.value.retryable == (status >= 500)


def test_a_page_that_is_not_the_api_is_a_collector_error():
    fake = FakeServer(body=b"<html>Sign in</html>", content_type="text/html")
    not_the_api = pytest.raises(CollectorError, match="did not answer like the Prometheus query")
    with fake.running() as url, not_the_api:
        prometheus.collect(context(url, scope_with_work(), NOW))


def test_each_request_carries_a_server_side_timeout_below_the_clients():
    fake = FakeServer()
    with fake.running() as url:
        assert prometheus.collect(context(url, scope_with_work(), NOW, timeout=4)) == []
    assert fake.requests and all(r["path"] == "/api/v1/query_range" for r in fake.requests)
    for request in fake.requests:
        assert 0 < float(request["params"]["timeout"][0]) < 4
        assert request["params"]["step"] == ["60"]


def test_no_url_configured_is_a_collector_error():
    with pytest.raises(CollectorError, match="no Prometheus URL"):
        prometheus.collect(context("", scope_with_work(), NOW))
