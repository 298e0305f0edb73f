"""An analysis summary as safe HTML: markdown without raw HTML, then an allow-list, then citations.

Summaries are written by the rules, by an LLM (whose input includes log lines and labels anyone
can influence) and by engineers, so nothing in them is trusted:

- markdown-it-py parses CommonMark with raw HTML off: `<script>` or `<img onerror>` stay text,
  and its link validator refuses `javascript:`, `vbscript:`, `file:` and most `data:` URLs;
- nh3 then keeps only an allow-list of tags and attributes, only http(s)/mailto and relative
  URLs, drops images (the CSP would block remote ones anyway), and gives every link
  `rel="noopener noreferrer nofollow"`;
- headings start at h3, under the card's own h2.

Evidence citations written `[#12]` or `#12` become links to the panel `#evidence-12`, but only for
evidence ids of the incident at hand; any other number stays plain text, so a citation on the page
always leads to real evidence. Text inside code and inside links is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "del",
    "s",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
ALLOWED_CLASSES = {"a": {"evidence-ref"}}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"
# `[#12]` or a bare `#12` that is not part of a word, a path or an HTML entity.
CITATION = re.compile(r"\[#(\d{1,12})\]|(?<![\w&#/\[])#(\d{1,12})\b")
MAX_CHARS = 50_000  # far above any summary; a bound on the work one page view can cause


def _evidence_citations(state: StateCore) -> None:
    """Core rule: link citations of known evidence ids; shift headings below the card's h2."""
    known: frozenset[int] = state.env.get("evidence_ids", frozenset())
    page: str = state.env.get("evidence_page", "")
    for block in state.tokens:
        if block.type in ("heading_open", "heading_close"):
            block.tag = f"h{min(6, int(block.tag[1]) + 2)}"
        if block.type != "inline" or not block.children:
            continue
        block.children = _link_citations(block.children, known, page)


def _link_citations(tokens: list[Token], known: frozenset[int], page: str) -> list[Token]:
    """Citations in plain text become links; text inside links and code is left alone, except a
    link whose whole text is a citation (`[#12](https://elsewhere)`): it is unwrapped, so a
    citation on the page never leads anywhere but to the evidence it names."""
    out: list[Token] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "link_open":
            close = next(
                (i for i in range(index + 1, len(tokens)) if tokens[i].type == "link_close"),
                len(tokens) - 1,
            )
            inner = tokens[index + 1 : close]
            if len(inner) == 1 and inner[0].type == "text" and CITATION.fullmatch(inner[0].content):
                out.extend(_split_citations(inner[0], known, page))
            else:
                out.extend(tokens[index : close + 1])
            index = close + 1
            continue
        out.extend(_split_citations(token, known, page) if token.type == "text" else [token])
        index += 1
    return out


def _split_citations(token: Token, known: frozenset[int], page: str) -> list[Token]:
    out: list[Token] = []
    text = token.content
    position = 0
    for match in CITATION.finditer(text):
        evidence_id = int(match.group(1) or match.group(2))
        if evidence_id not in known:
            continue
        if match.start() > position:
            out.append(_text(text[position : match.start()]))
        link = Token("link_open", "a", 1)
        link.attrs = {"href": f"{page}#evidence-{evidence_id}", "class": "evidence-ref"}
        out.extend([link, _text(f"#{evidence_id}"), Token("link_close", "a", -1)])
        position = match.end()
    if not out:
        return [token]
    if position < len(text):
        out.append(_text(text[position:]))
    return out


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.core.ruler.push("evidence_citations", _evidence_citations)
    return md


def render_markdown(
    text: str, evidence_ids: Iterable[int] = (), *, evidence_page: str = ""
) -> SafeString:
    """Safe HTML for a summary; citations of `evidence_ids` become links to their panels.

    The panels are on the incident page: elsewhere (the versions page), pass its URL as
    `evidence_page` so the links lead there.
    """
    source = (text or "")[:MAX_CHARS]
    env = {
        "evidence_ids": frozenset(int(i) for i in evidence_ids),
        "evidence_page": evidence_page,
    }
    html = _parser().render(source, env)
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        allowed_classes=ALLOWED_CLASSES,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
    )
    return mark_safe(cleaned)  # noqa: S308 - nh3's allow-list output, built from escaped markdown
