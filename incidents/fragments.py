"""Rendered HTML fragments of the incident page, per process, keyed on everything they show.

The incident page is polled by every open tab, while most of what it shows changes rarely: an
alert row changes when that alert does, a timeline event or a story entry never does. Rendering
those again on every request is most of the page's cost, so each fragment is kept here under a
key made of every value it displays (plus the language and the time zone, which change how a
date reads) — a changed value is another key, never a stale fragment. Nothing that depends on
the user (buttons, forms, CSRF tokens) is rendered into a fragment. A cache that is full is
cleared, as incidents/views.py does for the list rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable

from django.template.loader import get_template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language


class FragmentCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, SafeString] = {}

    def get(self, key: Hashable, render: Callable[[], str]) -> SafeString:
        """The fragment of `key` (with the language and time zone added), rendered if missing."""
        full_key = (key, get_language(), timezone.get_current_timezone_name())
        fragment = self._entries.get(full_key)
        if fragment is None:
            fragment = mark_safe(render())  # noqa: S308 (a template's output, escaped there)
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[full_key] = fragment
        return fragment

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def value_key(value: object) -> Hashable:
    """A JSON value (labels, a payload) as a key: its repr tells types and order apart."""
    return repr(value)


def digest_key(value: object) -> Hashable:
    """value_key of a large value (evidence data), as a digest: the key stays small."""
    return hashlib.blake2b(repr(value).encode(), digest_size=20).digest()


def render_fragment(template_name: str, context: dict) -> str:
    """A fragment template rendered without the newline that ends its file (the page has none)."""
    html = get_template(template_name).render(context)
    return html[:-1] if html.endswith("\n") else html
