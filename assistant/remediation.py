"""The lifecycle of a remediation: every transition of an ActionProposal, and its audit.

The catalogue (assistant/actions/) knows how to check, show and do one action; this module decides
when and by whom, and records it. Pages, the JSON API and the Celery task all call these functions,
which check the permission again (incidents.permissions) and lock the row for each step.

Transitions (anything else is refused with Conflict, HTTP 409):

    state        step            who         next
    (none)       add_action      responder   proposed    (the assistant's own: engine rows)
    proposed     edit_params     responder   proposed    (clears the preview)
    previewed    edit_params     responder   proposed    (clears the preview)
    rejected     edit_params     responder   proposed    (reopened, with new parameters)
    proposed     preview         responder   previewed   (a failed dry run stays proposed,
    previewed    preview         responder   previewed    with preview_error)
    rejected     preview         responder   previewed   (reopened as it is)
    previewed    approve         approver    approved    (a fresh preview, re-checked against
                                                          the cluster; four eyes)
    proposed     reject          approver    rejected    (reason required)
    previewed    reject          approver    rejected
    approved     cancel          approver    cancelled   (before it runs)
    approved     run (task)      vigil       executing   (claimed with a conditional UPDATE)
    executing    run (task)      vigil       succeeded | failed | approved (a transient error:
                                                          the task retries with backoff)
    succeeded    expire_silence  responder   succeeded   (silence-alert only; the expiry is kept
                                                          in outcome.result)

Permissions: responders propose, edit and preview; approvers decide (approve, reject, cancel).
Four eyes (VIGIL_FOUR_EYES): the approver must not be whoever added the action (`proposed_by`)
or last changed its parameters (`edited_by`); an assistant proposal has no human proposer, and
previewing is not requesting (incidents.permissions.four_eyes_refusal).

Freshness: approval needs a preview at most VIGIL_ACTION_PREVIEW_TTL old, and the dry run is run
again at approval: a different fingerprint means the target changed since the preview (Conflict;
the fresh preview is stored, so the page shows what would happen now). Execution re-validates
once more (the catalogue's execute compares the fingerprint).

Execution (`run`, the body of assistant.tasks.execute_action) claims approved→executing with a
conditional UPDATE, so a duplicate task does nothing; an execution whose worker died (executing,
started longer ago than `STALE_EXECUTION`) may be claimed again, which is safe because the
catalogue's execute is idempotent. A retryable ActionError puts the action back to approved and
asks the task to retry after a backoff (RetryLater), at most MAX_ATTEMPTS attempts in all; an
approved action waiting for its retry can still be cancelled. The beat sweep
(`lost_executions`, `give_up_on_lost_executions`) re-enqueues what a lost task left behind.

Audit: every step writes an ActionEvent (actor = username, or "vigil" for the system) and a
readable TimelineEvent (payload `{"action": id}`). ActionEvent.requests / responses hold, for
preview and approval, the writes the execution would send (the dry run sent them with
`dryRun=All`; a silence preview sends nothing), and for execution and expiry exactly what was
sent and the API's answers. The assistant's own proposals (engine.proposal_rows) are created
without an event: the first step taken on one first writes its PROPOSED event, dated at the
proposal's creation with actor "vigil", so the audit of anything acted on starts with who
proposed it. A proposal nobody touched has no events; its `created_at` is its proposal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from collectors.base import Entity, Scope
from incidents import permissions
from incidents.models import Incident, TimelineEvent

from . import actions as catalogue
from .actions import ActionConflict, ActionContext, ActionError
from .models import ActionEvent, ActionProposal, Analysis

logger = logging.getLogger(__name__)

Status = ActionProposal.Status
Kind = ActionEvent.Kind
SYSTEM = "vigil"

EDITABLE = (Status.PROPOSED, Status.PREVIEWED, Status.REJECTED)
PREVIEWABLE = (Status.PROPOSED, Status.PREVIEWED, Status.REJECTED)
DECIDABLE = (Status.PROPOSED, Status.PREVIEWED)
DONE = (Status.SUCCEEDED, Status.FAILED)

MAX_REASON_CHARS = 2_000
MAX_RATIONALE_CHARS = 4_000
# Attempts of one execution in all (the first and its retries after transient errors).
MAX_ATTEMPTS = 4
# Seconds before the 2nd, 3rd and 4th attempt.
RETRY_DELAYS = (10, 30, 90)
# The task's limits (assistant.tasks.execute_action): a drain evicts pod after pod.
EXECUTE_SOFT_LIMIT = 300
EXECUTE_TIME_LIMIT = EXECUTE_SOFT_LIMIT + 30
# An execution claimed longer ago than any attempt can run: its worker died.
STALE_EXECUTION = timedelta(seconds=EXECUTE_TIME_LIMIT + 60)

EDITED_TIMELINE_KIND = TimelineEvent.Kind.ACTION_EDITED


class RemediationError(Exception):
    """A step that cannot happen as asked; the message is for the engineer (HTTP `status`)."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(RemediationError):
    """The user's role does not allow the step, or four eyes forbids it."""

    status = 403


class Conflict(RemediationError):
    """Wrong state for the step, a missing or stale preview, or a target that changed."""

    status = 409


class Unavailable(RemediationError):
    """The cluster or Alertmanager could not be reached to check or do the step; try again."""

    status = 503


@dataclass
class RetryLater(Exception):
    """run() met a transient error: the task should run again after `countdown` seconds."""

    countdown: int
    message: str

    def __str__(self) -> str:
        return f"retry in {self.countdown}s: {self.message}"


# --- context --------------------------------------------------------------------------------------


def scope_entities(incident: Incident) -> set[Entity]:
    """What an action may touch: the incident's scope, its evidence's entities, and the targets of
    the assistant's own proposals (validated by the engine against the same facts)."""
    from collectors.models import Evidence

    entities = set(Scope.from_json(incident.scope).entities())
    rows = (
        Evidence.objects.filter(incident=incident)
        .exclude(entity_kind="")
        .values_list("entity_kind", "entity_namespace", "entity_name")
        .distinct()
    )
    entities.update(Entity(kind, namespace or None, name) for kind, namespace, name in rows)
    targets = (
        ActionProposal.objects.filter(incident=incident, proposed_by__isnull=True)
        .exclude(target_kind="")
        .values_list("target_kind", "target_namespace", "target_name")
        .distinct()
    )
    entities.update(Entity(kind, namespace or None, name) for kind, namespace, name in targets)
    return entities


def incident_context(incident: Incident, actor: str = SYSTEM, key: str = "") -> ActionContext:
    """Where the incident's actions act: its cluster, its entities, its alerts' labels."""
    from collectors.runner import build_context

    collection = build_context(incident)
    return ActionContext(
        cluster=collection.cluster,
        scope_entities=scope_entities(incident),
        alert_labels=[dict(alert.labels) for alert in collection.alerts],
        timeout=float(settings.VIGIL_ACTION_REQUEST_TIMEOUT),
        actor=actor,
        idempotency_key=key,
    )


def action_context(proposal: ActionProposal, actor: str = SYSTEM) -> ActionContext:
    return incident_context(proposal.incident, actor, f"action-{proposal.pk}")


# --- descriptions ---------------------------------------------------------------------------------


def target_of(proposal: ActionProposal) -> Entity | None:
    if not proposal.target_kind:
        return None
    return Entity(proposal.target_kind, proposal.target_namespace or None, proposal.target_name)


def describe(proposal: ActionProposal) -> str:
    """`rollout-undo on Deployment llm/chat-api (to revision 11)`, for the timeline."""
    target = target_of(proposal)
    text = proposal.action + (f" on {target}" if target else "")
    details = _params_text(proposal.action, proposal.params or {})
    return f"{text} ({details})" if details else text


def _params_text(action: str, params: dict) -> str:
    if action == "rollout-undo":
        revision = params.get("to_revision")
        return f"to revision {revision}" if revision else "to the previous revision"
    if action == "scale-deployment":
        replicas = params.get("replicas")
        return f"to {replicas} replicas" if replicas is not None else "replicas not set"
    if action == "silence-alert":
        return f"for {params.get('duration') or '1h'}"
    if action == "none":
        return "runbook steps"
    parts = []
    for key, value in params.items():
        shown = value if isinstance(value, str | int | float | bool) else "…"
        parts.append(f"{key}={shown}")
    return ", ".join(parts)[:200]


def _who(user: Any) -> str:
    return user.get_username()[:150] if user is not None else SYSTEM


def _executor(proposal: ActionProposal) -> str:
    """The actor the cluster sees (a silence's createdBy): Vigil, on the approver's behalf."""
    approver = proposal.decided_by.get_username() if proposal.decided_by_id else ""
    return f"{SYSTEM}:{approver}" if approver else SYSTEM


# --- checks ---------------------------------------------------------------------------------------


def is_fresh(proposal: ActionProposal) -> bool:
    """Whether the stored preview exists and is within VIGIL_ACTION_PREVIEW_TTL (no cluster call)."""
    if not (proposal.preview or {}).get("fingerprint") or proposal.previewed_at is None:
        return False
    return timezone.now() - proposal.previewed_at <= settings.VIGIL_ACTION_PREVIEW_TTL


def approval_refusal(proposal: ActionProposal, user: Any) -> tuple[type[RemediationError], str]:
    """Why `user` may not approve the action now, as (error class, message); ("", "") if they may.

    Only the stored state is read: approve() also re-checks the target against the cluster.
    """
    if not permissions.can_approve(user):
        return Forbidden, "Only approvers can approve actions."
    if proposal.status != Status.PREVIEWED:
        if proposal.status in (Status.PROPOSED, Status.REJECTED):
            return Conflict, "Preview the action before approving it."
        return Conflict, f"The action is {proposal.status}: there is nothing to approve."
    if not is_fresh(proposal):
        minutes = int(settings.VIGIL_ACTION_PREVIEW_TTL.total_seconds() // 60)
        return Conflict, (
            f"The preview is older than {minutes} minutes; preview again before approving."
        )
    refusal = permissions.four_eyes_refusal(user, proposal)
    if refusal:
        return Forbidden, refusal
    return RemediationError, ""


def allowed(proposal: ActionProposal, user: Any) -> dict[str, bool]:
    """What the page may offer `user` on this action now: role, state and four eyes."""
    respond = permissions.can_respond(user)
    approve = permissions.can_approve(user)
    status = proposal.status
    result = (proposal.outcome or {}).get("result") or {}
    return {
        "edit": respond and status in EDITABLE,
        "preview": respond and status in PREVIEWABLE,
        "approve": not approval_refusal(proposal, user)[1],
        "reject": approve and status in DECIDABLE,
        "cancel": approve and status == Status.APPROVED,
        "expire": respond
        and proposal.action == "silence-alert"
        and status == Status.SUCCEEDED
        and bool(result.get("silence_id"))
        and not result.get("expired_at"),
    }


def _require_respond(user: Any, doing: str) -> None:
    if not permissions.can_respond(user):
        raise Forbidden(f"Only responders can {doing}.")


def _require_approve(user: Any, doing: str) -> None:
    if not permissions.can_approve(user):
        raise Forbidden(f"Only approvers can {doing}; responders propose, approvers decide.")


def _entry(name: str):
    try:
        return catalogue.get(name)
    except ActionError as exc:
        raise RemediationError(exc.message) from None


def _parse_target(target: Any) -> Entity | None:
    if target in (None, {}, ""):
        return None
    if not isinstance(target, dict):
        raise RemediationError("target must be an object {kind, namespace, name} or null")
    kind, name, namespace = target.get("kind"), target.get("name"), target.get("namespace")
    if not isinstance(kind, str) or not kind.strip():
        raise RemediationError("target.kind is required")
    if not isinstance(name, str) or not name.strip():
        raise RemediationError("target.name is required")
    if namespace is not None and not isinstance(namespace, str):
        raise RemediationError("target.namespace must be a string or null")
    unknown = set(target) - {"kind", "namespace", "name"}
    if unknown:
        raise RemediationError(f"unknown target field(s): {', '.join(sorted(unknown))}")
    return Entity(kind.strip(), (namespace or "").strip() or None, name.strip())


def _typed(entry, params: Any):
    """The catalogue's typed parameters; RemediationError naming the field."""
    try:
        return entry.parse_params(params)
    except ActionError as exc:
        raise RemediationError(exc.message) from None


def _validated(entry, target: Entity | None, params: Any, ctx: ActionContext):
    typed = _typed(entry, params)
    try:
        entry.validate(target, typed, ctx)
    except ActionError as exc:
        raise RemediationError(exc.message) from None
    return typed


def _stored(typed) -> dict:
    """Parameters as stored: the keys the engineer set, with the catalogue's normalised values."""
    return typed.model_dump(mode="json", exclude_unset=True)


def _normalise(text: str) -> str:
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


# --- rows and records -----------------------------------------------------------------------------


def _lock(proposal: ActionProposal | int) -> ActionProposal:
    """The row, locked for this transaction (call inside transaction.atomic)."""
    pk = proposal.pk if isinstance(proposal, ActionProposal) else proposal
    return (
        ActionProposal.objects.select_for_update(of=("self",))
        .select_related("incident__cluster", "proposed_by", "edited_by", "decided_by")
        .get(pk=pk)
    )


def _save(proposal: ActionProposal, *fields: str) -> None:
    proposal.save(update_fields=[*fields, "updated_at"])


def _refresh(target: ActionProposal, source: ActionProposal) -> ActionProposal:
    """Copy the stored row onto the caller's instance, so it needs no refresh_from_db."""
    if target is source:
        return target
    for field in ActionProposal._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    for name in ("proposed_by", "edited_by", "decided_by", "previewed_by"):
        if ActionProposal._meta.get_field(name).is_cached(source):
            setattr(target, name, getattr(source, name))
    return target


def _ensure_history(proposal: ActionProposal) -> None:
    """The assistant's proposal gets its PROPOSED event when it is first acted on."""
    if proposal.proposed_by_id is None and not proposal.events.exists():
        ActionEvent.objects.create(
            action=proposal,
            incident_id=proposal.incident_id,
            at=proposal.created_at,
            kind=Kind.PROPOSED,
            actor=SYSTEM,
            detail=(
                f"The assistant proposed {describe(proposal)}"
                + (f": {proposal.rationale}" if proposal.rationale else "")
            ),
        )


def _record(
    proposal: ActionProposal,
    kind: str,
    actor: str,
    detail: str,
    *,
    timeline: str | None = None,
    summary: str = "",
    requests: list | None = None,
    responses: list | None = None,
    payload: dict | None = None,
) -> ActionEvent:
    """One ActionEvent (the audit) and, when `timeline` is given, its readable timeline line."""
    _ensure_history(proposal)
    now = timezone.now()
    event = ActionEvent.objects.create(
        action=proposal,
        incident_id=proposal.incident_id,
        at=now,
        kind=kind,
        actor=actor[:150],
        detail=detail,
        requests=list(requests or []),
        responses=list(responses or []),
    )
    if timeline:
        TimelineEvent.objects.create(
            incident_id=proposal.incident_id,
            at=now,
            kind=timeline,
            actor=actor[:150],
            summary=(summary or detail)[:500],
            payload={"action": proposal.pk, "event": event.pk, **(payload or {})},
        )
    return event


def _preview_dict(result: catalogue.Preview) -> dict:
    return {
        "summary": result.summary,
        "requests": result.requests,
        "diff": result.diff,
        "fingerprint": result.fingerprint,
    }


# --- engineer's steps -----------------------------------------------------------------------------


def add_action(
    incident: Incident,
    user: Any,
    action: str,
    target: dict | None,
    params: dict,
    rationale: str = "",
) -> ActionProposal:
    """An engineer adds an action from the catalogue; validated, nothing sent to the cluster."""
    _require_respond(user, "propose actions")
    if not isinstance(action, str) or not action.strip():
        raise RemediationError("action is required: a name from the catalogue")
    entry = _entry(action.strip())
    entity = _parse_target(target)
    if rationale is not None and not isinstance(rationale, str):
        raise RemediationError("rationale must be text")
    rationale = _normalise(rationale or "")
    if len(rationale) > MAX_RATIONALE_CHARS:
        raise RemediationError(f"Keep the rationale under {MAX_RATIONALE_CHARS:,} characters.")
    ctx = incident_context(incident, f"{SYSTEM}:{_who(user)}")
    typed = _validated(entry, entity, params, ctx)
    with transaction.atomic():
        # With the analysis the page shows, after its own proposals.
        analysis = Analysis.objects.filter(incident=incident).first()
        rank = 0
        if analysis is not None:
            rank = (analysis.actions.aggregate(last=Max("rank"))["last"] or 0) + 1
        proposal = ActionProposal.objects.create(
            incident=incident,
            analysis=analysis,
            rank=rank,
            action=entry.name,
            target_kind=entity.kind if entity else "",
            target_namespace=(entity.namespace or "") if entity else "",
            target_name=entity.name if entity else "",
            params=_stored(typed),
            rationale=rationale,
            status=Status.PROPOSED,
            proposed_by=user,
        )
        who = _who(user)
        _record(
            proposal,
            Kind.ADDED,
            who,
            f"{who} added {describe(proposal)}" + (f": {rationale}" if rationale else ""),
            timeline=TimelineEvent.Kind.ACTION_ADDED,
            summary=f"{who} added {describe(proposal)}",
            payload={"params": proposal.params},
        )
    return proposal


def edit_params(proposal: ActionProposal, user: Any, params: dict) -> ActionProposal:
    """Change the parameters of an action not yet decided (or rejected); its preview is dropped."""
    _require_respond(user, "change actions")
    with transaction.atomic():
        locked = _lock(proposal)
        if locked.status not in EDITABLE:
            raise Conflict(f"The action is {locked.status}: its parameters can no longer change.")
        entry = _entry(locked.action)
        ctx = action_context(locked, f"{SYSTEM}:{_who(user)}")
        typed = _validated(entry, target_of(locked), params, ctx)
        new = _stored(typed)
        try:
            unchanged = entry.parse_params(locked.params) == typed
        except ActionError:
            unchanged = False
        if unchanged:
            raise RemediationError("The parameters are unchanged: there is nothing to save.")
        old, previous = locked.params, locked.status
        rejected_by = locked.decided_by.get_username() if locked.decided_by_id else "someone"
        locked.params = new
        locked.edited_by = user
        locked.status = Status.PROPOSED
        _clear_preview(locked)
        _clear_decision(locked)
        _save(
            locked,
            "params",
            "edited_by",
            "status",
            "preview",
            "preview_error",
            "previewed_at",
            "previewed_by",
            "decided_at",
            "decided_by",
            "reason",
        )
        who = _who(user)
        reopened = (
            f"; reopened after its rejection by {rejected_by}"
            if (previous == Status.REJECTED)
            else ""
        )
        _record(
            locked,
            Kind.EDITED,
            who,
            f"{who} changed the parameters of {locked.action} from {old} to {new}{reopened}",
            timeline=EDITED_TIMELINE_KIND,
            summary=f"{who} changed the parameters: {describe(locked)}{reopened}",
            payload={"params": new, "previous_params": old},
        )
    return _refresh(proposal, locked)


def _clear_preview(proposal: ActionProposal) -> None:
    proposal.preview = {}
    proposal.preview_error = ""
    proposal.previewed_at = None
    proposal.previewed_by = None


def _clear_decision(proposal: ActionProposal) -> None:
    proposal.decided_at = None
    proposal.decided_by = None
    proposal.reason = ""


def preview(proposal: ActionProposal, user: Any) -> ActionProposal:
    """Run the action's dry run now and store it; cluster trouble is stored, not raised.

    RemediationError for parameters or a target that cannot be previewed (a scale-deployment
    proposed without `replicas`: edit the parameters first); Conflict for the wrong state.
    """
    _require_respond(user, "preview actions")
    with transaction.atomic():
        locked = _lock(proposal)
        _check_previewable(locked)
        entry = _entry(locked.action)
        ctx = action_context(locked, f"{SYSTEM}:{_who(user)}")
        typed = _validated(entry, target_of(locked), locked.params, ctx)
        seen = (locked.params, locked.status)
    # The dry run talks to the cluster: outside the row lock.
    result, failure = _dry_run(entry, target_of(locked), typed, ctx)
    with transaction.atomic():
        locked = _lock(proposal)
        _check_previewable(locked)
        if locked.params != seen[0]:
            raise Conflict("The parameters changed while the preview ran; preview again.")
        _store_preview(locked, user, result, failure, reopen=True)
    return _refresh(proposal, locked)


def _check_previewable(proposal: ActionProposal) -> None:
    if proposal.status not in PREVIEWABLE:
        raise Conflict(f"The action is {proposal.status}: it can no longer be previewed.")


def _dry_run(entry, target, typed, ctx) -> tuple[catalogue.Preview | None, ActionError | None]:
    try:
        return entry.preview(target, typed, ctx), None
    except ActionError as exc:
        return None, exc


def _store_preview(
    proposal: ActionProposal,
    user: Any,
    result: catalogue.Preview | None,
    failure: ActionError | None,
    *,
    reopen: bool,
    note: str = "",
) -> None:
    """Store a dry run's result (or why it failed) on the locked row, with its records."""
    who = _who(user)
    previous = proposal.status
    if failure is not None:
        proposal.preview = {}
        proposal.preview_error = failure.message
        proposal.previewed_at = timezone.now()
        proposal.previewed_by = user
        if proposal.status == Status.PREVIEWED:
            proposal.status = Status.PROPOSED
        _save(proposal, "preview", "preview_error", "previewed_at", "previewed_by", "status")
        _record(
            proposal,
            Kind.PREVIEW_FAILED,
            who,
            f"{note}The dry run of {describe(proposal)} failed: {failure.message}",
            timeline=TimelineEvent.Kind.ACTION_PREVIEWED,
            summary=f"{who}'s preview of {describe(proposal)} failed: {failure.message}",
            requests=failure.requests,
            responses=failure.responses,
            payload={"ok": False},
        )
        return
    assert result is not None
    rejected_by = proposal.decided_by.get_username() if proposal.decided_by_id else "someone"
    proposal.preview = _preview_dict(result)
    proposal.preview_error = ""
    proposal.previewed_at = timezone.now()
    proposal.previewed_by = user
    fields = ["preview", "preview_error", "previewed_at", "previewed_by", "status"]
    reopened = ""
    if previous == Status.REJECTED and reopen:
        reopened = f" (reopened after its rejection by {rejected_by})"
        _clear_decision(proposal)
        fields += ["decided_at", "decided_by", "reason"]
    proposal.status = Status.PREVIEWED
    _save(proposal, *fields)
    _record(
        proposal,
        Kind.PREVIEWED,
        who,
        f"{note}{who} previewed {describe(proposal)}{reopened}: {result.summary}",
        timeline=TimelineEvent.Kind.ACTION_PREVIEWED,
        summary=f"{who} previewed {describe(proposal)}{reopened}: {result.summary}",
        requests=result.requests,
        payload={"ok": True, "fingerprint": result.fingerprint},
    )


def approve(proposal: ActionProposal, user: Any) -> ActionProposal:
    """Approve a freshly previewed action after checking its target is as the preview saw it;
    the execution is enqueued when the transaction commits."""
    _require_approve(user, "approve actions")
    with transaction.atomic():
        locked = _lock(proposal)
        error, message = approval_refusal(locked, user)
        if message:
            raise error(message)
        entry = _entry(locked.action)
        ctx = action_context(locked, f"{SYSTEM}:{_who(user)}")
        typed = _validated(entry, target_of(locked), locked.params, ctx)
        seen = locked.preview["fingerprint"]
    # The same dry run again, outside the lock: has the target changed since the preview?
    result, failure = _dry_run(entry, target_of(locked), typed, ctx)
    who = _who(user)
    if failure is not None and failure.retryable and not isinstance(failure, ActionConflict):
        with transaction.atomic():
            locked = _lock(proposal)
            _record(
                locked,
                Kind.PREVIEW_FAILED,
                who,
                f"{who} could not approve {describe(locked)}: the re-check of the target "
                f"failed: {failure.message}",
                requests=failure.requests,
                responses=failure.responses,
            )
        raise Unavailable(
            f"Could not check the target before approving: {failure.message}. Try again."
        )
    with transaction.atomic():
        locked = _lock(proposal)
        if locked.status != Status.PREVIEWED or locked.preview.get("fingerprint") != seen:
            raise Conflict("The action changed while it was being approved; look at it again.")
        error, message = approval_refusal(locked, user)
        if message:
            raise error(message)
        if failure is not None or result is None or result.fingerprint != seen:
            _store_preview(
                locked,
                user,
                result,
                failure,
                reopen=False,
                note="Re-checked at approval, the target had changed. ",
            )
            changed = True
        else:
            changed = False
            locked.status = Status.APPROVED
            locked.decided_by = user
            locked.decided_at = timezone.now()
            locked.reason = ""
            locked.error = ""
            _save(locked, "status", "decided_by", "decided_at", "reason", "error")
            _record(
                locked,
                Kind.APPROVED,
                who,
                f"{who} approved {describe(locked)}; the target is as previewed "
                f"({locked.preview.get('summary', '')})",
                timeline=TimelineEvent.Kind.ACTION_APPROVED,
                summary=f"{who} approved {describe(locked)}",
                requests=result.requests,
                payload={"fingerprint": seen},
            )
            from vigil.celery import publish_on_commit

            from .tasks import execute_action

            publish_on_commit(execute_action, locked.pk)
    if changed:
        _refresh(proposal, locked)
        detail = f": {failure.message}" if failure is not None else ""
        raise Conflict(
            f"The target changed since the preview{detail}; preview again "
            "(the new dry run is shown: read it before approving)."
        )
    return _refresh(proposal, locked)


def reject(proposal: ActionProposal, user: Any, reason: str) -> ActionProposal:
    """An approver turns the action down, saying why."""
    _require_approve(user, "reject actions")
    reason = _normalise(reason if isinstance(reason, str) else "")
    if not reason:
        raise RemediationError("Say why you reject the action: a reason is required.")
    if len(reason) > MAX_REASON_CHARS:
        raise RemediationError(f"Keep the reason under {MAX_REASON_CHARS:,} characters.")
    with transaction.atomic():
        locked = _lock(proposal)
        if locked.status not in DECIDABLE:
            raise Conflict(f"The action is {locked.status}: it can no longer be rejected.")
        locked.status = Status.REJECTED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.reason = reason
        _save(locked, "status", "decided_by", "decided_at", "reason")
        who = _who(user)
        _record(
            locked,
            Kind.REJECTED,
            who,
            f"{who} rejected {describe(locked)}: {reason}",
            timeline=TimelineEvent.Kind.ACTION_REJECTED,
            payload={"reason": reason},
        )
    return _refresh(proposal, locked)


def cancel(proposal: ActionProposal, user: Any, reason: str = "") -> ActionProposal:
    """Stop an approved action before it runs (also while it waits for a retry)."""
    _require_approve(user, "cancel actions")
    reason = _normalise(reason if isinstance(reason, str) else "")
    if len(reason) > MAX_REASON_CHARS:
        raise RemediationError(f"Keep the reason under {MAX_REASON_CHARS:,} characters.")
    with transaction.atomic():
        locked = _lock(proposal)
        if locked.status == Status.EXECUTING:
            raise Conflict("The action is already running: it can no longer be cancelled.")
        if locked.status in DONE:
            raise Conflict(f"The action already ran ({locked.status}): nothing to cancel.")
        if locked.status != Status.APPROVED:
            raise Conflict(
                f"Only an approved action can be cancelled; this one is {locked.status}."
            )
        locked.status = Status.CANCELLED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.reason = reason
        _save(locked, "status", "decided_by", "decided_at", "reason")
        who = _who(user)
        _record(
            locked,
            Kind.CANCELLED,
            who,
            f"{who} cancelled {describe(locked)} before it ran" + (f": {reason}" if reason else ""),
            timeline=TimelineEvent.Kind.ACTION_CANCELLED,
            payload={"reason": reason},
        )
    return _refresh(proposal, locked)


def expire_silence(proposal: ActionProposal, user: Any) -> ActionProposal:
    """End the silence a succeeded silence-alert created (DELETE /api/v2/silence/{id})."""
    _require_respond(user, "expire silences")
    with transaction.atomic():
        locked = _lock(proposal)
        silence_id = _silence_of(locked)
        ctx = action_context(locked, f"{SYSTEM}:{_who(user)}")
    who = _who(user)
    try:
        outcome = catalogue.expire_silence(ctx, silence_id)
    except ActionError as exc:
        with transaction.atomic():
            locked = _lock(proposal)
            _record(
                locked,
                Kind.SILENCE_EXPIRED,
                who,
                f"{who} could not expire silence {silence_id}: {exc.message}",
                requests=exc.requests,
                responses=exc.responses,
            )
        if exc.retryable:
            raise Unavailable(f"Could not expire silence {silence_id}: {exc.message}") from exc
        raise Conflict(f"Could not expire silence {silence_id}: {exc.message}") from exc
    with transaction.atomic():
        locked = _lock(proposal)
        _silence_of(locked)
        now = timezone.now()
        stored = dict(locked.outcome or {})
        stored["result"] = {
            **(stored.get("result") or {}),
            "expired_at": now.isoformat().replace("+00:00", "Z"),
            "expired_by": who,
        }
        locked.outcome = stored
        _save(locked, "outcome")
        _record(
            locked,
            Kind.SILENCE_EXPIRED,
            who,
            f"{who} expired silence {silence_id}: {outcome.message}",
            timeline=TimelineEvent.Kind.SILENCE_EXPIRED,
            summary=f"{who} expired silence {silence_id}, created by {describe(locked)}",
            requests=outcome.requests,
            responses=outcome.responses,
            payload={"silence_id": silence_id},
        )
    return _refresh(proposal, locked)


def _silence_of(proposal: ActionProposal) -> str:
    result = (proposal.outcome or {}).get("result") or {}
    if proposal.action != "silence-alert":
        raise Conflict(f"Only a silence-alert has a silence to expire, not {proposal.action}.")
    if proposal.status != Status.SUCCEEDED or not result.get("silence_id"):
        raise Conflict(f"The action is {proposal.status}: it created no silence to expire.")
    if result.get("expired_at"):
        raise Conflict(
            f"Silence {result['silence_id']} was already expired by "
            f"{result.get('expired_by') or 'someone'}."
        )
    return str(result["silence_id"])


# --- execution (the Celery task's body) ----------------------------------------------------------


def claim(action_id: int) -> tuple[bool, Any]:
    """Take the execution: approved→executing, or a stale executing whose worker died.

    Returns (claimed, the started_at this claim wrote). A duplicate task finds nothing to claim.
    """
    now = timezone.now()
    rows = ActionProposal.objects.filter(pk=action_id)
    changes = {
        "status": Status.EXECUTING,
        "attempts": F("attempts") + 1,
        "started_at": now,
        "updated_at": now,
        "finished_at": None,
    }
    if rows.filter(status=Status.APPROVED).update(**changes):
        return True, now
    stale = rows.filter(status=Status.EXECUTING, started_at__lt=now - STALE_EXECUTION)
    if stale.update(**changes):
        return True, now
    return False, None


def run(action_id: int) -> ActionProposal | None:
    """Execute an approved action once; see the module doc. RetryLater asks for a retry."""
    with transaction.atomic():
        claimed, started = claim(action_id)
        proposal = (
            ActionProposal.objects.select_related("incident__cluster", "decided_by")
            .filter(pk=action_id)
            .first()
        )
        if not claimed or proposal is None:
            return proposal  # cancelled, done, or another worker has it
        approver = proposal.decided_by.get_username() if proposal.decided_by_id else "someone"
        again = f", attempt {proposal.attempts}" if proposal.attempts > 1 else ""
        _record(
            proposal,
            Kind.EXECUTING,
            SYSTEM,
            f"Executing {describe(proposal)}, approved by {approver}{again}",
            timeline=TimelineEvent.Kind.ACTION_EXECUTING,
            payload={"attempt": proposal.attempts},
        )
    if proposal.attempts > MAX_ATTEMPTS:
        return _finish(
            proposal,
            started,
            ok=False,
            error=(
                f"gave up after {MAX_ATTEMPTS} attempts: the worker running it was lost; "
                "check the target before trying again"
            ),
        )
    try:
        entry = catalogue.get(proposal.action)
        ctx = action_context(proposal, _executor(proposal))
        outcome = entry.execute(
            target_of(proposal),
            proposal.params,
            ctx,
            fingerprint=(proposal.preview or {}).get("fingerprint", ""),
        )
    except ActionConflict as exc:
        return _finish(
            proposal,
            started,
            ok=False,
            error=f"the target changed since the preview: {exc.message}",
            requests=exc.requests,
            responses=exc.responses,
        )
    except ActionError as exc:
        if exc.retryable and proposal.attempts < MAX_ATTEMPTS:
            delay = RETRY_DELAYS[min(proposal.attempts, len(RETRY_DELAYS)) - 1]
            _back_to_approved(proposal, started, exc, delay)
            raise RetryLater(delay, exc.message) from exc
        tries = f" (after {proposal.attempts} attempts)" if exc.retryable else ""
        return _finish(
            proposal,
            started,
            ok=False,
            error=f"{exc.message}{tries}",
            requests=exc.requests,
            responses=exc.responses,
        )
    except SoftTimeLimitExceeded:
        return _finish(
            proposal,
            started,
            ok=False,
            error=(
                f"timed out: still running after {EXECUTE_SOFT_LIMIT}s; check the target's "
                "state before trying again"
            ),
        )
    except Exception as exc:  # a bug must still end the execution visibly, never leave it running
        logger.exception("execution of action %s crashed", action_id)
        return _finish(proposal, started, ok=False, error=f"crashed: {type(exc).__name__}: {exc}")
    return _finish(
        proposal,
        started,
        ok=outcome.ok,
        error="" if outcome.ok else outcome.message,
        message=outcome.message,
        requests=outcome.requests,
        responses=outcome.responses,
        result=outcome.result,
    )


def _finish(
    proposal: ActionProposal,
    started: Any,
    *,
    ok: bool,
    error: str = "",
    message: str = "",
    requests: list | None = None,
    responses: list | None = None,
    result: dict | None = None,
) -> ActionProposal:
    """Store the result of this claim (unless a newer claim took over) and record it."""
    now = timezone.now()
    status = Status.SUCCEEDED if ok else Status.FAILED
    outcome = {
        "ok": ok,
        "message": message or error,
        "requests": list(requests or []),
        "responses": list(responses or []),
        "result": dict(result or {}),
    }
    with transaction.atomic():
        current = ActionProposal.objects.filter(
            pk=proposal.pk, status=Status.EXECUTING, started_at=started
        ).update(status=status, finished_at=now, outcome=outcome, error=error, updated_at=now)
        locked = _lock(proposal)
        took_over = "" if current else " (after another attempt had taken over)"
        kind, line = (
            (Kind.SUCCEEDED, TimelineEvent.Kind.ACTION_SUCCEEDED)
            if ok
            else (Kind.FAILED, TimelineEvent.Kind.ACTION_FAILED)
        )
        text = (
            f"{describe(locked)} succeeded: {outcome['message']}"
            if ok
            else f"{describe(locked)} failed: {error}"
        )
        _record(
            locked,
            kind,
            SYSTEM,
            text + took_over,
            timeline=line if current else None,
            requests=outcome["requests"],
            responses=outcome["responses"],
            payload={"attempt": locked.attempts},
        )
    return _refresh(proposal, locked)


def _back_to_approved(proposal: ActionProposal, started: Any, exc: ActionError, delay: int) -> None:
    """A transient failure: approved again (cancellable), the task retries after `delay`."""
    now = timezone.now()
    with transaction.atomic():
        ActionProposal.objects.filter(
            pk=proposal.pk, status=Status.EXECUTING, started_at=started
        ).update(status=Status.APPROVED, error=exc.message, updated_at=now)
        locked = _lock(proposal)
        text = (
            f"Attempt {locked.attempts} of {MAX_ATTEMPTS} of {describe(locked)} failed, "
            f"retrying in {delay}s: {exc.message}"
        )
        _record(
            locked,
            Kind.FAILED,
            SYSTEM,
            text,
            timeline=TimelineEvent.Kind.ACTION_RETRYING,
            requests=exc.requests,
            responses=exc.responses,
            payload={"attempt": locked.attempts, "retry_in": delay},
        )
    _refresh(proposal, locked)


# --- the sweep's part -----------------------------------------------------------------------------


def lost_executions(grace: timedelta | None = None) -> list[int]:
    """Actions a task should be executing but none is: approved long ago (the publish failed, or
    the retry was lost) or executing on a worker that died. Re-enqueueing them is safe: the task
    claims before it acts."""
    grace = grace if grace is not None else settings.VIGIL_SWEEP_GRACE
    now = timezone.now()
    waiting = ActionProposal.objects.filter(
        status=Status.APPROVED, updated_at__lt=now - grace - timedelta(seconds=max(RETRY_DELAYS))
    )
    orphaned = ActionProposal.objects.filter(
        status=Status.EXECUTING, started_at__lt=now - STALE_EXECUTION, attempts__lt=MAX_ATTEMPTS
    )
    ids = list(waiting.values_list("pk", flat=True)[:200])
    ids += list(orphaned.values_list("pk", flat=True)[:200])
    return ids


def give_up_on_lost_executions() -> int:
    """Executions whose worker was lost on every attempt end as failed, visibly."""
    stale = timezone.now() - STALE_EXECUTION
    given_up = 0
    for proposal in ActionProposal.objects.filter(
        status=Status.EXECUTING, started_at__lt=stale, attempts__gte=MAX_ATTEMPTS
    ):
        given_up += 1
        _finish(
            proposal,
            proposal.started_at,
            ok=False,
            error=(
                f"gave up after {proposal.attempts} attempts: the worker running it was lost; "
                "check the target before trying again"
            ),
        )
    return given_up
