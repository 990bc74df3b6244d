"""The demo's pages, on the package's public API only:

- ``search``: results as Article objects with their snippet, document language, the detected
  query language and how it was decided, each result's "why" (``search_arms``: rank and score
  per arm) and the route; filters on topic and document language that compose with the search,
  with counts per value from one aggregate over the search; pagination; the server time.
- ``index_status`` (staff): ``semantic_search.maintenance.status()`` per model and embedder,
  and a button that runs ``semantic_search_reindex --async --wait`` (reindexing.py); the page
  polls ``index_status_json`` for progress.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlencode

from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from semantic_search import conf
from semantic_search.maintenance import status

from . import reindexing
from .models import Article, Topic

LANGUAGE_MODES = ("auto", "same", "all")
MODES = ("hybrid", "vector", "lexical")
PER_PAGE = 10
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "es": "Spanish", "ru": "Russian", "zh": "Chinese",
    "ar": "Arabic",
}
# How the query language was decided (Route.detection.method), in words.
DETECTION_METHODS = {
    "given": "given with the request",
    "script": "by its script",
    "index": "by the index: which languages' documents hold its words",
    "langdetect": "by langdetect (the index had no evidence)",
    "index-unsure": "unsure: the index could not settle it",
    "unsure": "unsure: langdetect was not confident",
    "too-short": "unsure: too short to tell",
    "undetectable": "unsure: no language detected",
    "not-allowed": "unsure: not one of the site's languages",
    "script-not-allowed": "unsure: a script none of the site's languages uses",
    "no-letters": "unsure: no letters",
}


@dataclass(frozen=True)
class Example:
    query: str
    note: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return "?" + urlencode({"q": self.query, **dict(self.params)})


EXAMPLES = (
    Example("Warum stiegen 1973 die Ölpreise so stark?",
            "cross-lingual: a German question finds the paragraph in all six languages",
            (("languages", "all"),)),
    Example("Warum stiegen 1973 die Ölpreise so stark?",
            "the same question, a filter: English articles only", (("language", "en"),)),
    Example("Wer regiert Schottland?", "a filter on the topic: Scottish Parliament",
            (("topic", "Scottish Parliament"),)),
    Example("Dampfmaschine", "a one-word query: the index decides it is German"),
    Example("Luther", "a name in every language: unsure, so every language's full text"),
    Example("Откуда у растений появились хлоропласты?", "Russian, decided by the script"),
    Example("蒸汽机的效率受什么限制？", "Chinese: bigrams for the full text, vectors for meaning"),
    Example("qwxz blorft vrummel", "no good match: no results, not the nearest nonsense"),
)


def _choice(request, name: str, options: tuple[str, ...]) -> str:
    value = request.GET.get(name, options[0])
    return value if value in options else options[0]


def _arms(route) -> list[str]:
    """The arms this route runs, in the keys ``search_arms`` uses."""
    arms = [] if route.lexical_configs == () else ["lexical"]
    return arms + [f"vector:{name}" for name in route.embedders]


def _why(article, arms: list[str]) -> list[dict]:
    found = article.search_arms or {}
    rows = []
    for arm in [*arms, *sorted(set(found) - set(arms))]:
        hit = found.get(arm) or {}
        rows.append({"arm": arm, "rank": hit.get("rank"), "score": hit.get("score")})
    return rows


_MARK = re.compile(r"</?b>")


def without_title(snippet: str, title: str) -> str:
    """The snippet minus the title it starts with (the indexed text is the title, then the
    body; the page shows the title above the snippet). ``snippet`` is escaped HTML with <b>
    marks; a mark open where the title ends is reopened."""
    plain = _MARK.sub("", snippet)
    prefixes = [p for p in {html.escape(title, quote=False), html.escape(title)} if p]
    prefix = next((p for p in prefixes if plain.startswith(p)), None)
    if prefix is None or len(plain.strip()) <= len(prefix):
        return snippet
    visible = index = 0
    marked = False
    while index < len(snippet) and visible < len(prefix):
        tag = _MARK.match(snippet, index)
        if tag:
            marked = tag.group() == "<b>"
            index = tag.end()
        else:
            visible += 1
            index += 1
    rest = snippet[index:]
    if rest.startswith("</b>"):
        rest, marked = rest[4:], False
    return ("<b>" if marked else "") + rest.lstrip()


def _facets(groups: list[dict], topic: str, language: str) -> tuple[list, list, int]:
    """Counts per topic (within the chosen language) and per language (within the chosen
    topic), and the matches under both filters, from one (topic, language) aggregate."""
    topics: dict[str, int] = {name: 0 for name in Topic.objects.values_list("name", flat=True)}
    languages: dict[str, int] = {code: 0 for code in LANGUAGE_NAMES}
    both = 0
    for group in groups:
        name, code, n = group["topic__name"] or "", group["language"], group["n"]
        if not language or code == language:
            topics[name] = topics.get(name, 0) + n
        if not topic or name == topic:
            languages[code] = languages.get(code, 0) + n
        both += n if (not topic or name == topic) and (not language or code == language) else 0
    topic_counts = sorted(topics.items(), key=lambda item: item[0])
    language_counts = [(code, LANGUAGE_NAMES.get(code, code), n) for code, n in languages.items()]
    return topic_counts, language_counts, both


def search(request):
    started = time.perf_counter()
    query = request.GET.get("q", "").strip()
    languages = _choice(request, "languages", LANGUAGE_MODES)
    mode = _choice(request, "mode", MODES)
    topic = request.GET.get("topic", "").strip()
    language = request.GET.get("language", "").strip()
    reranker = bool((conf.get("RERANKER") or {}).get("MODEL"))  # a checkbox when configured
    rerank = reranker and request.GET.get("rerank") == "1"
    context = {
        "query": query, "languages": languages, "mode": mode, "topic": topic,
        "language": language, "language_modes": LANGUAGE_MODES, "modes": MODES,
        "examples": EXAMPLES, "language_name": LANGUAGE_NAMES.get(language, language),
        "reranker": reranker, "rerank": rerank,
    }
    if query:
        context.update(_search(request, query, languages, mode, topic, language, rerank))
        params = {"q": query, "languages": languages, "mode": mode, "topic": topic,
                  "language": language, "rerank": "1" if rerank else ""}
        context["base_query"] = urlencode({k: v for k, v in params.items() if v})
    context["server_ms"] = (time.perf_counter() - started) * 1000
    return render(request, "demo/search.html", context)


def _fusion_text() -> str:
    if conf.get("FUSION") == "rrf":
        return "reciprocal rank fusion of the arms' ranks"
    weights = conf.get("WEIGHTS")
    return (
        f"each arm's scores min-max normalized, weighted (lexical {weights['lexical']}, "
        f"vectors {weights['vector']}) and divided by the weight of the arms that can see "
        "this document"
    )


def _search(request, query, languages, mode, topic, language, rerank) -> dict:
    timer = time.perf_counter()
    results = Article.objects.filter(published=True).semantic_search(
        query, languages=languages, mode=mode, rerank=rerank
    )
    route = results.search_route
    # One aggregate over the search (before the facet filters) gives every count.
    groups = list(results.order_by().values("topic__name", "language").annotate(n=Count("pk")))
    topic_counts, language_counts, total = _facets(groups, topic, language)
    counts_ms = (time.perf_counter() - timer) * 1000
    timer = time.perf_counter()
    filtered = results
    if topic:
        filtered = filtered.filter(topic__name=topic)
    if language:
        filtered = filtered.filter(language=language)
    paginator = Paginator(filtered.select_related("topic"), PER_PAGE)
    if not (topic or language):
        paginator.count = total  # exact: the aggregate ran over this very search
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)  # the page's rows: one more search statement
    page_ms = (time.perf_counter() - timer) * 1000
    timer = time.perf_counter()
    arms = _arms(route) if route else []
    for article in page.object_list:
        # search_highlight is HTML-escaped text; only <b> marks are added (snippets.py).
        article.snippet = mark_safe(without_title(str(article.search_highlight), article.title))
        article.why = _why(article, arms)
    snippets_ms = (time.perf_counter() - timer) * 1000
    detection = route.detection if route else None
    query_language = route.language if route else None
    return {
        "page": page, "route": route, "arms": arms, "detection": detection,
        "query_language_name": LANGUAGE_NAMES.get(query_language, query_language),
        "detection_text": DETECTION_METHODS.get(detection.method, detection.method)
        if detection else "",
        "topic_counts": topic_counts, "language_counts": language_counts,
        "counts_ms": counts_ms, "page_ms": page_ms, "snippets_ms": snippets_ms,
        "fusion_text": _fusion_text(),
    }


@dataclass
class _Model:
    label: str
    objects: int
    done: int
    pending: int
    missing: int
    failed: int


def _row(row) -> dict:
    app_label, _, model_name = row.model.partition(".")
    version_name, _, version_hash = row.version.rpartition("@")
    return {**asdict(row), "app_label": app_label, "model_name": model_name,
            "version_name": version_name or version_hash,
            "version_hash": version_hash if version_name else ""}


def _status_payload() -> dict:
    run = reindexing.current()
    snapshot = run.snapshot() if run else None  # before the counts: "finished" shows final ones
    timer = time.perf_counter()
    rows = status()
    models: dict[str, _Model] = {}
    for row in rows:
        models.setdefault(row.model, _Model(
            row.model, row.objects, max(row.objects - row.pending - row.missing - row.failed, 0),
            row.pending, row.missing, row.failed,
        ))
    return {
        "rows": [_row(row) for row in rows], "models": [asdict(m) for m in models.values()],
        "run": snapshot,
        "status_ms": round((time.perf_counter() - timer) * 1000, 1),
    }


@staff_member_required
def index_status(request):
    payload = _status_payload()
    return render(request, "demo/status.html", {**payload, "status_url": reverse("status-json")})


@staff_member_required
def index_status_json(request):
    return JsonResponse(_status_payload())


@staff_member_required
@require_POST
def reindex(request):
    run, started = reindexing.start(force=request.POST.get("force") == "1")
    if request.headers.get("accept", "").startswith("application/json"):
        return JsonResponse({"started": started, "run": run.snapshot()})
    return redirect("status")
