from django.core.management.base import BaseCommand

from incidents.alertmanager import PayloadError
from incidents.ingest import process_delivery
from incidents.models import WebhookDelivery


class Command(BaseCommand):
    help = (
        "Replay stored webhook deliveries through the same ingest as the hook: failed and "
        "never-processed ones by default; ingest is idempotent, so replaying twice is harmless."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Only these delivery ids")
        parser.add_argument(
            "--include-rejected",
            action="store_true",
            help="Also retry deliveries rejected as malformed (after a parser fix)",
        )

    def handle(self, *args, ids: list[int], include_rejected: bool, **options):
        statuses = [WebhookDelivery.Status.FAILED, WebhookDelivery.Status.RECEIVED]
        if include_rejected:
            statuses.append(WebhookDelivery.Status.REJECTED)
        deliveries = WebhookDelivery.objects.select_related("integration__cluster").order_by(
            "received_at"
        )
        deliveries = (
            deliveries.filter(pk__in=ids) if ids else deliveries.filter(status__in=statuses)
        )
        counts = {"processed": 0, "rejected": 0, "failed": 0}
        for delivery in deliveries.iterator(chunk_size=200):
            try:
                process_delivery(delivery)
                counts["processed"] += 1
            except PayloadError as exc:
                counts["rejected"] += 1
                self.stderr.write(f"delivery {delivery.pk} rejected: {exc}")
            except Exception as exc:  # keep going; the delivery stays failed for the next run
                counts["failed"] += 1
                WebhookDelivery.objects.filter(pk=delivery.pk).update(
                    status=WebhookDelivery.Status.FAILED,
                    error=f"{type(exc).__name__}: {exc}"[:4000],
                )
                self.stderr.write(f"delivery {delivery.pk} failed: {exc}")
        self.stdout.write(", ".join(f"{n} {k}" for k, n in counts.items()))
