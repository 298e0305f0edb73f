"""Log lines reduced to signatures: what went wrong, how often, when, with a few real examples.

An engineer scanning 500 lines of a crashing pod wants "KeyError: <str> ×9, first 10:02, last
10:11", not the 500 lines. Lines that differ only in what changes from one request to the next
(timestamps, ids, addresses, numbers, quoted values, pod hash suffixes) share a signature; the
error class and the shape of the message are kept, so different failures stay apart. The
examples keep the raw text (an env var name, a status code) that normalisation removed.

Only problems are kept: warnings, errors and fatal lines. Multi-line records count once: a
Python traceback is one record named by its exception line, a Go panic one record named by its
panic message. Besides a level, each signature has a `category` the correlation rules key on:
python-exception, go-panic, cuda-oom, cuda-error, nccl, gpu-fault, oom, crash, http-5xx,
http-429, error (anything else).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LEVELS = ("warning", "error", "fatal")
_RANK = {level: rank for rank, level in enumerate(LEVELS)}
MAX_LINE = 4000  # longer lines are cut before matching: bounded work per line
MAX_EXAMPLE = 1500
MAX_SIGNATURE = 300

# --- reading lines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One line as read, with the time the source stamped on it (None when it had none)."""

    at: datetime | None
    text: str


_KUBELET_STAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2}) "
)


def parse_timestamped(text: str) -> list[LogLine]:
    """Split `read_namespaced_pod_log(timestamps=True)` output into lines with their times.

    The kubelet prefixes each line with an RFC 3339 time with nine fractional digits, which
    `datetime.fromisoformat` does not take; a line without the prefix keeps `at=None`.
    """
    lines = []
    for raw in text.splitlines():
        match = _KUBELET_STAMP.match(raw)
        if not match:
            lines.append(LogLine(None, raw))
            continue
        base, fraction, zone = match.groups()
        micro = (fraction or "0")[:6].ljust(6, "0")
        moment = datetime.fromisoformat(f"{base}.{micro}{'+00:00' if zone == 'Z' else zone}")
        lines.append(LogLine(moment.astimezone(UTC), raw[match.end() :]))
    return lines


# --- one line: prefix, level, message ----------------------------------------------------------

_LEVEL_WORDS = {
    "trace": None,
    "debug": None,
    "dbug": None,
    "d": None,
    "info": None,
    "i": None,
    "notice": None,
    "warn": "warning",
    "warning": "warning",
    "w": "warning",
    "error": "error",
    "err": "error",
    "e": "error",
    "eror": "error",
    "critical": "fatal",
    "crit": "fatal",
    "fatal": "fatal",
    "f": "fatal",
    "panic": "fatal",
    "severe": "fatal",
    "emerg": "fatal",
    "alert": "fatal",
}
_LEADING_TIME = re.compile(
    r"^\[?(?:\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2})\]?[ \t]*"
)
# vLLM / glog-like: "ERROR 11-23 10:01:02 engine.py:135] msg" (the date part is optional).
_SOURCE_PREFIX = re.compile(
    r"^(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\s+(?:\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?\s+)?"
    r"[\w.-]+:\d+\] ?"
)
# klog: "E1123 10:01:02.123456    1 reflector.go:138] msg"
_KLOG_PREFIX = re.compile(r"^([IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+[\w.-]+:\d+\] ?")
# Python logging's default "ERROR:logger.name:msg" and uvicorn's "ERROR:    msg".
_PY_PREFIX = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):(?:([\w.]+):|\s+)")
# Anything else that starts with a level word: "[ERROR] msg", "WARN msg", "error: msg". Upper
# case or bracketed or followed by a colon, so that "Error connecting…" stays a sentence, and
# never a lower-case "panic:", which is a Go panic's own first line.
_WORD_PREFIX = re.compile(
    r"^(?:\[(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|PANIC|SEVERE)\]"
    r"|(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|PANIC|SEVERE)(?=[ \t:|-])"
    r"|(?i:(trace|debug|info|notice|warn|warning|error|err|critical|crit|fatal|severe)(?=:)))"
    r"[ \t:|-]*"
)
_LOGFMT_PAIR = re.compile(r'(\w[\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass(frozen=True)
class _Parsed:
    level: str | None  # the level the line states: None (debug/info/unknown) or one of LEVELS
    stated: bool  # whether the line stated a level at all
    message: str  # the line without its time and level prefix
    fields: dict[str, Any] = field(default_factory=dict)  # JSON or logfmt fields, if any


def _parse(text: str) -> _Parsed:
    """Strip the time and level prefix a logging library put in front of the message."""
    text = text[:MAX_LINE].rstrip("\r\n")
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return _parse_structured(data, text)
    body = _LEADING_TIME.sub("", text, count=1)
    for pattern, padded in (
        (_SOURCE_PREFIX, False),
        (_KLOG_PREFIX, False),
        (_PY_PREFIX, True),
        (_WORD_PREFIX, True),
    ):
        match = pattern.match(body)
        if match:
            word = next(g for g in match.groups() if g).lower()
            message = body[match.end() :]
            return _Parsed(_LEVEL_WORDS.get(word), True, message.lstrip() if padded else message)
    if " level=" in f" {body}" or body.startswith("level="):
        fields = {k: v.strip('"') for k, v in _LOGFMT_PAIR.findall(body)}
        if "level" in fields:
            return _parse_structured(fields, body)
    return _Parsed(None, False, body)


def _parse_structured(data: dict[str, Any], text: str) -> _Parsed:
    """JSON and logfmt lines: the level and message are fields, not a prefix."""
    level_value = next(
        (data[k] for k in ("level", "severity", "lvl", "loglevel", "log.level") if k in data),
        None,
    )
    stated = isinstance(level_value, str)
    level = _LEVEL_WORDS.get(level_value.lower()) if isinstance(level_value, str) else None
    message = next((str(data[k]) for k in ("msg", "message", "event", "log") if data.get(k)), "")
    error = next(
        (str(data[k]) for k in ("error", "err", "exception", "exc_info") if data.get(k)), ""
    )
    if error:
        # A stack trace in a field: its last line names the exception.
        last = [line for line in error.strip().splitlines() if line.strip()]
        message = f"{message} error={last[-1].strip() if last else error}".strip()
    return _Parsed(level, stated, message or text, data)


# --- what kind of problem a message shows ------------------------------------------------------

_HTTP_ACCESS = re.compile(
    r'"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|CONNECT|TRACE) (\S+) HTTP/[\d.]+"\s+(\d{3})\b'
)
_HTTP_CLIENT = re.compile(
    r"HTTP Request: (GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) \"HTTP/[\d.]+ (\d{3})"
)
_SPECIAL: tuple[tuple[re.Pattern[str], str, str], ...] = (
    # (pattern, category, level) — the first that matches wins.
    (
        re.compile(
            r"NVRM: Xid|\bXid\b.{0,40}?\b\d{1,3}\b|fallen off the bus|GPU is lost|GpuIsLost"
            r"|uncorrectable ECC|double[- ]bit ECC|GPU_LOST|GPU has been lost",
            re.IGNORECASE,
        ),
        "gpu-fault",
        "fatal",
    ),
    (
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED"
            r"|cudaErrorMemoryAllocation|out of memory on device|HIP out of memory",
            re.IGNORECASE,
        ),
        "cuda-oom",
        "error",
    ),
    (
        re.compile(
            r"\bNCCL (?:error|timeout|WARN)|\bnccl\w*Error\b|ncclUnhandledCudaError"
            r"|ProcessGroupNCCL.{0,80}(?:timeout|Timeout|timed out|error|Error)"
            r"|Watchdog caught collective operation timeout|NCCL_ERROR",
        ),
        "nccl",
        "error",
    ),
    (
        re.compile(
            r"CUDA error\b|cudaError\w+|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+|device-side assert"
            r"|illegal memory access was encountered"
        ),
        "cuda-error",
        "error",
    ),
    (
        re.compile(r"^Killed\s*$|Out of memory: Kill(?:ed)? process|oom[-_]kill|OOMKilled"),
        "oom",
        "fatal",
    ),
    (
        re.compile(r"Segmentation fault|SIGSEGV|SIGABRT|\(core dumped\)|Bus error"),
        "crash",
        "fatal",
    ),
    (re.compile(r"^(?:panic: |fatal error: )"), "go-panic", "fatal"),
)
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]*(Error|Exception|Exit|Interrupt|Failure|Fault|Warning)"
    r"\w*(?::\s|$)"
)
# Inside a traceback any dotted name can be the exception (`mylib.Unavailable: …`).
_EXCEPTION_NAME = re.compile(r"^[A-Za-z_][\w.]*(?::\s|:?$)")
_LOOSE_ERROR = re.compile(
    r"\b(?:error|exception|fatal|failed|failure|panic|refused|denied|timed out)\b",
    re.IGNORECASE,
)
_LOOSE_WARNING = re.compile(r"\bwarn(?:ing)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Classified:
    """A problem line: its level, its category, and the text its signature is made of."""

    level: str
    category: str
    text: str
    shape: str | None = None  # the signature, when the text's shape is known (HTTP lines)

    @property
    def signature(self) -> str:
        return self.shape if self.shape is not None else normalise(self.text)


def classify(line: str) -> Classified | None:
    """The problem a single line reports, or None for a line that reports none.

    A stated level counts (WARNING, ERROR, CRITICAL…), but some shapes are problems whatever
    the level says: an access line with a 5xx, a CUDA OOM, an Xid, a Python exception line.
    """
    parsed = _parse(line)
    return _classify_parsed(parsed)


def _classify_parsed(parsed: _Parsed) -> Classified | None:
    message = parsed.message
    http = _http_problem(parsed)
    if http is not None:
        return http
    for pattern, category, level in _SPECIAL:
        if pattern.search(message):
            return Classified(_max_level(level, parsed.level), category, message)
    exception = _EXCEPTION_LINE.match(message)
    if parsed.level is not None:
        return Classified(parsed.level, "python-exception" if exception else "error", message)
    if exception:
        level = "warning" if exception.group(1) == "Warning" else "error"
        return Classified(level, "python-exception", message)
    if parsed.stated:
        return None  # it said INFO or DEBUG, and nothing above contradicts it
    if _LOOSE_ERROR.search(message):
        return Classified("error", "error", message)
    if _LOOSE_WARNING.search(message):
        return Classified("warning", "error", message)
    return None


def _http_problem(parsed: _Parsed) -> Classified | None:
    """Access lines (served, or received from an upstream) with a 5xx, or a 429."""
    method = path = None
    status: int | None = None
    upstream = False
    fields = parsed.fields
    code = next(
        (fields[k] for k in ("status", "status_code", "response_code", "code") if k in fields), None
    )
    if code is not None and str(code).isdigit() and 100 <= int(code) <= 599:
        status = int(code)
        method = fields.get("method") or fields.get("request_method") or ""
        path = (
            fields.get("path")
            or fields.get("route")
            or fields.get("uri")
            or fields.get("url")
            or ""
        )
    elif match := _HTTP_ACCESS.search(parsed.message):
        method, path, status = match.group(1), match.group(2), int(match.group(3))
    elif match := _HTTP_CLIENT.search(parsed.message):
        method, path, status = match.group(1), match.group(2), int(match.group(3))
        upstream = True
    if status is None or not (status >= 500 or status == 429):
        return None
    detail = " ".join(
        str(fields[k]) for k in ("response_flags", "response_code_details") if fields.get(k)
    )
    head = f"HTTP {status} {'from upstream ' if upstream else ''}{method}"
    text = f"{head} {str(path).split('?', 1)[0]} {detail}".strip()
    shape = " ".join(p for p in (head, _path_shape(str(path)), normalise(detail)) if p)
    if status == 429:
        return Classified("warning", "http-429", text, shape)
    return Classified("error", "http-5xx", text, shape)


_URL_HOST = re.compile(r"^([a-z][a-z0-9+.-]*://[^/]+)(.*)$")
_API_VERSION = re.compile(r"v\d+(?:(?:alpha|beta)\d+)?")


def _path_shape(url: str) -> str:
    """A URL path with its id segments replaced (`/api/orders/81723` → `/api/orders/<n>`) and
    its API versions kept (`/v1/chat/completions` stays)."""
    url = url.split("?", 1)[0]
    host = ""
    if match := _URL_HOST.match(url):
        host, url = normalise(match.group(1)), match.group(2)
    segments = [
        segment
        if not any(c.isdigit() for c in segment) or _API_VERSION.fullmatch(segment)
        else normalise(segment)
        for segment in url.split("/")
    ]
    return host + "/".join(segments)


def _max_level(*levels: str | None) -> str:
    return max((lvl for lvl in levels if lvl), key=lambda lvl: _RANK[lvl])


# --- normalisation -----------------------------------------------------------------------------

# Tokens that identify the problem and so survive normalisation (an Xid code, an HTTP status).
_KEEP = re.compile(
    r"\bHTTP \d{3}\b|HTTP/[\d.]+ \d{3}\b|\[?Errno \d+\]?|\bXid \d+"
    r"|\b(?:exit ?code|exit status|status code|error code|signal)[:= ]\s*\d+",
    re.IGNORECASE,
)
_XID = re.compile(r"\bXid \([^)]*\): (\d+)")
_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\d{4}[-/]\d{2}[-/]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?"
        ),
        "<ts>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<ts>"),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    # A Deployment's pod: <name>-<pod-template-hash>-<5 chars>; a ReplicaSet: <name>-<hash>.
    (
        re.compile(
            r"(?<![\w.-])([a-z][a-z0-9]*(?:-[a-z0-9]+)*?)-(?=[a-z]*\d)[a-z0-9]{6,10}-[a-z0-9]{5}"
            r"(?![a-z0-9])"
        ),
        r"\1-<pod>",
    ),
    (
        re.compile(
            r"(?<![\w.-])([a-z][a-z0-9]*(?:-[a-z0-9]+)*?)-(?=[a-z]*\d)(?=[0-9]*[a-z])[a-z0-9]{9,10}"
            r"(?![a-z0-9-])"
        ),
        r"\1-<hash>",
    ),
    (re.compile(r"\b((?:\d{1,3}\.){3}\d{1,3})(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b"), "<hex>"),
    (re.compile(r"\b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{16,}\b"), "<id>"),
    (re.compile(r"(?<![\w\\])'[^'\n]{0,300}?'(?!\w)"), "<str>"),
    (re.compile(r'(?<![\w\\])"(?:[^"\\\n]|\\.){0,300}?"'), "<str>"),
    (re.compile(r"(?<![A-Za-z_\d])\d+(?:\.\d+)?"), "<n>"),
    # A word's trailing digits: rank3, worker12, nvidia0 (but Http2Error keeps its 2).
    (re.compile(r"(?<=[A-Za-z])\d+(?![A-Za-z_\d])"), "<n>"),
    (re.compile(r"<n> ?(?:[KMGTP]i?B|bytes|B)\b"), "<size>"),
    (re.compile(r"\s+"), " "),
)
_PROTECT_BASE = 0xE000  # private-use characters stand in for kept tokens while numbers go


def normalise(message: str) -> str:
    """The shape of a message: variable parts replaced by <ts>, <uuid>, <pod>, <ip>, <hex>, <id>,
    <str> and <n>; the error class, the words, and identifying codes (HTTP status, Xid, errno,
    exit code) kept."""
    text = _XID.sub(r"Xid \1", message[:MAX_LINE])
    kept: list[str] = []

    def protect(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return chr(_PROTECT_BASE + len(kept) - 1)

    text = _KEEP.sub(protect, text)
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    for index, token in enumerate(kept):
        text = text.replace(chr(_PROTECT_BASE + index), token)
    text = text.strip()
    return text if len(text) <= MAX_SIGNATURE else text[: MAX_SIGNATURE - 1] + "…"


# --- records: lines, tracebacks, panics ------------------------------------------------------

_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_GO_STACK = re.compile(
    r"^(?:\[signal |goroutine \d+ \[|created by |exit status \d+|\s|$|\.\.\.additional frames"
    r"|[\w./*()\[\]-]+\(.*\)$)"
)
_JAVA_FRAME = re.compile(r"^\s+(?:at |\.\.\. \d+ more)|^Caused by: ")


@dataclass
class _Record:
    """One problem: a line, or a multi-line traceback/panic counted once."""

    classified: Classified
    first: datetime | None
    last: datetime | None
    lines: list[str]

    def example(self) -> str:
        """The record as written (its time aside), the middle of a long stack left out."""
        if len(self.lines) <= 8:
            text = "\n".join(self.lines)
        else:  # the head says what kind, the tail is where it failed
            text = "\n".join([self.lines[0], "  …", *self.lines[-6:]])
        return text if len(text) <= MAX_EXAMPLE else "…" + text[-(MAX_EXAMPLE - 1) :]


def _records(lines: Iterable[LogLine]) -> Iterator[_Record]:
    """Fold lines into problem records; lines that report no problem are dropped."""
    pending = list(lines)
    index = 0
    previous: _Record | None = None
    while index < len(pending):
        line = pending[index]
        parsed = _parse(line.text)
        if parsed.message.strip() == _TRACEBACK:
            record, index = _python_traceback(pending, index)
            previous = record
            yield record
            continue
        if parsed.message.startswith(("panic: ", "fatal error: ")):
            record, index = _go_panic(pending, index, parsed)
            previous = record
            yield record
            continue
        if previous is not None and _JAVA_FRAME.match(parsed.message):
            previous.lines.append(line.text)  # a stack frame of the record before
            index += 1
            continue
        classified = _classify_parsed(parsed)
        index += 1
        if classified is None:
            previous = None
            continue
        previous = _Record(classified, line.at, line.at, [line.text[:MAX_LINE]])
        yield previous


def _python_traceback(lines: list[LogLine], start: int) -> tuple[_Record, int]:
    """From "Traceback (most recent call last):" to its exception line, the last one if chained.

    Python prints frames indented, then the exception line flush left; a chained exception
    follows after "During handling of the above exception…" (blank lines around it).
    """
    body = [lines[start].text]
    exception: _Parsed | None = None
    index = start + 1
    last_at = lines[start].at
    while index < len(lines):
        parsed = _parse(lines[index].text)
        stripped = parsed.message.strip()
        if exception is not None:  # after an exception line only a chain goes on
            following = _next_non_blank(lines, index)
            if following is None or following[1] not in _CHAINED:
                break
            exception, index = None, following[0]
            continue
        if stripped == _TRACEBACK or stripped in _CHAINED or not stripped:
            pass
        elif parsed.message.startswith((" ", "\t")):
            pass  # a frame, a source line, or a ^^^^ marker
        elif _EXCEPTION_NAME.match(stripped):
            exception = parsed
        else:
            break  # some other line: the traceback was cut short
        body.append(lines[index].text[:MAX_LINE])
        last_at = lines[index].at or last_at
        index += 1
    while body and not _parse(body[-1]).message.strip():
        body.pop()
    if exception is None:
        classified = Classified("error", "python-exception", "Traceback (exception line not seen)")
    else:
        found = _classify_parsed(exception)
        category = found.category if found and found.category != "error" else "python-exception"
        level = _max_level("error", found.level if found else None)
        classified = Classified(level, category, exception.message.strip())
    return _Record(classified, lines[start].at, last_at, body), index


def _next_non_blank(lines: list[LogLine], index: int) -> tuple[int, str] | None:
    while index < len(lines):
        message = _parse(lines[index].text).message.strip()
        if message:
            return index, message
        index += 1
    return None


def _go_panic(lines: list[LogLine], start: int, parsed: _Parsed) -> tuple[_Record, int]:
    """A Go panic and the goroutine dump under it, as one record."""
    body = [lines[start].text[:MAX_LINE]]
    index = start + 1
    last_at = lines[start].at
    while index < len(lines):
        message = _parse(lines[index].text).message
        if not _GO_STACK.match(message):
            break
        body.append(lines[index].text[:MAX_LINE])
        last_at = lines[index].at or last_at
        index += 1
    while body and not body[-1].strip():
        body.pop()
    classified = Classified("fatal", "go-panic", parsed.message.strip())
    return _Record(classified, lines[start].at, last_at, body), index


# --- grouping ----------------------------------------------------------------------------------


@dataclass
class Signature:
    """Records with the same normalised text."""

    signature: str
    level: str
    category: str
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    examples: list[str] = field(default_factory=list)

    def add(self, record: _Record, max_examples: int) -> None:
        self.count += 1
        self.level = _max_level(self.level, record.classified.level)
        if self.category == "error" and record.classified.category != "error":
            self.category = record.classified.category
        if record.first and (self.first is None or record.first < self.first):
            self.first = record.first
        if record.last and (self.last is None or record.last > self.last):
            self.last = record.last
        example = record.example()
        if len(self.examples) < max_examples and example not in self.examples:
            self.examples.append(example)

    def as_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "level": self.level,
            "category": self.category,
            "count": self.count,
            "first": _iso(self.first),
            "last": _iso(self.last),
            "examples": list(self.examples),
        }


def group(lines: Iterable[LogLine], *, max_examples: int = 3) -> list[Signature]:
    """Problem signatures in `lines` (in the order written), most severe then most frequent first."""
    groups: dict[str, Signature] = {}
    for record in _records(lines):
        key = record.classified.signature
        signature = groups.get(key)
        if signature is None:
            signature = groups[key] = Signature(
                key, record.classified.level, record.classified.category
            )
        signature.add(record, max_examples)
    return sorted(
        groups.values(),
        key=lambda s: (-_RANK[s.level], -s.count, s.first or datetime.max.replace(tzinfo=UTC)),
    )


def summarise(
    lines: Iterable[LogLine], *, limit: int = 25, max_examples: int = 3
) -> tuple[list[dict[str, Any]], int]:
    """`group` as JSON-ready dicts, at most `limit` of them, and how many were left out."""
    signatures = group(lines, max_examples=max_examples)
    return [s.as_dict() for s in signatures[:limit]], max(0, len(signatures) - limit)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
