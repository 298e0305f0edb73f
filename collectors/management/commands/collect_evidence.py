from django.core.management.base import BaseCommand, CommandError

from collectors.models import Evidence
from collectors.tasks import collect_now
from incidents.models import Incident


class Command(BaseCommand):
    help = (
        "Collect an incident's evidence now, in this process (no worker needed), and list what was "
        "found and which sources failed. Useful to check a cluster's sources by hand."
    )

    def add_arguments(self, parser):
        parser.add_argument("incident_id", type=int)
        parser.add_argument(
            "--force", action="store_true", help="collect even if a round already ran"
        )

    def handle(self, *args, incident_id: int, force: bool, **options):
        if not Incident.objects.filter(pk=incident_id).exists():
            raise CommandError(f"No incident {incident_id}.")
        if force:
            from django.utils import timezone

            Incident.objects.filter(pk=incident_id).update(
                collection_started_at=None,
                collection_finished_at=None,
                collection_requested_at=timezone.now(),
            )
        outcome = collect_now(incident_id)
        for row in Evidence.objects.filter(incident_id=incident_id).order_by("collector", "id"):
            status = "ok" if row.status == Evidence.Status.OK else f"FAILED: {row.reason}"
            self.stdout.write(
                f"{row.collector:<11} {row.kind:<16} {status if row.status != 'ok' else row.title}"
            )
        self.stdout.write(outcome)
