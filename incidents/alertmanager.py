"""Alertmanager webhook payload (version 4): parsing and validation, with errors that name the field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

GO_ZERO_TIME_YEAR = 1
_FRACTION = re.compile(r"(\.\d{6})\d+")


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
    return parsed.astimezone(UTC)


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


def _field_path(location: tuple) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_notification(body: bytes) -> AlertmanagerNotification:
    """Decode and validate a webhook body, or raise PayloadError naming the first bad field."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("", f"body is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise PayloadError("", "body must be a JSON object (an Alertmanager v4 notification)")
    try:
        return AlertmanagerNotification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PayloadError(_field_path(first["loc"]), first["msg"]) from exc
