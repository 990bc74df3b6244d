"""The admin's own search box, ranked by meaning.

    @admin.register(Article)
    class ArticleAdmin(SemanticSearchAdminMixin, admin.ModelAdmin):
        list_filter = ["language"]

The changelist's filters, permissions and pagination keep working; results are ordered by
relevance unless the user sorts by a column, and a "relevance" column shows the score. A search
never runs a full-table ``COUNT(*)`` or an ``icontains`` scan.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR, SEARCH_VAR, ChangeList
from django.http import HttpRequest

from .queryset import search
from .registry import get_registration


class SemanticSearchAdminMixin:
    """Mix into a ``ModelAdmin`` of a registered model, before ``admin.ModelAdmin``."""

    semantic_search_options: dict = {}  # e.g. {"languages": "all", "mode": "hybrid"}
    show_full_result_count = False  # the full count is a COUNT(*) over the whole table
    search_help_text = "Searches by meaning, in any language."

    def get_search_fields(self, request: HttpRequest):
        # Non-empty so the admin shows the search box; our get_search_results ignores them.
        return tuple(get_registration(self.model).fields)

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        if not search_term.strip():
            return queryset, False
        results = search(queryset, search_term, **self.semantic_search_options)
        if request.GET.get(ORDER_VAR) and queryset.query.order_by:
            # The user sorted by a column (Django < 6 orders before searching): keep it.
            results = results.order_by(*queryset.query.order_by)
        return results, False

    def get_changelist(self, request: HttpRequest, **kwargs):
        return SemanticSearchChangeList

    def get_list_display(self, request: HttpRequest):
        columns = list(super().get_list_display(request))
        if _is_searching(request) and "search_relevance" not in columns:
            columns.append("search_relevance")
        return columns

    @admin.display(description="relevance", ordering="-search_score")
    def search_relevance(self, obj) -> str:
        score = getattr(obj, "search_score", None)
        return "" if score is None else f"{score:.4f}"


class SemanticSearchChangeList(ChangeList):
    """Orders a search by relevance unless the user sorts by a column."""

    def get_ordering(self, request: HttpRequest, queryset):
        ordering = super().get_ordering(request, queryset)
        searched = "search_score" in queryset.query.annotations
        if searched and not self.params.get(ORDER_VAR):
            return ["-search_score", *ordering]
        return ordering


def _is_searching(request: HttpRequest) -> bool:
    return bool(request.GET.get(SEARCH_VAR, "").strip())
