from django.apps import AppConfig


class SemanticSearchConfig(AppConfig):
    name = "semantic_search"
    verbose_name = "Semantic search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401  (registers checks and signal handlers)
        from .indexes import connect_index_maintenance
        from .registry import register_from_settings

        connect_index_maintenance(self)
        register_from_settings()
