"""Hostile values in the places fuzzers rarely reach: NUL characters, integers past 64 bits, strings
past every column, in path, query and body of the pages and the API. Never a 5xx.

Most of these were 500s on PostgreSQL (NUL is refused in text and jsonb, ids past bigint are
refused in comparisons) while SQLite took them silently; CI runs this file on PostgreSQL.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from assistant.models import Analysis
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post
from tests.security.conftest import tally

pytestmark = pytest.mark.django_db

BIG = "99999999999999999999999"  # past 64 bits
BIGINT = "9223372036854775808"  # one past PostgreSQL's bigint
LONG = "x" * 5000


@pytest.fixture
def ids(client, am_token):
    """A real incident and analysis (and an action on it) for the requests to reach logic."""
    from assistant.models import ActionProposal
    from assistant.review import record_revision

    post(client, group(firing()), am_token)
    incident = Incident.objects.get()
    analysis = Analysis.objects.create(incident=incident, status=Analysis.Status.READY)
    record_revision(analysis, "Most likely kv-cache-saturation.", "rules")
    action = ActionProposal.objects.create(
        incident=incident, analysis=analysis, action="none", params={"steps": "Page the vendor."}
    )
    return {"id": incident.pk, "aid": analysis.pk, "xid": action.pk}


@pytest.fixture
def approver_client(personas, api_key):
    """A logged-in approver whose requests also carry their API key; errors become responses."""
    client = Client(raise_request_exception=False)
    client.force_login(personas["approver"])
    key = api_key("approver")
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {key}"
    return client


def _json(client, method, url, body):
    return getattr(client, method)(url, data=json.dumps(body), content_type="application/json")


NUL = "a\x00b"

REQUESTS = [
    # NUL in query strings: filters, pagination, timeline cursors
    ("get", "/api/v1/incidents?severity=%00", None),
    ("get", "/api/v1/incidents?label=a%00:b", None),
    ("get", "/api/v1/incidents?label=a:b%00", None),
    ("get", "/incidents/?severity=%00", None),
    ("get", "/incidents/?status=%00", None),
    ("get", "/incidents/{id}/timeline?kind=%00", None),
    ("get", "/incidents/{id}/timeline?family=%00&event=%00", None),
    ("get", "/audit/?q=%00", None),
    # NUL in JSON bodies
    ("post", "/api/v1/analyses/{aid}/summary", {"text": NUL}),
    ("post", "/api/v1/analyses/{aid}/reject", {"reason": NUL}),
    ("post", "/api/v1/incidents/{id}/actions", {"action": "none", "params": {"steps": NUL}}),
    ("post", "/api/v1/incidents/{id}/actions", {"action": "none", "rationale": NUL}),
    ("post", "/api/v1/actions/{xid}/params", {"params": {"steps": NUL}}),
    ("patch", "/api/v1/actions/{xid}/params", {"params": {NUL: "x"}}),
    ("post", "/api/v1/actions/{xid}/reject", {"reason": NUL}),
    ("post", "/api/v1/deploys", {"service": "s", "version": NUL}),
    # NUL in form bodies
    ("form", "/incidents/{id}/acknowledge", {"note": NUL}),
    ("form", "/incidents/{id}/analyses/{aid}/summary", {"text": NUL}),
    ("form", "/incidents/{id}/analyses/{aid}/reject", {"reason": NUL}),
    ("form", "/incidents/{id}/actions/new", {"action": "none", "params": '{"steps": "a\\u0000"}'}),
    ("form", "/incidents/{id}/actions/{xid}/reject", {"reason": NUL}),
    # integers past 64 bits, in paths and queries
    ("get", f"/api/v1/incidents/{BIG}", None),
    ("get", f"/api/v1/incidents/{BIGINT}", None),
    ("get", f"/api/v1/actions/{BIGINT}", None),
    ("get", f"/api/v1/analyses/{BIGINT}/revisions", None),
    ("post", f"/api/v1/actions/{BIGINT}/preview", {}),
    ("get", "/api/v1/incidents?page=9999999999999", None),
    ("get", f"/api/v1/incidents?page={BIG}", None),
    ("get", f"/api/v1/incidents?page_size={BIG}", None),
    ("get", f"/incidents/{BIGINT}/", None),
    ("get", f"/incidents/{BIGINT}/timeline", None),
    ("get", f"/incidents/{{id}}/actions/{BIGINT}", None),
    ("get", f"/incidents/{{id}}/analyses/{BIGINT}/versions", None),
    ("form", f"/incidents/{BIGINT}/acknowledge", {}),
    ("get", f"/incidents/?page={BIG}", None),
    ("get", f"/incidents/{{id}}/?alerts_page={BIG}", None),
    ("get", f"/incidents/{{id}}/timeline?event={BIG}", None),
    ("get", f"/incidents/{{id}}/timeline?page={BIG}", None),
    ("get", f"/audit/?page={BIG}", None),
    # strings past every column
    ("get", "/api/v1/incidents?label=" + "k" * 5000 + ":v", None),
    ("get", "/api/v1/incidents?severity=" + LONG, None),
    ("post", "/api/v1/analyses/{aid}/reject", {"reason": LONG}),
    ("post", "/api/v1/analyses/{aid}/summary", {"text": LONG * 20}),
    ("post", "/api/v1/incidents/{id}/actions", {"action": "none", "params": {"steps": LONG}}),
    ("post", "/api/v1/actions/{xid}/params", {"params": {"steps": LONG * 20}}),
    ("form", "/incidents/{id}/acknowledge", {"note": LONG}),
    ("form", "/incidents/{id}/analyses/{aid}/reject", {"reason": LONG}),
    ("form", "/incidents/{id}/actions/{xid}/reject", {"reason": LONG}),
    ("form", "/incidents/{id}/actions/{xid}/params", {"params": json.dumps({"steps": LONG})}),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[r[1][:60] for r in REQUESTS])
def test_hostile_values_are_refused_without_a_5xx(approver_client, ids, method, path, body):
    tally("hostile values: NUL, 64-bit overflows, over-long strings")
    url = path.format(**ids)
    if method == "get":
        response = approver_client.get(url)
    elif method == "form":
        response = approver_client.post(url, body)
    else:
        response = _json(approver_client, method, url, body)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if "%00" in url or (body and "\x00" in json.dumps(body, ensure_ascii=False)):
        assert response.status_code == 400


def test_nothing_with_a_nul_was_stored(approver_client, ids):
    """The 400s above are refusals, not partial writes."""
    for method, path, body in REQUESTS:
        if body and "\x00" in json.dumps(body, ensure_ascii=False) and method != "get":
            url = path.format(**ids)
            if method == "form":
                approver_client.post(url, body)
            else:
                _json(approver_client, method, url, body)
    from assistant.models import ActionProposal

    analysis = Analysis.objects.get()
    assert (analysis.review_status, analysis.revisions.count()) == ("draft", 1)
    assert ActionProposal.objects.get().status == "proposed"
    assert ActionProposal.objects.count() == 1
    assert Incident.objects.get().status == "open"


def test_text_that_only_looks_like_nul_is_accepted(approver_client, ids):
    """`%00` inside JSON and an escaped backslash before `u0000` are text, not NUL."""
    url = f"/api/v1/incidents/{ids['id']}/actions"
    for steps in ("open https://wiki.example/a%00b", "the literal text \\u0000 in a runbook"):
        response = _json(
            approver_client, "post", url, {"action": "none", "params": {"steps": steps}}
        )
        assert response.status_code == 201, response.content
        assert response.json()["params"]["steps"] == steps
