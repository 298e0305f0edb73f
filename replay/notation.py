"""The small text notations a scenario's `metrics` use, parsed the way Prometheus reads them.

Scenarios borrow three notations from the Prometheus world so that authors can copy from
`promtool test rules` files and from the expression browser:

- `values` in promtool's *expanding notation* (`0+10x3`, `_x5`, `stale`, ...);
- `series` as a PromQL series selector with equality matchers only (it names ONE series);
- `duration` / `interval` as Prometheus durations (`60m`, `1h30m`).

Each parser refuses what the real tool would refuse (or what cannot name one backfilled series)
with a `NotationError` whose message quotes the offending text, so a bad scenario fails at load
time with a pointer to the typo rather than as an empty graph during a replay.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "STALE",
    "NotationError",
    "Stale",
    "expand_values",
    "parse_duration",
    "parse_series_selector",
]


class NotationError(ValueError):
    """A scenario string that is not valid in its notation; the message says where and why."""


class Stale:
    """The staleness marker of the expanding notation (`stale`): the series ends here.

    A singleton (`STALE`) rather than a float NaN: Prometheus encodes staleness as a special NaN
    bit pattern, which Python floats cannot keep apart from an ordinary `NaN` sample.
    """

    _instance: Stale | None = None

    def __new__(cls) -> Stale:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "STALE"

    def __reduce__(self) -> str:
        # Pickling/copying keeps the singleton, so `is STALE` stays true.
        return "STALE"


STALE: Final = Stale()

# A number as the PromQL lexer reads it in a series description: decimals with an optional
# exponent, or Inf/NaN in any case. Hexadecimal is left out: its `x` collides with the repeat `x`.
_NUMBER = r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[iI][nN][fF]|[nN][aA][nN])"
_VALUE_RE = re.compile(rf"[-+]?{_NUMBER}")
_STEP_RE = re.compile(rf"(?P<start>[-+]?{_NUMBER})(?P<step>[-+]{_NUMBER})x(?P<count>\d+)")
_REPEAT_RE = re.compile(rf"(?P<start>[-+]?{_NUMBER}|_|stale)x(?P<count>\d+)")


def expand_values(text: str) -> list[float | None | Stale]:
    """Expand promtool's notation into one entry per sample slot.

    Tokens are separated by whitespace:

    - `1.5`, `-2`, `3e4`, `+Inf`, `-Inf`, `NaN`: one sample;
    - `a+bxn` / `a-bxn`: n+1 samples a, a±b, ..., a±n·b (`0+10x3` -> 0 10 20 30);
    - `axn`: n+1 copies of a (promtool's shorthand for `a+0xn`);
    - `_`: one slot without a sample (`None`); `_xn`: n such slots (n, not n+1, as in promtool);
    - `stale`: the staleness marker `STALE`; `stalexn`: n+1 of them, like `axn`.

    `a+bxn` is computed as a + k·b rounded to 15 significant digits rather than by repeated
    addition, so ramps of decimals (`0.56+0.05x8`) give 0.61, 0.66, ... as written; promtool's
    values differ only in float rounding noise.

    Raises NotationError naming the bad token, its 1-based token number and character offset.
    """
    values: list[float | None | Stale] = []
    for index, match in enumerate(re.finditer(r"\S+", text), start=1):
        token = match.group()
        if token == "_":
            values.append(None)
        elif token == "stale":
            values.append(STALE)
        elif _VALUE_RE.fullmatch(token):
            values.append(float(token))
        elif step := _STEP_RE.fullmatch(token):
            start, delta = float(step["start"]), float(step["step"])
            # 15 significant digits drop the binary noise of k·0.05 (0.61, not 0.6100000000000001).
            values.extend(float(f"{start + delta * k:.15g}") for k in range(int(step["count"]) + 1))
        elif repeat := _REPEAT_RE.fullmatch(token):
            start_text, count = repeat["start"], int(repeat["count"])
            if start_text == "_":
                values.extend([None] * count)
            else:
                item: float | Stale = STALE if start_text == "stale" else float(start_text)
                values.extend([item] * (count + 1))
        else:
            raise NotationError(
                f"bad value {token!r} (token {index}, at character {match.start()}) in {text!r}: "
                "expected a number, a+bxn, a-bxn, axn, _, _xn, stale or stalexn"
            )
    return values


_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def parse_series_selector(text: str) -> tuple[str, dict[str, str]]:
    """Split `name{l="v",l2="v2"}` into ("name", {"l": "v", "l2": "v2"}).

    Only what names exactly one series is accepted: a metric name, then optionally braces with
    `label="value"` pairs (double quotes; escapes `\\"`, `\\\\`, `\\n`; whitespace between items
    and a trailing comma are fine, as in PromQL). Other matchers (`!=`, `=~`, `!~`), single
    quotes, a repeated label or `__name__` cannot describe a sample to backfill and raise
    NotationError with the character offset of the problem.
    """

    def fail(position: int, reason: str) -> NotationError:
        return NotationError(f"bad series selector {text!r} at character {position}: {reason}")

    def skip_spaces(at: int) -> int:
        while at < len(text) and text[at].isspace():
            at += 1
        return at

    name_match = _METRIC_NAME_RE.match(text, skip_spaces(0))
    if not name_match:
        raise fail(skip_spaces(0), "expected a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    name, pos = name_match.group(), skip_spaces(name_match.end())
    labels: dict[str, str] = {}
    if pos == len(text):
        return name, labels
    if text[pos] != "{":
        raise fail(pos, "expected '{' or the end after the metric name")
    pos += 1

    while True:
        pos = skip_spaces(pos)
        if text.startswith("}", pos):
            pos += 1
            break
        label_match = _LABEL_NAME_RE.match(text, pos)
        if not label_match:
            raise fail(pos, "expected a label name or '}'")
        label, pos = label_match.group(), skip_spaces(label_match.end())
        if text.startswith(("!=", "=~", "!~"), pos):
            raise fail(pos, f"only '=' matchers name a single series, not {text[pos : pos + 2]!r}")
        if not text.startswith("=", pos):
            raise fail(pos, f"expected '=' after label {label}")
        pos = skip_spaces(pos + 1)
        if not text.startswith('"', pos):
            raise fail(pos, f"the value of label {label} must be in double quotes")
        pos += 1
        chars: list[str] = []
        while True:
            if pos >= len(text):
                raise fail(pos, f"unterminated value of label {label}")
            char = text[pos]
            if char == '"':
                pos += 1
                break
            if char == "\\":
                escaped = text[pos + 1 : pos + 2]
                if escaped not in _ESCAPES:
                    raise fail(pos, f'unsupported escape in label {label} (use \\", \\\\ or \\n)')
                chars.append(_ESCAPES[escaped])
                pos += 2
                continue
            chars.append(char)
            pos += 1
        if label == "__name__":
            raise fail(label_match.start(), "write the metric name before the braces, not __name__")
        if label in labels:
            raise fail(label_match.start(), f"label {label} is given twice")
        labels[label] = "".join(chars)
        pos = skip_spaces(pos)
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("}", pos):
            raise fail(pos, f"expected ',' or '}}' after the value of label {label}")
    pos = skip_spaces(pos)
    if pos != len(text):
        raise fail(pos, "unexpected text after the closing '}'")
    return name, labels


# Prometheus' model.ParseDuration: units from largest to smallest, each at most once.
_DURATION_RE = re.compile(
    r"(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?"
)
_DURATION_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `30s`, `1m`, `90s`, `1h30m`, `1d` or `500ms`.

    Same grammar as Prometheus (`model.ParseDuration`): integer amounts, units y w d h m s ms in
    that order, each at most once, no spaces; a bare `0` is zero. Anything else, including a
    YAML number that was meant as seconds (`interval: 60`), raises NotationError, because
    Prometheus itself would refuse it in a rule file or config.
    """
    if not isinstance(text, str):
        raise NotationError(f"bad duration {text!r}: expected a string such as '60m' or '30s'")
    if text == "0":
        return 0.0
    match = _DURATION_RE.fullmatch(text)
    if not text or not match:
        raise NotationError(
            f"bad duration {text!r}: expected a Prometheus duration such as '30s', '1m', '1h30m'"
        )
    seconds = sum(
        int(amount) * _DURATION_UNITS[unit]
        for unit, amount in match.groupdict().items()
        if amount and unit != "ms"
    )
    return seconds + int(match["ms"] or 0) / 1000
