"""docker-compose.yml cannot run here (no Docker engine); check it runs what the suite exercises."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.alertmanager_server import AlertmanagerServer
from tests.support import require_binary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command(service: dict) -> str:
    cmd = service["command"]
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def test_it_has_every_service_the_design_names(compose):
    assert {"postgres", "redis", "web", "worker", "beat", "prometheus", "alertmanager"} <= set(
        compose["services"]
    )


def test_app_services_run_the_commands_the_suite_runs(compose):
    services = compose["services"]
    assert command(services["web"]) == "gunicorn vigil.wsgi -c python:vigil.gunicorn"
    assert command(services["worker"]).startswith("celery -A vigil worker")
    assert command(services["beat"]).startswith("celery -A vigil beat")
    assert command(services["migrate"]) == "python manage.py migrate --noinput"
    assert (
        "manage.py create_integration compose-alertmanager --kind alertmanager | tail -n 1"
        in command(services["bootstrap"])
    )
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")


def compose_env(compose: dict, tmp_path: Path) -> dict:
    env = {
        k: os.path.expandvars(str(v)) for k, v in compose["services"]["web"]["environment"].items()
    }
    env["VIGIL_SECRET_KEY"] = "x" * 60
    # Same settings, but on a local database instead of the compose network's.
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/compose.sqlite3"
    env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{tmp_path}/broker.sqlite3"
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}


def test_the_compose_environment_configures_vigil(compose, tmp_path):
    env = compose_env(compose, tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "vigil", "inspect", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_bootstrap_command_leaves_a_token_on_the_last_line(compose, tmp_path):
    env = compose_env(compose, tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    script = command(compose["services"]["bootstrap"]).split(" -c ", 1)[1]
    script = (
        shlex.split(script)[0]
        .replace("/tokens/", f"{tmp_path}/")
        .replace("python ", f"{sys.executable} ")
    )
    subprocess.run(["sh", "-c", script], cwd=ROOT, env=env, check=True, timeout=60)
    token = (tmp_path / "alertmanager").read_text().strip()
    assert token.startswith("vgi_") and len(token) > 40


def test_prometheus_config_and_rules_are_valid():
    promtool = require_binary("promtool")
    rules = subprocess.run(
        [promtool, "check", "rules", str(ROOT / "deploy/rules.yml")], capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_alertmanager_config_is_accepted_and_targets_the_hook(compose, tmp_path):
    binary = require_binary("prometheus-alertmanager")
    config = yaml.safe_load((ROOT / "deploy/alertmanager.yml").read_text())
    (webhook,) = config["receivers"][0]["webhook_configs"]
    assert webhook["url"] == "http://web:8000/hooks/alertmanager"
    assert webhook["http_config"]["authorization"]["credentials_file"] == "/tokens/alertmanager"
    mounted = compose["services"]["alertmanager"]["volumes"]
    assert "tokens:/tokens:ro" in mounted

    # Load this very config (token file path rewritten) into the real binary.
    (tmp_path / "token").write_text("vgi_example")
    text = (
        (ROOT / "deploy/alertmanager.yml")
        .read_text()
        .replace("/tokens/alertmanager", str(tmp_path / "token"))
    )
    server = AlertmanagerServer(binary, tmp_path, text)
    server.start()
    try:
        assert "web:8000/hooks/alertmanager" in server.status()["config"]["original"]
    finally:
        server.stop()


def test_the_worker_yields_the_cpu_to_the_web(compose):
    services = compose["services"]
    assert services["worker"]["cpu_shares"] < services["web"].get("cpu_shares", 1024)
