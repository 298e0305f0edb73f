"""The action contract: typed parameters, validation, a preview that changes nothing, an execution.

Every remediation Vigil can run is a module of `assistant/actions/` exposing `ACTION`, an object
with `name`, `target_kind`, `params_model` and four methods (`Action` below). The lifecycle
(proposal rows, approval, the Celery execution, the timeline) lives in the assistant's services
and tasks; an action only knows how to check, show and do one thing, and says so in a way an
engineer can read:

- `parse_params(raw)` turns stored JSON into the typed parameters (defaults filled) or raises
  ActionError naming the field.
- `validate(target, params, ctx)` checks the target's kind and that it is one of the incident's
  own entities (`ctx.scope_entities`, namespace included), and that the parameters are sane.
- `preview(target, params, ctx)` reads the current state and sends every write as a Kubernetes
  server-side dry run (`dryRun=All`), so the diff is what the API server itself would store; it
  never changes anything. Its `fingerprint` names the state it was computed against.
- `execute(target, params, ctx, fingerprint=…)` validates again, reads again, and then either
  finds the goal already reached (a Celery retry after a write that did go through: a no-op
  success, nothing sent), or refuses with ActionConflict when the state moved since the preview,
  or sends the writes. Running it twice never does harm twice.

Failures: ActionError (bad parameters, a target out of scope, an API that refused or could not
be reached: `retryable` is true for the transient kinds) and ActionConflict (the world changed
since the preview). Both carry the requests already sent and their answers, for the audit.
An Outcome with `ok=False` means the action ran to its end without reaching the whole goal (a
drain whose evictions a PodDisruptionBudget blocked).

Fingerprints are `key=value` pairs joined by `;` (values never contain either). Every one holds
`params=<digest>` of the typed parameters, so an edit of the parameters after the preview is a
conflict too, and the facts the action compares (uid, generation, the ReplicaSet rolled back to).
Deployments are fingerprinted by `metadata.generation`, not `resourceVersion`: the controllers
rewrite a troubled Deployment's status (ready and available counts) every few seconds, which
moves its resourceVersion, while the generation moves only when its spec changes, and the spec is
what a preview shows. Where a write is computed from the state it read (rollout-undo replaces the
whole pod template), it also carries that read's resourceVersion as a precondition, so a change
between the read and the write is a 409 and an ActionConflict, never a silent overwrite.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from collectors.base import ClusterSources, Entity

# Bodies kept in an Outcome (the audit) are cut to this many characters of JSON.
MAX_AUDIT_BODY = 8000


class ActionError(Exception):
    """The action cannot run as asked; `message` is shown to the engineer as is.

    `retryable` marks the transient kinds (API unreachable, timed out, 5xx) that the same
    request may get past later. `requests`/`responses` are what was sent before it failed.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        requests: list[dict] | None = None,
        responses: list[dict] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.requests: list[dict] = list(requests or [])
        self.responses: list[dict] = list(responses or [])

    def __reduce__(self) -> tuple:
        # Keep `retryable` and the audit through pickling (a Celery result, a chained task).
        return (self.__class__, (self.message,), self.__dict__)


class ActionConflict(ActionError):
    """The target changed since the preview (or the parameters did): preview again."""


@dataclass
class ActionContext:
    """Where an action acts, and on whose behalf.

    `idempotency_key` (optional) is a stable id of the approved proposal, e.g. "incident-42/
    action-7": silence-alert writes it into the silence's comment and, on a retry, finds the
    silence it already created instead of creating a second one.
    """

    cluster: ClusterSources
    scope_entities: set[Entity]
    alert_labels: list[dict[str, str]]
    timeout: float = 10.0
    actor: str = "vigil"
    idempotency_key: str = ""


@dataclass
class Preview:
    """What execute() would do, computed without changing anything.

    `requests`: the writes, in order, as `{method, path, query, content_type, body}` (path and
    query as on the wire, minus the preview's `dryRun=All`). Values computed when a request is
    built are the preview's own: rollout-undo's resourceVersion precondition, rollout-restart's
    restartedAt, a silence's startsAt/endsAt; execute() sends fresh ones. `diff`: the object(s)
    before and after as the API server answered the dry run ("" when nothing is written).
    """

    summary: str
    requests: list[dict]
    diff: str
    fingerprint: str


@dataclass
class Outcome:
    """What execute() did: the requests sent (as in Preview) and the answers `{status, body}`.

    `ok` is false only for an action that ran to its end short of its goal (drain-node with
    evictions blocked); anything that stopped an action raised ActionError instead. A goal found
    already reached is ok with no requests and `result["skipped"]` true.
    """

    ok: bool
    message: str
    requests: list[dict] = field(default_factory=list)
    responses: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)


@runtime_checkable
class Action(Protocol):
    name: str
    target_kind: str | None
    params_model: type[BaseModel]

    def parse_params(self, raw: dict | None) -> BaseModel: ...

    def validate(self, target: Entity | None, params: Any, ctx: ActionContext) -> None: ...

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview: ...

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome: ...


# --- parameters ----------------------------------------------------------------------------------


class Params(BaseModel):
    """Base of every parameter model: unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads `true` as 1; a replica count or a grace period is never a boolean.
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true/false")
    return value


WholeNumber = Annotated[int, BeforeValidator(_no_bool)]


def describe_validation_error(action: str, exc: ValidationError) -> str:
    """`scale-deployment: replicas: Input should be a valid integer…`, one problem per clause."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "parameters"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown parameter {where!r}")
        elif error["type"] == "missing":
            problems.append(f"{where} is required")
        else:
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
    return f"{action}: " + "; ".join(problems)


# --- the common part of every action -------------------------------------------------------------


class BaseAction:
    """Parameter parsing and the target check every action shares; subclasses add the rest."""

    name: ClassVar[str]
    target_kind: ClassVar[str | None]
    params_model: ClassVar[type[Params]]

    def parse_params(self, raw: dict | None) -> Params:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ActionError(
                f"{self.name}: parameters must be an object, not {type(raw).__name__}"
            )
        try:
            return self.params_model.model_validate(raw)
        except ValidationError as exc:
            raise ActionError(describe_validation_error(self.name, exc)) from None

    def typed(self, params: Any) -> Params:
        """Parameters as given by the caller: the typed model, or the raw JSON dict."""
        if isinstance(params, self.params_model):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump()
        return self.parse_params(params)

    def validate(self, target: Entity | None, params: Any, ctx: ActionContext) -> None:
        self.check_target(target, ctx)
        self.check_params(target, self.typed(params), ctx)

    def check_target(self, target: Entity | None, ctx: ActionContext) -> None:
        if self.target_kind is None:
            if target is not None:
                raise ActionError(f"{self.name} takes no target, but was given {target}")
            return
        if target is None:
            raise ActionError(f"{self.name} needs a {self.target_kind} target")
        if target.kind != self.target_kind:
            raise ActionError(f"{self.name} acts on a {self.target_kind}, not on {target}")
        if target not in ctx.scope_entities:
            raise ActionError(
                f"{target} is not one of this incident's entities; {self.name} may act only on "
                "what the incident is about"
            )

    def check_params(self, target: Entity | None, params: Params, ctx: ActionContext) -> None:
        """Checks that need more than the types; the default has none."""

    def params_digest(self, params: Params) -> str:
        canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(f"{self.name}:{canonical}".encode()).hexdigest()[:16]


# --- fingerprints --------------------------------------------------------------------------------


def make_fingerprint(**facts: Any) -> str:
    return ";".join(f"{key}={'' if value is None else value}" for key, value in facts.items())


def read_fingerprint(fingerprint: str, *required: str) -> dict[str, str]:
    """The facts of a fingerprint; ActionConflict when it is not one this action made."""
    facts: dict[str, str] = {}
    for part in (fingerprint or "").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            facts[key] = value
    missing = [key for key in required if key not in facts]
    if missing:
        raise ActionConflict(
            f"the preview's fingerprint {fingerprint!r} is not one this action made "
            f"(no {', '.join(missing)}): preview again"
        )
    return facts


def check_params_unchanged(action: BaseAction, params: Params, facts: dict[str, str]) -> None:
    if facts.get("params") != action.params_digest(params):
        raise ActionConflict(
            f"the parameters of {action.name} changed since the preview: preview again"
        )


# --- presentation helpers ------------------------------------------------------------------------


def utc_now() -> datetime:
    """The actions' clock (a function, so tests can pin it)."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Seconds-precision RFC 3339 in UTC, as kubectl writes restartedAt."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unified_diff(before: Any, after: Any, name: str) -> str:
    """A unified diff of two JSON values rendered as YAML (sorted keys, so only changes show)."""
    old = yaml.safe_dump(before, sort_keys=True, default_flow_style=False, allow_unicode=True)
    new = yaml.safe_dump(after, sort_keys=True, default_flow_style=False, allow_unicode=True)
    lines = difflib.unified_diff(
        old.splitlines(),
        new.splitlines(),
        fromfile=f"{name} (now)",
        tofile=f"{name} (after, as the API server answered the dry run)",
        lineterm="",
    )
    return "\n".join(lines)


def audit_body(body: Any) -> Any:
    """A response body for the audit: managedFields dropped, anything long cut to its identity."""
    if isinstance(body, dict):
        body = dict(body)
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and "managedFields" in metadata:
            body["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    try:
        text = json.dumps(body)
    except (TypeError, ValueError):
        return str(body)[:MAX_AUDIT_BODY]
    if len(text) <= MAX_AUDIT_BODY:
        return body
    if isinstance(body, dict):
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        keep = ("name", "namespace", "uid", "resourceVersion", "generation")
        return {
            "kind": body.get("kind"),
            "apiVersion": body.get("apiVersion"),
            "metadata": {k: metadata[k] for k in keep if k in metadata},
            "truncated": f"{len(text)} characters of JSON, cut for the audit",
        }
    return text[:MAX_AUDIT_BODY]


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def is_label_name(name: str) -> bool:
    return bool(_LABEL_NAME.match(name))
