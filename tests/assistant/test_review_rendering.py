"""Summaries as safe HTML: nothing executable survives, citations link only to this incident."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from assistant.rendering import render_markdown

EVIDENCE = {12, 40}


def render(text: str) -> str:
    return str(render_markdown(text, EVIDENCE))


class Elements(HTMLParser):
    """Every element and attribute the browser would build from the HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def tags(html: str) -> set[str]:
    return {tag for tag, _ in Elements(html).found}


def urls(html: str) -> list[str]:
    return [
        value
        for _, attrs in Elements(html).found
        for name, value in attrs.items()
        if name in ("href", "src", "action", "formaction")
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "Hi <img src=x onerror=alert(1)> there",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src='https://evil.example'></iframe>",
        "<div style='position:fixed'>cover</div>",
        "<svg onload=alert(1)></svg>",
        "<!-- a comment --><b>raw</b>",
    ],
)
def test_raw_html_is_text_not_markup(text):
    html = render(text)
    assert tags(html) <= {"p"}, html  # the markup arrives as text
    assert all(not name.startswith("on") for _, a in Elements(html).found for name in a)
    assert "&lt;" in html  # shown, escaped, for the reader to see what was written


@pytest.mark.parametrize(
    "text",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](  javascript:alert(1)  )",
        "[x](java&#115;cript:alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "<javascript:alert(1)>",
        "[x][ref]\n\n[ref]: javascript:alert(1)",
        "![pic](data:image/png;base64,AAAA)",
        "![pic](https://tracker.example/pixel.png)",
    ],
)
def test_dangerous_links_and_images_are_impossible(text):
    html = render(text)
    assert not tags(html) & {"a", "img"}, html
    for url in urls(html):
        assert url.startswith(("https://", "http://", "mailto:", "#evidence-")), (url, html)


def test_safe_links_get_rel_noopener_noreferrer_nofollow():
    html = render("See [the runbook](https://runbooks.example/oom) and <https://x.example>.")
    assert html.count('rel="noopener noreferrer nofollow"') == 2
    assert 'href="https://runbooks.example/oom"' in html


def test_markdown_formatting_survives_and_headings_sit_under_the_card():
    html = render("# Cause\n\n**OOM** in *p-1*:\n\n- one\n- two\n\n`kubectl get pods`")
    assert "<h3>Cause</h3>" in html
    assert "<strong>OOM</strong>" in html and "<em>p-1</em>" in html
    assert "<li>one</li>" in html and "<code>kubectl get pods</code>" in html


def test_citations_of_this_incidents_evidence_become_links():
    html = render("OOMKilled [#12], memory at the limit #40.")
    assert (
        '<a href="#evidence-12" class="evidence-ref" rel="noopener noreferrer nofollow">#12</a>'
        in html
    )
    assert 'href="#evidence-40"' in html
    assert "[#12]" not in html


def test_other_numbers_stay_plain_text():
    html = render("Unknown [#13], other #99, PR#12, a/b#12, `#12` and &#12;")
    assert "<a" not in html
    assert "[#13]" in html and "#99" in html and "<code>#12</code>" in html


def test_a_link_dressed_as_a_citation_leads_only_to_the_evidence():
    html = render("Proof: [#12](https://evil.example) and [#13](https://evil.example).")
    assert "evil.example" not in html
    assert 'href="#evidence-12"' in html
    assert "#13" in html and 'href="#evidence-13"' not in html


def test_text_inside_a_real_link_is_not_rewritten():
    html = render("[see #12 in the runbook](https://runbooks.example)")
    assert html.count("<a ") == 1 and 'href="#evidence-12"' not in html


def test_without_known_evidence_nothing_is_linked():
    assert "<a" not in str(render_markdown("See [#12] and #40.", []))


def test_the_allow_list_holds_even_if_the_parser_let_html_through(monkeypatch):
    """The second line of defence: with raw HTML switched on in the parser, nh3 still cleans."""
    from markdown_it import MarkdownIt

    from assistant import rendering

    permissive = MarkdownIt("commonmark", {"html": True})
    permissive.validateLink = lambda url: True
    monkeypatch.setattr(rendering, "_parser", lambda: permissive)
    html = str(
        rendering.render_markdown(
            '<script>alert(1)</script><img src=x onerror=alert(1)><a href="javascript:alert(1)"'
            ' onclick="x()">a</a> [d](data:text/html,x) <p style="color:red" class="x">p</p>',
            EVIDENCE,
        )
    )
    assert "alert(1)</script>" not in html and "<script" not in html
    assert not tags(html) & {"script", "img"}
    assert urls(html) == []
    for _, attrs in Elements(html).found:
        assert not {"onclick", "onerror", "style", "class"} & set(attrs), html


def test_citations_can_lead_to_the_panels_on_another_page():
    html = str(render_markdown("See [#12].", EVIDENCE, evidence_page="/incidents/7/"))
    assert 'href="/incidents/7/#evidence-12"' in html
