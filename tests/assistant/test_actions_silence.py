"""silence-alert and expire_silence: the guard rails alone, then against a real Alertmanager 0.25."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from assistant.actions import ActionConflict, ActionError, expire_silence, get
from assistant.actions import base as actions_base
from assistant.actions.base import ActionContext
from collectors.base import ClusterSources, Entity
from tests.assistant.actions_support import ALERTS
from tests.e2e.alertmanager_server import running_alertmanager
from tests.support import free_port

AT = datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC)


def ctx(url: str = "http://alertmanager.monitoring:9093", **kwargs) -> ActionContext:
    return ActionContext(
        cluster=ClusterSources(name="prod", alertmanager_url=url),
        scope_entities=set(),
        alert_labels=kwargs.pop("alert_labels", [dict(a) for a in ALERTS]),
        timeout=5.0,
        actor=kwargs.pop("actor", "vigil:alice"),
        **kwargs,
    )


# --- without Alertmanager: the body, the guard rails -------------------------------------------


def test_the_preview_is_the_exact_post_with_default_matchers_and_sends_nothing(monkeypatch):
    monkeypatch.setattr(actions_base, "utc_now", lambda: AT)
    # nothing listens there: the preview must not try
    preview = get("silence-alert").preview(
        None,
        {"comment": "rolling back chat-api", "duration": "2h"},
        ctx(f"http://127.0.0.1:{free_port()}/am/"),
    )
    matchers = [
        {
            "name": "alertname",
            "value": "ChatAPIHighErrorRate|VLLMTimeToFirstTokenHigh",
            "isRegex": True,
            "isEqual": True,
        },
        {"name": "namespace", "value": "llm", "isRegex": False, "isEqual": True},
    ]
    assert preview.requests == [
        {
            "method": "POST",
            "path": "/am/api/v2/silences",
            "query": {},
            "content_type": "application/json",
            "body": {
                "matchers": matchers,
                "startsAt": "2026-11-23T10:00:00.250Z",
                "endsAt": "2026-11-23T12:00:00.250Z",
                "createdBy": "vigil:alice",
                "comment": "rolling back chat-api",
            },
        }
    ]
    assert preview.summary == (
        'Silence alerts matching {alertname=~"ChatAPIHighErrorRate|VLLMTimeToFirstTokenHigh", '
        'namespace="llm"} for 2h in Alertmanager (2 of the incident\'s 2 alerts)'
    )
    assert preview.diff == ""


def test_the_idempotency_key_goes_into_the_comment():
    preview = get("silence-alert").preview(
        Entity("Alertmanager", None, "alertmanager"),
        {"comment": "known issue"},
        ctx(idempotency_key="incident-42/action-7"),
    )
    assert preview.requests[0]["body"]["comment"] == "known issue [vigil incident-42/action-7]"


def test_default_matchers_escape_regex_characters_in_values():
    alerts = [{"alertname": "A.B", "namespace": "x"}, {"alertname": "C(1)", "namespace": "x"}]
    preview = get("silence-alert").preview(None, {"comment": "c"}, ctx(alert_labels=alerts))
    [alertname, namespace] = preview.requests[0]["body"]["matchers"]
    assert alertname["value"] == r"A\.B|C\(1\)"
    assert namespace == {"name": "namespace", "value": "x", "isRegex": False, "isEqual": True}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"comment": "c", "matchers": [{"name": "alertname", "value": "KubeNodeNotReady"}]},
            'silence-alert: {alertname="KubeNodeNotReady"} matches none of this incident\'s alerts',
        ),
        (
            {
                "comment": "c",
                "matchers": [
                    {"name": "alertname", "value": "ChatAPIHighErrorRate"},
                    {"name": "namespace", "value": "llm", "isEqual": False},
                ],
            },
            '{alertname="ChatAPIHighErrorRate", namespace!="llm"} matches none of this incident\'s alerts',
        ),
        (
            {"comment": "c", "matchers": [{"name": "team", "value": ".*", "isRegex": True}]},
            'every matcher matches the empty string (team=~".*")',
        ),
    ],
)
def test_matchers_must_match_one_of_the_incident_s_alerts(params, message):
    with pytest.raises(ActionError) as raised:
        get("silence-alert").preview(None, params, ctx())
    assert message in str(raised.value)


def test_a_regex_matcher_is_anchored_as_in_alertmanager():
    # "ChatAPI" alone does not match "ChatAPIHighErrorRate": Alertmanager anchors regexes
    params = {
        "comment": "c",
        "matchers": [{"name": "alertname", "value": "ChatAPI", "isRegex": True}],
    }
    with pytest.raises(ActionError, match="matches none"):
        get("silence-alert").preview(None, params, ctx())
    params["matchers"][0]["value"] = "ChatAPI.*"
    assert (
        get("silence-alert")
        .preview(None, params, ctx())
        .summary.endswith("(1 of the incident's 2 alerts)")
    )


def test_no_alertmanager_url_is_a_clear_error():
    with pytest.raises(ActionError) as raised:
        get("silence-alert").preview(None, {"comment": "c"}, ctx(url=""))
    assert str(raised.value).startswith("cluster prod has no Alertmanager URL configured")
    with pytest.raises(ActionError, match="has no Alertmanager URL"):
        expire_silence(ctx(url=""), "6a7f3c2e-1b4d-4e5f-8a9b-0c1d2e3f4a5b")


def test_expire_silence_refuses_what_is_not_a_silence_id():
    with pytest.raises(ActionError, match="is not an Alertmanager silence id"):
        expire_silence(ctx(), "../status")


def test_an_unreachable_alertmanager_is_a_retryable_error():
    url = f"http://127.0.0.1:{free_port()}"
    action = get("silence-alert")
    preview = action.preview(None, {"comment": "c"}, ctx(url))
    with pytest.raises(ActionError) as raised:
        action.execute(None, {"comment": "c"}, ctx(url), fingerprint=preview.fingerprint)
    assert raised.value.retryable
    assert str(raised.value).startswith("Alertmanager unreachable")


# --- against a real Alertmanager ---------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path):
    # Its receiver is never used: no alert is posted to it.
    with running_alertmanager(
        tmp_path, "http://127.0.0.1:9/hooks/alertmanager", "unused"
    ) as server:
        yield server


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.e2e
def test_a_silence_is_created_found_again_on_retry_and_expired(alertmanager):
    action = get("silence-alert")
    params = {
        "comment": "chat-api is being rolled back",
        "duration": "30m",
        "matchers": [
            {"name": "alertname", "value": "ChatAPIHighErrorRate"},
            {"name": "namespace", "value": "llm|staging", "isRegex": True},
        ],
    }
    context = ctx(alertmanager.url, idempotency_key="incident-42/action-7")
    preview = action.preview(None, params, context)

    before = datetime.now(UTC)
    outcome = action.execute(None, params, context, fingerprint=preview.fingerprint)
    assert outcome.ok
    silence_id = outcome.result["silence_id"]
    assert outcome.message == f"silence {silence_id} created until {outcome.result['ends_at']}"
    assert outcome.result["url"] == f"{alertmanager.url}/#/silences/{silence_id}"
    [sent] = outcome.requests
    assert (sent["method"], sent["path"]) == ("POST", "/api/v2/silences")
    assert outcome.responses == [{"status": 200, "body": {"silenceID": silence_id}}]

    silences = alertmanager.http.get(f"{alertmanager.url}/api/v2/silences", timeout=5).json()
    [silence] = silences
    assert silence["id"] == silence_id
    assert silence["status"]["state"] == "active"
    assert silence["matchers"] == [
        {"name": "alertname", "value": "ChatAPIHighErrorRate", "isRegex": False, "isEqual": True},
        {"name": "namespace", "value": "llm|staging", "isRegex": True, "isEqual": True},
    ]
    assert silence["createdBy"] == "vigil:alice"
    assert silence["comment"] == "chat-api is being rolled back [vigil incident-42/action-7]"
    ends = parse(silence["endsAt"])
    assert before + timedelta(minutes=30) - timedelta(seconds=1) <= ends
    assert ends <= datetime.now(UTC) + timedelta(minutes=30)

    # a retry (the answer of the first POST lost) finds the silence instead of adding one
    again = action.execute(None, params, context, fingerprint=preview.fingerprint)
    assert again.ok and again.result["silence_id"] == silence_id and again.result["skipped"]
    assert again.requests == []
    assert len(alertmanager.http.get(f"{alertmanager.url}/api/v2/silences", timeout=5).json()) == 1

    expired = expire_silence(context, silence_id)
    assert (expired.ok, expired.message) == (True, f"silence {silence_id} expired")
    assert [(r["method"], r["path"], r["body"]) for r in expired.requests] == [
        ("DELETE", f"/api/v2/silence/{silence_id}", None)
    ]
    state = alertmanager.http.get(
        f"{alertmanager.url}/api/v2/silence/{silence_id}", timeout=5
    ).json()
    assert state["status"]["state"] == "expired"

    twice = expire_silence(context, silence_id)
    assert twice.ok and twice.result["skipped"] and twice.requests == []

    # the expired silence no longer counts: executing again creates a new one
    fresh = action.execute(None, params, context, fingerprint=preview.fingerprint)
    assert fresh.result["silence_id"] != silence_id


@pytest.mark.e2e
def test_expiring_an_unknown_silence_says_so(alertmanager):
    with pytest.raises(
        ActionError, match="Alertmanager has no silence 6a7f3c2e-1b4d-4e5f-8a9b-0c1d2e3f4a5b"
    ):
        expire_silence(ctx(alertmanager.url), "6a7f3c2e-1b4d-4e5f-8a9b-0c1d2e3f4a5b")


@pytest.mark.e2e
def test_a_silence_whose_parameters_changed_since_the_preview_is_not_created(alertmanager):
    action = get("silence-alert")
    preview = action.preview(None, {"comment": "first"}, ctx(alertmanager.url))
    with pytest.raises(ActionConflict, match="parameters of silence-alert changed"):
        action.execute(
            None, {"comment": "second"}, ctx(alertmanager.url), fingerprint=preview.fingerprint
        )
    # the incident gained an alert: the default matchers are not the previewed ones any more
    more = [*ALERTS, {"alertname": "KVCacheHigh", "namespace": "llm"}]
    with pytest.raises(ActionConflict, match="default matchers"):
        action.execute(
            None,
            {"comment": "first"},
            ctx(alertmanager.url, alert_labels=more),
            fingerprint=preview.fingerprint,
        )
    assert alertmanager.http.get(f"{alertmanager.url}/api/v2/silences", timeout=5).json() == []
