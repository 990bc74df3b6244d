"""The demo's search page: the queryset API behind a plain form."""

from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils.safestring import mark_safe

from .models import Article

LANGUAGE_MODES = ("auto", "same", "all")
MODES = ("hybrid", "vector", "lexical")


def search(request):
    query = request.GET.get("q", "").strip()
    languages = request.GET.get("languages", "auto")
    mode = request.GET.get("mode", "hybrid")
    languages = languages if languages in LANGUAGE_MODES else "auto"
    mode = mode if mode in MODES else "hybrid"
    page = None
    route = None
    if query:
        results = Article.objects.filter(published=True).semantic_search(
            query, languages=languages, mode=mode
        )
        route = results.search_route
        page = Paginator(results, 10).get_page(request.GET.get("page"))
        for article in page.object_list:
            # search_highlight is HTML-escaped text; only <b> marks are added (snippets.py).
            article.snippet = mark_safe(article.search_highlight)
    context = {
        "query": query, "languages": languages, "mode": mode, "page": page, "route": route,
        "language_modes": LANGUAGE_MODES, "modes": MODES,
    }
    return render(request, "search.html", context)
