import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from incidents.admin import issue_integration_token
from incidents.clusters import default_cluster
from incidents.management.commands.create_api_token import set_role
from incidents.models import Integration

DEMO_USER = "demo"
DEMO_INTEGRATION = "demo-alertmanager"


class Command(BaseCommand):
    help = (
        "Create the demo user (an approver and admin) and a demo Alertmanager integration; "
        "write the integration token to var/demo-token for send_demo_alerts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--password", help="Demo password (default: random, printed)")

    def handle(self, *args, password: str | None, **options):
        password = password or secrets.token_urlsafe(9)
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=DEMO_USER)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        set_role(user, "approver")

        integration = Integration.objects.filter(name=DEMO_INTEGRATION).first() or Integration(
            name=DEMO_INTEGRATION, kind=Integration.Kind.ALERTMANAGER, cluster=default_cluster()
        )
        token = issue_integration_token(integration)
        integration.save()
        token_file = Path(settings.VAR_DIR) / "demo-token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
        token_file.chmod(0o600)
        self.stdout.write(f"Demo login: username {DEMO_USER!r}, password {password!r}")
