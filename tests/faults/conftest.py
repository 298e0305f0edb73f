"""Fault tests: a throwaway PostgreSQL and Redis, and Vigil's real processes pointed at them.

Nothing here touches the machine's own PostgreSQL or Redis (CI's shared ones): the cluster is
`initdb`-ed into a temporary directory and served on a free port (as the `postgres` OS user
when the tests run as root, as CI does), Redis is a `redis-server` of its own on a free port
with persistence off. Each test gets a fresh database cloned from a migrated template, a fresh
Redis, and starts the processes it needs — gunicorn, Celery workers, beat — as subprocesses
with `DATABASE_URL` and `CELERY_BROKER_URL` pointing there. The test process reads the outcome
with plain SQL (psycopg), the way an operator would look at the database afterwards.

Missing binaries skip the tests, or fail them under VIGIL_STRICT_BINARIES=1 (CI).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import free_port, require_binary, wait_for

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90  # a busy 2-core CI machine starts Django processes slowly
# The outer test run's settings must not leak into the processes under test.
STRIPPED_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "VIGIL_CELERY_QUEUE",
    "VIGIL_CELERY_EAGER",
    "VIGIL_DEBUG",
    "VIGIL_VAR_DIR",
    "VIGIL_LLM",
    "VIGIL_LLM_BASE_URL",
    "VIGIL_LLM_API_KEY",
    "VIGIL_SLACK_BOT_TOKEN",
    "VIGIL_SLACK_WEBHOOK_URL",
    "VIGIL_SLACK_CHANNEL",
    "VIGIL_PROMETHEUS_URL",
    "KUBECONFIG",
    "DJANGO_SETTINGS_MODULE",
)


def postgres_bindir() -> str:
    """Where initdb and pg_ctl live: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return str(Path(on_path).parent)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return str(Path(found[-1]).parent)
    return str(Path(require_binary("initdb")).parent)  # skips, or fails in strict mode


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` OS user."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *command]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_quote, command))]


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


class ThrowawayPostgres:
    """An initdb-ed cluster in a temporary directory, on a free loopback port."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-faults-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.workdir, user="postgres")
        self._run(
            [
                f"{self.bindir}/initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
                "-N",
            ]
        )

    def _run(self, command: list[str], timeout: float = 120) -> str:
        result = subprocess.run(
            _as_postgres(command),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n--- postgres log ---\n{self.log_tail()}"
            )
        return result.stdout

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )

    def pg_ctl(self, *args: str, timeout: float = 120) -> str:
        return self._run([f"{self.bindir}/pg_ctl", "-D", str(self.data), *args], timeout=timeout)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.log), "-o", self._options(), "-w", "-t", "90", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "-t", "90", "stop")

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server comes back on its port."""
        self.pg_ctl(
            "-l", str(self.log), "-o", self._options(), "-m", mode, "-w", "-t", "90", "restart"
        )

    def running(self) -> bool:
        result = subprocess.run(
            _as_postgres([f"{self.bindir}/pg_ctl", "-D", str(self.data), "status"]),
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server of its own: free port, no persistence; stop() and start() keep the port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self.ping, timeout=30, message=f"redis-server on {self.port}")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=15)


class Proc:
    """A subprocess in its own session, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children at once."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)


class Vigil:
    """Vigil's processes on one throwaway database and Redis, and SQL to look at the outcome."""

    def __init__(
        self, postgres: ThrowawayPostgres, redis: ThrowawayRedis, database: str, workdir: Path
    ) -> None:
        self.postgres = postgres
        self.redis = redis
        self.database = database
        self.workdir = workdir
        self.queue = f"faults-{database}"
        self.env_overrides: dict[str, str] = {}
        self.procs: list[Proc] = []
        self.web_url = ""
        self.http = requests.Session()
        self.http.trust_env = False

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.database)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "CELERY_BROKER_URL": self.redis.url,
                "CELERY_RESULT_BACKEND": self.redis.url,
                "VIGIL_CELERY_QUEUE": self.queue,
                # Production settings (no VIGIL_TESTING): the Redis cache, the real hashers.
                "VIGIL_TESTING": "",
                "VIGIL_SECRET_KEY": "faults-" + "k" * 50,
                "VIGIL_VAR_DIR": str(self.workdir / "var"),
                "VIGIL_DB_CONN_MAX_AGE": "60",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env_overrides)
        env.update(extra)
        return env

    # -- one-off commands ---------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 180, **extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def python(self, code: str, timeout: float = 180, **extra: str):
        """Run `code` in a fresh Django process; it sets `result`, which comes back as JSON."""
        script = (
            "import django, json\ndjango.setup()\nresult = None\n"
            + code
            + "\nprint('\\n@@RESULT@@' + json.dumps(result, default=str))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=self.env(DJANGO_SETTINGS_MODULE="vigil.settings", **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0 or "@@RESULT@@" not in result.stdout:
            pytest.fail(f"python in Vigil's environment failed:\n{result.stdout}\n{result.stderr}")
        return json.loads(result.stdout.rsplit("@@RESULT@@", 1)[1])

    def integration_token(self, name: str = "am", kind: str = "alertmanager") -> str:
        return self.manage("create_integration", name, "--kind", kind).strip().splitlines()[-1]

    def sweep(self, **extra: str) -> dict:
        """What beat would run: the incidents sweep, in a process of its own."""
        return self.python(
            "from incidents.tasks import sweep\nresult = sweep()",
            **{"VIGIL_SWEEP_GRACE": "0", **extra},
        )

    # -- long-running processes ---------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], **extra: str) -> Proc:
        proc = Proc(name, command, self.env(**extra), self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def start_web(self, workers: int = 2, **extra: str) -> str:
        """gunicorn as production runs it (vigil/gunicorn.py: threaded workers, each with a
        connection cap), sized through its environment."""
        port = free_port()
        proc = self._spawn(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "vigil.wsgi",
                "-c",
                "python:vigil.gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
            ],
            **{"WEB_CONCURRENCY": str(workers), **extra},
        )
        self.web_url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not proc.alive():
                pytest.fail(f"gunicorn exited:\n{proc.tail()}")
            try:
                return self.http.get(f"{self.web_url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=START_TIMEOUT, interval=0.2, message="gunicorn to answer /healthz")
        return self.web_url

    def start_worker(self, name: str = "worker", concurrency: int = 2, **extra: str) -> Proc:
        proc = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "vigil",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--queues",
                self.queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                f"{name}-{uuid.uuid4().hex[:6]}@%h",
            ],
            **extra,
        )

        def ready() -> bool:
            if not proc.alive():
                pytest.fail(f"celery worker {name} exited:\n{proc.tail()}")
            return "ready." in proc.tail(200_000)

        wait_for(ready, timeout=START_TIMEOUT, interval=0.2, message=f"celery worker {name}")
        return proc

    def start_beat(self, **extra: str) -> Proc:
        return self._spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "vigil",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.workdir / "celerybeat-schedule"),
            ],
            **extra,
        )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
        self.procs.clear()
        self.http.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (tail) ---\n{p.tail(2500)}" for p in self.procs)

    # -- webhooks -----------------------------------------------------------------------------

    def post_hook(self, payload: dict | bytes, token: str, timeout: float = 30):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.http.post(
            f"{self.web_url}/hooks/alertmanager",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=timeout,
        )

    # -- looking at the outcome ---------------------------------------------------------------

    def rows(self, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchall()

    def value(self, sql: str, *params):
        rows = self.rows(sql, *params)
        return rows[0][0] if rows else None


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """One cluster for the session with a migrated template database `vigil_template`."""
    require_binary("redis-server")  # no point starting PostgreSQL when Redis is missing
    postgres = ThrowawayPostgres()
    try:
        postgres.start()
        postgres.execute("CREATE DATABASE vigil_template")
        env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
        env.update(
            DATABASE_URL=postgres.url("vigil_template"),
            VIGIL_TESTING="1",
            VIGIL_VAR_DIR=str(postgres.workdir / "var"),
        )
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if migrated.returncode != 0:
            pytest.fail(f"migrate failed:\n{migrated.stdout}\n{migrated.stderr}")
        yield postgres
    finally:
        postgres.destroy()


@pytest.fixture
def vigil(throwaway_postgres, tmp_path) -> Iterator[Vigil]:
    """A fresh database (from the template) and a fresh Redis; processes are started by the test."""
    throwaway_postgres.ensure_running()
    database = f"faults_{uuid.uuid4().hex[:10]}"
    throwaway_postgres.execute(f"CREATE DATABASE {database} TEMPLATE vigil_template")
    redis = ThrowawayRedis(tmp_path)
    redis.start()
    app = Vigil(throwaway_postgres, redis, database, tmp_path)
    try:
        yield app
    finally:
        app.stop_all()
        redis.stop()
        try:
            throwaway_postgres.ensure_running()
            throwaway_postgres.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        except Exception as exc:  # the assertion that failed matters more than the cleanup
            print(f"could not drop {database}: {exc}")
