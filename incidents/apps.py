from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class IncidentsConfig(AppConfig):
    name = "incidents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .hooks import forget_integrations
        from .models import Cluster, Integration, TimelineEvent
        from .permissions import ensure_roles
        from .signals import announce_timeline_event
        from .throttle import _on_failure  # noqa: F401 (connects the login throttle's receivers)

        # After auth's own handler has created the permissions the groups hold.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="incidents.ensure_roles")
        post_save.connect(
            announce_timeline_event,
            sender=TimelineEvent,
            dispatch_uid="incidents.announce_timeline_event",
        )
        # The hooks' per-process cache of integrations by token (incidents/hooks.py).
        for model in (Integration, Cluster):
            for name, signal in (("save", post_save), ("delete", post_delete)):
                signal.connect(
                    forget_integrations,
                    sender=model,
                    dispatch_uid=f"incidents.forget_integrations.{name}.{model.__name__}",
                )
