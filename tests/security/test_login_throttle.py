"""Login throttling (incidents/throttle.py): failures for a username or from an address lock that
username or address out for a while (429); everyone else logs in as usual."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.test import Client

from tests.conftest import PASSWORD
from tests.security.conftest import tally

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters(settings):
    settings.VIGIL_LOGIN_MAX_FAILURES = 5
    settings.VIGIL_LOGIN_MAX_FAILURES_PER_ADDRESS = 20
    settings.VIGIL_LOGIN_LOCKOUT = 900
    settings.VIGIL_TRUSTED_PROXIES = 0
    cache.clear()  # the test cache is this process's memory (vigil/settings.py)
    yield
    cache.clear()


def login(username: str, password: str, address: str = "10.0.0.1", path="/accounts/login/", **h):
    tally("login throttle: login attempts")
    client = Client()
    response = client.post(
        path, {"username": username, "password": password}, REMOTE_ADDR=address, **h
    )
    return response, client


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_failures_for_a_username_lock_it_out_even_with_the_right_password(personas):
    for _ in range(5):
        response, _ = login("viewer", "wrong")
        assert response.status_code == 200  # the form again, with its error
    response, client = login("viewer", PASSWORD)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 800
    assert b"Too many failed logins" in response.content
    assert not logged_in(client)


def test_a_locked_username_is_locked_from_every_address_and_in_any_case(personas):
    for i in range(5):
        login("Viewer", "wrong", address=f"10.0.1.{i}")
    response, client = login("viewer", PASSWORD, address="192.0.2.7")
    assert response.status_code == 429
    assert not logged_in(client)


def test_other_users_log_in_during_a_lockout(personas):
    for _ in range(5):
        login("viewer", "wrong", address="10.0.0.66")
    assert login("viewer", PASSWORD, address="10.0.0.66")[0].status_code == 429
    response, client = login("responder", PASSWORD, address="10.0.0.2")
    assert response.status_code == 302 and logged_in(client)
    # from the attacker's address too: 5 failures are far below the address limit
    response, client = login("approver", PASSWORD, address="10.0.0.66")
    assert response.status_code == 302 and logged_in(client)


def test_failures_from_one_address_lock_that_address_only(personas):
    for i in range(20):
        login(f"nobody-{i}", "wrong", address="203.0.113.9")  # spraying many usernames
    assert login("approver", PASSWORD, address="203.0.113.9")[0].status_code == 429
    response, client = login("approver", PASSWORD, address="198.51.100.4")
    assert response.status_code == 302 and logged_in(client)


def test_a_successful_login_resets_its_usernames_count(personas):
    for _ in range(4):
        login("viewer", "wrong")
    assert login("viewer", PASSWORD)[0].status_code == 302
    for _ in range(4):
        login("viewer", "wrong")
    response, client = login("viewer", PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_the_lockout_ends(personas, settings):
    settings.VIGIL_LOGIN_LOCKOUT = 1
    for _ in range(5):
        login("viewer", "wrong")
    assert login("viewer", PASSWORD)[0].status_code == 429
    time.sleep(2.1)
    response, client = login("viewer", PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_the_admin_login_is_throttled_too(personas, make_user):
    root = make_user("root")
    root.is_staff = root.is_superuser = True
    root.save()
    for _ in range(5):
        login("root", "wrong", path="/admin/login/")
    response, client = login("root", PASSWORD, path="/admin/login/")
    assert response.status_code == 429
    assert not logged_in(client)
    # and the two logins share the count
    assert login("root", PASSWORD)[0].status_code == 429


def test_a_forged_forwarded_for_does_not_rotate_the_address(personas):
    for i in range(20):
        login(f"nobody-{i}", "wrong", address="203.0.113.9", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
    assert login("approver", PASSWORD, address="203.0.113.9")[0].status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_counts(personas, settings):
    settings.VIGIL_TRUSTED_PROXIES = 1
    for i in range(20):  # all through the same proxy, from one client
        login(f"nobody-{i}", "wrong", address="10.0.0.254", HTTP_X_FORWARDED_FOR="203.0.113.9")
    proxy = "10.0.0.254"
    blocked = login("approver", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")[0]
    assert blocked.status_code == 429
    # another client behind the same proxy is not locked out
    response, client = login(
        "approver", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="spoofed, 198.51.100.4"
    )
    assert response.status_code == 302 and logged_in(client)


def test_without_its_cache_the_login_still_works(personas, monkeypatch):
    """Fail open: on the day Redis is down, engineers must still get in."""

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    for name in ("get_many", "add", "incr", "set", "get", "delete_many"):
        monkeypatch.setattr(cache, name, down)
    for _ in range(6):
        login("viewer", "wrong")
    response, client = login("viewer", PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_unlock_lifts_a_lockout(personas):
    from incidents.throttle import unlock

    for _ in range(5):
        login("viewer", "wrong")
    assert login("viewer", PASSWORD)[0].status_code == 429
    unlock(username="viewer", address="10.0.0.1")
    assert login("viewer", PASSWORD)[0].status_code == 302
