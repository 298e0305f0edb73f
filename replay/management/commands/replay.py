import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError

from replay.scenario import ScenarioError, load_scenario
from replay.server import serve_in_process, server_url
from replay.world import ReplayError, ReplayWorld


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Replay incident scenarios: start each one's Kubernetes stand-in and backfilled Prometheus, "
        "register a Cluster for it, post its deploys and alerts through Vigil's real HTTP endpoints "
        "and print the incident URL. With --keep, serve the worlds until interrupted."
    )
    requires_migrations_checks = True

    def add_arguments(self, parser):
        parser.add_argument("scenarios", nargs="+", help="scenario YAML files")
        parser.add_argument("--keep", action="store_true", help="keep serving until interrupted")
        parser.add_argument(
            "--url",
            help="a running Vigil to feed (e.g. http://127.0.0.1:8000); default: serve one in this process",
        )
        parser.add_argument(
            "--port", type=int, default=0, help="port of the in-process Vigil (default: free)"
        )
        parser.add_argument("--no-metrics", action="store_true", help="do not start Prometheus")

    def handle(self, *args, **options):
        """The replay, with SIGTERM taken as an interrupt from the first step: `make run` stops it
        with SIGTERM, and by default that ended the process without its `finally`, leaving the
        Prometheus servers of the worlds started so far running, orphaned."""
        if threading.current_thread() is not threading.main_thread():
            return self._replay(**options)  # signal handlers are the main thread's alone
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return self._replay(**options)
        except KeyboardInterrupt:
            raise CommandError("interrupted; the worlds started so far are stopped") from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _replay(self, *, scenarios, keep, url, port, no_metrics, **options):
        loaded = []
        for path in scenarios:
            try:
                loaded.append(load_scenario(path))
            except ScenarioError as exc:
                raise CommandError(str(exc)) from exc

        server = None
        if not url:
            server = serve_in_process(port)
            url = server_url(server)
            self.stdout.write(f"Vigil serving on {url}/")
        worlds = []
        try:
            for scenario in loaded:
                world = ReplayWorld(scenario, with_metrics=not no_metrics).start()
                worlds.append(world)
                self._deliver(world, url)
            if keep:
                self.stdout.write("Serving the replayed worlds; Ctrl-C to stop.")
                self._wait_for_interrupt()
        except ReplayError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for world in worlds:
                world.stop()
            if server:
                server.shutdown()
                server.server_close()

    def _deliver(self, world: ReplayWorld, url: str) -> None:
        delivery = world.deliver(url)
        addresses = world.addresses()
        self.stdout.write(f"{world.scenario.source}:")
        self.stdout.write(
            f"  kubernetes: {addresses['kubernetes']} (kubeconfig {addresses['kubeconfig']})"
        )
        self.stdout.write(f"  prometheus: {addresses['prometheus'] or world.metrics_note}")
        self.stdout.write(f"  deploys posted: {delivery.deploys}")
        for incident_id in delivery.incident_ids:
            self.stdout.write(f"  incident: {url.rstrip('/')}/incidents/{incident_id}/")

    def _wait_for_interrupt(self) -> None:
        """Until Ctrl-C or SIGTERM (which `handle` turns into the same interrupt)."""
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
