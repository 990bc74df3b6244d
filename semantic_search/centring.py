"""Language-fair similarities for a multilingual embedder: each language's mean direction out.

A multilingual model puts something of the language into every vector: multilingual-e5-small
scores a question closer to unrelated paragraphs in its own language than to the translations
of the paragraph that answers it (pooled XQuAD, en->all Recall@10 0.66 with raw cosines). The
language part is close to a constant per language, the mean of its documents' vectors
(Libovický et al., 2020, "On the language neutrality of pre-trained multilingual
representations"), so a search compares a query ``q`` with a document ``d`` in language ``L``
as ``q·d - q·μ_L + q·μ_Q``: the document's cosine minus what its language alone contributes,
plus what the query's language contributes (``μ_Q``, or the mean of all documents when the
query's language is unknown or not indexed). Documents in the query's language keep their
cosine, and in a one-language index nothing moves.

A language with few documents has a noisy mean (its topics, not its language): means are
shrunk towards the mean of all documents, ``(n μ_L + PRIOR_DOCUMENTS μ) / (n + PRIOR_DOCUMENTS)``.
Means are per document (the mean of its chunks), so a long document counts once.

The means live in :class:`~semantic_search.models.LanguageCentroid`, one row per (model,
embedder version, language), computed by the indexer after a batch that wrote a language it
has no mean for, or once the documents it wrote since exceed ``RECOMPUTE_SHARE`` of those the
means saw; the migration computes them for an existing index. A search reads them in its own
statement (see query.py): missing means shift nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.db import connections, transaction

from .sql import SQL, compose

logger = logging.getLogger(__name__)

# Documents' worth of the all-languages mean that a language's mean is shrunk towards.
PRIOR_DOCUMENTS = 10
# Means are recomputed once the documents written since exceed this share of those they saw.
RECOMPUTE_SHARE = 0.2
# A search also scans the nearest chunks in other languages than the query's when its own
# language fills the first scan and the others hold at least this share of the documents
# (below it, the filtered scan would walk past too many of the query language's chunks).
FOREIGN_SCAN_SHARE = 0.05

_RECOMPUTE = """
WITH documents AS (
    SELECT c.language, avg(c.vector::vector) AS mean
    FROM semantic_search_chunkembedding c
    WHERE c.content_type_id = %(content_type)s AND c.embedder = %(embedder)s
      AND c.embedder_version = %(version)s
    GROUP BY c.language, c.entry_id
), languages AS (
    SELECT language, avg(mean) AS centroid, count(*) AS documents FROM documents GROUP BY language
), gone AS (
    DELETE FROM semantic_search_languagecentroid l
    WHERE l.content_type_id = %(content_type)s AND l.embedder = %(embedder)s
      AND l.embedder_version = %(version)s
      AND l.language NOT IN (SELECT language FROM languages)
)
INSERT INTO semantic_search_languagecentroid
    (content_type_id, embedder, embedder_version, language, centroid, documents, changed,
     computed_at)
SELECT %(content_type)s, %(embedder)s, %(version)s, language, centroid, documents, 0, now()
FROM languages
ON CONFLICT (content_type_id, embedder, embedder_version, language) DO UPDATE
SET centroid = EXCLUDED.centroid, documents = EXCLUDED.documents, changed = 0,
    computed_at = now()
"""

_COUNT_CHANGES = """
UPDATE semantic_search_languagecentroid SET changed = changed + %(count)s
WHERE content_type_id = %(content_type)s AND embedder = %(embedder)s
  AND embedder_version = %(version)s AND language = %(language)s
RETURNING documents, changed
"""


def recompute(content_type_id: int, embedder: str, version: str, using: str) -> None:
    """Compute the language means of one model's vectors of one embedder version."""
    params = {"content_type": content_type_id, "embedder": embedder, "version": version}
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(_RECOMPUTE, params)


def documents_written(counts: Mapping[tuple[int, str, str, str], int], using: str) -> None:
    """The indexer wrote ``counts[(content_type_id, embedder, version, language)]`` documents'
    vectors (called after its own transaction): count them against the stored means, and
    recompute the means of each (model, embedder) that has a new language or is stale."""
    stale: set[tuple[int, str, str]] = set()
    for (content_type_id, embedder, version, language), count in sorted(counts.items()):
        params = {"content_type": content_type_id, "embedder": embedder, "version": version,
                  "language": language, "count": count}
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(_COUNT_CHANGES, params)
            row = cursor.fetchone()
        if row is None or row[1] > RECOMPUTE_SHARE * max(row[0], 1):
            stale.add((content_type_id, embedder, version))
    for content_type_id, embedder, version in sorted(stale):
        recompute(content_type_id, embedder, version, using)


def shift_cte(name: SQL, query: SQL, content_type_id: int, embedder: str, version: str,
              query_language: str | None) -> SQL:
    """``name``: per language, its documents and what to add to a document's similarity to the
    query (``query``, a CTE with the query vector ``v``); the row whose language is NULL is for
    documents in a language without a mean."""
    dots = compose(
        "SELECT l.language, l.documents::float8 AS documents, -(l.centroid <#> q.v::vector) AS dot"
        " FROM semantic_search_languagecentroid l, {query} q"
        " WHERE l.content_type_id = {content_type} AND l.embedder = {embedder}"
        " AND l.embedder_version = {version}",
        query=query, content_type=content_type_id, embedder=embedder, version=version,
    )
    mean = SQL("sum(documents * dot) OVER () / nullif(sum(documents) OVER (), 0)")
    shrunk = compose("(documents * dot + {prior} * mean) / (documents + {prior})",
                     prior=float(PRIOR_DOCUMENTS))
    return compose(
        "{name} AS MATERIALIZED ("
        " WITH languages AS (SELECT language, documents, {shrunk} AS dot, mean FROM ("
        "  SELECT language, documents, dot, {mean} AS mean FROM ({dots}) d) m),"
        " reference AS (SELECT coalesce((SELECT dot FROM languages WHERE language = {language}),"
        "  (SELECT max(mean) FROM languages)) AS dot)"
        " SELECT l.language, l.documents, r.dot - l.dot AS shift FROM languages l, reference r"
        " UNION ALL SELECT NULL, NULL, r.dot - (SELECT max(mean) FROM languages)"
        " FROM reference r)",
        name=name, shrunk=shrunk, mean=mean, dots=dots, language=query_language or "",
    )
