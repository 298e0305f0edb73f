"""Prometheus, the Kubernetes API, Slack and the LLM each down, slow past the limit, answering 500,
429 with Retry-After, or garbage: the incident still gets its analysis, and the page says which
source failed and why.

Each source is reached over HTTP through a FaultProxy (tests/faults/proxy.py) by the real client
code (prometheus-api-client, the official Kubernetes client, slack_sdk, LangChain's ChatOpenAI),
in this process: the collection round (collect_now), the rules' analysis, the LLM narrative and
the Slack announcement run as their tasks run them. A scenario's Kubernetes (the stand-in) is the
healthy evidence base; only the source under test misbehaves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from django.core.cache import cache

from assistant.engine import run_analysis
from assistant.models import Analysis
from assistant.narrative import write_narrative
from collectors.models import Evidence
from collectors.tasks import collect_now
from incidents import slack
from incidents.admin import issue_integration_token
from incidents.models import Cluster, Incident, Integration, SlackMessage, TimelineEvent
from replay.kube import KubernetesStandIn
from replay.scenario import load_scenario
from tests.faults.proxy import FaultProxy, dead_url
from tests.faults.support import now, record
from tests.incidents.payloads import post
from tests.incidents.slack_support import configure
from tests.openai_standin import OpenAIStandin
from tests.slack_standin import SlackStandin

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "04-oom-killed.yaml"
SOURCES = ("prometheus", "kubernetes", "slack", "llm")
FAULTS = ("down", "slow", "500", "429", "malformed")
TIMEOUT = 1  # every client's limit, in seconds; "slow" answers after three times that
SLOW = 3 * TIMEOUT
RETRY_AFTER = 1

# What the page must say about the failed source: its name and the fault, in words (within
# one element: no pattern crosses a tag).
EXPECTED = {
    ("prometheus", "down"): r"Prometheus unreachable",
    ("prometheus", "slow"): r"Prometheus timed out after 1s",
    ("prometheus", "500"): r"Prometheus answered HTTP 500",
    ("prometheus", "429"): r"Prometheus answered HTTP 429",
    ("prometheus", "malformed"): r"did not answer like the Prometheus query API",
    ("kubernetes", "down"): r"Kubernetes API unreachable",
    ("kubernetes", "slow"): r"Kubernetes API timed out",
    ("kubernetes", "500"): r"Kubernetes API answered 500",
    ("kubernetes", "429"): r"Kubernetes API answered 429",
    ("kubernetes", "malformed"): r"Kubernetes API sent something that is not JSON",
    (
        "slack",
        "down",
    ): r"Slack message for [^<]* not sent after 3 attempts: [^<]*Connection refused",
    (
        "slack",
        "slow",
    ): r"Slack message for [^<]* not sent after 3 attempts: [^<]*timed out",
    ("slack", "500"): r"Slack message for [^<]* not sent after 3 attempts: HTTP 500",
    ("slack", "429"): r"Slack message for [^<]* not sent after 3 attempts: ratelimited",
    (
        "slack",
        "malformed",
    ): r"Slack message for [^<]* not sent after 3 attempts: JSONDecodeError",
    ("llm", "down"): r"LLM narrative unavailable: unreachable: connection refused",
    ("llm", "slow"): r"LLM narrative unavailable: timed out after 1s",
    ("llm", "500"): r"LLM narrative unavailable: provider error \(500\) 3 times",
    ("llm", "429"): r"LLM narrative unavailable: rate limited \(429\) 3 times; last Retry-After 1s",
    ("llm", "malformed"): r"LLM narrative unavailable: unreadable answer from the provider",
}


@pytest.fixture
def kube():
    scenario = load_scenario(SCENARIO)
    moment = now()
    with KubernetesStandIn(
        scenario.kubernetes_objects(moment), scenario.kubernetes_logs(moment)
    ) as standin:
        yield scenario, moment, standin


def faulty(source_url: str, fault: str) -> tuple[str, FaultProxy | None]:
    """The address the client is given: nothing listening (down), or a proxy with the fault."""
    if fault == "down":
        return dead_url(), None
    proxy = FaultProxy(source_url, fault=fault, delay=SLOW, retry_after=RETRY_AFTER)
    return proxy.url, proxy


def kubeconfig_for(standin: KubernetesStandIn, server: str) -> str:
    config = standin.kubeconfig()
    config["clusters"][0]["cluster"]["server"] = server
    return yaml.safe_dump(config)


def open_incident(client, scenario, moment, cluster: Cluster) -> Incident:
    integration = Integration(name=f"am-{cluster.name}", kind="alertmanager", cluster=cluster)
    token = issue_integration_token(integration)
    integration.save()
    answer = post(client, scenario.alert_notification(moment, "faults"), token)
    assert answer.status_code == 200, answer.content
    (incident_id,) = answer.json()["incidents"]
    return Incident.objects.get(pk=incident_id)


def announce_until_settled(event: TimelineEvent) -> tuple[str, list[float]]:
    """Run the announcement as the task and its retries would, the waits passing at once."""
    waits: list[float] = []
    for attempt in range(20):
        try:
            return slack.announce(event.pk, attempt=attempt), waits
        except slack.SlackRetry as exc:
            waits.append(exc.countdown)
            SlackMessage.objects.update(retry_at=None)
            cache.clear()  # and with it the rate limit the workers share
    pytest.fail(f"the announcement never settled; waits asked: {waits}")


@pytest.mark.django_db
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("source", SOURCES)
def test_a_failing_source_is_named_on_the_page_and_the_analysis_stands(
    source, fault, kube, client, client_as, settings
):
    scenario, moment, standin = kube
    settings.VIGIL_COLLECT_REQUEST_TIMEOUT = TIMEOUT
    proxies: list[FaultProxy] = []
    llm = slack_standin = None
    try:
        kube_server = standin.url
        prometheus_url = ""
        if source == "kubernetes":
            kube_server, proxy = faulty(standin.url, fault)
            proxies.append(proxy)
        if source == "prometheus":
            # Nothing behind it: every fault is answered by the proxy, or nobody (down).
            prometheus_url, proxy = faulty("", fault)
            proxies.append(proxy)
        if source == "llm":
            llm = OpenAIStandin()
            url, proxy = faulty(llm.url.removesuffix("/v1"), fault)
            proxies.append(proxy)
            settings.VIGIL_LLM = "openai:served-model"
            settings.VIGIL_LLM_BASE_URL = f"{url}/v1"
            settings.VIGIL_LLM_API_KEY = "EMPTY"
            settings.VIGIL_LLM_TIMEOUT = TIMEOUT
            settings.VIGIL_LLM_MAX_RETRIES = 2
            settings.VIGIL_LLM_MAX_RETRY_WAIT = 2
        if source == "slack":
            slack_standin = SlackStandin().__enter__()
            configure(settings, slack_standin)
            url, proxy = faulty(slack_standin.url, fault)
            proxies.append(proxy)
            settings.VIGIL_SLACK_API_URL = f"{url}/api/"
            settings.VIGIL_SLACK_TIMEOUT = TIMEOUT

        cluster = Cluster.objects.create(
            name=f"faults-{source}-{fault}",
            prometheus_url=prometheus_url,
            kubeconfig=kubeconfig_for(standin, kube_server),
        )
        incident = open_incident(client, scenario, moment, cluster)

        assert collect_now(incident.pk) == "finished"
        analysis = run_analysis(incident.pk, enqueue_narrative=False)
        assert analysis.status == Analysis.Status.READY
        assert analysis.hypotheses and analysis.hypotheses[0]["category"]
        waits: list[float] = []
        if source == "llm":
            analysis = write_narrative(analysis.pk)
            assert analysis.llm_status == Analysis.LLMStatus.FALLBACK, analysis.llm_error
            assert analysis.status == Analysis.Status.READY and analysis.hypotheses
        if source == "slack":
            event = incident.timeline.get(kind=TimelineEvent.Kind.ANALYSIS_READY)
            outcome, waits = announce_until_settled(event)
            assert outcome == "failed"
            if fault == "429":
                # As Retry-After asked: the whole of it, or what is left of it when a later call
                # of the same attempt meets the limit another call was told (shared, no request).
                assert waits and waits[0] == RETRY_AFTER
                assert all(RETRY_AFTER - 0.5 < w <= RETRY_AFTER for w in waits), waits

        failed = dict(
            Evidence.objects.filter(incident=incident, status="failed").values_list(
                "collector", "reason"
            )
        )
        if source == "kubernetes":
            # Every collector reading Kubernetes says so; none hangs, none is written off.
            assert {"kubernetes", "logs"} <= set(failed), failed
        page = client_as("viewer").get(f"/incidents/{incident.pk}/")
        assert page.status_code == 200
        text = re.sub(r"\s+", " ", page.content.decode())
        text = text.replace("&#x27;", "'").replace("&quot;", '"').replace("&amp;", "&")
        pattern = EXPECTED[(source, fault)]
        said = re.search(pattern + r"[^<]{0,80}", text)  # within one element of the page
        assert said, (pattern, failed, _failure_lines(text), analysis.llm_error)
        if source in ("prometheus", "kubernetes"):
            assert f'id="source-{source}"' in text
        # The analysis is on the page, whatever failed.
        assert "Most likely" in text or analysis.summary[:40] in text
        record(
            f"{source}: {fault}",
            inputs=1,
            lost=0,
            requests_to_source=sum(p.count for p in proxies if p),
            page_says=said.group(0),
            slack_waits=waits,
        )
    finally:
        for proxy in proxies:
            if proxy:
                proxy.close()
        if llm:
            llm.close()
        if slack_standin:
            slack_standin.__exit__(None, None, None)


def _failure_lines(text: str) -> list[str]:
    found = re.findall(
        r"(failed: [^<]{0,200}|LLM narrative unavailable[^<]{0,200}|Slack [^<]{0,200})", text
    )
    return [json.dumps(f)[1:-1] for f in found]
