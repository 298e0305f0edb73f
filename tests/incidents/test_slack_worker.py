"""The whole path with a real Celery worker: an alert in, a Slack message and its thread out."""

from __future__ import annotations

import pytest

from incidents.models import Incident, SlackMessage, SlackThread, TimelineEvent
from tests.incidents.payloads import firing, group, post
from tests.incidents.slack_support import BASE, CHANNEL, TOKEN, configure
from tests.slack_standin import SlackStandin
from tests.support import wait_for


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_posts_the_incident_then_threads_its_analysis(
    client, am_token, settings, monkeypatch, request
):
    with SlackStandin() as standin:
        configure(settings, standin)
        # The worker is another process: it reads its Slack settings from the environment.
        for name, value in {
            "VIGIL_BASE_URL": BASE,
            "VIGIL_SLACK_BOT_TOKEN": TOKEN,
            "VIGIL_SLACK_CHANNEL": CHANNEL,
            "VIGIL_SLACK_API_URL": standin.api_url,
        }.items():
            monkeypatch.setenv(name, value)
        _, log = request.getfixturevalue("celery_worker_process")

        response = post(client, group(firing("WorkerSlack")), am_token)
        assert response.status_code == 200  # answered before anything reached Slack
        incident = Incident.objects.get()

        def posted():
            return len(standin.calls("chat.postMessage")) >= 2 and standin.calls("chat.update")

        wait_for(
            posted,
            timeout=90,
            message=f"the parent and the analysis reply; worker log:\n{log.read_text()[-3000:]}",
        )
        parent, reply = standin.calls("chat.postMessage")[:2]
        opened = incident.timeline.get(kind=TimelineEvent.Kind.INCIDENT_OPENED)
        ready = incident.timeline.get(kind=TimelineEvent.Kind.ANALYSIS_READY)
        assert parent.json["channel"] == CHANNEL
        assert "thread_ts" not in parent.json
        assert parent.json["blocks"][3]["elements"][0]["url"] == (
            f"{BASE}/incidents/{incident.pk}/timeline?event={opened.pk}#event-{opened.pk}"
        )
        assert reply.json["thread_ts"] == SlackThread.objects.get(incident=incident).ts
        assert reply.json["blocks"][-1]["elements"][0]["url"] == (
            f"{BASE}/incidents/{incident.pk}/timeline?event={ready.pk}#event-{ready.pk}"
        )
        assert set(SlackMessage.objects.values_list("status", flat=True)) == {"sent"}
