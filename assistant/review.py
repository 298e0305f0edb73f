"""The human review of an analysis: summary versions, approval, rejection, edits.

An analysis is stored as a *draft*. A responder (or approver: `permissions.can_respond`) reviews
it; pages, the API and anything else call these functions, which check the permission again.

Versions. Every text the summary has had is a SummaryRevision, numbered 1, 2, 3… per analysis:
the rules' draft (source "rules"), the LLM narrative ("llm"), then each human edit ("edit").
`record_revision` is the one way to change a summary; the analysis row is locked while the next
number is taken, so concurrent writers queue instead of colliding (the unique constraint on
(analysis, number) is the backstop). An analysis stored before versions existed gets its current
summary recorded as the first version when it is first reviewed, so a review always names one.

Transitions (only an analysis whose status is `ready` can be reviewed; pending or failed ones
answer NotReviewable):

    draft    --approve--> approved     --reject--> rejected  (people change their minds)
    draft    --reject---> rejected     --approve-> approved
    any      --edit-----> draft        (the approved text changed, or the edit answers the
                                        rejection: either way it needs a fresh review; who had
                                        reviewed it stays on the timeline and in the payload)

Approving what is already approved, or rejecting what is already rejected, is refused
(NotReviewable): it would add nothing but noise to the timeline. Rejecting needs a reason; an
edit must change the text and leave some. Approve, reject and edit accept the version the
reviewer saw (`revision=`): if the summary moved on since, the step is refused (StaleRevision)
instead of approving or overwriting a text nobody read.

Every step writes a timeline event with the reviewer as actor and `{analysis, revision, …}` in
its payload. `record_revision` writes none: its callers (the engine, the narrative) do.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from incidents import permissions
from incidents.models import TimelineEvent

from .models import Analysis, SummaryRevision

MAX_SUMMARY_CHARS = 20_000
MAX_REASON_CHARS = 2_000


class ReviewError(Exception):
    """A review step that cannot happen; the message says why, for the page and the API."""

    status_code = 400


class InvalidReview(ReviewError, ValueError):
    """The input is wrong: a blank reason, a blank or unchanged summary (HTTP 400)."""

    status_code = 400


class NotReviewable(ReviewError):
    """The analysis is not in a state that allows this step (HTTP 409)."""

    status_code = 409


class StaleRevision(NotReviewable):
    """The summary changed since the reviewer loaded it (HTTP 409)."""


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "del" or "same"
    text: str


def diff_lines(old: str, new: str) -> list[DiffLine]:
    """Line diff of two summaries, every line kept (summaries are short)."""
    a, b = old.splitlines(), new.splitlines()
    lines: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            lines.extend(DiffLine("same", line) for line in a[i1:i2])
            continue
        lines.extend(DiffLine("del", line) for line in a[i1:i2])
        lines.extend(DiffLine("add", line) for line in b[j1:j2])
    return lines


def diff_stats(old: str, new: str) -> tuple[int, int]:
    """(lines added, lines removed) from old to new."""
    lines = diff_lines(old, new)
    return sum(x.kind == "add" for x in lines), sum(x.kind == "del" for x in lines)


def normalise(text: str) -> str:
    """A textarea sends CRLF; trailing spaces on lines and around the text mean nothing."""
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def current_revision(analysis: Analysis) -> SummaryRevision | None:
    return analysis.revisions.select_related("author").order_by("-number").first()


def record_revision(
    analysis: Analysis, text: str, source: str, author: Any | None = None
) -> SummaryRevision:
    """Store `text` as the analysis's next summary version and make it the summary.

    Locks the analysis row for the numbering; writes no timeline event (callers add their own).
    """
    if source not in SummaryRevision.Source.values:
        raise ValueError(f"unknown revision source {source!r}")
    with transaction.atomic():
        Analysis.objects.select_for_update().filter(pk=analysis.pk).first()
        last = analysis.revisions.aggregate(last=Max("number"))["last"] or 0
        revision = SummaryRevision.objects.create(
            analysis=analysis, number=last + 1, text=text, source=source, author=author
        )
        analysis.summary = text
        analysis.save(update_fields=["summary"])
    return revision


def untouched_by_people(analysis: Analysis) -> bool:
    """Whether nobody has reviewed or edited the analysis yet.

    Only then may the assistant replace its summary: a narrative that lands after a human
    approved, rejected or rewrote the draft must not overwrite what they did.
    """
    return (
        analysis.review_status == Analysis.ReviewStatus.DRAFT
        and not analysis.revisions.filter(source=SummaryRevision.Source.EDIT).exists()
    )


def _baseline(analysis: Analysis) -> SummaryRevision:
    """The current version; an analysis from before versions existed gets its first one now."""
    revision = current_revision(analysis)
    if revision is None:
        revision = record_revision(analysis, analysis.summary, analysis.source)
    return revision


def _locked(analysis: Analysis, user: Any) -> Analysis:
    """The analysis row, locked for this transaction, checked for permission and readiness."""
    permissions.require_respond(user)
    locked = Analysis.objects.select_for_update().select_related("incident").get(pk=analysis.pk)
    if locked.status != Analysis.Status.READY:
        raise NotReviewable(f"Only a ready analysis can be reviewed; this one is {locked.status}.")
    return locked


def _check_seen(current: SummaryRevision, seen: int | None) -> None:
    if seen is not None and int(seen) != current.number:
        by = current.author.get_username() if current.author else "the assistant"
        raise StaleRevision(
            f"The summary changed since you loaded it: it is now v{current.number} "
            f"({current.source} by {by}). Read it again before reviewing."
        )


def _who(user: Any) -> str:
    return user.get_username()


def _refresh(target: Analysis, source: Analysis) -> Analysis:
    """Copy what a review changed onto the caller's instance, so it needs no refresh_from_db."""
    for name in ("summary", "review_status", "reviewed_by", "reviewed_at", "review_reason"):
        setattr(target, name, getattr(source, name))
    return target


def _event(analysis: Analysis, kind: str, user: Any, summary: str, payload: dict) -> None:
    TimelineEvent.objects.create(
        incident_id=analysis.incident_id,
        kind=kind,
        actor=_who(user)[:150],
        summary=summary[:500],
        payload={"analysis": analysis.pk, **payload},
    )


def approve(analysis: Analysis, user: Any, *, revision: int | None = None) -> Analysis:
    """Approve the current summary version: the analysis is no longer a draft."""
    with transaction.atomic():
        locked = _locked(analysis, user)
        previous = locked.review_status
        if previous == Analysis.ReviewStatus.APPROVED:
            raise NotReviewable(f"The analysis is already approved by {_reviewer(locked)}.")
        current = _baseline(locked)
        _check_seen(current, revision)
        was = _reviewer(locked) if previous == Analysis.ReviewStatus.REJECTED else ""
        locked.review_status = Analysis.ReviewStatus.APPROVED
        locked.reviewed_by = user
        locked.reviewed_at = timezone.now()
        locked.review_reason = ""
        locked.save(update_fields=["review_status", "reviewed_by", "reviewed_at", "review_reason"])
        _event(
            locked,
            TimelineEvent.Kind.ANALYSIS_APPROVED,
            user,
            f"{_who(user)} approved the analysis (v{current.number})"
            + (f", rejected earlier by {was}" if was else ""),
            {"revision": current.number, "previous_review": previous},
        )
    return _refresh(analysis, locked)


def reject(analysis: Analysis, user: Any, reason: str, *, revision: int | None = None) -> Analysis:
    """Reject the analysis with a reason (required)."""
    reason = normalise(reason)
    if not reason:
        raise InvalidReview("Say why you reject the analysis: a reason is required.")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidReview(f"Keep the reason under {MAX_REASON_CHARS:,} characters.")
    with transaction.atomic():
        locked = _locked(analysis, user)
        previous = locked.review_status
        if previous == Analysis.ReviewStatus.REJECTED:
            raise NotReviewable(f"The analysis is already rejected by {_reviewer(locked)}.")
        current = _baseline(locked)
        _check_seen(current, revision)
        locked.review_status = Analysis.ReviewStatus.REJECTED
        locked.reviewed_by = user
        locked.reviewed_at = timezone.now()
        locked.review_reason = reason
        locked.save(update_fields=["review_status", "reviewed_by", "reviewed_at", "review_reason"])
        _event(
            locked,
            TimelineEvent.Kind.ANALYSIS_REJECTED,
            user,
            f"{_who(user)} rejected the analysis: {reason}",
            {"revision": current.number, "previous_review": previous, "reason": reason},
        )
    return _refresh(analysis, locked)


def edit_summary(
    analysis: Analysis, user: Any, text: str, *, revision: int | None = None
) -> SummaryRevision:
    """Save an engineer's summary as a new version; the analysis returns to draft."""
    text = normalise(text)
    if not text:
        raise InvalidReview("The summary cannot be blank.")
    if len(text) > MAX_SUMMARY_CHARS:
        raise InvalidReview(f"Keep the summary under {MAX_SUMMARY_CHARS:,} characters.")
    with transaction.atomic():
        locked = _locked(analysis, user)
        current = _baseline(locked)
        _check_seen(current, revision)
        if text == normalise(current.text):
            raise InvalidReview("The summary is unchanged: there is nothing to save.")
        previous = locked.review_status
        was = _reviewer(locked) if previous != Analysis.ReviewStatus.DRAFT else ""
        added, removed = diff_stats(current.text, text)
        new = record_revision(locked, text, SummaryRevision.Source.EDIT, author=user)
        locked.review_status = Analysis.ReviewStatus.DRAFT
        locked.reviewed_by = None
        locked.reviewed_at = None
        locked.review_reason = ""
        locked.save(update_fields=["review_status", "reviewed_by", "reviewed_at", "review_reason"])
        _event(
            locked,
            TimelineEvent.Kind.ANALYSIS_EDITED,
            user,
            f"{_who(user)} edited the summary (v{current.number} → v{new.number}, "
            f"+{added} −{removed} line{'s' if added + removed != 1 else ''})"
            + (f"; back to draft (was {previous} by {was})" if was else ""),
            {
                "revision": new.number,
                "previous_revision": current.number,
                "added": added,
                "removed": removed,
                "previous_review": previous,
            },
        )
    _refresh(analysis, locked)
    return new


def _reviewer(analysis: Analysis) -> str:
    return analysis.reviewed_by.get_username() if analysis.reviewed_by else "someone"
