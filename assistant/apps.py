from django.apps import AppConfig


class AssistantConfig(AppConfig):
    """Correlation rules, the LLM chain, analyses and the remediation catalogue (later issues)."""

    name = "assistant"
    default_auto_field = "django.db.models.BigAutoField"
