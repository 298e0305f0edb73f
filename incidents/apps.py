from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IncidentsConfig(AppConfig):
    name = "incidents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .permissions import ensure_roles

        # After auth's own handler has created the permissions the groups hold.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="incidents.ensure_roles")
