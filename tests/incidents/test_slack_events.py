"""`POST /slack/events`: signing, url_verification, link_shared, and the unfurls it leads to.

Requests are signed the way Slack signs them, with slack_sdk's own SignatureVerifier, so the
view's verification is checked against the SDK's idea of a valid request.
"""

from __future__ import annotations

import json
import time

import pytest
from django.core.cache import cache
from slack_sdk.signature import SignatureVerifier

from incidents import slack, slack_events
from incidents.models import SlackEventReceipt, TimelineEvent
from tests.incidents.slack_support import (
    BASE,
    CHANNEL,
    SECRET,
    configure,
    event_of,
    open_incident,
    ready_analysis,
)
from tests.slack_standin import SlackStandin

pytestmark = pytest.mark.django_db
MESSAGE_TS = "1700000000.000100"


@pytest.fixture
def standin(settings):
    with SlackStandin() as standin:
        yield configure(settings, standin)


@pytest.fixture
def enqueued(monkeypatch):
    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(
        slack_events,
        "publish_on_commit",
        lambda task, *args, **kwargs: calls.append((task.name, args)),
    )
    return calls


def signed(
    client,
    payload: dict | None = None,
    *,
    body: str | None = None,
    secret: str = SECRET,
    timestamp: int | None = None,
    headers: dict | None = None,
):
    body = json.dumps(payload) if body is None else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    sent = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature, **(headers or {})}
    return client.post("/slack/events", data=body, content_type="application/json", headers=sent)


def link_shared(*urls: str, channel: str = CHANNEL, event_id: str = "Ev0001", **extra) -> dict:
    return {
        "token": "legacy-verification-token",
        "team_id": "T0001",
        "api_app_id": "A0001",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "event": {
            "type": "link_shared",
            "channel": channel,
            "user": "U0001",
            "message_ts": MESSAGE_TS,
            "unfurl_id": "C0DEFAULT.1700000000.000100.abcdef",
            "source": "conversations_history",
            "links": [{"domain": "vigil.example.com", "url": url} for url in urls],
            **extra,
        },
    }


# --- verification --------------------------------------------------------------------------------


def test_url_verification_answers_the_challenge(standin, client):
    response = signed(client, {"type": "url_verification", "token": "t", "challenge": "c-123"})
    assert response.status_code == 200
    assert response.json() == {"challenge": "c-123"}


@pytest.mark.parametrize(
    ("secret", "skew", "message"),
    [
        ("not-the-secret", 0, "bad signature"),
        (SECRET, -310, "stale request"),  # a replay of an old request
        (SECRET, 310, "stale request"),
    ],
)
def test_bad_or_stale_signatures_are_refused(standin, client, secret, skew, message):
    payload = {"type": "url_verification", "challenge": "c"}
    response = signed(client, payload, secret=secret, timestamp=int(time.time()) + skew)
    assert response.status_code == 401
    assert response.json()["error"].startswith(message)


def test_a_signature_of_another_body_is_refused(standin, client):
    ts = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body='{"a": 1}')
    response = client.post(
        "/slack/events",
        data=json.dumps({"type": "url_verification", "challenge": "c"}),
        content_type="application/json",
        headers={"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature},
    )
    assert response.status_code == 401
    assert response.json() == {"error": "bad signature"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Slack-Request-Timestamp": "1700000000"}, {"X-Slack-Signature": "v0=00"}],
)
def test_missing_signature_headers_are_refused(standin, client, headers):
    response = client.post(
        "/slack/events", data="{}", content_type="application/json", headers=headers
    )
    assert response.status_code == 401
    assert "missing" in response.json()["error"]


def test_a_timestamp_that_is_not_a_number_is_refused(standin, client):
    response = client.post(
        "/slack/events",
        data="{}",
        content_type="application/json",
        headers={"X-Slack-Request-Timestamp": "yesterday", "X-Slack-Signature": "v0=00"},
    )
    assert response.status_code == 401


def test_without_a_signing_secret_the_endpoint_says_it_is_not_configured(standin, client, settings):
    settings.VIGIL_SLACK_SIGNING_SECRET = ""
    response = signed(client, {"type": "url_verification", "challenge": "c"})
    assert response.status_code == 404
    assert response.json() == {
        "error": "Slack events are not configured: set VIGIL_SLACK_SIGNING_SECRET"
    }


def test_only_post_is_allowed(standin, client):
    assert client.get("/slack/events").status_code == 405


def test_a_signed_body_that_is_not_json_is_a_400(standin, client):
    assert signed(client, body="not json").status_code == 400


def test_other_events_are_acknowledged_and_ignored(standin, client, enqueued):
    payload = {"type": "event_callback", "event_id": "Ev9", "event": {"type": "app_mention"}}
    response = signed(client, payload)
    assert response.status_code == 200
    assert enqueued == []
    assert not SlackEventReceipt.objects.exists()


# --- link_shared ---------------------------------------------------------------------------------


def test_link_shared_is_stored_and_enqueued_once_even_when_slack_retries(standin, client, enqueued):
    payload = link_shared(f"{BASE}/incidents/1/")
    response = signed(client, payload)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    receipt = SlackEventReceipt.objects.get()
    assert (receipt.event_id, receipt.kind, receipt.status) == ("Ev0001", "link_shared", "received")
    assert receipt.payload == payload["event"]
    assert enqueued == [("incidents.tasks.slack_unfurl", (receipt.pk,))]

    retry = signed(client, payload, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "x"})
    assert retry.status_code == 200
    assert retry.json() == {"ok": True, "duplicate": True}
    assert len(enqueued) == 1
    assert SlackEventReceipt.objects.count() == 1


def test_link_shared_without_a_bot_token_is_recorded_but_not_unfurled(
    standin, client, enqueued, settings
):
    settings.VIGIL_SLACK_BOT_TOKEN = ""
    assert signed(client, link_shared(f"{BASE}/incidents/1/")).status_code == 200
    assert enqueued == []
    assert SlackEventReceipt.objects.get().status == "failed"


def _receipt(payload: dict) -> SlackEventReceipt:
    return SlackEventReceipt.objects.create(
        event_id=payload["event_id"], kind="link_shared", payload=payload["event"]
    )


def test_an_allowed_channel_gets_the_incident_status_and_top_hypothesis(standin, client, am_token):
    incident = open_incident(client, am_token, severity="critical", service="chat-api")
    ready_analysis(incident)
    opened = event_of(incident, TimelineEvent.Kind.INCIDENT_OPENED)
    timeline_url = f"{BASE}/incidents/{incident.pk}/timeline?event={opened.pk}"
    detail_url = f"{BASE}/incidents/{incident.pk}/"
    receipt = _receipt(
        link_shared(timeline_url, detail_url, "https://elsewhere.example.com/incidents/1/")
    )

    assert slack_events.unfurl(receipt.pk) == "done"

    (call,) = standin.calls()
    assert call.method == "chat.unfurl"
    top = "Top hypothesis: kv-cache-saturation of Deployment llm/chat-api (87%) · rules"
    title = f"*<{{url}}|Incident #{incident.pk}: KVCacheHigh summary>*"
    line = ":red_circle: open · critical · chat-api in llm"
    timeline_link = timeline_url.replace("&", "&amp;")
    assert call.json == {
        "channel": CHANNEL,
        "ts": MESSAGE_TS,
        "unfurls": {
            timeline_url: {
                "blocks": [
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": f"{title.format(url=timeline_link)}\n{line}",
                        },
                    },
                    {
                        "type": "context",
                        "elements": [
                            {
                                "type": "mrkdwn",
                                "text": f"{top} · Linked event: Opened by KVCacheHigh",
                            }
                        ],
                    },
                ]
            },
            detail_url: {
                "blocks": [
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": f"{title.format(url=detail_url)}\n{line}",
                        },
                    },
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": top}]},
                ]
            },
        },
    }
    receipt.refresh_from_db()
    assert (receipt.status, receipt.attempts) == ("done", 1)


def test_other_channels_get_nothing_private(standin, client, am_token):
    incident = open_incident(client, am_token, "SecretModelLeak")
    url = f"{BASE}/incidents/{incident.pk}/timeline"
    receipt = _receipt(link_shared(url, channel="C0ELSEWHERE"))

    slack_events.unfurl(receipt.pk)

    (call,) = standin.calls()
    assert call.json == {
        "channel": "C0ELSEWHERE",
        "ts": MESSAGE_TS,
        "unfurls": {
            url: {
                "blocks": [
                    {
                        "type": "section",
                        "text": {
                            "type": "mrkdwn",
                            "text": f"<{url}|Vigil incident #{incident.pk}> — open to view",
                        },
                    }
                ]
            }
        },
    }
    assert "SecretModelLeak" not in json.dumps(call.json)


def test_the_unfurl_channels_setting_decides_where_details_go(standin, client, am_token, settings):
    incident = open_incident(client, am_token)
    url = f"{BASE}/incidents/{incident.pk}/"
    settings.VIGIL_SLACK_UNFURL_CHANNELS = ["C0ONCALL"]
    for event_id, channel in (("Ev1", CHANNEL), ("Ev2", "C0ONCALL")):
        slack_events.unfurl(_receipt(link_shared(url, channel=channel, event_id=event_id)).pk)
    settings.VIGIL_SLACK_UNFURL_CHANNELS = ["*"]
    slack_events.unfurl(_receipt(link_shared(url, channel="C0ANY", event_id="Ev3")).pk)

    texts = [c.json["unfurls"][url]["blocks"][0]["text"]["text"] for c in standin.calls()]
    assert texts[0].endswith("— open to view")  # the default channel is no longer listed
    assert "KVCacheHigh summary" in texts[1]
    assert "KVCacheHigh summary" in texts[2]


def test_a_composer_preview_is_unfurled_by_unfurl_id(standin, client, am_token):
    incident = open_incident(client, am_token)
    url = f"{BASE}/incidents/{incident.pk}/"
    receipt = _receipt(
        link_shared(
            url,
            channel="COMPOSER",
            source="composer",
            unfurl_id="U0001-composer-id",
            message_ts="U0001-909b5454-75f8-4ac4",
        )
    )
    slack_events.unfurl(receipt.pk)
    (call,) = standin.calls()
    assert set(call.json) == {"unfurl_id", "source", "unfurls"}
    assert (call.json["unfurl_id"], call.json["source"]) == ("U0001-composer-id", "composer")
    # Where it will be posted is not known yet: nothing private.
    assert call.json["unfurls"][url]["blocks"][0]["text"]["text"].endswith("— open to view")


def test_links_that_are_not_vigil_incidents_are_left_alone(standin, client, am_token):
    receipt = _receipt(
        link_shared(
            f"{BASE}/incidents/999999/",  # no such incident
            f"{BASE}/admin/",
            "https://evil.example.com/incidents/1/",
        )
    )
    assert slack_events.unfurl(receipt.pk) == "done"
    assert standin.calls() == []
    receipt.refresh_from_db()
    assert receipt.error == "no Vigil incident link"


def test_an_unfurl_rate_limit_asks_for_a_retry_after_retry_after(standin, client, am_token):
    incident = open_incident(client, am_token)
    receipt = _receipt(link_shared(f"{BASE}/incidents/{incident.pk}/"))
    standin.rate_limit("chat.unfurl", retry_after=4)
    with pytest.raises(slack.SlackRetry) as raised:
        slack_events.unfurl(receipt.pk)
    assert raised.value.countdown == 4.0
    # Within the wait, no call: Slack's limit is shared by every worker.
    with pytest.raises(slack.SlackRetry) as raised:
        slack_events.unfurl(receipt.pk, attempt=1)
    assert 3.0 < raised.value.countdown <= 4.0
    assert len(standin.calls("chat.unfurl")) == 1
    cache.clear()  # the wait is over
    assert slack_events.unfurl(receipt.pk, attempt=2) == "done"


def test_an_unfurl_slack_refuses_is_recorded(standin, client, am_token):
    incident = open_incident(client, am_token)
    receipt = _receipt(link_shared(f"{BASE}/incidents/{incident.pk}/"))
    standin.fail("chat.unfurl", "cannot_unfurl_url")
    assert slack_events.unfurl(receipt.pk) == "failed"
    receipt.refresh_from_db()
    assert (receipt.status, receipt.error) == ("failed", "cannot_unfurl_url")
    assert slack_events.unfurl(receipt.pk) == "done"  # never twice
    assert len(standin.calls()) == 1


@pytest.mark.parametrize(
    ("base", "url", "parsed"),
    [
        ("https://vigil.example.com", "https://vigil.example.com/incidents/42", (42, None)),
        ("https://vigil.example.com", "https://vigil.example.com/incidents/42/", (42, None)),
        (
            "https://vigil.example.com",
            "https://VIGIL.example.com/incidents/42/timeline?event=7#event-7",
            (42, 7),
        ),
        ("https://vigil.example.com", "http://vigil.example.com/incidents/42/timeline", (42, None)),
        ("https://vigil.example.com", "https://vigil.example.com/incidents/", None),
        ("https://vigil.example.com", "https://vigil.example.com/incidents/x/", None),
        ("https://vigil.example.com", "https://vigil.example.com:8443/incidents/4/", None),
        ("https://vigil.example.com", "https://other.example.com/incidents/4/", None),
        ("https://ops.example.com/vigil", "https://ops.example.com/vigil/incidents/4/", (4, None)),
        ("https://ops.example.com/vigil", "https://ops.example.com/incidents/4/", None),
    ],
)
def test_vigil_incident_urls_are_recognised_on_vigils_own_host(settings, base, url, parsed):
    settings.VIGIL_BASE_URL = base
    assert slack_events.parse_incident_url(url) == parsed


def test_slack_needs_no_csrf_token(standin):
    from django.test import Client

    response = signed(
        Client(enforce_csrf_checks=True), {"type": "url_verification", "challenge": "c"}
    )
    assert response.status_code == 200


def test_a_body_over_a_mebibyte_is_refused(standin, client):
    body = json.dumps({"type": "url_verification", "challenge": "x" * (1024 * 1024)})
    assert signed(client, body=body).status_code == 413
