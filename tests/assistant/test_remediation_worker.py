"""A real Celery worker executes an approved action once the approval commits."""

from __future__ import annotations

import pytest

from assistant import remediation
from assistant.models import ActionProposal
from tests.assistant.actions_support import IMAGE_11, open_world, wire
from tests.assistant.test_actions_rollout import DEPLOYMENT_PATH, JSON_PATCH
from tests.assistant.test_remediation import assistant_proposal, kinds, make_incident
from tests.support import wait_for


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_executes_the_approved_rollback_after_commit(
    personas, celery_worker_process, settings
):
    _, log = celery_worker_process
    settings.VIGIL_FOUR_EYES = True
    with open_world() as world:
        incident = make_incident(world)
        proposal = assistant_proposal(incident)
        remediation.preview(proposal, personas["responder"])
        world.forget_requests()

        remediation.approve(proposal, personas["approver"])

        def finished():
            proposal.refresh_from_db()
            return proposal.status in (ActionProposal.Status.SUCCEEDED, "failed")

        wait_for(
            finished,
            timeout=60,
            message=f"the worker to execute the action; worker log:\n{log.read_text()[-3000:]}",
        )
        assert proposal.status == ActionProposal.Status.SUCCEEDED, proposal.error
        assert proposal.attempts == 1
        writes = [wire(r) for r in world.writes()]
        # the approval's re-check (a dry run), then the worker's one real PATCH
        assert [(m, p, q.get("dryRun")) for m, p, q, _, _ in writes] == [
            ("PATCH", DEPLOYMENT_PATH, "All"),
            ("PATCH", DEPLOYMENT_PATH, None),
        ]
        assert writes[1][3] == JSON_PATCH and world.writes()[1].applied
        image = world.deployment()["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == IMAGE_11
        assert kinds(proposal) == ["proposed", "previewed", "approved", "executing", "succeeded"]
