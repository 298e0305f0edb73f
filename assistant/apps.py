from django.apps import AppConfig


class AssistantConfig(AppConfig):
    """Correlation rules, analyses and (later) the LLM chain and the remediation catalogue."""

    name = "assistant"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from collectors.signals import collection_finished

        from .tasks import on_collection_finished

        collection_finished.connect(
            on_collection_finished, dispatch_uid="assistant.analyse_after_collection"
        )
