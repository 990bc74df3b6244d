"""What a newcomer does with the catalogue from a script, through the ORM and the admin.

    python scenario.py create   # languages, authors and books, saved one by one
    python scenario.py search   # ORM searches and the admin's changelist; prints one JSON line

``search`` prints one JSON object on its last line: the facts tests/test_newcomer.py checks.
Each admin step is recorded separately (an exception becomes its "error"), so one broken step
does not hide the others.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
BOOKS_FILE = HERE / "catalogue" / "books.json"

# A German question about the division of Germany. The German book on it ("Die Grenze mitten
# durchs Land") shares no keyword with it: it can only be found by meaning.
QUERY = "Wie kam es nach dem Zweiten Weltkrieg zur Teilung Deutschlands?"
TOPIC = "divided-germany"
NONSENSE = "qwxz blorft vrummel"
# Two-word queries (what people type in a search box): the words of the first two occur only
# in German and French books; the last, in none.
SHORT_QUERIES = {"Siegermächte Besatzungszonen": "de", "rideau guerre": "fr",
                 "Schrodinger zebra": None}


ENVIRONMENT_BEFORE = dict(os.environ)


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newcomer_site.settings")
    import django

    django.setup()


def environment_changes() -> list[str]:
    """Hugging Face variables set or changed in this process since it started (torch and
    Django set others of their own). The package must leave the host's settings alone."""
    prefixes = ("HF_", "HUGGINGFACE", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS", "TOKENIZERS_")
    return sorted(
        key for key, value in os.environ.items()
        if key.startswith(prefixes) and ENVIRONMENT_BEFORE.get(key) != value
    )


def create() -> dict:
    from catalogue.models import Author, Book, Language

    data = json.loads(BOOKS_FILE.read_text(encoding="utf-8"))
    languages = {
        item["code"]: Language.objects.create(code=item["code"], name=item["name"])
        for item in data["languages"]
    }
    for item in data["books"]:
        author, _ = Author.objects.get_or_create(name=item["author"])
        Book.objects.create(
            title=item["title"],
            summary=item["summary"],
            author=author,
            language=languages[item["language"]],
        )
    return {
        "languages": Language.objects.count(),
        "authors": Author.objects.count(),
        "books": Book.objects.count(),
    }


def _book(book) -> dict:
    return {
        "id": book.pk,
        "title": book.title,
        "language": book.language.code,
        "score": getattr(book, "search_score", None),
        "lexical": getattr(book, "search_lexical_score", None),
        "vector": getattr(book, "search_vector_score", None),
    }


def _step(function) -> dict:
    try:
        return function()
    except Exception:  # noqa: BLE001  (recorded for the test to report)
        return {"error": traceback.format_exc()}


def search() -> dict:
    from catalogue.models import Book, Language
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    import semantic_search

    setup_test_environment()  # response.context

    def orm(queryset, query: str) -> dict:
        results = semantic_search.search(queryset, query).select_related("language", "author")
        books = list(results)
        return {
            "query": query,
            "count": len(books),
            "results": [{**_book(book), "snippet": str(book.search_highlight),
                         "text": "\n\n".join([book.title, book.summary, book.author.name])}
                        for book in books],
            "route": books[0].search_route if books else None,
            "query_language": books[0].search_language if books else None,
        }

    facts: dict = {
        "semantic_search_file": semantic_search.__file__,
        "query": QUERY,
        "topic": TOPIC,
    }
    facts["orm"] = _step(lambda: orm(Book.objects.all(), QUERY))
    facts["orm_french"] = _step(lambda: orm(Book.objects.filter(language__code="fr"), QUERY))
    facts["nonsense"] = _step(lambda: orm(Book.objects.all(), NONSENSE))

    def short_queries() -> dict:
        routes = {}
        for query in SHORT_QUERIES:
            route = semantic_search.search(Book.objects.all(), query).search_route
            routes[query] = {"language": route.language, "method": route.detection.method}
        return routes

    facts["short_queries"] = _step(short_queries)

    user = get_user_model().objects.create_superuser("newcomer", "newcomer@example.com", "pw")
    client = Client()
    client.force_login(user)
    url = "/admin/catalogue/book/"

    def changelist(**params) -> dict:
        response = client.get(f"{url}?{urlencode(params)}")
        page = {"params": params, "status": response.status_code}
        context = response.context
        if context is None or "cl" not in context:
            page["body"] = response.content.decode(errors="replace")[:2000]
            return page
        cl = context["cl"]
        page["list_display"] = list(cl.list_display)
        page["ordering_columns"] = {str(k): v for k, v in cl.get_ordering_field_columns().items()}
        page["results"] = [_book(book) for book in cl.result_list]
        return page

    def relevance_sorted() -> dict:
        columns = changelist(q=QUERY).get("list_display", [])
        if "search_relevance" not in columns:
            return {"error": f"no search_relevance column in list_display {columns}"}
        return changelist(q=QUERY, o=columns.index("search_relevance"))

    def title_sorted() -> dict:
        page = changelist(q=QUERY, o=1)
        ids = [row["id"] for row in page.get("results", [])]
        # The database's collation decides the order of titles such as "Échec et mat".
        page["titles_in_database_order"] = list(
            Book.objects.filter(pk__in=ids).order_by("title").values_list("title", flat=True)
        )
        return page

    french = Language.objects.get(code="fr")
    facts["admin_search"] = _step(lambda: changelist(q=QUERY))
    facts["admin_relevance_sort"] = _step(relevance_sorted)
    facts["admin_title_sort"] = _step(title_sorted)
    facts["admin_filter"] = _step(lambda: changelist(q=QUERY, language__id__exact=french.pk))
    facts["french_language_id"] = french.pk
    facts["environment_changes"] = environment_changes()
    return facts


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in {"create", "search"}:
        print(__doc__, file=sys.stderr)
        return 2
    setup()
    facts = create() if argv[1] == "create" else search()
    print(json.dumps(facts, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
