"""`POST /slack/events`: Slack's Events API (url_verification, link_shared), and the unfurls.

Every request is verified with VIGIL_SLACK_SIGNING_SECRET over the raw body: `v0=` +
HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{body}`, compared in constant time, and a timestamp
more than five minutes away is a replay: both answer 401. No secret configured: 404, saying so.
A session (or its absence) plays no part: Slack is not a user.

Slack wants an answer within three seconds and retries otherwise, so `link_shared` is stored
(SlackEventReceipt, unique by `event_id`: a retried delivery is answered and not redone) and the
unfurl runs in the `slack_unfurl` task. An unfurl shows the incident's title, status and top
hypothesis only in the channels VIGIL_SLACK_UNFURL_CHANNELS allows (default: the channels Vigil
posts to); anywhere else it says "Vigil incident #N — open to view" and nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from vigil.celery import publish_on_commit

from . import slack
from .models import Incident, SlackEventReceipt, TimelineEvent

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
REPLAY_WINDOW = 300  # seconds, as Slack recommends


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def signature_problem(secret: str, body: bytes, timestamp: str, signature: str) -> str:
    """Why the request is not Slack's ("" when it is)."""
    if not timestamp or not signature:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return "X-Slack-Request-Timestamp is not a Unix time"
    if abs(time.time() - sent) > REPLAY_WINDOW:
        return "stale request: its timestamp is more than five minutes from now"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "bad signature"
    return ""


@csrf_exempt
@require_POST
def slack_events(request: HttpRequest) -> JsonResponse:
    secret = settings.VIGIL_SLACK_SIGNING_SECRET
    if not secret:
        return _error(404, "Slack events are not configured: set VIGIL_SLACK_SIGNING_SECRET")
    body = request.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    problem = signature_problem(
        secret,
        body,
        request.headers.get("X-Slack-Request-Timestamp", ""),
        request.headers.get("X-Slack-Signature", ""),
    )
    if problem:
        return _error(401, problem)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not JSON")
    if not isinstance(payload, dict):
        return _error(400, "body is not a JSON object")
    kind = payload.get("type")
    if kind == "url_verification":
        return JsonResponse({"challenge": str(payload.get("challenge", ""))})
    event = payload.get("event")
    if kind == "event_callback" and isinstance(event, dict) and event.get("type") == "link_shared":
        return _link_shared(payload, event)
    return JsonResponse({"ok": True, "ignored": str(kind)})


def _link_shared(payload: dict, event: dict) -> JsonResponse:
    event_id = str(payload.get("event_id") or "")
    if not event_id:
        return _error(400, "event_callback without event_id")
    configured = bool(settings.VIGIL_SLACK_BOT_TOKEN)
    try:
        receipt, created = SlackEventReceipt.objects.get_or_create(
            event_id=event_id[:100],
            defaults={
                "kind": "link_shared",
                "payload": event,
                "status": SlackEventReceipt.Status.RECEIVED
                if configured
                else SlackEventReceipt.Status.FAILED,
                "error": "" if configured else "VIGIL_SLACK_BOT_TOKEN is not set: cannot unfurl",
            },
        )
    except DatabaseError:
        logger.exception("could not store slack event %s", event_id)
        return _error(503, "database unavailable, retry later")  # Slack retries
    if not created:
        return JsonResponse({"ok": True, "duplicate": True})
    if configured:
        from .tasks import slack_unfurl

        publish_on_commit(slack_unfurl, receipt.pk)
    return JsonResponse({"ok": True})


# --- the unfurl (slack_unfurl's service) ---------------------------------------------------------

_INCIDENT_PATH = re.compile(r"^/incidents/(?P<id>\d+)(?:/.*)?$")


def parse_incident_url(url: str) -> tuple[int, int | None] | None:
    """(incident id, event id or None) for a Vigil incident URL on VIGIL_BASE_URL's host."""
    base = urlsplit(settings.VIGIL_BASE_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != base.netloc.lower():
        return None
    path, prefix = parts.path, base.path.rstrip("/")
    if prefix:
        if not path.startswith(prefix + "/"):
            return None
        path = path[len(prefix) :]
    match = _INCIDENT_PATH.match(path)
    if not match:
        return None
    event = (parse_qs(parts.query).get("event") or [""])[0]
    return int(match["id"]), int(event) if event.isdigit() else None


def unfurl_blocks(url: str, incident_id: int, event_id: int | None, *, detailed: bool) -> list:
    """The preview of one Vigil link: details only where the channel is allowed to see them."""
    if not detailed:
        # Not even a database lookup: nothing about the incident, not even that it exists.
        return [
            {
                "type": "section",
                "text": slack.mrkdwn(
                    f"{slack.link(url, f'Vigil incident #{incident_id}')} — open to view"
                ),
            }
        ]
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return []
    where = " in ".join(slack.escape(x) for x in (incident.service, incident.namespace) if x)
    line = " · ".join(
        x for x in (slack.status_text(incident.status), slack.escape(incident.severity), where) if x
    )
    top = slack.top_hypothesis(incident)
    context = [f"Top hypothesis: {top}" if top else "No analysis yet"]
    if event_id is not None:
        event = TimelineEvent.objects.filter(pk=event_id, incident=incident).first()
        if event is not None:
            context.append(f"Linked event: {slack.escape(event.summary)}")
    return [
        {
            "type": "section",
            "text": slack.mrkdwn(
                f"*{slack.link(url, f'Incident #{incident.pk}: {incident.title}')}*\n{line}"
            ),
        },
        {"type": "context", "elements": [slack.mrkdwn(" · ".join(context))]},
    ]


def unfurl(receipt_id: int, *, attempt: int = 0) -> str:
    """Answer one link_shared event with chat.unfurl for the Vigil links it lists."""
    receipt = SlackEventReceipt.objects.filter(pk=receipt_id).first()
    if receipt is None or receipt.status != SlackEventReceipt.Status.RECEIVED:
        return "done"
    config = slack.get_config()
    if not config.token:
        return _receipt_done(
            receipt, SlackEventReceipt.Status.FAILED, "VIGIL_SLACK_BOT_TOKEN is not set"
        )
    event = receipt.payload or {}
    channel = str(event.get("channel") or "")
    detailed = config.may_unfurl_details(channel)
    unfurls: dict[str, dict] = {}
    for item in event.get("links") or []:
        url = str((item or {}).get("url") or "")
        parsed = parse_incident_url(url)
        if parsed is None:
            continue
        blocks = unfurl_blocks(url, *parsed, detailed=detailed)
        if blocks:
            unfurls[url] = {"blocks": blocks}
    if not unfurls:
        return _receipt_done(receipt, SlackEventReceipt.Status.DONE, "no Vigil incident link")
    where: dict[str, str]
    if (
        event.get("unfurl_id")
        and event.get("source")
        and (event.get("source") == "composer" or not event.get("message_ts"))
    ):
        where = {"unfurl_id": str(event["unfurl_id"]), "source": str(event["source"])}
    else:
        where = {"channel": channel, "ts": str(event.get("message_ts") or "")}
    SlackEventReceipt.objects.filter(pk=receipt.pk).update(attempts=F("attempts") + 1)
    try:
        slack.web_call(slack.web_client(config).chat_unfurl, unfurls=unfurls, **where)
    except slack.SlackError as exc:
        if not exc.permanent and attempt < settings.VIGIL_SLACK_MAX_ATTEMPTS - 1:
            SlackEventReceipt.objects.filter(pk=receipt.pk).update(error=exc.error)
            raise slack.SlackRetry(slack.backoff(attempt + 1, exc), exc.error) from exc
        logger.warning("chat.unfurl for slack event %s failed: %s", receipt.event_id, exc.error)
        return _receipt_done(receipt, SlackEventReceipt.Status.FAILED, exc.error)
    return _receipt_done(receipt, SlackEventReceipt.Status.DONE, "")


def _receipt_done(receipt: SlackEventReceipt, status: str, error: str) -> str:
    SlackEventReceipt.objects.filter(pk=receipt.pk).update(
        status=status, error=error, finished_at=timezone.now()
    )
    return status


def receipts_to_sweep(now: datetime | None = None) -> list[int]:
    """Unfurls whose task was lost: only recent ones, a late preview is no use to anyone."""
    now = now or timezone.now()
    return list(
        SlackEventReceipt.objects.filter(
            status=SlackEventReceipt.Status.RECEIVED,
            received_at__gte=now - timedelta(minutes=10),
            received_at__lte=now - settings.VIGIL_SWEEP_GRACE,
        ).values_list("pk", flat=True)[:100]
    )
