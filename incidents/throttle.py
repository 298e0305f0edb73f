"""Login throttling: too many failed logins for one username, or from one address, and logins for
that username (or from that address) are refused with 429 for a while.

Why not django-axes: it would add a dependency, its tables and migrations, and an authentication
backend that refuses `authenticate()` calls without a request (management commands, the test
client's `login`); what Vigil needs is two counters. So: a small cache-based throttle.

How it works:
* every failed `authenticate()` with a request (the login page, the admin's login) fires Django's
  `user_login_failed`; its receiver here counts the failure under the username (case-folded) and
  under the client address, each in a window of VIGIL_LOGIN_LOCKOUT seconds from its first
  failure;
* once a counter reaches its limit (VIGIL_LOGIN_MAX_FAILURES per username, 5 by default;
  VIGIL_LOGIN_MAX_FAILURES_PER_ADDRESS per address, 20, since colleagues share office and VPN
  addresses) that username or address is locked until the window ends;
* `throttled_login` wraps the login views: a POST for a locked username or from a locked address
  answers 429 with Retry-After and the login page saying why, without checking the password at
  all (so a guess made during the lockout learns nothing);
* a successful login resets its username's counter (a user who mistyped twice starts afresh), not
  its address's (an attacker with one valid account must not reset their address's counter).

Other usernames and addresses are unaffected: locking out `alice` from one address does not stop
`bob` logging in from his. The price of per-username locking is that an attacker who knows a
username can keep its owner out for the window; VIGIL_LOGIN_LOCKOUT keeps that short (15 minutes
by default), and an administrator can lift it at once with `unlock(username)`.

The client address is REMOTE_ADDR, or with VIGIL_TRUSTED_PROXIES=N (N reverse proxies in front
of Vigil, each appending to X-Forwarded-For) the address the outermost trusted proxy saw.

The counters live in Django's cache (vigil/settings.py: Redis when the broker is Redis, shared
by every web process; a file cache under var/ otherwise). If the cache is unreachable, logins are
not throttled (and a warning is logged): on-call engineers must be able to log in on the day
Redis is down.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

logger = logging.getLogger(__name__)
PREFIX = "vigil:login:"


def _limits() -> tuple[int, int, int]:
    return (
        int(settings.VIGIL_LOGIN_MAX_FAILURES),
        int(settings.VIGIL_LOGIN_MAX_FAILURES_PER_ADDRESS),
        max(1, int(settings.VIGIL_LOGIN_LOCKOUT)),
    )


def client_address(request: HttpRequest | None) -> str:
    """The client's address, as the outermost trusted proxy saw it ("" when unknown)."""
    if request is None:
        return ""
    proxies = int(settings.VIGIL_TRUSTED_PROXIES)
    if proxies > 0:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= proxies:
            return forwarded[-proxies][:64]
    return (request.META.get("REMOTE_ADDR") or "")[:64]


def _user_key(username: str) -> str:
    digest = hashlib.sha256(username.strip().casefold().encode("utf-8", "replace")).hexdigest()
    return f"{PREFIX}user:{digest}"


def _address_key(address: str) -> str:
    return f"{PREFIX}addr:{address}"


def _keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    """(counter key, limit) of the username and of the address."""
    per_user, per_address, _ = _limits()
    keys = []
    if username:
        keys.append((_user_key(username), per_user))
    address = client_address(request)
    if address:
        keys.append((_address_key(address), per_address))
    return keys


def locked_for(request: HttpRequest | None, username: str) -> int:
    """Seconds until this username and address may try again (0: they may now)."""
    now = time.time()
    try:
        untils = cache.get_many([f"{key}:locked" for key, _ in _keys(request, username)])
    except Exception:
        logger.warning("login throttle: cache unavailable, not throttling", exc_info=True)
        return 0
    waits = [int(until - now) + 1 for until in untils.values() if until and until > now]
    return max(waits, default=0)


def record_failure(request: HttpRequest | None, username: str) -> None:
    """Count a failed login; lock what reached its limit until its window ends."""
    _, _, window = _limits()
    try:
        for key, limit in _keys(request, username):
            cache.add(f"{key}:since", time.time(), window)
            cache.add(key, 0, window)
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, window)
                count = 1
            if count >= limit:
                since = cache.get(f"{key}:since") or time.time()
                until = max(since + window, time.time() + 1)
                cache.set(f"{key}:locked", until, max(1, int(until - time.time()) + 1))
                logger.warning(
                    "login throttle: %s locked after %d failed logins",
                    "username" if ":user:" in key else f"address {key.rsplit(':', 1)[-1]}",
                    count,
                )
    except Exception:
        logger.warning("login throttle: cache unavailable, failure not counted", exc_info=True)


def unlock(username: str = "", address: str = "") -> None:
    """Lift a lockout now (an administrator's remedy, from `manage.py shell`)."""
    keys = ([_user_key(username)] if username else []) + (
        [_address_key(address)] if address else []
    )
    cache.delete_many([f"{key}{suffix}" for key in keys for suffix in ("", ":since", ":locked")])


@receiver(user_login_failed, dispatch_uid="incidents.throttle.failed")
def _on_failure(sender: Any, credentials: dict, request: HttpRequest | None = None, **kw) -> None:
    record_failure(request, str(credentials.get("username") or ""))


@receiver(user_logged_in, dispatch_uid="incidents.throttle.success")
def _on_success(sender: Any, request: HttpRequest | None, user: Any, **kw) -> None:
    try:
        key = _user_key(user.get_username())
        cache.delete_many([key, f"{key}:since", f"{key}:locked"])
    except Exception:
        logger.warning("login throttle: cache unavailable, counter not reset", exc_info=True)


def refusal(request: HttpRequest, seconds: int) -> HttpResponse:
    minutes = max(1, round(seconds / 60))
    message = (
        "Too many failed logins for this username or from this address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    response = render(
        request,
        "registration/login.html",
        {"form": AuthenticationForm(request), "throttled": message, "next": ""},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


def throttled_login(view):
    """Wrap a login view: a POST for a locked username or address gets 429, not the view."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            seconds = locked_for(request, request.POST.get("username", ""))
            if seconds:
                return refusal(request, seconds)
        return view(request, *args, **kwargs)

    return wrapped
