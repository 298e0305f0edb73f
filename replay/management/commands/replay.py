import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from replay.scenario import ScenarioError, load_scenario
from replay.server import serve_in_process, server_url
from replay.world import ReplayError, ReplayWorld


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

    def handle(self, *args, scenarios, keep, url, port, no_metrics, **options):
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
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
