"""Slack: an incident's announcements (one message, updates in its thread) and link unfurls.

Configuration (vigil/settings.py; the README lists the variables):
- bot mode: `VIGIL_SLACK_BOT_TOKEN` and a channel (`VIGIL_SLACK_CHANNEL` and/or
  `VIGIL_SLACK_ROUTES`). An incident's first announcement posts its parent message
  (chat.postMessage); later ones are replies in that thread, and the parent is updated
  (chat.update) to show the current status.
- webhook mode: `VIGIL_SLACK_WEBHOOK_URL` alone. Incoming webhooks cannot thread or update, so
  each announcement is a message of its own that names its incident.
- unfurls need the bot token and `VIGIL_SLACK_SIGNING_SECRET` (incidents/slack_events.py).

What is announced (ANNOUNCED_KINDS): incident opened (the parent), analysis ready or narrated,
an action awaiting approval (its first successful preview), an action executed (succeeded or
failed), resolved and reopened. Acknowledged and mitigated only update the parent. Every button
opens the announced event's permalink, `{VIGIL_BASE_URL}/incidents/<id>/timeline?event=<id>#event-<id>`.

The flow: incidents/signals.py enqueues `slack_announce(event_id)` after the event commits (and
`slack_sweep` catches what no signal announced: bulk-created events, lost publishes). `announce`
takes the incident's lease (SlackThread.lease_until: a claim, never a database lock held over an
HTTP call, so ingestion is never blocked), then sends every pending announcement of the incident
oldest first: the parent always exists before a reply, and a task redelivered or racing another
finds the work recorded (SlackMessage, one per event) and sends nothing twice.

Failures: a rate limit (429) waits as long as Retry-After says; network trouble and Slack's
transient errors back off exponentially, both for at most VIGIL_SLACK_MAX_ATTEMPTS tries. A
permanent error (channel_not_found, invalid_auth, …) is not retried. Either way a message given up
leaves a `slack_failed` event on the timeline, a kind that is itself never announced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import F, Q
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from .models import Incident, SlackMessage, SlackThread, TimelineEvent

logger = logging.getLogger(__name__)

Kind = TimelineEvent.Kind

# Timeline kind → announcement. Nothing else (slack_failed above all) is ever announced.
ANNOUNCED_KINDS: dict[str, str] = {
    Kind.INCIDENT_OPENED: "opened",
    Kind.ANALYSIS_READY: "analysis",
    Kind.ANALYSIS_NARRATED: "analysis",
    Kind.ACTION_PREVIEWED: "awaiting_approval",
    Kind.ACTION_SUCCEEDED: "executed",
    Kind.ACTION_FAILED: "executed",
    Kind.INCIDENT_RESOLVED: "resolved",
    Kind.INCIDENT_REOPENED: "reopened",
    Kind.INCIDENT_ACKNOWLEDGED: "status",
    Kind.INCIDENT_MITIGATED: "status",
}
ACTOR = "slack"
# One task sends an incident's messages at a time; longer than the task's hard time limit, so a
# lease outlives a killed task only until it expires.
LEASE = timedelta(minutes=5)
# A task that finds the lease taken tries again this soon (the holder is sending right now).
BUSY_WAIT = 3
# Messages sent per task run: one slow burst must not hold the lease for long.
DRAIN_LIMIT = 20
# Errors worth another try; any other error from Slack is permanent.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
HEADER_LIMIT = 150
TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
BUTTON_LIMIT = 75

STATUS_EMOJI = {
    Incident.Status.OPEN: ":red_circle:",
    Incident.Status.ACKNOWLEDGED: ":large_orange_circle:",
    Incident.Status.MITIGATED: ":large_blue_circle:",
    Incident.Status.RESOLVED: ":white_check_mark:",
}


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackConfig:
    token: str
    channel: str
    webhook_url: str
    routes: tuple[tuple[str, str, str], ...]
    api_url: str
    timeout: float
    unfurl_channels: frozenset[str]
    signing_secret: str

    @property
    def mode(self) -> str:
        """ "bot", "webhook", or "" when nothing is announced."""
        if self.token and (self.channel or self.routes):
            return "bot"
        return "webhook" if self.webhook_url else ""

    def may_unfurl_details(self, channel: str) -> bool:
        """Whether an unfurl in `channel` may show an incident's title, status and hypothesis."""
        return "*" in self.unfurl_channels or (bool(channel) and channel in self.unfurl_channels)


def get_config() -> SlackConfig:
    """The settings as they are now (tests change them per test)."""
    channels = {settings.VIGIL_SLACK_CHANNEL} | {c for _, _, c in settings.VIGIL_SLACK_ROUTES}
    unfurl = settings.VIGIL_SLACK_UNFURL_CHANNELS or sorted(c for c in channels if c)
    return SlackConfig(
        token=settings.VIGIL_SLACK_BOT_TOKEN,
        channel=settings.VIGIL_SLACK_CHANNEL,
        webhook_url=settings.VIGIL_SLACK_WEBHOOK_URL,
        routes=tuple(tuple(r) for r in settings.VIGIL_SLACK_ROUTES),
        api_url=settings.VIGIL_SLACK_API_URL,
        timeout=settings.VIGIL_SLACK_TIMEOUT,
        unfurl_channels=frozenset(unfurl),
        signing_secret=settings.VIGIL_SLACK_SIGNING_SECRET,
    )


def _whole_seconds(config: SlackConfig) -> int:
    """slack-sdk's clients take whole seconds: 0.5 must not become 0 (no time at all)."""
    return max(1, math.ceil(config.timeout))


def announcing() -> bool:
    """Whether timeline events are announced at all (nothing is enqueued otherwise)."""
    return bool(get_config().mode)


def route_channel(incident: Incident, config: SlackConfig) -> str:
    """The first route any of the incident's alerts (or its common labels) matches, else the
    default channel ("" when there is none: the incident is not announced)."""
    label_sets = [incident.labels or {}]
    label_sets += list(
        incident.alerts.values_list("labels", flat=True)[: settings.VIGIL_COLLECT_MAX_ALERTS]
    )
    for label, value, channel in config.routes:
        if any(labels.get(label) == value for labels in label_sets):
            return channel
    return config.channel


# --- errors --------------------------------------------------------------------------------------


class SlackError(Exception):
    """A call to Slack failed; `permanent` ones are never retried."""

    def __init__(self, error: str, *, permanent: bool, retry_after: float | None = None):
        super().__init__(error)
        self.error = error
        self.permanent = permanent
        self.retry_after = retry_after


class SlackRetry(Exception):
    """Ask the task to run again in `countdown` seconds (rate limit, backoff, busy lease)."""

    def __init__(self, countdown: float, reason: str):
        super().__init__(f"retry in {countdown:g}s: {reason}")
        self.countdown = countdown
        self.reason = reason


def _retry_after(headers: Any) -> float:
    """Slack's Retry-After in seconds (30 when absent or unreadable), capped by settings."""
    value = None
    for name, raw in dict(headers or {}).items():
        if name.lower() == "retry-after":
            value = raw[0] if isinstance(raw, list) else raw
    try:
        seconds = max(1.0, float(value))
    except (TypeError, ValueError):
        seconds = 30.0
    return min(seconds, settings.VIGIL_SLACK_MAX_RETRY_WAIT)


def _classify(status: int, error: str, headers: Any) -> SlackError:
    if not re.fullmatch(r"[a-z_]{1,100}", error or ""):
        error = ""  # an HTML error page or a long client message: the status says enough
    if status == 429 or error in ("ratelimited", "rate_limited"):
        return SlackError("ratelimited", permanent=False, retry_after=_retry_after(headers))
    if status >= 500 or error in TRANSIENT_ERRORS:
        return SlackError(error or f"HTTP {status}", permanent=False)
    return SlackError(error or f"HTTP {status}", permanent=True)


# Slack rate-limits per method and workspace: once one call is told to wait, every worker waits
# for that method (the cache is Redis in production), instead of each incident's task finding out
# with a 429 of its own.
RATE_LIMIT_KEY = "vigil:slack:rate-limited:{}"


def _shared_wait(method_name: str) -> float:
    """Seconds left of a rate limit Slack set on this method; 0 when none, or the cache is down."""
    try:
        until = cache.get(RATE_LIMIT_KEY.format(method_name))
    except Exception:  # the wait is an economy, not a guarantee: Slack enforces it anyway
        return 0.0
    return max(0.0, float(until) - time.time()) if until else 0.0


def _note_rate_limit(method_name: str, seconds: float) -> None:
    try:
        cache.set(RATE_LIMIT_KEY.format(method_name), time.time() + seconds, math.ceil(seconds))
    except Exception:
        logger.warning("could not share Slack's rate limit on %s", method_name, exc_info=True)


def web_call(method: Any, **kwargs: Any) -> Any:
    """One Web API call; every failure becomes a SlackError saying whether to retry."""
    name = getattr(method, "__name__", "")
    wait = _shared_wait(name)
    if wait > 0:
        raise SlackError("ratelimited", permanent=False, retry_after=wait)
    try:
        return method(**kwargs)
    except SlackApiError as exc:
        response = exc.response
        data = response.data if isinstance(response.data, dict) else {}
        error = _classify(response.status_code, str(data.get("error") or ""), response.headers)
        if error.retry_after is not None:
            _note_rate_limit(name, error.retry_after)
        raise error from exc
    except SlackClientError as exc:  # the request could not be built: retrying will not help
        raise SlackError(f"{type(exc).__name__}: {exc}", permanent=True) from exc
    except OSError as exc:  # refused, reset, timed out (URLError and socket.timeout included)
        raise SlackError(f"{type(exc).__name__}: {exc}", permanent=False) from exc


def web_client(config: SlackConfig) -> WebClient:
    return WebClient(token=config.token, base_url=config.api_url, timeout=_whole_seconds(config))


def _send_webhook(config: SlackConfig, message: Message) -> None:
    client = WebhookClient(config.webhook_url, timeout=_whole_seconds(config))
    try:
        response = client.send(
            text=message.text, blocks=message.blocks, unfurl_links=False, unfurl_media=False
        )
    except OSError as exc:
        raise SlackError(f"{type(exc).__name__}: {exc}", permanent=False) from exc
    if response.status_code != 200:
        body = (response.body or "").strip()[:200]
        raise _classify(response.status_code, body, response.headers)


# --- Block Kit -----------------------------------------------------------------------------------


def escape(text: Any) -> str:
    """Slack's three control characters; everything from alerts and labels goes through this."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    text = text[: limit - 1]
    return re.sub(r"&[a-z]{0,3}$", "", text) + "…"  # never leave half an escape behind


def plain(text: Any, limit: int = TEXT_LIMIT) -> dict:
    return {"type": "plain_text", "text": _cut(str(text), limit) or "-"}


def mrkdwn(text: str, limit: int = TEXT_LIMIT) -> dict:
    """`text` is mrkdwn already: escape what came from outside before building it."""
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def link(url: str, label: str) -> str:
    """A mrkdwn link; `label` is escaped here."""
    return f"<{escape(url)}|{escape(label).replace('|', '¦')}>"


def button(text: str, url: str, action_id: str, value: Any, *, primary: bool = False) -> dict:
    element = {
        "type": "button",
        "text": plain(text, BUTTON_LIMIT),
        "url": url,
        "action_id": action_id,
        "value": str(value),
    }
    if primary:
        element["style"] = "primary"
    return element


def permalink(event: TimelineEvent) -> str:
    return f"{settings.VIGIL_BASE_URL}{event.get_absolute_url()}"


def entity_text(entity: dict | None) -> str:
    if not entity:
        return "the cluster"
    where = f"{entity['namespace']}/" if entity.get("namespace") else ""
    return f"{entity.get('kind', '')} {where}{entity.get('name', '')}".strip()


def hypothesis_text(hypothesis: dict) -> str:
    """`kv-cache-saturation of Deployment llm/chat-api (87%)`, escaped."""
    confidence = float(hypothesis.get("confidence") or 0)
    return escape(
        f"{hypothesis.get('category', 'unknown')} of {entity_text(hypothesis.get('entity'))} "
        f"({confidence:.0%})"
    )


@dataclass(frozen=True)
class Message:
    text: str  # the notification's fallback text (mrkdwn)
    blocks: list[dict]

    def digest(self) -> str:
        return hashlib.sha256(
            json.dumps([self.text, self.blocks], sort_keys=True).encode()
        ).hexdigest()


def _incident_ref(incident: Incident) -> str:
    return escape(f"#{incident.pk} {incident.title}")


def top_hypothesis(incident: Incident) -> str:
    from assistant.models import Analysis

    analysis = (
        Analysis.objects.filter(incident=incident, status=Analysis.Status.READY)
        .only("hypotheses", "source")
        .first()
    )
    if analysis is None or not analysis.hypotheses:
        return ""
    return f"{hypothesis_text(analysis.hypotheses[0])} · {analysis.source}"


def status_text(status: str) -> str:
    emoji = STATUS_EMOJI.get(status)
    return f"{emoji} {escape(status)}" if emoji else escape(status)


def incident_message(incident: Incident, url: str) -> Message:
    """The parent: what is burning and where, its status now, and the way to its timeline."""
    status = incident.status
    fields = [
        f"*Status*\n{status_text(status)}",
        f"*Severity*\n{escape(incident.severity or '-')}",
        f"*Service*\n{escape(incident.service or '-')}",
        f"*Namespace*\n{escape(incident.namespace or '-')}",
        f"*Alerts*\n{incident.firing_count} firing of {incident.alert_count}",
        f"*Cluster*\n{escape(incident.cluster.name)}",
    ]
    opened = int(incident.opened_at.timestamp())
    fallback = incident.opened_at.strftime("%Y-%m-%d %H:%M UTC")
    context = [f"Opened <!date^{opened}^{{date_short_pretty}} {{time}}|{fallback}>"]
    top = top_hypothesis(incident)
    if top:
        context.append(f"Top hypothesis: {top}")
    severity = f"[{incident.severity}] " if incident.severity else ""
    return Message(
        text=escape(f"{severity}Incident #{incident.pk}: {incident.title} ({status})"),
        blocks=[
            {"type": "header", "text": plain(f"#{incident.pk} {incident.title}", HEADER_LIMIT)},
            {"type": "section", "fields": [mrkdwn(f, FIELD_LIMIT) for f in fields]},
            {"type": "context", "elements": [mrkdwn(" · ".join(context))]},
            {
                "type": "actions",
                "elements": [
                    button("Open timeline", url, "open_timeline", incident.pk, primary=True)
                ],
            },
        ],
    )


def _reply(
    incident: Incident,
    headline: str,
    body: str,
    button_element: dict,
    *,
    standalone: bool,
    context: str = "",
) -> Message:
    """A thread reply; standalone (webhook) messages first say which incident they are about."""
    blocks: list[dict] = []
    if standalone:
        blocks.append(
            {"type": "context", "elements": [mrkdwn(f"Incident {_incident_ref(incident)}")]}
        )
    text = f"*{headline}*" + (f"\n{body}" if body else "")
    blocks.append({"type": "section", "text": mrkdwn(text)})
    if context:
        blocks.append({"type": "context", "elements": [mrkdwn(context)]})
    blocks.append({"type": "actions", "elements": [button_element]})
    fallback = f"{headline} · incident #{incident.pk}"
    return Message(text=fallback if not body else f"{fallback}: {_cut(body, 300)}", blocks=blocks)


def analysis_message(event: TimelineEvent, *, standalone: bool) -> Message | None:
    """Analysis ready (the rules' draft) or narrated (the LLM's): the top hypothesis."""
    from assistant.models import Analysis

    analysis = Analysis.objects.filter(pk=(event.payload or {}).get("analysis")).first()
    if analysis is None:
        return None
    if event.kind == Kind.ANALYSIS_NARRATED:
        hypotheses, source = analysis.hypotheses, f"LLM narrative ({analysis.model or 'LLM'})"
        headline = "Analysis narrated"
    else:
        hypotheses, source = analysis.rules_hypotheses or analysis.hypotheses, "deterministic rules"
        headline = "Analysis ready"
    if hypotheses:
        top = hypotheses[0]
        body = f"*Top hypothesis:* {hypothesis_text(top)}"
        if top.get("explanation"):
            body += f"\n{_cut(escape(top['explanation']), 600)}"
    else:
        body = "No hypothesis stands out: see the evidence."
    more = len(hypotheses) - 1
    context = f"Source: {escape(source)}" + (
        f" · {more} more hypothes{'is' if more == 1 else 'es'} in Vigil" if more > 0 else ""
    )
    return _reply(
        event.incident,
        headline,
        body,
        button("Review", permalink(event), "review_analysis", analysis.pk, primary=True),
        standalone=standalone,
        context=context,
    )


def awaiting_approval_message(event: TimelineEvent, *, standalone: bool) -> Message | None:
    from assistant.models import ActionProposal
    from assistant.remediation import describe

    proposal = ActionProposal.objects.filter(pk=(event.payload or {}).get("action")).first()
    if proposal is None:
        return None
    body = f"`{escape(describe(proposal))}`"
    summary = (proposal.preview or {}).get("summary")
    if summary:
        body += f"\nDry run: {_cut(escape(summary), 600)}"
    return _reply(
        event.incident,
        "Action awaiting approval",
        body,
        button("Review action", permalink(event), "review_action", proposal.pk, primary=True),
        standalone=standalone,
        context=f"Previewed by {escape(event.actor)} · an approver decides in Vigil",
    )


def executed_message(event: TimelineEvent, *, standalone: bool) -> Message:
    ok = event.kind == Kind.ACTION_SUCCEEDED
    headline = ":white_check_mark: Action succeeded" if ok else ":x: Action failed"
    action_id = (event.payload or {}).get("action", event.incident_id)
    return _reply(
        event.incident,
        headline,
        escape(event.summary),
        button("Open timeline", permalink(event), "open_timeline", action_id),
        standalone=standalone,
    )


def _duration(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts.append(f"{minutes}m")
    return " ".join(parts)


def status_message(event: TimelineEvent, *, standalone: bool) -> Message:
    """Resolved or reopened."""
    incident = event.incident
    if event.kind == Kind.INCIDENT_RESOLVED:
        headline = ":white_check_mark: Resolved"
        context = f"Open for {_duration(event.at - incident.opened_at)}"
    else:
        headline, context = ":arrows_counterclockwise: Reopened", ""
    return _reply(
        incident,
        headline,
        escape(event.summary),
        button("Open timeline", permalink(event), "open_timeline", incident.pk),
        standalone=standalone,
        context=context,
    )


def event_message(event: TimelineEvent, kind: str, *, standalone: bool) -> Message | None:
    """The announcement of `event`, or None when what it announces is gone."""
    if kind == "opened":
        return incident_message(event.incident, permalink(event))
    if kind == "analysis":
        return analysis_message(event, standalone=standalone)
    if kind == "awaiting_approval":
        return awaiting_approval_message(event, standalone=standalone)
    if kind == "executed":
        return executed_message(event, standalone=standalone)
    return status_message(event, standalone=standalone)


# --- announcing ----------------------------------------------------------------------------------


def announce(event_id: int, *, attempt: int = 0) -> str:
    """Send `event_id`'s announcement and any earlier pending ones of its incident, in order.

    Returns what became of the event's message ("sent", "skipped", "failed", "off", …). Raises
    SlackRetry when the task should run again: the lease is taken, or Slack asked to wait.
    `attempt` is the task's retry count, which bounds retries of the parent's update.
    """
    config = get_config()
    if not config.mode:
        return "off"
    event = TimelineEvent.objects.select_related("incident").filter(pk=event_id).first()
    if event is None or event.kind not in ANNOUNCED_KINDS:
        return "ignored"
    thread = _thread_for(event.incident, config)
    lease = _claim(thread)
    if lease is None:
        done = _final_status(event_id)
        if done:
            return done
        raise SlackRetry(BUSY_WAIT, "another task is sending this incident's messages")
    try:
        thread.refresh_from_db()
        _skip_if_too_old(event)
        _drain(config, thread)
        if config.mode == "bot" and thread.ts:
            _refresh_parent(config, thread, attempt)
    finally:
        _release(thread, lease)
    done = _final_status(event_id)
    if not done:  # more than DRAIN_LIMIT messages were queued before this one
        raise SlackRetry(1, "earlier messages of this incident are still going out")
    return done


def _final_status(event_id: int) -> str:
    status = SlackMessage.objects.filter(event_id=event_id).values_list("status", flat=True).first()
    return status if status and status != SlackMessage.Status.PENDING else ""


def _thread_for(incident: Incident, config: SlackConfig) -> SlackThread:
    thread = SlackThread.objects.filter(incident=incident).first()
    if thread is None:
        channel = route_channel(incident, config) if config.mode == "bot" else ""
        thread, _ = SlackThread.objects.get_or_create(
            incident=incident, defaults={"channel": channel}
        )
    elif config.mode == "bot" and not thread.ts and not thread.channel:
        # Created in webhook mode, or before a route or default channel existed: route again.
        thread.channel = route_channel(incident, config)
        SlackThread.objects.filter(pk=thread.pk, ts="").update(channel=thread.channel)
    return thread


def _claim(thread: SlackThread) -> datetime | None:
    now = timezone.now()
    until = now + LEASE
    claimed = (
        SlackThread.objects.filter(pk=thread.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=until)
    )
    return until if claimed else None


def _release(thread: SlackThread, until: datetime) -> None:
    SlackThread.objects.filter(pk=thread.pk, lease_until=until).update(lease_until=None)


def _skip_if_too_old(event: TimelineEvent) -> None:
    if event.at >= timezone.now() - settings.VIGIL_SLACK_MAX_AGE:
        return
    message, _ = _message_for(event)
    if message.status == SlackMessage.Status.PENDING:
        _finish(message, SlackMessage.Status.SKIPPED, error="older than VIGIL_SLACK_MAX_AGE")


def _pending(thread: SlackThread) -> list[TimelineEvent]:
    since = timezone.now() - settings.VIGIL_SLACK_MAX_AGE
    return list(
        TimelineEvent.objects.filter(
            incident_id=thread.incident_id, kind__in=list(ANNOUNCED_KINDS), at__gte=since
        )
        .filter(
            Q(slack_message__isnull=True) | Q(slack_message__status=SlackMessage.Status.PENDING)
        )
        .select_related("incident__cluster")
        .order_by("at", "id")[:DRAIN_LIMIT]
    )


def _message_for(event: TimelineEvent) -> tuple[SlackMessage, bool]:
    return SlackMessage.objects.get_or_create(
        event=event,
        defaults={"incident_id": event.incident_id, "kind": ANNOUNCED_KINDS[event.kind]},
    )


def _drain(config: SlackConfig, thread: SlackThread) -> None:
    """Send the incident's pending announcements oldest first; stop at the first one that must
    wait (a later message never overtakes an earlier one)."""
    for event in _pending(thread):
        message, _ = _message_for(event)
        if message.status != SlackMessage.Status.PENDING:
            continue
        now = timezone.now()
        if message.retry_at and message.retry_at > now:
            raise SlackRetry(
                (message.retry_at - now).total_seconds(),
                f"waiting to retry the message for event {event.pk}",
            )
        _send(config, thread, event, message)


def _send(
    config: SlackConfig, thread: SlackThread, event: TimelineEvent, message: SlackMessage
) -> None:
    kind = message.kind
    reason = _skip_reason(config, thread, event, kind)
    if reason:
        _finish(message, SlackMessage.Status.SKIPPED, error=reason)
        return
    SlackMessage.objects.filter(pk=message.pk).update(attempts=F("attempts") + 1)
    message.attempts += 1
    try:
        if config.mode == "webhook":
            built = event_message(event, kind, standalone=True)
            if built is None:
                _finish(message, SlackMessage.Status.SKIPPED, error="what it announced is gone")
                return
            _send_webhook(config, built)
            _finish(message, SlackMessage.Status.SENT)
            return
        if not thread.ts:
            _post_parent(config, thread, event)
        if kind in ("opened", "status"):
            # The parent is this announcement (opened), or its update shows it (status).
            _finish(message, SlackMessage.Status.SENT, channel=thread.channel, ts=thread.ts)
            return
        built = event_message(event, kind, standalone=False)
        if built is None:
            _finish(message, SlackMessage.Status.SKIPPED, error="what it announced is gone")
            return
        response = web_call(
            web_client(config).chat_postMessage,
            channel=thread.channel,
            thread_ts=thread.ts,
            text=built.text,
            blocks=built.blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        _finish(
            message,
            SlackMessage.Status.SENT,
            channel=thread.channel,
            ts=str(response.get("ts") or ""),
            thread_ts=thread.ts,
        )
    except SlackError as exc:
        _failed(message, event, exc, channel=thread.channel)
    except SlackRetry:
        raise
    except Exception as exc:  # a bug or a surprise: bounded like a transient error, and visible
        logger.exception("slack message for event %s failed", event.pk)
        _failed(message, event, SlackError(f"{type(exc).__name__}: {exc}", permanent=False))


def _skip_reason(config: SlackConfig, thread: SlackThread, event: TimelineEvent, kind: str) -> str:
    if config.mode == "bot" and not thread.channel:
        return "no route matched and VIGIL_SLACK_CHANNEL is not set"
    if kind == "status" and config.mode == "webhook":
        return "status changes update the parent message, which a webhook cannot"
    if kind == "awaiting_approval":
        return _awaiting_skip_reason(event)
    incident = event.incident
    if kind == "opened" and incident.resolved_at and incident.resolved_at <= event.at:
        return "recorded already resolved: it never was open"
    return ""


def _awaiting_skip_reason(event: TimelineEvent) -> str:
    """Announce an action's first successful preview, and the first after each rejection: a
    re-preview of an action already waiting (an expired dry run) is no news."""
    from assistant.models import ActionProposal

    payload = event.payload or {}
    if not payload.get("ok"):
        return "the dry run failed: nothing awaits approval"
    status = (
        ActionProposal.objects.filter(pk=payload.get("action"))
        .values_list("status", flat=True)
        .first()
    )
    if status != ActionProposal.Status.PREVIEWED:
        return f"the action is {status or 'gone'}, no longer awaiting approval"
    earlier = (
        TimelineEvent.objects.filter(
            incident_id=event.incident_id,
            kind__in=[Kind.ACTION_PREVIEWED, Kind.ACTION_REJECTED],
            payload__action=payload.get("action"),
        )
        .filter(Q(at__lt=event.at) | Q(at=event.at, pk__lt=event.pk))
        .order_by("-at", "-id")
        .first()
    )
    if earlier and earlier.kind == Kind.ACTION_PREVIEWED and (earlier.payload or {}).get("ok"):
        return "already announced as awaiting approval"
    return ""


def _opened_event(incident_id: int) -> TimelineEvent | None:
    return (
        TimelineEvent.objects.filter(incident_id=incident_id, kind=Kind.INCIDENT_OPENED)
        .order_by("at", "id")
        .first()
    )


def _post_parent(config: SlackConfig, thread: SlackThread, event: TimelineEvent) -> None:
    """The incident's message, heading its thread; its button opens the opening event."""
    anchor = event if event.kind == Kind.INCIDENT_OPENED else _opened_event(event.incident_id)
    anchor = anchor or event
    incident = Incident.objects.select_related("cluster").get(pk=thread.incident_id)
    built = incident_message(incident, permalink(anchor))
    response = web_call(
        web_client(config).chat_postMessage,
        channel=thread.channel,
        text=built.text,
        blocks=built.blocks,
        unfurl_links=False,
        unfurl_media=False,
    )
    thread.channel = str(response.get("channel") or thread.channel)
    thread.ts = str(response.get("ts") or "")
    thread.parent_event = anchor
    thread.shown = built.digest()
    thread.status = incident.status
    thread.error = ""
    thread.updated_at = timezone.now()
    thread.save(
        update_fields=["channel", "ts", "parent_event", "shown", "status", "error", "updated_at"]
    )


def _refresh_parent(config: SlackConfig, thread: SlackThread, attempt: int) -> None:
    """Update the parent to the incident's current state, when that changed what it shows."""
    incident = Incident.objects.select_related("cluster").get(pk=thread.incident_id)
    anchor = thread.parent_event or _opened_event(incident.pk)
    url = permalink(anchor) if anchor else f"{settings.VIGIL_BASE_URL}{incident.get_timeline_url()}"
    built = incident_message(incident, url)
    digest = built.digest()
    if digest == thread.shown:
        # In sync as of now (parents_to_refresh compares this with the incident's updated_at).
        SlackThread.objects.filter(pk=thread.pk).update(updated_at=timezone.now())
        return
    try:
        web_call(
            web_client(config).chat_update,
            channel=thread.channel,
            ts=thread.ts,
            text=built.text,
            blocks=built.blocks,
        )
    except SlackError as exc:
        if not exc.permanent and attempt < settings.VIGIL_SLACK_MAX_ATTEMPTS - 1:
            SlackThread.objects.filter(pk=thread.pk).update(error=exc.error)
            raise SlackRetry(
                backoff(attempt + 1, exc), f"updating the parent: {exc.error}"
            ) from exc
        if thread.error != exc.error:  # one timeline line per new problem, not one per event
            _timeline_failure(
                incident.pk,
                f"Slack: the incident's message could not be updated: {exc.error}",
                {"channel": thread.channel, "ts": thread.ts, "error": exc.error},
            )
        # Given up on for this change: the sweep tries again when the incident changes next.
        SlackThread.objects.filter(pk=thread.pk).update(error=exc.error, updated_at=timezone.now())
        return
    SlackThread.objects.filter(pk=thread.pk).update(
        shown=digest, status=incident.status, error="", updated_at=timezone.now()
    )


# Parents brought up to date per sweep: chat.update is a Tier 3 method (about 50 a minute).
REFRESH_LIMIT = 20


def parents_to_refresh(limit: int = REFRESH_LIMIT) -> list[int]:
    """Threads whose incident changed after their parent was last written. Alerts that join or
    resolve are not announced, yet they change the counts and status the parent shows."""
    if get_config().mode != "bot":
        return []
    return list(
        SlackThread.objects.exclude(ts="")
        .filter(incident__updated_at__gt=F("updated_at"))
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )


def refresh_parent(thread_id: int) -> str:
    """Bring one incident's message up to date, unless a task sending its messages holds the
    lease (it updates the parent when done). A rate limit or an outage leaves it for the next
    sweep."""
    config = get_config()
    if config.mode != "bot":
        return "off"
    thread = SlackThread.objects.filter(pk=thread_id).exclude(ts="").first()
    if thread is None:
        return "ignored"
    lease = _claim(thread)
    if lease is None:
        return "busy"
    try:
        thread.refresh_from_db()
        _refresh_parent(config, thread, attempt=0)
    except SlackRetry as exc:
        logger.info("refreshing the Slack parent of thread %s: %s", thread_id, exc.reason)
        return "later"
    finally:
        _release(thread, lease)
    return "refreshed"


def backoff(attempts: int, exc: SlackError) -> float:
    if exc.retry_after is not None:
        return exc.retry_after
    return min(settings.VIGIL_SLACK_MAX_RETRY_WAIT, 5.0 * 2 ** max(0, attempts - 1))


def _failed(
    message: SlackMessage, event: TimelineEvent, exc: SlackError, *, channel: str = ""
) -> None:
    if not exc.permanent and message.attempts < settings.VIGIL_SLACK_MAX_ATTEMPTS:
        wait = backoff(message.attempts, exc)
        SlackMessage.objects.filter(pk=message.pk).update(
            error=exc.error, retry_at=timezone.now() + timedelta(seconds=wait)
        )
        logger.warning(
            "slack message for event %s: %s; retry %s in %gs",
            event.pk,
            exc.error,
            message.attempts,
            wait,
        )
        raise SlackRetry(wait, exc.error)
    _finish(message, SlackMessage.Status.FAILED, error=exc.error, channel=channel)
    tries = "" if exc.permanent else f" after {message.attempts} attempts"
    _timeline_failure(
        event.incident_id,
        f"Slack message for {event.get_kind_display().lower()} not sent{tries}: {exc.error}",
        {
            "event": event.pk,
            "announcement": message.kind,
            "channel": channel,
            "error": exc.error,
            "attempts": message.attempts,
        },
    )


def _timeline_failure(incident_id: int, summary: str, payload: dict) -> None:
    """Visible on the timeline; slack_failed is never announced, so no loop can start here."""
    TimelineEvent.objects.create(
        incident_id=incident_id,
        kind=Kind.SLACK_FAILED,
        actor=ACTOR,
        summary=summary[:500],
        payload=payload,
    )


def _finish(message: SlackMessage, status: str, *, error: str = "", **fields: str) -> None:
    changes: dict[str, Any] = {"status": status, "error": error[:4000], "retry_at": None}
    if status == SlackMessage.Status.SENT:
        changes["sent_at"] = timezone.now()
    changes.update(fields)
    SlackMessage.objects.filter(pk=message.pk).update(**changes)
    for name, value in changes.items():
        setattr(message, name, value)


def events_to_sweep(now: datetime | None = None, limit: int = 500) -> list[int]:
    """One pending event per incident (its task sends the rest in order): events no signal
    announced (bulk-created, such as auto-resolution) and messages whose task was lost."""
    if not announcing():
        return []
    now = now or timezone.now()
    since = now - settings.VIGIL_SLACK_MAX_AGE
    settled = now - settings.VIGIL_SWEEP_GRACE
    rows = (
        TimelineEvent.objects.filter(kind__in=list(ANNOUNCED_KINDS), at__gte=since, at__lte=settled)
        .filter(
            Q(slack_message__isnull=True)
            | Q(slack_message__status=SlackMessage.Status.PENDING)
            & (Q(slack_message__retry_at__isnull=True) | Q(slack_message__retry_at__lte=settled))
        )
        .order_by("at", "id")
        .values_list("pk", "incident_id")[:limit]
    )
    first: dict[int, int] = {}
    for event_id, incident_id in rows:
        first.setdefault(incident_id, event_id)
    return list(first.values())
