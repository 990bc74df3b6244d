"""The admin's own search box, ranked by meaning.

    @admin.register(Article)
    class ArticleAdmin(SemanticSearchAdminMixin, admin.ModelAdmin):
        list_filter = ["language"]

The changelist's filters, permissions and pagination keep working; a search is ordered by
relevance (its "relevance" column is marked as the sort) unless the user sorts by a column,
relevance included. A search never runs a full-table ``COUNT(*)`` or an ``icontains`` scan.

Django's changelist applies its ordering before it calls ``get_search_results()`` (5.2), when
the relevance annotation does not exist yet; :class:`SemanticSearchChangeList` therefore keeps
the relevance keys out of that first ordering and applies the full ordering once the search
has run, which holds whichever order a Django version uses.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR, SEARCH_VAR, ChangeList
from django.db.models import F, OrderBy
from django.http import HttpRequest

from .queryset import search
from .registry import get_registration

RELEVANCE_COLUMN = "search_relevance"
SCORE = "search_score"


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
            # The user sorted by a column (SemanticSearchChangeList re-applies relevance keys).
            results = results.order_by(*queryset.query.order_by)
        return results, False

    def get_changelist(self, request: HttpRequest, **kwargs):
        return SemanticSearchChangeList

    def get_list_display(self, request: HttpRequest):
        columns = list(super().get_list_display(request))
        if _is_searching(request) and RELEVANCE_COLUMN not in columns:
            columns.append(RELEVANCE_COLUMN)
        return columns

    @admin.display(description="relevance", ordering=f"-{SCORE}")
    def search_relevance(self, obj) -> str:
        score = getattr(obj, SCORE, None)
        return "" if score is None else f"{score:.4f}"


class SemanticSearchChangeList(ChangeList):
    """Orders a search by relevance unless the user sorts by a column."""

    def get_ordering(self, request: HttpRequest, queryset) -> list:
        ordering = super().get_ordering(request, queryset)
        if not self._searching():
            return [key for key in ordering if not _is_relevance(key)]
        if not self.params.get(ORDER_VAR):
            ordering = [f"-{SCORE}", *(key for key in ordering if not _is_relevance(key))]
        self.search_ordering = ordering
        if SCORE in queryset.query.annotations:
            return ordering
        # Not searched yet: ordering by the score would fail; it is applied after the search.
        return [key for key in ordering if not _is_relevance(key)]

    def get_queryset(self, request: HttpRequest, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        if self._searching() and SCORE in queryset.query.annotations:
            queryset = queryset.order_by(*self.search_ordering)
        return queryset

    def get_ordering_field_columns(self) -> dict[int, str]:
        """The sort markers of the column headers: relevance while a search is unsorted."""
        if self._searching() and ORDER_VAR not in self.params:
            if RELEVANCE_COLUMN in self.list_display:
                return {list(self.list_display).index(RELEVANCE_COLUMN): "desc"}
            return {}
        return super().get_ordering_field_columns()

    def _searching(self) -> bool:
        return bool(self.query.strip())


def _is_relevance(key) -> bool:
    if isinstance(key, str):
        return key.lstrip("-") == SCORE
    if isinstance(key, OrderBy):
        key = key.expression
    return isinstance(key, F) and key.name == SCORE


def _is_searching(request: HttpRequest) -> bool:
    return bool(request.GET.get(SEARCH_VAR, "").strip())
