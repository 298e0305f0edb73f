import json
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from incidents.demo import demo_notifications


class Command(BaseCommand):
    help = (
        "POST demo Alertmanager notifications to a running Vigil's webhook, as Alertmanager would."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/hooks/alertmanager")
        parser.add_argument("--token", help="Integration token (default: var/demo-token)")

    def handle(self, *args, url: str, token: str | None, **options):
        token_file = Path(settings.VAR_DIR) / "demo-token"
        if not token:
            if not token_file.exists():
                raise CommandError(
                    "No --token and no var/demo-token: run `manage.py setup_demo` first."
                )
            token = token_file.read_text().strip()
        if not url.startswith(("http://", "https://")):
            raise CommandError(f"--url must be an http(s) URL, not {url!r}")
        for payload in demo_notifications():
            request = urllib.request.Request(  # noqa: S310 (an http URL given by the operator)
                url,
                data=json.dumps(payload).encode(),
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    answer = json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                raise CommandError(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from exc
            except urllib.error.URLError as exc:
                raise CommandError(f"cannot reach {url}: {exc.reason}") from exc
            self.stdout.write(f"{payload['groupKey']}: incidents {answer.get('incidents')}")
