"""silence-alert: create a silence through the Alertmanager API v2; `expire_silence` ends one.

`POST {alertmanager_url}/api/v2/silences` with `{matchers, startsAt, endsAt, createdBy, comment}`
(answer `{"silenceID": …}`), and `DELETE /api/v2/silence/{id}` to expire it. The target is None or
the cluster's Alertmanager (an entity of kind `Alertmanager`, any name): the cluster's
`alertmanager_url` is where it goes, and none configured is an ActionError.

Parameters: `matchers`, a list of `{name, value, isRegex (false), isEqual (true)}`, by default
the alertnames and namespaces of the incident's alerts (`alertname=~"A|B"` for several); `duration`
such as `30m`, `2h`, `1d12h` (default 1h, at most 7 days); `comment`, required. Guard rails: the
matchers must match at least one of the incident's alerts (nobody silences something unrelated
from here), and, as Alertmanager requires, at least one must not match the empty string.

Times are computed when the request is built: the preview shows the body with the preview's
times, execution sends now + duration. `createdBy` is `ctx.actor`. When `ctx.idempotency_key` is
set it is appended to the comment (` [vigil <key>]`), and execution first lists the silences and
returns an active or pending one with the same matchers, createdBy and comment instead of
creating a second (a Celery retry after a POST whose answer was lost). Fingerprint: a digest of
the matchers, duration and comment the preview showed.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

import requests
from pydantic import Field, field_validator, model_validator

from collectors.base import CollectorError, Entity
from collectors.sources import http_error

from . import base
from .base import (
    ActionContext,
    ActionError,
    BaseAction,
    Outcome,
    Params,
    Preview,
    audit_body,
    check_params_unchanged,
    is_label_name,
    make_fingerprint,
    read_fingerprint,
)

MAX_DURATION = timedelta(days=7)
MIN_DURATION = timedelta(minutes=1)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_SILENCE_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# RE2 metacharacters; everything else in a label value stands for itself.
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def parse_duration(text: str) -> timedelta:
    """`2h`, `90m`, `1d12h`, `45s` → timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 1d12h")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


class Matcher(Params):
    name: Annotated[str, Field(min_length=1)]
    value: str
    # Alertmanager's own field names, so a matcher is stored and sent exactly as the API has it.
    isRegex: bool = False
    isEqual: bool = True

    @field_validator("name")
    @classmethod
    def _label_name(cls, name: str) -> str:
        if not is_label_name(name):
            raise ValueError(f"{name!r} is not a label name")
        return name

    @model_validator(mode="after")
    def _regex(self) -> Matcher:
        if self.isRegex:
            _compile(self.value)
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        """Alertmanager's semantics: an absent label is the empty string; regexes are anchored."""
        value = labels.get(self.name, "")
        hit = bool(_compile(self.value).fullmatch(value)) if self.isRegex else value == self.value
        return hit == self.isEqual

    def __str__(self) -> str:
        operator = {(False, True): "=", (False, False): "!=", (True, True): "=~"}.get(
            (self.isRegex, self.isEqual), "!~"
        )
        return f"{self.name}{operator}{json.dumps(self.value)}"


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None


class SilenceAlertParams(Params):
    matchers: Annotated[list[Matcher], Field(min_length=1)] | None = None
    duration: str = "1h"
    comment: Annotated[str, Field(min_length=1, max_length=2000)]

    @field_validator("duration")
    @classmethod
    def _duration(cls, text: str) -> str:
        length = parse_duration(text)
        if length < MIN_DURATION:
            raise ValueError(f"{text!r} is shorter than a minute")
        if length > MAX_DURATION:
            raise ValueError(
                f"{text!r} is longer than 7 days, the most a silence from Vigil may last"
            )
        return text.strip()

    @field_validator("comment")
    @classmethod
    def _comment(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("say why the alert is silenced")
        return text.strip()


class SilenceAlert(BaseAction):
    name = "silence-alert"
    target_kind = "Alertmanager"
    params_model = SilenceAlertParams

    def check_target(self, target: Entity | None, ctx: ActionContext) -> None:
        if target is not None and target.kind != "Alertmanager":
            raise ActionError(f"{self.name} acts on the cluster's Alertmanager, not on {target}")
        if not ctx.cluster.alertmanager_url:
            raise ActionError(
                f"cluster {ctx.cluster.name} has no Alertmanager URL configured: set it in the "
                "admin (Cluster) or VIGIL_ALERTMANAGER_URL to silence alerts from Vigil"
            )

    def check_params(self, target: Entity | None, params: Any, ctx: ActionContext) -> None:
        matchers = self.matchers(params, ctx)
        if all(m.matches({}) for m in matchers):
            raise ActionError(
                f"{self.name}: every matcher matches the empty string "
                f"({', '.join(map(str, matchers))}); Alertmanager needs at least one that does not"
            )
        matched = [
            labels for labels in ctx.alert_labels if all(m.matches(labels) for m in matchers)
        ]
        if not matched:
            raise ActionError(
                f"{self.name}: {{{', '.join(map(str, matchers))}}} matches none of this incident's "
                "alerts; a silence from Vigil may only cover the incident's own alerts"
            )

    def matchers(self, params: SilenceAlertParams, ctx: ActionContext) -> list[Matcher]:
        if params.matchers:
            return list(params.matchers)
        return default_matchers(ctx.alert_labels)

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        matchers = self.matchers(params, ctx)
        body = self._body(params, matchers, ctx)
        covered = sum(1 for labels in ctx.alert_labels if all(m.matches(labels) for m in matchers))
        return Preview(
            summary=(
                f"Silence alerts matching {{{', '.join(map(str, matchers))}}} for "
                f"{params.duration} in Alertmanager ({covered} of the incident's "
                f"{len(ctx.alert_labels)} alerts)"
            ),
            requests=[_request(ctx, "POST", "/api/v2/silences", body)],
            diff="",
            fingerprint=make_fingerprint(
                silence=_digest(matchers, params), params=self.params_digest(params)
            ),
        )

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome:
        params = self.typed(params)
        self.validate(target, params, ctx)
        facts = read_fingerprint(fingerprint, "silence", "params")
        check_params_unchanged(self, params, facts)
        matchers = self.matchers(params, ctx)
        if facts["silence"] != _digest(matchers, params):
            raise base.ActionConflict(
                "the incident's alerts changed since the preview, and with them the default "
                "matchers: preview again"
            )
        body = self._body(params, matchers, ctx)
        am = _Alertmanager(ctx)
        existing = am.find(body)
        if existing is not None:
            return Outcome(
                ok=True,
                message=f"silence {existing['id']} already exists ({existing['status']['state']}); nothing sent",
                requests=am.writes,
                responses=am.answers,
                result={
                    "silence_id": existing["id"],
                    "skipped": True,
                    "starts_at": existing.get("startsAt"),
                    "ends_at": existing.get("endsAt"),
                    "url": am.silence_url(existing["id"]),
                },
            )
        answer = am.send("POST", "/api/v2/silences", body, doing="create the silence")
        silence_id = (answer or {}).get("silenceID") if isinstance(answer, dict) else None
        if not silence_id:
            raise ActionError(
                f"Alertmanager answered without a silenceID: {str(answer)[:200]}",
                requests=am.writes,
                responses=am.answers,
            )
        return Outcome(
            ok=True,
            message=f"silence {silence_id} created until {body['endsAt']}",
            requests=am.writes,
            responses=am.answers,
            result={
                "silence_id": silence_id,
                "starts_at": body["startsAt"],
                "ends_at": body["endsAt"],
                "url": am.silence_url(silence_id),
            },
        )

    def _body(
        self, params: SilenceAlertParams, matchers: list[Matcher], ctx: ActionContext
    ) -> dict:
        now = base.utc_now()
        comment = params.comment
        if ctx.idempotency_key:
            comment = f"{comment} [vigil {ctx.idempotency_key}]"
        return {
            "matchers": [m.model_dump() for m in matchers],
            "startsAt": _time(now),
            "endsAt": _time(now + parse_duration(params.duration)),
            "createdBy": ctx.actor,
            "comment": comment,
        }


def default_matchers(alert_labels: list[dict[str, str]]) -> list[Matcher]:
    """alertname (and namespace, when every alert has one) of the incident's alerts."""
    matchers = []
    for name in ("alertname", "namespace"):
        values = sorted({labels.get(name, "") for labels in alert_labels})
        if not values or "" in values:
            continue
        if len(values) == 1:
            matchers.append(Matcher(name=name, value=values[0]))
        else:
            matchers.append(
                Matcher(
                    name=name,
                    value="|".join(_RE2_SPECIAL.sub(r"\\\1", v) for v in values),
                    isRegex=True,
                )
            )
    if not matchers:
        raise ActionError("the incident has no alert with an alertname to silence")
    return matchers


def expire_silence(ctx: ActionContext, silence_id: str) -> Outcome:
    """Expire a silence (DELETE /api/v2/silence/{id}); an expired one is left as it is."""
    if not isinstance(silence_id, str) or not _SILENCE_ID.match(silence_id):
        raise ActionError(f"{silence_id!r} is not an Alertmanager silence id")
    if not ctx.cluster.alertmanager_url:
        raise ActionError(f"cluster {ctx.cluster.name} has no Alertmanager URL configured")
    am = _Alertmanager(ctx)
    silence = am.get(f"/api/v2/silence/{silence_id}", doing="read the silence", allow_404=True)
    if silence is None:
        raise ActionError(f"Alertmanager has no silence {silence_id}")
    if (silence.get("status") or {}).get("state") == "expired":
        return Outcome(
            ok=True,
            message=f"silence {silence_id} had already expired; nothing sent",
            result={"silence_id": silence_id, "skipped": True},
        )
    am.send("DELETE", f"/api/v2/silence/{silence_id}", None, doing="expire the silence")
    return Outcome(
        ok=True,
        message=f"silence {silence_id} expired",
        requests=am.writes,
        responses=am.answers,
        result={"silence_id": silence_id},
    )


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _digest(matchers: list[Matcher], params: SilenceAlertParams) -> str:
    canonical = json.dumps(
        [[m.model_dump() for m in matchers], params.duration, params.comment], sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _request(ctx: ActionContext, method: str, path: str, body: Any) -> dict:
    url = ctx.cluster.alertmanager_url.rstrip("/") + path
    return {
        "method": method,
        "path": urlsplit(url).path,
        "query": {},
        "content_type": "application/json" if body is not None else None,
        "body": body,
    }


def _matcher_key(matchers: list[dict]) -> list[tuple]:
    return sorted(
        (m.get("name"), m.get("value"), bool(m.get("isRegex")), m.get("isEqual", True) is not False)
        for m in matchers
    )


class _Alertmanager:
    """The Alertmanager API v2 over `requests`: one attempt, the context's timeout, writes recorded."""

    def __init__(self, ctx: ActionContext) -> None:
        self.base = ctx.cluster.alertmanager_url.rstrip("/")
        self.ctx = ctx
        self.timeout = ctx.timeout
        self.writes: list[dict] = []
        self.answers: list[dict] = []

    def silence_url(self, silence_id: str) -> str:
        return f"{self.base}/#/silences/{silence_id}"

    def _error(self, exc: Exception) -> ActionError:
        reason: CollectorError = http_error(exc, "Alertmanager", self.timeout)
        return ActionError(
            reason.reason, retryable=reason.retryable, requests=self.writes, responses=self.answers
        )

    def get(self, path: str, *, doing: str, allow_404: bool = False) -> Any:
        try:
            response = requests.get(self.base + path, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self._error(exc) from exc
        if allow_404 and response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ActionError(
                f"Alertmanager answered {response.status_code} when asked to {doing}: "
                f"{response.text[:300]}",
                retryable=response.status_code >= 500,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ActionError(f"Alertmanager sent something that is not JSON to {doing}") from exc

    def send(self, method: str, path: str, body: Any, *, doing: str) -> Any:
        self.writes.append(_request(self.ctx, method, path, body))
        try:
            response = requests.request(method, self.base + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            self.answers.append({"status": None, "body": f"{type(exc).__name__}: {exc}"[:500]})
            raise self._error(exc) from exc
        try:
            answer: Any = response.json() if response.content else None
        except ValueError:
            answer = response.text
        self.answers.append({"status": response.status_code, "body": audit_body(answer)})
        if not 200 <= response.status_code < 300:
            raise ActionError(
                f"Alertmanager answered {response.status_code} when asked to {doing}: "
                f"{str(answer)[:300]}",
                retryable=response.status_code >= 500,
                requests=self.writes,
                responses=self.answers,
            )
        return answer

    def find(self, body: dict) -> dict | None:
        """An active or pending silence with the same matchers, createdBy and comment."""
        wanted = _matcher_key(body["matchers"])
        for silence in self.get("/api/v2/silences", doing="list silences") or []:
            if (
                (silence.get("status") or {}).get("state") in ("active", "pending")
                and silence.get("createdBy") == body["createdBy"]
                and silence.get("comment") == body["comment"]
                and _matcher_key(silence.get("matchers") or []) == wanted
            ):
                return silence
        return None


ACTION = SilenceAlert()
