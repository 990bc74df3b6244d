"""Existing installs move their float32 vectors to halfvec without losing or mixing them."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db


def _column_type() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'semantic_search_chunkembedding'::regclass AND attname = 'vector'")
        return cursor.fetchone()[0]


def _hnsw_definitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes"
                       " WHERE indexname LIKE 'semantic_search_hnsw_%'")
        return [row[0] for row in cursor.fetchall()]


def test_the_migration_converts_float_vectors_in_place_and_rebuilds_the_indexes():
    from django.contrib.contenttypes.models import ContentType

    from semantic_search.models import SearchEntry

    call_command("migrate", "semantic_search", "0011", verbosity=0)  # the float32 schema
    assert _column_type() == "vector"
    content_type = ContentType.objects.get_for_model(SearchEntry)
    vectors = np.random.default_rng(7).normal(size=(3, 384)).astype(np.float32)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for i, vector in enumerate(vectors):
            cursor.execute(
                "INSERT INTO semantic_search_searchentry (content_type_id, object_id, revision,"
                " state, language, search_config, text_hash, attempts, last_error, changed_at)"
                " VALUES (%s, %s, 1, 'indexed', 'en', 'english', '', 0, '', now()) RETURNING id",
                [content_type.id, f"m{i}"])
            entry = cursor.fetchone()[0]
            cursor.execute(
                "INSERT INTO semantic_search_chunkembedding (entry_id, content_type_id,"
                " object_id, language, embedder, embedder_version, chunk, text_hash, start,"
                ' "end", vector) VALUES (%s, %s, %s, \'en\', \'old\', \'v1\', 0, \'\', 0, 0, %s)',
                [entry, content_type.id, f"m{i}", str(vector.tolist())])

    call_command("migrate", "semantic_search", verbosity=0)  # rolled back with the test

    assert _column_type() == "halfvec"
    with connection.cursor() as cursor:
        cursor.execute("SELECT object_id, vector::text FROM semantic_search_chunkembedding"
                       " WHERE embedder = 'old' ORDER BY object_id")
        stored = {object_id: np.array(text[1:-1].split(","), dtype=np.float32)
                  for object_id, text in cursor.fetchall()}
    assert sorted(stored) == ["m0", "m1", "m2"]
    for i, vector in enumerate(vectors):  # each value rounded to 16 bits, nothing else
        expected = vector.astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(stored[f"m{i}"], expected, rtol=1e-3)
    definitions = _hnsw_definitions()
    assert definitions and all("halfvec_cosine_ops" in d for d in definitions), definitions
