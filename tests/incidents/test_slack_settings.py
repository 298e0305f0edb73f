"""The Slack settings: routes are read strictly, the API base URL ends with a slash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from incidents import slack
from vigil.settings import env_slack_routes

ROOT = Path(__file__).resolve().parents[2]


def test_routes_are_label_value_channel_in_order(monkeypatch):
    monkeypatch.setenv(
        "VIGIL_SLACK_ROUTES", " namespace=llm:C0LLM, team=ml-platform:C0ML ,url=http://x:C0X,"
    )
    assert env_slack_routes("VIGIL_SLACK_ROUTES") == [
        ("namespace", "llm", "C0LLM"),
        ("team", "ml-platform", "C0ML"),
        ("url", "http://x", "C0X"),  # the channel follows the last colon
    ]


def test_no_routes_is_an_empty_list(monkeypatch):
    monkeypatch.delenv("VIGIL_SLACK_ROUTES", raising=False)
    assert env_slack_routes("VIGIL_SLACK_ROUTES") == []


@pytest.mark.parametrize(
    "value", ["namespace=llm", "namespace:C0LLM", "=llm:C0", "namespace=:C0", "ns=llm:", "a=b:C 1"]
)
def test_malformed_routes_are_refused_with_the_syntax(monkeypatch, value):
    monkeypatch.setenv("VIGIL_SLACK_ROUTES", f"team=ml:C0ML,{value}")
    with pytest.raises(ImproperlyConfigured) as raised:
        env_slack_routes("VIGIL_SLACK_ROUTES")
    assert str(raised.value) == (
        f"VIGIL_SLACK_ROUTES: {value!r} is not label=value:channel "
        "(e.g. namespace=llm:C0LLM,team=ml-platform:C0ML)"
    )


def test_vigil_refuses_to_start_with_malformed_routes():
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "VIGIL_DEBUG": "1",
        "VIGIL_SLACK_ROUTES": "namespace=llm",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "VIGIL_SLACK_ROUTES: 'namespace=llm' is not label=value:channel" in result.stderr


def test_the_api_url_gets_its_trailing_slash():
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "VIGIL_TESTING": "1",
        "VIGIL_SLACK_API_URL": "http://127.0.0.1:9/api",
    }
    code = "import django; django.setup(); from django.conf import settings; print(settings.VIGIL_SLACK_API_URL)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "vigil.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "http://127.0.0.1:9/api/", result.stderr


def test_which_mode_the_settings_give(settings):
    settings.VIGIL_SLACK_BOT_TOKEN = settings.VIGIL_SLACK_CHANNEL = ""
    settings.VIGIL_SLACK_WEBHOOK_URL = ""
    settings.VIGIL_SLACK_ROUTES = []
    assert slack.get_config().mode == ""
    settings.VIGIL_SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T/B/x"
    assert slack.get_config().mode == "webhook"
    settings.VIGIL_SLACK_BOT_TOKEN = "xoxb-1"  # a token alone only unfurls
    assert slack.get_config().mode == "webhook"
    settings.VIGIL_SLACK_ROUTES = [("team", "ml", "C0ML")]
    assert slack.get_config().mode == "bot"  # the bot takes precedence
    config = slack.get_config()
    assert config.unfurl_channels == {"C0ML"}
    settings.VIGIL_SLACK_CHANNEL = "C0DEFAULT"
    assert slack.get_config().unfurl_channels == {"C0DEFAULT", "C0ML"}


@pytest.mark.parametrize(("seconds", "whole"), [(0.5, 1), (2.0, 2), (2.5, 3), (10, 10)])
def test_the_clients_get_whole_seconds_and_never_zero(settings, seconds, whole):
    settings.VIGIL_SLACK_BOT_TOKEN, settings.VIGIL_SLACK_CHANNEL = "xoxb-1", "C0DEFAULT"
    settings.VIGIL_SLACK_TIMEOUT = seconds
    assert slack.web_client(slack.get_config()).timeout == whole
