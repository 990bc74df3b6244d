"""Per-embedder HNSW indexes on the shared chunk table.

pgvector indexes need a fixed dimension, and one table holds vectors of several embedders, so
each (embedder, version) gets a partial expression index::

    CREATE INDEX ... USING hnsw ((vector::vector(384)) vector_cosine_ops)
        WHERE embedder = 'multilingual' AND embedder_version = '...'

Queries use the same expression and predicate (see :func:`vector_expression`), so the planner
picks the index; a model change gets a new index and never mixes vector spaces.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction
from django.db.models.signals import post_migrate

from . import conf
from .embedders import get_embedder

logger = logging.getLogger(__name__)

INDEX_PREFIX = "semantic_search_hnsw_"
TABLE = "semantic_search_chunkembedding"


@dataclass(frozen=True)
class VectorIndex:
    embedder: str
    version: str
    dimension: int

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.embedder.lower())[:20]
        digest = hashlib.sha1(f"{self.embedder}\0{self.version}".encode()).hexdigest()[:10]
        return f"{INDEX_PREFIX}{slug}_{self.dimension}_{digest}"

    def create_sql(self, quote) -> tuple[str, list[str]]:
        sql = (
            f"CREATE INDEX IF NOT EXISTS {quote(self.name)} ON {quote(TABLE)} "
            f"USING hnsw ((vector::vector({self.dimension})) vector_cosine_ops) "
            f"WHERE embedder = %s AND embedder_version = %s"
        )
        return sql, [self.embedder, self.version]


def vector_expression(dimension: int) -> str:
    """The indexed expression, to be used verbatim by queries."""
    return f"vector::vector({int(dimension)})"


def expected_indexes(using: str = "default") -> list[VectorIndex]:
    """An index per configured embedder version, and per earlier version that some model's
    searches still read while the index moves to the configured one (versions.py)."""
    indexes = []
    for spec in conf.embedder_specs():
        embedder = get_embedder(spec.name)
        indexes.append(VectorIndex(spec.name, embedder.version, int(embedder.dimension)))
    for name, version in _serving_versions(using):
        if name in {index.embedder for index in indexes} and version not in {
            index.version for index in indexes if index.embedder == name
        }:
            try:
                dimension = int(get_embedder(name, version).dimension)
            except (ImproperlyConfigured, OSError):
                continue  # searches read the configured version (versions.serving_version)
            indexes.append(VectorIndex(name, version, dimension))
    return indexes


def _serving_versions(using: str) -> list[tuple[str, str]]:
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute("SELECT DISTINCT embedder, version FROM semantic_search_servingversion")
            return cursor.fetchall()
    except DatabaseError:  # before the migration that creates the table
        return []


def ensure_vector_indexes(using: str = "default", drop_unused: bool = True) -> list[str]:
    """Create the missing HNSW indexes of the configured embedders; drop retired ones.

    Returns the names of the indexes created.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    wanted = {index.name: index for index in expected_indexes(using)}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
            [TABLE, INDEX_PREFIX + "%"],
        )
        present = {row[0] for row in cursor.fetchall()}
        created = []
        for name, index in wanted.items():
            if name not in present:
                sql, params = index.create_sql(quote)
                cursor.execute(sql, params)
                created.append(name)
                logger.info("created HNSW index %s", name)
        if drop_unused:
            for name in present - set(wanted):
                cursor.execute(f"DROP INDEX IF EXISTS {quote(name)}")
                logger.info("dropped retired HNSW index %s", name)
    return created


def _after_migrate(sender, using: str = "default", **kwargs) -> None:
    ensure_vector_indexes(using=using)


def connect_index_maintenance(app_config) -> None:
    """Keep the HNSW indexes in step with the settings after every ``migrate``."""
    post_migrate.connect(_after_migrate, sender=app_config, dispatch_uid="semantic_search_hnsw")
