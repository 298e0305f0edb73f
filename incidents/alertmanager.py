"""Alertmanager webhook payload (version 4): parsing and validation, with errors that name the field.

`parse_notification` either returns a notification or raises PayloadError (naming the field):
no other exception comes out of it, whatever the bytes (tests/security/test_parsers.py).

What it returns is safe to store and to show:
* NUL characters (valid JSON as `\u0000`, refused by PostgreSQL in text and jsonb) become
  U+FFFD, so a label value cannot make the insert fail and the delivery a poison pill the sweep
  retries forever;
* secrets are redacted (collectors.redaction) in every label and annotation value, the common
  and group labels, the groupKey and the URLs. Alertmanager sends what the rule and the alert's
  labels say, and a DSN with its password in a `description`, or a blackbox target
  `instance="https://user:pass@host"`, would otherwise reach the incident page, Slack and the
  LLM prompt. The alert's identity is its `fingerprint` (computed by Alertmanager from the real
  labels) and `startsAt`, so redaction changes no instance's identity. The cost: a silence
  proposed from a redacted label value cannot match it (such a label cannot be matched on from
  Vigil).

`scrub_body` redacts the raw body the same way before the hook stores it, so the delivery kept
for reprocessing holds no secret either (tests/security/test_redaction_pipeline.py).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collectors.redaction import redact, redact_text

logger = logging.getLogger(__name__)
GO_ZERO_TIME_YEAR = 1
_FRACTION = re.compile(r"(\.\d{6})\d+")
_WEB_LINK = re.compile(r"https?://", re.IGNORECASE)
NUL = "\x00"
REPLACEMENT = "\ufffd"


class PayloadError(ValueError):
    """A notification Vigil cannot use; `field` says where (`alerts[2].startsAt`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def parse_time(value: object) -> datetime | None:
    """RFC 3339 with nanoseconds or an offset, as UTC; Go's zero time (an unset endsAt) is None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 string")
    return _parse_time_text(value)


@lru_cache(maxsize=4096)
def _parse_time_text(value: str) -> datetime | None:
    """parse_time of a string, remembered: a notification's alerts share their endsAt (Go's zero
    time while firing) and mostly their startsAt, and a storm repeats them on every delivery.
    A datetime is immutable, so sharing one is safe; an error is raised again, never cached."""
    text = _FRACTION.sub(r"\1", value.strip())
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    if parsed.year <= GO_ZERO_TIME_YEAR:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:59:59-23:59 is after year 9999 in UTC
        raise ValueError(f"{value!r} is out of range") from exc


def web_link(value: str) -> str:
    """`value` if it is an http(s) URL, else "": the page links to it (a `javascript:` link would
    be script in the page, were it not for the CSP), and dropping a bad link loses no alert."""
    return value if _WEB_LINK.match(value.strip()) else ""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=64 * 1024)


class AlertmanagerAlert(_Strict):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)

    @field_validator("startsAt", "endsAt", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> datetime | None:
        return parse_time(value)

    @field_validator("generatorURL")
    @classmethod
    def _web_link(cls, value: str) -> str:
        return web_link(value)

    @field_validator("startsAt")
    @classmethod
    def _starts_is_set(cls, value: datetime | None) -> datetime:
        if value is None:
            raise ValueError("must be a real time, not empty or Go's zero time")
        return value

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("alertname"):
            raise ValueError("must contain a non-empty 'alertname'")
        return value

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.fingerprint, self.startsAt)


class AlertmanagerNotification(_Strict):
    version: Literal["4"]
    groupKey: str = Field(min_length=1, max_length=8192)
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert]

    @field_validator("externalURL")
    @classmethod
    def _web_link(cls, value: str) -> str:
        return web_link(value)


def _field_path(location: tuple) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _without_nul(value: Any) -> Any:
    """`value` with every NUL in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _decode(body: bytes, decoded: Any = None) -> Any:
    """The body's JSON (`decoded`: what `scrub` already read from it, not read again)."""
    if decoded is None:
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError("", f"body is not valid JSON ({exc})") from exc
        except RecursionError as exc:  # nesting deeper than the decoder's recursion limit
            raise PayloadError("", "body is not valid JSON (nested too deeply)") from exc
    if b"\\u0000" in body:  # JSON carries NUL only escaped; raw control characters are refused
        decoded = _without_nul(decoded)
    return decoded


def _redacted(notification: AlertmanagerNotification) -> AlertmanagerNotification:
    """The notification with secrets redacted from every value a person or the LLM reads."""

    def values(mapping: dict[str, str]) -> dict[str, str]:
        redacted, count = redact(mapping)
        return redacted if count else mapping

    def text(value: str) -> str:
        return redact_text(value)[0]

    def updated(model, update: dict):
        """`model` itself when nothing changed (the common case: copies cost), else a copy."""
        changed = {k: v for k, v in update.items() if v is not getattr(model, k)}
        return model.model_copy(update=changed) if changed else model

    alerts = [
        updated(
            alert,
            {
                "labels": values(alert.labels),
                "annotations": values(alert.annotations),
                "generatorURL": text(alert.generatorURL),
            },
        )
        for alert in notification.alerts
    ]
    if all(a is b for a, b in zip(alerts, notification.alerts, strict=True)):
        alerts = notification.alerts
    return updated(
        notification,
        {
            "groupKey": text(notification.groupKey),
            "groupLabels": values(notification.groupLabels),
            "commonLabels": values(notification.commonLabels),
            "commonAnnotations": values(notification.commonAnnotations),
            "externalURL": text(notification.externalURL),
            "receiver": text(notification.receiver),
            "alerts": alerts,
        },
    )


def parse_notification(
    body: bytes, *, scrubbed: bool = False, decoded: Any = None
) -> AlertmanagerNotification:
    """Decode and validate a webhook body, or raise PayloadError naming the first bad field.

    `scrubbed`: the body is what `scrub` just returned as scrubbed, so its secrets are gone and
    a second pass would find nothing (redaction is idempotent): it is skipped. The hook passes
    it for the body it has just stored; a body read back from the database is redacted again
    (it may have been stored before scrubbing existed). `decoded`: the JSON `scrub` read from
    that body, so that a big notification is not decoded twice.
    """
    data = _decode(body, decoded)
    if not isinstance(data, dict):
        raise PayloadError("", "body must be a JSON object (an Alertmanager v4 notification)")
    try:
        notification = AlertmanagerNotification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PayloadError(_field_path(first["loc"]), first["msg"]) from exc
    return notification if scrubbed else _redacted(notification)


def scrub_body(body: bytes) -> bytes:
    """The body with secrets redacted, to be stored instead of the raw one (see the module doc).

    A JSON body is redacted as data and re-serialised only if something was redacted (a body
    without secrets is stored byte for byte); anything else is redacted as text, its bytes kept
    (undecodable ones included). Never raises: a body that cannot be scrubbed is stored as it
    came, so that nothing is lost.
    """
    return scrub(body)[0]


def scrub(body: bytes) -> tuple[bytes, bool, Any]:
    """scrub_body's answer, whether it is scrubbed (False when scrubbing failed), and the JSON
    it holds as scrubbed (None when it is not JSON), for parse_notification's `decoded`."""
    try:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            text = body.decode("utf-8", "surrogateescape")
            redacted, count = redact_text(text)
            return (redacted.encode("utf-8", "surrogateescape") if count else body), True, None
        redacted, count = redact(data)
        if not count:
            return body, True, data
        stored = json.dumps(redacted, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return stored, True, redacted
    except Exception:
        logger.exception("could not scrub a webhook body; storing it as received")
        return body, False, None
