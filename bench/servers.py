"""gunicorn and Celery as production runs them, started by a benchmark child on its own database.

The child's environment already names the database, the broker's database number and queue, the
secret key and production settings (the runner built it); servers inherit it. Each server runs in
its own session so that stopping it takes its whole process tree and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .common import PY, ROOT, Config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    pass


class _Process:
    name = "process"

    def __init__(self, log: Path, env: dict | None = None) -> None:
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self, argv: list[str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServerError(
                f"{self.name} exited ({self.process.returncode}):\n{self._log_tail()}"
            )

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Ask the tree to stop; kill the session's group if it is still there after `grace`."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # our own session only: leftovers of the tree
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


class Gunicorn(_Process):
    """`gunicorn vigil.wsgi` on a free loopback port, ready once /healthz answers 200."""

    name = "gunicorn"

    def __init__(
        self,
        log: Path,
        *,
        workers: int,
        worker_class: str = "sync",
        threads: int = 1,
        env: dict | None = None,
    ) -> None:
        super().__init__(log, env)
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        self.port = 0

    @classmethod
    def for_run(cls, cfg: Config, workdir: Path, env: dict | None = None) -> Gunicorn:
        """As the run's configuration says (production's set-up unless overridden)."""
        return cls(
            workdir / "gunicorn.log",
            workers=cfg.gunicorn_workers,
            worker_class=cfg.gunicorn_class,
            threads=cfg.gunicorn_threads,
            env=env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> dict:
        return {
            "workers": self.workers,
            "worker_class": self.worker_class,
            "threads": self.threads if self.worker_class == "gthread" else 1,
        }

    def start(self) -> Gunicorn:
        self.port = free_port()
        # Production's settings module (vigil/gunicorn.py), sized through its environment.
        self.env["WEB_CONCURRENCY"] = str(self.workers)
        self.env["VIGIL_WEB_THREADS"] = str(self.threads)
        argv = [PY, "-m", "gunicorn", "vigil.wsgi", "-c", "python:vigil.gunicorn"]
        argv += ["--bind", f"127.0.0.1:{self.port}", "--worker-class", self.worker_class]
        self._spawn(argv)
        deadline = time.monotonic() + 60
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"gunicorn not ready after 60s:\n{self._log_tail()}")
            time.sleep(0.2)
        # Every worker has booted (imported the app) before anything is measured.
        self._wait_for_workers()
        return self

    def _wait_for_workers(self, timeout: float = 30) -> None:
        from .common import descendants, proc_table

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(descendants(self.pid, proc_table())) >= self.workers + 1:
                return
            time.sleep(0.2)


class CeleryWorker(_Process):
    """`celery -A vigil worker` on this run's queue; ready once it logs `ready.`."""

    name = "celery worker"

    def __init__(self, log: Path, *, concurrency: int, queue: str, hostname: str, env=None) -> None:
        super().__init__(log, env)
        self.concurrency = concurrency
        self.queue = queue
        self.hostname = hostname

    @classmethod
    def for_run(cls, cfg: Config, workdir: Path, benchmark: str) -> CeleryWorker:
        """The run's worker on its own queue, named after the benchmark."""
        return cls(
            workdir / "celery.log",
            concurrency=cfg.celery_concurrency,
            queue=cfg.queue,
            hostname=f"bench-{benchmark}-{cfg.run_id}",
        )

    def describe(self) -> dict:
        return {"concurrency": self.concurrency, "pool": "prefork", "queue": self.queue}

    def start(self) -> CeleryWorker:
        self._spawn(
            [
                PY,
                "-m",
                "celery",
                "-A",
                "vigil",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(self.concurrency),
                "--queues",
                self.queue,
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"{self.hostname}@%h",
            ]
        )
        deadline = time.monotonic() + 60
        while b"ready." not in self.log.read_bytes():
            self._check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"celery worker not ready after 60s:\n{self._log_tail()}")
            time.sleep(0.2)
        return self

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        # Measurements are over when this is called: a cold shutdown, not a wait for countdowns.
        super().stop(grace=grace, sig=signal.SIGQUIT)


class CeleryBeat(_Process):
    name = "celery beat"

    def __init__(self, log: Path, *, schedule: Path, env=None) -> None:
        super().__init__(log, env)
        self.schedule = schedule

    def start(self) -> CeleryBeat:
        self._spawn(
            [
                PY,
                "-m",
                "celery",
                "-A",
                "vigil",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.schedule),
            ]
        )
        time.sleep(0.5)
        self._check_alive()
        return self
