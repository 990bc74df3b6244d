from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "example_project.demo"
    label = "demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import semantic_search

        from .models import Article

        semantic_search.register(
            Article, fields={"title": "A", "body": "B"}, language_field="language"
        )
