from django.core.management.base import BaseCommand, CommandError

from incidents.admin import issue_integration_token
from incidents.clusters import default_cluster
from incidents.models import Cluster, Integration


class Command(BaseCommand):
    help = "Create an integration and print its bearer token, alone on the last line (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--kind", choices=Integration.Kind.values, default=Integration.Kind.ALERTMANAGER
        )
        parser.add_argument("--cluster", help="Cluster name (default: the environment's cluster)")

    def handle(self, *args, name: str, kind: str, cluster: str | None, **options):
        if Integration.objects.filter(name=name).exists():
            raise CommandError(f"An integration named {name!r} already exists.")
        if cluster:
            try:
                target = Cluster.objects.get(name=cluster)
            except Cluster.DoesNotExist as exc:
                raise CommandError(
                    f"No cluster named {cluster!r}; add it in the admin first."
                ) from exc
        else:
            target = default_cluster()
        integration = Integration(name=name, kind=kind, cluster=target)
        token = issue_integration_token(integration)
        integration.save()
        self.stdout.write(
            f"Created {kind} integration {name!r} for cluster {target.name!r}. Token:"
        )
        self.stdout.write(token)
