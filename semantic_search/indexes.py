"""Per-embedder HNSW indexes on the shared chunk table.

Vectors are stored as ``halfvec`` (16-bit floats: half the bytes of ``vector``, no measurable
loss, see the README). pgvector indexes need a fixed dimension, and one table holds vectors of
several embedders, so each (embedder, version) gets a partial expression index::

    CREATE INDEX ... USING hnsw ((vector::halfvec(384)) halfvec_cosine_ops)
        WHERE embedder = 'multilingual' AND embedder_version = '...'

or, with ``"INDEX": "binary"`` in the embedder's settings, an index of the vectors' signs
(``binary_quantize(vector)::bit(384)``, Hamming distance: 1 bit per dimension), whose nearest
``RESCORE`` times as many chunks are re-ranked by their stored vectors (see
:func:`nearest_chunks`). Queries use the same expression and predicate, so the planner picks the
index; a model change gets a new index and never mixes vector spaces.
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
from .sql import SQL, compose
from .vector_params import vector_param

logger = logging.getLogger(__name__)

INDEX_PREFIX = "semantic_search_hnsw_"
TABLE = "semantic_search_chunkembedding"


HALF = "halfvec"  # HNSW on the stored 16-bit vectors, cosine distance (the default)
BINARY = "binary"  # HNSW on their signs, Hamming distance, re-scored on the stored vectors
INDEX_KINDS = (HALF, BINARY)
DEFAULT_RESCORE = 16  # binary index: chunks read per chunk kept, re-ranked by cosine (README)


def index_kind(embedder: str) -> str:
    """The kind of index an embedder's settings ask for (``"INDEX"``, default halfvec)."""
    kind = conf.embedder_spec(embedder).options.get("INDEX", HALF)
    if kind not in INDEX_KINDS:
        raise ImproperlyConfigured(
            f"SEMANTIC_SEARCH['EMBEDDERS'][{embedder!r}]['INDEX'] must be one of "
            f"{', '.join(map(repr, INDEX_KINDS))}, got {kind!r}."
        )
    return kind


def rescore_factor(embedder: str) -> int:
    """Chunks a binary index scan reads per chunk it keeps (``"RESCORE"``, default 16)."""
    factor = conf.embedder_spec(embedder).options.get("RESCORE", DEFAULT_RESCORE)
    if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= 100:
        raise ImproperlyConfigured(
            f"SEMANTIC_SEARCH['EMBEDDERS'][{embedder!r}]['RESCORE'] must be an integer "
            f"from 1 to 100, got {factor!r}."
        )
    return factor


@dataclass(frozen=True)
class VectorIndex:
    embedder: str
    version: str
    dimension: int
    kind: str = HALF

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.embedder.lower())[:20]
        key = f"{self.embedder}\0{self.version}\0{self.kind}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        return f"{INDEX_PREFIX}{slug}_{self.dimension}_{digest}"

    def create_sql(self, quote) -> tuple[str, list[str]]:
        if self.kind == BINARY:
            method = f"(({binary_expression(self.dimension)}) bit_hamming_ops)"
        else:
            method = f"(({vector_expression(self.dimension)}) halfvec_cosine_ops)"
        sql = (
            f"CREATE INDEX IF NOT EXISTS {quote(self.name)} ON {quote(TABLE)} "
            f"USING hnsw {method} WHERE embedder = %s AND embedder_version = %s"
        )
        return sql, [self.embedder, self.version]


def vector_expression(dimension: int) -> str:
    """The stored vector at its dimension: what cosine distances are computed on (and the
    expression of the halfvec index), to be used verbatim by queries."""
    return f"vector::halfvec({int(dimension)})"


def binary_expression(dimension: int) -> str:
    """The expression of the binary index: one bit per dimension, its sign."""
    return f"binary_quantize(vector)::bit({int(dimension)})"


def query_vector(vector, dimension: int) -> SQL:
    """A query vector as a ``halfvec(dimension)`` value (sent as a ``vector`` parameter, in
    binary when the connection binds parameters on the server, see vector_params.py)."""
    return compose("{vector}::halfvec({dimension})", vector=vector_param(vector),
                   dimension=SQL(str(int(dimension))))


def nearest_chunks(select: SQL, where: SQL, query: SQL, dimension: int, limit: int,
                   kind: str = HALF, rescore: int = DEFAULT_RESCORE) -> SQL:
    """``SELECT {select} FROM`` the chunks ``c`` that pass ``where``, the ``limit`` nearest to
    ``query`` (a halfvec expression) by cosine distance, through the embedder's index.

    ``select`` must include ``distance`` (the cosine distance to ``query``). On a binary index
    the scan reads the ``rescore * limit`` nearest by Hamming distance and keeps the
    ``limit`` nearest of those by cosine."""
    if kind != BINARY:
        return compose(
            "SELECT {select} FROM semantic_search_chunkembedding c WHERE {where}"
            " ORDER BY distance LIMIT {limit}", select=select, where=where, limit=limit)
    return compose(
        "SELECT * FROM (SELECT {select} FROM semantic_search_chunkembedding c WHERE {where}"
        " ORDER BY {bits} <~> binary_quantize({query})::bit({dimension})"
        " LIMIT {wide}) rescored ORDER BY distance LIMIT {limit}",
        select=select, where=where, bits=SQL(binary_expression(dimension)), query=query,
        dimension=SQL(str(int(dimension))), wide=limit * rescore, limit=limit,
    )


def expected_indexes(using: str = "default") -> list[VectorIndex]:
    """An index per configured embedder version, and per earlier version that some model's
    searches still read while the index moves to the configured one (versions.py)."""
    indexes = []
    for spec in conf.embedder_specs():
        embedder = get_embedder(spec.name)
        indexes.append(VectorIndex(spec.name, embedder.version, int(embedder.dimension),
                                   index_kind(spec.name)))
    for name, version in _serving_versions(using):
        if name in {index.embedder for index in indexes} and version not in {
            index.version for index in indexes if index.embedder == name
        }:
            try:
                dimension = int(get_embedder(name, version).dimension)
            except (ImproperlyConfigured, OSError):
                continue  # searches read the configured version (versions.serving_version)
            indexes.append(VectorIndex(name, version, dimension, index_kind(name)))
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
