"""Tokens: high-entropy, stored only as their SHA-256, looked up by hash and confirmed with a
constant-time comparison, on every path that takes one (the webhook, the machine APIs, user keys),
and Slack's signatures compared the same way.

"Constant time" is asserted by reading the code path, not by timing it (timings on a shared CI
machine prove nothing): a spy on `hmac.compare_digest` must see every authentication, and no
module may look a row up by a raw secret or compare one with `==`.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from incidents import tokens
from incidents.models import ApiToken, Integration
from tests.incidents.payloads import firing, group, post
from tests.security.conftest import tally

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _created_secrets(make_user) -> list[str]:
    secrets = []
    for kind in ("alertmanager", "deploy", "agent"):
        out = StringIO()
        call_command("create_integration", f"i-{kind}", kind=kind, stdout=out)
        secrets.append(out.getvalue().strip().splitlines()[-1])
    out = StringIO()
    call_command("create_api_token", "alice", role="approver", create=True, stdout=out)
    secrets.append(out.getvalue().strip().splitlines()[-1])
    return secrets


def _every_stored_value() -> str:
    """Every value of every row of every table, as text: the database as an attacker dumps it."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the schema
            for row in cursor.fetchall():
                dump.extend(
                    bytes(v).decode("utf-8", "replace")
                    if isinstance(v, bytes | memoryview)
                    else str(v)
                    for v in row
                )
    return "\n".join(dump)


def test_tokens_are_stored_as_their_sha256_and_never_raw(make_user):
    secrets = _created_secrets(make_user)
    stored = _every_stored_value()
    for secret in secrets:
        tally("tokens: raw secrets searched for in every table")
        assert secret not in stored
        assert secret[10:] not in stored  # not even without the displayed prefix
        digest = hashlib.sha256(secret.encode()).hexdigest()
        assert digest in stored
    hashes = set(Integration.objects.values_list("token_hash", flat=True))
    hashes |= set(ApiToken.objects.values_list("key_hash", flat=True))
    assert hashes == {hashlib.sha256(s.encode()).hexdigest() for s in secrets}


def test_tokens_are_high_entropy_and_unique():
    made = {tokens.new_secret(tokens.USER_KEY_PREFIX) for _ in range(2000)}
    assert len(made) == 2000
    for secret in list(made)[:50]:
        body = secret.removeprefix(tokens.USER_KEY_PREFIX)
        assert len(body) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", body)  # 256 bits, urlsafe


@pytest.fixture
def compare_spy(monkeypatch):
    calls: list[tuple] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    return calls


def _is_digest(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def test_every_token_authentication_ends_in_compare_digest_of_hashes(
    client, compare_spy, make_user
):
    am, deploy, agent, key = _created_secrets(make_user)
    checks = [
        lambda: post(client, group(firing()), am).status_code == 200,
        lambda: (
            client.post(
                "/api/v1/deploys",
                data=json.dumps({"service": "s", "version": "1"}),
                content_type="application/json",
                headers={"Authorization": f"Bearer {deploy}"},
            ).status_code
            == 201
        ),
        lambda: (
            client.post(
                "/api/v1/gpu-snapshots",
                data=json.dumps({"node": "n", "gpus": []}),
                content_type="application/json",
                headers={"Authorization": f"Bearer {agent}"},
            ).status_code
            == 201
        ),
        lambda: (
            client.get("/api/v1/incidents", headers={"Authorization": f"Token {key}"}).status_code
            == 200
        ),
    ]
    for check in checks:
        compare_spy.clear()
        assert check()
        assert compare_spy, "authenticated without hmac.compare_digest"
        assert all(_is_digest(a) and _is_digest(b) for a, b in compare_spy), compare_spy
        tally("tokens: authentications traced to compare_digest")


def test_a_wrong_token_is_never_compared_raw(client, compare_spy, make_user):
    _created_secrets(make_user)
    for credential in ("vgi_wrong", "vgk_" + "A" * 43, "x" * 10_000, "", " "):
        post(client, group(firing()), credential)
        client.get("/api/v1/incidents", headers={"Authorization": f"Token {credential}"})
    assert all(_is_digest(a) and _is_digest(b) for a, b in compare_spy)


def test_an_inactive_users_key_opens_nothing(client, make_user):
    *_, key = _created_secrets(make_user)
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="alice").update(is_active=False)
    response = client.get("/api/v1/incidents", headers={"Authorization": f"Token {key}"})
    assert response.status_code == 401


SECRET_FIELDS = ("token_hash", "key_hash")


def _python_files() -> list[Path]:
    files = []
    for package in ("incidents", "collectors", "assistant", "vigil", "replay"):
        files += [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]
    return files


def test_rows_are_looked_up_by_secret_only_through_find_by_secret():
    """Outside incidents/tokens.py, a filter on a hash field is only ever an issue or rotation
    (admin, commands), never an authentication that could compare in variable time."""
    lookups = []
    for path in _python_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in SECRET_FIELDS:
                lookups.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
            if isinstance(node, ast.Compare) and any(
                isinstance(part, ast.Attribute) and part.attr in SECRET_FIELDS
                for part in [node.left, *node.comparators]
            ):
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} compares a hash with ==")
    # Writes of a new hash (issuing a token) are the only keyword uses allowed.
    allowed = ("incidents/admin.py", "incidents/management/commands/")
    assert all(entry.startswith(allowed) for entry in lookups), lookups
    source = (ROOT / "incidents" / "tokens.py").read_text()
    assert "hmac.compare_digest(getattr(row, field), digest)" in source


def test_slack_signatures_are_compared_in_constant_time(monkeypatch):
    from incidents import slack_events

    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(
        slack_events.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b)
    )
    import time

    now = str(int(time.time()))
    assert slack_events.signature_problem("secret", b"{}", now, "v0=" + "0" * 64) == "bad signature"
    assert seen, "the Slack signature was not compared with hmac.compare_digest"
