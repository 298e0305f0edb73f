from django.apps import AppConfig
from django.db.models.signals import post_migrate, post_save


class IncidentsConfig(AppConfig):
    name = "incidents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .models import TimelineEvent
        from .permissions import ensure_roles
        from .signals import announce_timeline_event

        # After auth's own handler has created the permissions the groups hold.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="incidents.ensure_roles")
        post_save.connect(
            announce_timeline_event,
            sender=TimelineEvent,
            dispatch_uid="incidents.announce_timeline_event",
        )
