"""Secrets (corpus/secrets.txt) placed in a replayed incident's pod logs, pod spec, alert labels,
annotations and generator URL, and its deploy events, never reach the database (evidence, alerts,
timeline payloads, the stored webhook bodies: every table), a page, the API, a Slack payload or
the LLM prompt.

Alert labels and annotations are redacted at ingest (incidents/alertmanager.py), before the
delivery is stored: Alertmanager forwards whatever a rule's labels and annotations contain, and
an SRE expects a password in an annotation to stay out of Slack and the prompt.
"""

from __future__ import annotations

import pytest

from collectors.models import Evidence
from collectors.redaction import REDACTED
from incidents.models import Alert, WebhookDelivery
from tests.security.conftest import tally
from tests.security.pipeline import replayed_incident, secrets_corpus, surfaces

pytestmark = pytest.mark.django_db
SECRETS = secrets_corpus()


def _inputs() -> dict:
    contexts = [line.split(": ", 1)[-1] for _, line in SECRETS]  # "ERROR db: <this part>"
    return {
        "log_lines": [line for _, line in SECRETS],
        "labels": {f"s_{i}": text for i, text in enumerate(contexts)},
        "annotations": {
            "summary": f"chat-api cannot reach {contexts[3]}",  # the DSN becomes the title
            "description": " | ".join(contexts),
            **{f"d_{i}": text for i, text in enumerate(contexts)},
        },
        "deploy_text": " ".join(contexts),
        "pod_env": {"DB_PASSWORD": SECRETS[12][0], "OPENAI_API_KEY": SECRETS[8][0]},
        "generator_url": f"http://prometheus:9090/graph?g0.expr=up&access_token={SECRETS[15][0]}",
    }


def test_no_secret_reaches_the_database_pages_api_slack_or_prompt(client, personas, settings):
    with replayed_incident(client, **_inputs()) as (_, incident):
        client.force_login(personas["approver"])
        seen = surfaces(client, settings, incident)
        # the secrets did go through the pipeline (redacted), so the absence below means something
        logs = Evidence.objects.filter(incident=incident, kind="log_signatures")
        assert any(REDACTED in str(e.data) for e in logs)
        alert = Alert.objects.filter(incident=incident).first()
        assert REDACTED in alert.labels["s_0"] and REDACTED in alert.annotations["description"]
        assert REDACTED in incident.title
        assert all(REDACTED.encode() in bytes(d.body) for d in WebhookDelivery.objects.all())

    places = {"database": seen.database, "API": seen.api, "Slack": seen.slack}
    places["LLM prompt"] = seen.prompt
    places.update({f"page: {name}": html for name, html in seen.pages.items()})
    leaks = [
        (secret[:12] + "…", where)
        for secret, _ in SECRETS
        for where, text in places.items()
        if secret in text
    ]
    tally("redaction: secrets placed in a replayed incident", len(SECRETS))
    tally("redaction: surfaces searched (tables, pages, API, Slack, prompt)", len(places))
    tally("redaction: secrets leaked", len(leaks))
    assert leaks == []
