"""Fixtures of the bad-input and attack suite, and the figures it reports.

Every test here counts what it tried (`tally("hypothesis: webhook bodies")`, …); the counts are
printed at the end of the run and written to var/security-figures.json, which is where the
README's "Reliability and security" figures come from.

Hypothesis runs with a moderate example count (the suite shares CI machines) and without an
example database, so a run writes nothing into the checkout; `VIGIL_HYPOTHESIS_EXAMPLES`
raises or lowers the count for a deeper or a quicker run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("VIGIL_HYPOTHESIS_EXAMPLES", "60"))
# Function-scoped fixtures (the database, the client) are shared by every example of a test on
# purpose: state accumulates the way it does in production.
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

FIGURES: Counter[str] = Counter()


def tally(what: str, n: int = 1) -> None:
    """Count `n` inputs tried (or items checked) under `what`, for the run's figures."""
    FIGURES[what] += n


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    terminalreporter.section("bad input and attack: inputs tried")
    for what, n in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{n:>8,}  {what}")
    root = Path(__file__).resolve().parents[2]
    out = Path(os.environ.get("VIGIL_VAR_DIR", root / "var")) / "security-figures.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(sorted(FIGURES.items())), indent=2) + "\n")
    except OSError:
        pass


@pytest.fixture
def deploy_token(integration_token) -> str:
    return integration_token("ci", kind="deploy")[1]


@pytest.fixture
def agent_token(integration_token) -> str:
    return integration_token("gpu-agent", kind="agent")[1]


@pytest.fixture
def api_key(db):
    """A user API key made by the real command: `api_key("alice", "approver")`."""
    from django.core.management import call_command

    def make(username: str, role: str | None = None) -> str:
        out = StringIO()
        options = {"create": True, "stdout": out}
        if role:
            options["role"] = role
        call_command("create_api_token", username, **options)
        return out.getvalue().strip().splitlines()[-1]

    return make
