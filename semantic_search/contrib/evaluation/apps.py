from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "semantic_search.contrib.evaluation"
    label = "semantic_search_evaluation"
    verbose_name = "Semantic search evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from semantic_search.registry import register

        register(
            self.get_model("EvaluationDocument"),
            fields={"title": "A", "text": "B"},
            language_field="language",
        )
