from django.apps import AppConfig


class ReplayConfig(AppConfig):
    """Scenario replay: the loader, the Kubernetes stand-in, the Prometheus backfill, `replay`."""

    name = "replay"
    default_auto_field = "django.db.models.BigAutoField"
