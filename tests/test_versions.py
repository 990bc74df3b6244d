"""Moving the index to a new model version: searches keep the embedder's results throughout."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command

from example_project.demo.models import Article
from semantic_search import embedders, indexing, versions
from semantic_search.maintenance import status
from semantic_search.models import ChunkEmbedding, SearchEntry, ServingVersion

pytestmark = pytest.mark.django_db(transaction=True)

QUERY = "Which river flows through the old valley?"
TEXTS = [
    "The river Rhine flows through a deep valley lined with castles and vineyards.",
    "A glacier carved this valley; its river still floods the meadows every spring.",
    "The old mill stands where the river bends below the village.",
    "Valleys and rivers shaped the trade routes of the medieval towns.",
]


@pytest.fixture
def new_model_folder(tmp_path) -> Path:
    """The English model again under a new path, with one more file: a new version, as a
    fine-tuned model is (the weights are the same files, linked)."""
    source = Path(embedders.resolve_model("packaged:all-MiniLM-L6-v2"))
    target = tmp_path / "english-v2"
    for item in source.rglob("*"):
        if item.is_file():
            link = target / item.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(item.resolve())
    (target / "semantic_search.json").write_text('{"trained": "test"}\n')
    return target


@pytest.fixture
def english_articles(settings, monkeypatch):
    monkeypatch.setattr(versions, "CACHE_SECONDS", 0.0)  # no process-cached serving versions
    versions.forget()
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "SYNC": True}
    articles = [Article.objects.create(title=f"River {i}", body=text, language="en")
                for i, text in enumerate(TEXTS)]
    yield articles
    embedders.reset_embedders()
    versions.forget()


def english_arm(results):
    return next(arm for arm in results._search_state.plan.vectors if arm.embedder == "english")


def versions_of(article: Article) -> set[str]:
    return set(ChunkEmbedding.objects.filter(
        object_id=str(article.pk), content_type__model="article", embedder="english"
    ).values_list("embedder_version", flat=True))


def test_searches_read_the_old_version_until_the_new_one_is_complete(
    settings, english_articles, new_model_folder
):
    content_type = ContentType.objects.get_for_model(Article)
    old = embedders.get_embedder("english").version
    results = Article.objects.semantic_search(QUERY, mode="vector", floor=False)
    found = {a.pk for a in results}
    assert english_arm(results).version == old and found >= {a.pk for a in english_articles}

    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "EMBEDDERS": {
        **settings.SEMANTIC_SEARCH["EMBEDDERS"],
        "english": {**settings.SEMANTIC_SEARCH["EMBEDDERS"]["english"],
                    "MODEL": str(new_model_folder)},
    }}
    embedders.reset_embedders()
    new = embedders.get_embedder("english").version
    assert new != old

    def search_during_the_move() -> None:
        results = Article.objects.semantic_search(QUERY, mode="vector", floor=False)
        assert english_arm(results).version == old  # queries embedded by the old model
        assert {a.pk for a in results} == found

    search_during_the_move()
    first, *rest = english_articles
    entries = {a.pk: SearchEntry.objects.get(content_type=content_type, object_id=str(a.pk))
               for a in english_articles}
    indexing.index_entries([entries[first.pk].pk])
    assert versions_of(first) == {old, new}  # the old vectors stay beside the new ones
    assert all(versions_of(article) == {old} for article in rest)
    search_during_the_move()
    assert ServingVersion.objects.get(content_type=content_type, embedder="english").version == old
    row = next(r for r in status() if (r.model, r.embedder) == ("demo.Article", "english"))
    assert (row.version, row.serving) == (new, old) and row.stale >= len(rest)

    call_command("semantic_search_reindex", "demo.Article", "--no-progress")
    assert ServingVersion.objects.get(content_type=content_type, embedder="english").version == new
    assert all(versions_of(article) == {new} for article in english_articles)
    results = Article.objects.semantic_search(QUERY, mode="vector", floor=False)
    assert english_arm(results).version == new
    assert {a.pk for a in results} == found


def test_a_model_folder_that_is_gone_serves_the_configured_version(settings, english_articles,
                                                                    caplog):
    """A serving version whose model cannot be loaded any more: searches read the configured
    version (what it has) with a warning, rather than failing."""
    content_type = ContentType.objects.get_for_model(Article)
    ServingVersion.objects.filter(content_type=content_type, embedder="english").update(
        version="/nowhere/english-v0@0123456789ab"
    )
    results = Article.objects.semantic_search(QUERY, mode="vector", floor=False)
    assert english_arm(results).version == embedders.get_embedder("english").version
    assert list(results)
    assert "cannot load" in caplog.text
