"""Browser helpers for the end-to-end tests: Debian chromium driven by Playwright's sync API.

`playwright install` cannot download a browser here, so the tests launch /usr/bin/chromium
(`require_binary`, which skips, or fails under VIGIL_STRICT_BINARIES=1, when it is missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.support import require_binary

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
# How long a live update (a 3s or 5s htmx poll, one round trip) may take to show.
LIVE_TIMEOUT_MS = 15_000

# Reports CSP violations to Python through an exposed binding: Playwright injects both through
# the DevTools protocol, so the page's own CSP cannot block them, and they survive navigation.
_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__vigilCspViolation(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ${event.sourceFile}:${event.lineNumber}`
  );
});
"""
_CSP_WORDS = ("Content Security Policy", "Refused to")


def launch_chromium(playwright):
    return playwright.chromium.launch(
        executable_path=require_binary("chromium"), args=CHROMIUM_ARGS, headless=True
    )


@dataclass
class PageWatch:
    """What a page said on its console, the errors it threw, and the CSP violations it hit."""

    console: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)

    def attach(self, context, page) -> None:
        context.expose_function("__vigilCspViolation", lambda text: self.csp.append(text))
        context.add_init_script(_CSP_LISTENER)
        page.on(
            "console",
            lambda msg: self.console.append((msg.type, msg.text, msg.location.get("url", ""))),
        )
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def problems(self) -> list[str]:
        found = [f"CSP violation: {text}" for text in self.csp]
        found += [f"page error: {text}" for text in self.errors]
        for kind, text, url in self.console:
            if any(word in text for word in _CSP_WORDS):
                found.append(f"console CSP message: {text} ({url})")
            elif kind == "error":
                found.append(f"console error: {text} ({url})")
        return found

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "the page misbehaved:\n" + "\n".join(problems)


def login(page, base_url: str, username: str, password: str) -> None:
    """Log in through the real form and land on the incident list."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form[action$='/accounts/login/'] button[type=submit]")
    assert page.url == f"{base_url}/incidents/", f"login as {username} ended on {page.url}"
