"""The demo models in the admin: saving an article here re-indexes it through the worker."""

from django.contrib import admin

from semantic_search.admin import SemanticSearchAdminMixin

from .models import Article, Topic


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    search_fields = ["name"]


@admin.register(Article)
class ArticleAdmin(SemanticSearchAdminMixin, admin.ModelAdmin):
    list_display = ["title", "language", "topic", "external_id", "published"]
    list_filter = ["language", "published", "topic"]
    autocomplete_fields = ["topic"]
