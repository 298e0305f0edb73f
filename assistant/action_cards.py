"""Action proposals and their audit events shaped for the pages (cards, the add form, audit rows).

The transitions themselves are assistant/remediation.py's; this module only reads: which
proposals the incident page shows, what each card needs beyond the model's fields (the buttons
the user may press, the preview's diff split into lines, the requests as text, the evidence of
the hypothesis the proposal came from), and the catalogue as the "Add an action" form offers it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from incidents import permissions
from incidents.models import Incident

from .actions import CATALOGUE
from .models import ActionEvent, ActionProposal, Analysis
from .presentation import actions_of

# A card in these states polls until the execution settles.
RUNNING = (ActionProposal.Status.APPROVED, ActionProposal.Status.EXECUTING)
SETTLED = (
    ActionProposal.Status.SUCCEEDED,
    ActionProposal.Status.FAILED,
    ActionProposal.Status.REJECTED,
    ActionProposal.Status.CANCELLED,
)
NO_BUTTONS = {
    "edit": False,
    "preview": False,
    "approve": False,
    "reject": False,
    "cancel": False,
    "expire": False,
}
# Targets the add form cannot offer from the incident's entities: none is chosen.
TARGETLESS = (None, "", "Alertmanager")


# --- which proposals the incident page shows --------------------------------------------------


def latest_ready_analysis(incident: Incident) -> Analysis | None:
    return Analysis.objects.filter(incident=incident, status=Analysis.Status.READY).first()


def shown_proposals(incident: Incident) -> tuple[list[ActionProposal], Analysis | None]:
    """The latest ready analysis's proposals, then every other one worth showing (see
    presentation.actions_of)."""
    analysis = latest_ready_analysis(incident)
    return actions_of(incident, analysis), analysis


# --- one card ---------------------------------------------------------------------------------


def allowed_for(proposal: ActionProposal, user: Any) -> dict[str, bool]:
    """The buttons `user` may press on this card (remediation decides; viewers get none)."""
    if not permissions.can_respond(user):
        return dict(NO_BUTTONS)
    from . import remediation

    return {**NO_BUTTONS, **remediation.allowed(proposal, user)}


def is_fresh(proposal: ActionProposal) -> bool:
    if not proposal.preview or proposal.preview_error:
        return False
    from . import remediation

    return bool(remediation.is_fresh(proposal))


def four_eyes_note(proposal: ActionProposal, user: Any, allowed: dict[str, bool]) -> str:
    """Why an approver sees no Approve button on an action they requested themselves."""
    if allowed.get("approve") or not permissions.can_approve(user):
        return ""
    if proposal.status not in (ActionProposal.Status.PROPOSED, ActionProposal.Status.PREVIEWED):
        return ""
    return permissions.four_eyes_refusal(user, proposal)


def approval_note(proposal: ActionProposal, user: Any, allowed: dict[str, bool]) -> str:
    """Why an approver cannot approve a previewed action yet (a stale preview), if not four eyes."""
    if allowed.get("approve") or not permissions.can_approve(user):
        return ""
    if proposal.status != ActionProposal.Status.PREVIEWED:
        return ""
    from . import remediation

    message = remediation.approval_refusal(proposal, user)[1]
    return "" if message.startswith("Four eyes") else message


def diff_lines(diff: str) -> list[dict[str, str]]:
    """A unified diff's lines, each with its kind: file, hunk, add, del or ctx."""
    lines = []
    for text in (diff or "").splitlines():
        if text.startswith(("+++", "---")):
            kind = "file"
        elif text.startswith("@@"):
            kind = "hunk"
        elif text.startswith("+"):
            kind = "add"
        elif text.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append({"kind": kind, "text": text})
    return lines


def pretty_json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def request_view(request: Any) -> dict[str, str]:
    """One request as sent: `PATCH /path?query`, its content type, and its body as JSON text."""
    if not isinstance(request, dict):
        return {"line": "", "content_type": "", "body": pretty_json(request)}
    query = request.get("query")
    if isinstance(query, dict) and query:
        query_text = urlencode(query, doseq=True)
    elif isinstance(query, list) and query:
        query_text = urlencode(query)
    else:
        query_text = str(query or "")
    path = str(request.get("path") or request.get("url") or "")
    line = f"{request.get('method', '')} {path}{'?' + query_text if query_text else ''}".strip()
    body = request.get("body")
    return {
        "line": line,
        "content_type": str(request.get("content_type") or ""),
        "body": "" if body is None else pretty_json(body),
    }


def response_view(response: Any) -> dict[str, str]:
    if not isinstance(response, dict):
        return {"status": "", "body": pretty_json(response)}
    body = response.get("body")
    return {
        "status": str(response.get("status", "")),
        "body": "" if body is None else pretty_json(body),
    }


def exchanges(requests: Any, responses: Any) -> list[dict]:
    """Requests paired with the answers they got (an answer may be missing: it failed first)."""
    requests = requests if isinstance(requests, list) else []
    responses = responses if isinstance(responses, list) else []
    pairs = []
    for index in range(max(len(requests), len(responses))):
        pairs.append(
            {
                "request": request_view(requests[index]) if index < len(requests) else None,
                "response": response_view(responses[index]) if index < len(responses) else None,
            }
        )
    return pairs


def hypothesis_evidence(
    proposal: ActionProposal, anchors: frozenset[int]
) -> list[dict[str, int | bool]]:
    """The evidence cited by the hypothesis the proposal came from: the one about its target."""
    analysis = proposal.analysis
    if analysis is None or proposal.proposed_by_id:
        return []
    target = proposal.target
    for hypothesis in analysis.hypotheses or []:
        entity = hypothesis.get("entity") or {}
        same = target is not None and (
            entity.get("kind") == target["kind"]
            and (entity.get("namespace") or None) == target["namespace"]
            and entity.get("name") == target["name"]
        )
        if same or (target is None and hypothesis is analysis.hypotheses[0]):
            cited = [i for i in hypothesis.get("evidence") or [] if isinstance(i, int)]
            return [{"id": i, "linked": i in anchors} for i in cited]
    return []


def target_label(proposal: ActionProposal) -> str:
    if not proposal.target_kind:
        return ""
    where = f"{proposal.target_namespace}/" if proposal.target_namespace else ""
    return f"{proposal.target_kind} {where}{proposal.target_name}"


def card(
    proposal: ActionProposal,
    user: Any,
    *,
    anchors: frozenset[int] = frozenset(),
    recommended: bool = False,
    mode: str = "",
    error: str = "",
    form_text: str = "",
    standalone: bool = False,
) -> dict:
    """Everything the card template needs of one proposal, for `user`."""
    allowed = allowed_for(proposal, user)
    preview = proposal.preview if isinstance(proposal.preview, dict) else {}
    outcome = proposal.outcome if isinstance(proposal.outcome, dict) else {}
    result = outcome.get("result") if isinstance(outcome.get("result"), dict) else {}
    params = proposal.params if isinstance(proposal.params, dict) else {}
    if mode == "params" and not form_text:
        form_text = json.dumps(params, indent=2, ensure_ascii=False)
    return {
        "p": proposal,
        "allowed": allowed,
        "any_button": any(allowed.values()),
        "four_eyes": four_eyes_note(proposal, user, allowed),
        "approval_note": approval_note(proposal, user, allowed),
        "fresh": is_fresh(proposal),
        "recommended": recommended,
        "target": target_label(proposal),
        "params": [
            (k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in params.items()
            if not (k == "steps" and proposal.action == "none")
        ],
        "steps": params.get("steps") if proposal.action == "none" else "",
        "evidence": hypothesis_evidence(proposal, anchors),
        "preview": preview,
        "diff": diff_lines(preview.get("diff", "")),
        "preview_requests": [request_view(r) for r in preview.get("requests") or []],
        "outcome": outcome,
        "outcome_exchanges": exchanges(outcome.get("requests"), outcome.get("responses")),
        "outcome_result": pretty_json(result) if result else "",
        "silence_id": result.get("silence_id", ""),
        "silence_url": result.get("url", ""),
        "running": proposal.status in RUNNING,
        "settled": proposal.status in SETTLED,
        "mode": mode,
        "error": error,
        "form_text": form_text,
        "param_fields": param_fields(proposal.action) if mode == "params" else [],
        "standalone": standalone,
    }


def cards_for(
    incident: Incident,
    user: Any,
    *,
    ready_analysis: Analysis | None = None,
    anchors: frozenset[int] | None = None,
) -> list[dict]:
    """The incident's cards for `user`. The page passes what it read already: the latest
    analysis when it is ready (then it is the latest ready one) and the evidence anchors."""
    from .presentation import evidence_anchor_ids

    if ready_analysis is not None:
        analysis = ready_analysis
        proposals = actions_of(incident, analysis)
    else:
        proposals, analysis = shown_proposals(incident)
    if anchors is None:
        anchors = evidence_anchor_ids(incident) if proposals else frozenset()
    return [
        card(
            p,
            user,
            anchors=anchors,
            recommended=(
                analysis is not None
                and p.analysis_id == analysis.pk
                and not p.proposed_by_id
                and p is proposals[0]
            ),
        )
        for p in proposals
    ]


# --- the catalogue, as the add form offers it ---------------------------------------------------


def _describe(schema: dict, defs: dict) -> str:
    """A short, readable type of one JSON-schema property."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        fields = ", ".join(
            f"{k}{'' if k in target.get('required', []) else '?'}"
            for k in (target.get("properties") or {})
        )
        return "{" + fields + "}"
    if "anyOf" in schema:
        return " or ".join(_describe(s, defs) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        text = f"list of {_describe(schema.get('items') or {}, defs)}"
        if schema.get("minItems"):
            text += f" (at least {schema['minItems']})"
        return text
    if kind == "object":
        names = (schema.get("propertyNames") or {}).get("enum")
        values = _describe(schema.get("additionalProperties") or {}, defs)
        return f"{{{'|'.join(names)}: {values}}}" if names else f"object of {values}"
    if kind == "integer":
        low, high = schema.get("ge", schema.get("minimum")), schema.get("le", schema.get("maximum"))
        if low is not None and high is not None:
            return f"integer {low}–{high}"
        if low is not None:
            return f"integer ≥ {low}"
        return "integer"
    if kind == "null":
        return "null"
    return kind


def param_fields(action_name: str) -> list[dict]:
    """[{name, type, required, default}] of an action's parameters, from its pydantic model."""
    action = CATALOGUE.get(action_name)
    if action is None:
        return []
    schema = action.params_model.model_json_schema()
    defs = schema.get("$defs") or {}
    required = set(schema.get("required") or [])
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        fields.append(
            {
                "name": name,
                "type": _describe(prop, defs),
                "required": name in required,
                "default": json.dumps(prop["default"]) if "default" in prop else "",
            }
        )
    return fields


def params_skeleton(action_name: str) -> str:
    """The params JSON the add form starts with: the defaults, and the required fields to fill."""
    action = CATALOGUE.get(action_name)
    if action is None:
        return "{}"
    schema = action.params_model.model_json_schema()
    required = set(schema.get("required") or [])
    skeleton: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if name in required:
            skeleton[name] = "" if prop.get("type") == "string" else None
        elif prop.get("default") is not None:
            skeleton[name] = prop["default"]
    return json.dumps(skeleton, indent=2) if skeleton else "{}"


def entity_value(entity: Any) -> str:
    return f"{entity.kind}/{entity.namespace or ''}/{entity.name}"


def parse_entity_value(value: str) -> dict | None:
    """`Kind/namespace/name` (namespace empty for cluster-scoped) as a target dict; None if blank."""
    value = (value or "").strip()
    if not value:
        return None
    parts = value.split("/", 2)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise ValueError(f"{value!r} is not a target of this incident")
    return {"kind": parts[0], "namespace": parts[1] or None, "name": parts[2]}


def target_choices(incident: Incident, action_name: str) -> list[dict[str, str]]:
    """The incident's entities an action of this name can act on, as select options."""
    action = CATALOGUE.get(action_name)
    if action is None or action.target_kind in TARGETLESS:
        return []
    from . import remediation

    entities = [e for e in remediation.scope_entities(incident) if e.kind == action.target_kind]
    entities.sort(key=lambda e: (e.namespace or "", e.name))
    return [{"value": entity_value(e), "label": str(e)} for e in entities]


def add_form(
    incident: Incident,
    *,
    action: str = "",
    target: str = "",
    params_text: str | None = None,
    rationale: str = "",
    error: str = "",
) -> dict:
    """The context of partials/action_add.html."""
    if action not in CATALOGUE:
        action = next(iter(CATALOGUE))
    catalogue_action = CATALOGUE[action]
    return {
        "add_catalogue": [
            {"name": name, "target_kind": a.target_kind or "no target"}
            for name, a in CATALOGUE.items()
        ],
        "add_action": action,
        "add_target_kind": catalogue_action.target_kind or "",
        "add_targetless": catalogue_action.target_kind in TARGETLESS,
        "add_targets": target_choices(incident, action),
        "add_target": target,
        "add_params": params_skeleton(action) if params_text is None else params_text,
        "add_fields": param_fields(action),
        "add_rationale": rationale,
        "add_error": error,
    }


# --- the audit ------------------------------------------------------------------------------------


# A preview and an approval record the writes execution will send (their dry runs went out
# with dryRun=All, which is left off so the audit shows the exact request to be approved): the
# audit must not present them as sent.
PLANNED_KINDS = frozenset({ActionEvent.Kind.PREVIEWED, ActionEvent.Kind.APPROVED})


def audit_row(event: ActionEvent) -> dict:
    proposal = event.action
    return {
        "event": event,
        "proposal": proposal,
        "target": target_label(proposal),
        "exchanges": exchanges(event.requests, event.responses),
        "sent": len(event.requests or []),
        "planned": event.kind in PLANNED_KINDS,
    }
