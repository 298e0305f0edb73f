"""The evidence digest: every item rendered compactly, fenced as data, packed into a budget.

Why a digest and not the raw evidence: an incident easily holds hundreds of evidence items and
megabytes of logs and series; the prompt has a few thousand tokens. What the LLM must see is
what decides the root cause, so the order is:

1. the evidence the rules' top hypothesis cites, then the other hypotheses' in rank order;
2. sources that failed, one line each with the reason (what Vigil could *not* see matters);
3. everything else, the kinds that most often carry a cause first.

Each item is rendered for reading, not losslessly: a log item becomes its grouped signatures
with counts and one sample line, a metric its series' baseline/recent/min/max/last and step, a
list of numbers its first/last/min/max; any item is capped at ITEM_TOKENS, so one giant log
cannot eat the budget. An item that does not fit whole is given one line (its title) if that
fits; what still does not fit is listed by id on one line at the end.

Evidence is untrusted text (log lines, labels, annotations, titles). Each item sits in its own
`<evidence id="…" …>` block; inside, anything that could open or close a tag (`<` before a
letter, `/`, `!` or `?`) is neutralised to `‹`, and attribute values lose their quotes, so no
line can end its block early or forge another. Secrets were redacted when the evidence was
stored; it is redacted again here (collectors.redaction) before anything is counted or sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from assistant.base import EvidenceItem, Facts, parse_time
from collectors.base import Entity
from collectors.redaction import redact, redact_text

from . import tokens

ITEM_TOKENS = 350  # the most any one item may take
LINE_TOKENS = 70  # an item in its one-line form
OMITTED_TOKENS = 90  # the most the line listing omitted ids may take
OMITTED_RESERVE = 40  # room kept for it while packing (typical size; pack() checks the real one)
MIN_ITEM_TOKENS = 20  # below this much room nothing more can fit: stop rendering
MAX_STRING = 2000  # characters kept of any one string before redaction and rendering
MAX_LIST = 10  # scalars listed from a list
MAX_RECORDS = 6  # dicts listed from a list
MAX_SIGNATURES = 8  # log signatures per item
MAX_SERIES = 4  # metric series per item
SAMPLE_CHARS = 300  # one sample log line
FAILURE_KINDS = frozenset({"source_error", "metric_error"})
# "The rest", most telling kinds first; unknown kinds after these, notes last.
KIND_ORDER = (
    "log_signatures",
    "k8s_events",
    "pod_status",
    "rollout_history",
    "deploys",
    "node_status",
    "gpu_health",
    "metric",
)
NOTE_KINDS = frozenset({"collection_note", "truncation", "empty"})

_TAG_OPEN = re.compile(r"<(?=\s*[/!?A-Za-z])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Digest:
    text: str
    included: list[int] = field(default_factory=list)
    omitted: list[int] = field(default_factory=list)
    tokens: int = 0


# -- fencing -----------------------------------------------------------------------------------


def neutralise(text: str) -> str:
    """Untrusted text that cannot open or close a block: `<` before a tag-like start becomes
    `‹`; control characters become spaces."""
    return _TAG_OPEN.sub("‹", _CONTROL.sub(" ", text))


def attribute(value: object, limit: int = 120) -> str:
    """A value safe inside a double-quoted attribute on one line."""
    text = neutralise(str(value)).replace('"', "'").replace(">", "›")
    return " ".join(text.split())[:limit]


def clean(text: object, limit: int = MAX_STRING) -> str:
    """Untrusted text for a block body: capped, redacted again, neutralised."""
    redacted, _ = redact_text(str(text)[:limit])
    return neutralise(redacted)


def entity_label(entity: Entity | None) -> str:
    return str(entity) if entity else ""


# -- one item ----------------------------------------------------------------------------------


def _open_tag(item: EvidenceItem) -> str:
    attrs = [
        f'id="{item.id}"',
        f'collector="{attribute(item.collector, 40)}"',
        f'kind="{attribute(item.kind, 40)}"',
    ]
    if item.status != "ok":
        attrs.append(f'status="{attribute(item.status, 20)}"')
    if item.entity is not None:
        attrs.append(f'entity="{attribute(entity_label(item.entity))}"')
    return "<evidence " + " ".join(attrs) + ">"


def render_full(item: EvidenceItem, cap: int = ITEM_TOKENS) -> str:
    """The item as a block: title, then its data summarised by kind, within `cap` tokens."""
    head = _open_tag(item)
    tail = "</evidence>"
    data, _ = redact(_capped(item.data))
    data = data if isinstance(data, dict) else {"data": data}
    try:
        rendered = RENDERERS.get(item.kind, render_generic)(data)
    except Exception:  # a shape the kind's renderer did not expect: the generic one copes
        rendered = render_generic(data)
    body_lines = [str(item.title), *rendered]
    body = clean("\n".join(line for line in body_lines if line), limit=MAX_STRING * 4)
    room = cap - tokens.count(head) - tokens.count(tail) - 2
    return f"{head}\n{tokens.truncate(body, max(room, 1))}\n{tail}"


def render_line(item: EvidenceItem, cap: int = LINE_TOKENS) -> str:
    """The item on one line: its title (and a failure's reason), within `cap` tokens."""
    head = _open_tag(item)
    tail = "</evidence>"
    text = str(item.title)
    data = item.data if isinstance(item.data, dict) else {}
    reason = data.get("message") or data.get("reason")
    if reason and str(reason) not in text:
        text += f" — {reason}"
    text = " ".join(clean(text, limit=1000).split())
    room = cap - tokens.count(head) - tokens.count(tail)
    return f"{head}{tokens.truncate(text, max(room, 1))}{tail}"


def is_failure(item: EvidenceItem) -> bool:
    return item.status != "ok" or item.kind in FAILURE_KINDS


# -- renderers by kind ---------------------------------------------------------------------------


def render_logs(data: dict) -> list[str]:
    """Grouped signatures with counts and one sample line each."""
    meta = [f"{data.get('lines_read', '?')} lines read"]
    if data.get("truncated"):
        meta.append("truncated")
    if data.get("previous"):
        meta.append("previous instance")
    lines = [", ".join(meta)]
    if data.get("no_log"):
        lines.append(f"no log: {_cut(data['no_log'], 200)}")
    signatures = [s for s in data.get("signatures") or [] if isinstance(s, dict)]
    for s in signatures[:MAX_SIGNATURES]:
        when = _span(s.get("first"), s.get("last"))
        lines.append(
            f"- {s.get('level', '?')} ×{s.get('count', '?')}{when}: {_cut(s.get('signature'), 300)}"
        )
        examples = [e for e in s.get("examples") or [] if e and e != s.get("signature")]
        if examples:
            lines.append(f"  e.g. {_cut(_one_line(examples[0]), SAMPLE_CHARS)}")
    more = max(0, len(signatures) - MAX_SIGNATURES) + int(data.get("signatures_dropped") or 0)
    if more:
        lines.append(f"(+{more} more signatures)")
    # Anything else a log item carries (a raw text field from another source) still goes
    # through the generic renderer, capped like everything else.
    known = {"source", "namespace", "pod", "container", "previous", "lines_read", "signatures"}
    known |= {"signatures_dropped", "truncated", "no_log", "query"}
    extra = {k: v for k, v in data.items() if k not in known}
    return lines + (render_generic(extra) if extra else [])


def render_metric(data: dict) -> list[str]:
    """Each series as its summary numbers; never the raw points."""
    unit = f" [{data['unit']}]" if data.get("unit") else ""
    lines = [f"query: {_cut(data.get('query'), 250)}{unit}"] if data.get("query") else []
    series = [s for s in data.get("series") or [] if isinstance(s, dict)]
    for s in series[:MAX_SERIES]:
        labels = {k: v for k, v in (s.get("labels") or {}).items() if k != "__name__"}
        label_text = ", ".join(f"{k}={v}" for k, v in labels.items()) or "(no labels)"
        firing = " [firing]" if s.get("firing") else ""
        summary = s.get("summary") if isinstance(s.get("summary"), dict) else None
        points = s.get("points") or []
        numbers = _summary_text(summary) if summary else _points_text(points)
        lines.append(f"- {_cut(label_text, 200)}{firing}: {numbers}")
    total = int(data.get("series_total") or len(series))
    if total > min(len(series), MAX_SERIES):
        lines.append(f"(+{total - min(len(series), MAX_SERIES)} more series)")
    for key in ("error_type", "message", "status"):
        if data.get(key):
            lines.append(f"{key}: {_cut(data[key], 300)}")
    return lines


def _summary_text(summary: dict) -> str:
    parts = []
    if summary.get("baseline") is not None or summary.get("recent") is not None:
        part = f"baseline {_num(summary.get('baseline'))} → recent {_num(summary.get('recent'))}"
        if summary.get("ratio") is not None:
            part += f" (×{_num(summary['ratio'])})"
        parts.append(part)
    extremes = [
        f"{k} {_num(summary[k])}" for k in ("min", "max", "last") if summary.get(k) is not None
    ]
    if extremes:
        at = _clock(summary.get("last_at"))
        parts.append(", ".join(extremes) + (f" at {at}" if at else ""))
    if summary.get("step_at"):
        parts.append(
            f"step {summary.get('step_direction') or ''} at {_clock(summary['step_at'])} "
            f"from {_num(summary.get('step_from'))} to {_num(summary.get('step_to'))}"
        )
    if summary.get("points") is not None:
        parts.append(f"{summary['points']} points")
    return "; ".join(parts) or "no values"


def _points_text(points: list | str) -> str:
    if isinstance(points, str):
        return points  # already summarised by _capped
    values = [p[1] for p in points if isinstance(p, list | tuple) and len(p) >= 2]
    return _numbers_text([v for v in values if isinstance(v, int | float)])


def render_generic(data: Any, depth: int = 0) -> list[str]:
    """Any JSON-like data as short `key: value` lines: empty values skipped, number lists and
    [time, value] series summarised, long lists and strings cut, nesting flattened at depth 3."""
    indent = "  " * depth
    if not isinstance(data, dict):
        return [indent + _inline(data)]
    lines: list[str] = []
    for key, value in data.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, dict) and depth < 2:
            lines.append(f"{indent}{key}:")
            lines.extend(render_generic(value, depth + 1))
        elif _is_records(value) and depth < 2:
            lines.append(f"{indent}{key}:")
            for record in value[:MAX_RECORDS]:
                lines.append(f"{indent}- {_cut(_inline(record), 300)}")
            if len(value) > MAX_RECORDS:
                lines.append(f"{indent}(+{len(value) - MAX_RECORDS} more)")
        else:
            lines.append(f"{indent}{key}: {_cut(_inline(value), 400)}")
    return lines


def _inline(value: Any) -> str:
    """One value on one line."""
    if isinstance(value, dict):
        parts = [f"{k}={_inline(v)}" for k, v in value.items() if v not in (None, "", [], {})]
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list | tuple):
        numbers = _series_values(value)
        if numbers is not None:
            return _numbers_text(numbers)
        shown = [_inline(v) for v in value[:MAX_LIST]]
        more = f", … (+{len(value) - MAX_LIST})" if len(value) > MAX_LIST else ""
        return "[" + ", ".join(shown) + more + "]"
    if isinstance(value, float):
        return _num(value)
    return _one_line(str(value))


def _series_values(value: list | tuple) -> list[float] | None:
    """The numbers of a list of numbers or of [time, value] pairs (6 or more), else None."""
    if len(value) < 6:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return list(value)
    if all(isinstance(v, list | tuple) and len(v) == 2 for v in value):
        numbers = [v[1] for v in value]
        if all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
            return numbers
    return None


def _numbers_text(values: list[float]) -> str:
    if not values:
        return "no values"
    return (
        f"{len(values)} values: first {_num(values[0])}, last {_num(values[-1])}, "
        f"min {_num(min(values))}, max {_num(max(values))}"
    )


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


RENDERERS = {"log_signatures": render_logs, "metric": render_metric}


# -- ordering and packing ----------------------------------------------------------------------


DECISIVE, FAILED, REST = "decisive", "failed", "rest"


def ordered(facts: Facts, hypotheses: list[dict]) -> list[tuple[EvidenceItem, str]]:
    """(item, role) in the order the digest wants them (see the module doc): DECISIVE items are
    cited by the rules' hypotheses, in rank order; FAILED ones get a line; then the REST."""
    by_id = {item.id: item for item in facts.evidence}
    seen: set[int] = set()
    sequence: list[tuple[EvidenceItem, str]] = []
    for hypothesis in hypotheses:
        for evidence_id in hypothesis.get("evidence") or []:
            item = by_id.get(evidence_id)
            if item is not None and item.id not in seen:
                seen.add(item.id)
                sequence.append((item, DECISIVE))
    rest = [item for item in facts.evidence if item.id not in seen]
    sequence.extend((item, FAILED) for item in rest if is_failure(item))
    others = sorted((item for item in rest if not is_failure(item)), key=_interest)
    sequence.extend((item, REST) for item in others)
    return sequence


def _interest(item: EvidenceItem) -> tuple[int, int, int]:
    if item.kind in NOTE_KINDS:
        rank = len(KIND_ORDER) + 1
    else:
        rank = KIND_ORDER.index(item.kind) if item.kind in KIND_ORDER else len(KIND_ORDER)
    data = item.data if isinstance(item.data, dict) else {}
    series = data.get("series") if isinstance(data.get("series"), list) else []
    firing = any(isinstance(s, dict) and s.get("firing") for s in series)
    return (rank, 0 if firing else 1, item.id)


def pack(facts: Facts, hypotheses: list[dict], budget: int) -> Digest:
    """The digest block, at most `budget` tokens counted alone.

    Every decisive item is guaranteed at least its one-line form before any item is shown
    whole: room for those lines is reserved up front (as many as fit, in rank order), and an
    item is rendered whole only if it fits beside that reserve.
    """
    head, tail = "<evidence_digest>", "</evidence_digest>"
    room = budget - tokens.count(f"{head}\n\n{tail}") - OMITTED_RESERVE
    plan = ordered(facts, hypotheses)
    lines: dict[int, tuple[str, int]] = {}
    reserve = 0
    for item, role in plan:
        if role != DECISIVE:
            break
        line = render_line(item)
        size = tokens.count(line) + 1
        if reserve + size > room:
            break
        lines[item.id] = (line, size)
        reserve += size
    blocks: list[tuple[int, str]] = []
    omitted: list[int] = []
    for item, role in plan:
        if item.id in lines:
            reserve -= lines[item.id][1]  # its own line may now use its reserved room
        free = room - reserve
        if free < MIN_ITEM_TOKENS:
            omitted.append(item.id)
            continue
        text, size = "", 0
        if role != FAILED and free >= LINE_TOKENS and not is_failure(item):
            text = render_full(item)
            size = tokens.count(text) + 1
        if not text or size > free:
            text, size = lines.get(item.id) or (render_line(item), 0)
            size = size or tokens.count(text) + 1
        if size > free:
            omitted.append(item.id)
            continue
        blocks.append((item.id, text))
        room -= size
    while True:
        text = _assemble(head, tail, [b for _, b in blocks], omitted)
        size = tokens.count(text)
        if size <= budget or not blocks:
            break
        # The omitted line was longer than reserved (or the joins tokenised longer than the
        # parts): give up the least important block shown.
        dropped_id, _ = blocks.pop()
        omitted.append(dropped_id)
    if size > budget:
        text, size = "", 0
    return Digest(text, [i for i, _ in blocks], sorted(omitted), size)


def _assemble(head: str, tail: str, blocks: list[str], omitted: list[int]) -> str:
    parts = [head, *blocks]
    if omitted:
        line = f"Omitted for space ({len(omitted)} items, not shown, do not cite): " + id_ranges(
            sorted(omitted)
        )
        parts.append(tokens.truncate(line, OMITTED_TOKENS - 2))
    parts.append(tail)
    return "\n".join(parts)


def id_ranges(ids: list[int]) -> str:
    """`#3, #7–#12, #20`: consecutive ids as ranges, so hundreds of ids stay one short line."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"#{a}" if a == b else f"#{a}–#{b}" for a, b in runs)


# -- small text helpers ------------------------------------------------------------------------


def _capped(value: Any, depth: int = 0) -> Any:
    """A copy with every string cut to MAX_STRING, lists to 200 items and number series
    already summarised, so that redaction and rendering cost is bounded whatever a collector
    stored (a 1 MB log line, ten thousand samples)."""
    if isinstance(value, str):
        return value[:MAX_STRING]
    if depth > 6:
        return "…"
    if isinstance(value, dict):
        return {str(k)[:200]: _capped(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list | tuple):
        numbers = _series_values(value)
        if numbers is not None:
            return _numbers_text(numbers)  # numbers carry no secret: summarised before redact
        return [_capped(v, depth + 1) for v in list(value[:200])]
    return value


def _cut(value: Any, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _num(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


def _clock(value: Any) -> str:
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%H:%M:%S") if moment else ""


def _span(first: Any, last: Any) -> str:
    a, b = _clock(first), _clock(last)
    if a and b and a != b:
        return f" {a}–{b}"
    return f" {a}" if a else ""
