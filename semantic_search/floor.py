"""The relevance floor: which candidates are a match at all.

Nearest-neighbour search always returns neighbours, so without a floor every query, nonsense
included, lists the whole table. A candidate is kept when it is a keyword match (the lexical
arm found one of the query's lexemes in it) or a match by meaning in some vector arm:

- the query must mean something here: the model's index knows at least one of its words (in
  any of the configurations it holds; a query in Chinese, Japanese or Thai, whose words cannot
  be looked up, counts as known), or, for a query none of whose words it knows (nonsense, or
  another language than the documents'), the query *stands out* in that arm: its best
  similarity exceeds its *background* (the median similarity of its ``2 x candidates`` nearest
  chunks: the similarity at the candidate depth in a large model, the typical similarity in a
  small one) by at least the *gate*, the largest such contrast that a fixed set of 128 nonsense
  queries (random letters and pronounceable pseudo-words, one to four "words") reaches in the
  same vectors;
- and the candidate must lie in the upper part of the query's contrast among what the search
  can return: similarity >= background + ``FLOOR_RELATIVE`` x (best - background), with best
  and background taken the same way over the arm's own candidates (under a queryset filter or
  a language restriction, the nearest chunks that pass them), not over the model's vectors:
  documents a filter excludes must not set the bar for those it keeps (an English question
  filtered to Chinese results lost its Chinese paragraph below the English ones, a filter
  keeping 1% of 100,000 objects kept almost nothing).

In a multilingual model's arm the similarities are the language-centred ones a search ranks by
(centring.py), best and background included, so a translation is held to the same bar as a
paragraph in the query's language.

Known words first, because in a dense domain the gate alone cannot tell a real question from
nonsense: E5 gives 44% of SciFact's claims less contrast than the most contrasted of 32 nonsense
queries (bench/results/floor-study.txt), and gating them dropped vector-only nDCG@10 from 0.66
to 0.43 (bench_floor.py, first run).

Contrasts, not absolute similarities, because absolute levels mean nothing across models and
languages: E5 puts nonsense at 0.84 against SciFact abstracts, above many relevant ones, and a
Chinese query sits ~0.05 higher against Chinese text than a German one against German text;
the query's own contrast cancels both. The gate is calibrated on the model's own vectors, so it
follows the corpus (a 16-book catalogue and 5,000 abstracts get different gates) and needs no
threshold per embedding model. Measured on SciFact and XQuAD (README, Measurements; the gate
came from bench/floor_study.py, the relative share of 0.1 from bench_floor.py: 0.3 cut pooled
cross-language Recall@10 by 0.06-0.13, because E5 ranks other languages' translations low within
a query's contrast; 0.1 cut nothing of it).

A calibration (128 HNSW scans: ~0.7 s on SciFact's 5,000 abstracts) is stored in
:class:`~semantic_search.models.FloorCalibration` and shared by all processes. After each batch
the indexer recalibrates when the vectors written since, or the change in their number, exceed a
fifth of those the calibration saw (or there is none yet), so a search measures it only when
the stored one is missing or stale. Deletions alone are noticed at the next batch.

``semantic_search(..., floor=False)`` or ``"FLOOR": False`` turns the floor off.
"""

from __future__ import annotations

import logging
import random
import string
import threading
import time

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connections, router, transaction

from . import conf
from .embedders import get_embedder
from .indexes import index_kind, nearest_chunks, rescore_factor, vector_expression
from .models import FloorCalibration
from .sql import SQL, compose, join

PROBE_COUNT = 128


_CONSONANTS, _VOWELS = "bcdfghklmnprstvwz", "aeiou"


def nonsense_probes(count: int = PROBE_COUNT, seed: int = 20261201) -> tuple[str, ...]:
    """Deterministic queries that mean nothing, 1-4 "words" each: half of random letters
    ("qwxzt"), half pronounceable ("vorbalek"), the two shapes nonsense typed by people has."""
    rng = random.Random(seed)

    def letters() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))

    def syllables() -> str:
        return "".join(
            rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
            + (rng.choice(_CONSONANTS) if rng.random() < 0.5 else "")
            for _ in range(rng.randint(1, 3))
        )

    return tuple(
        " ".join((letters if index % 2 else syllables)() for _ in range(rng.randint(1, 4)))
        for index in range(count)
    )


def reference_depth(candidates: int) -> int:
    """How many nearest chunks the background level is read at (the vector arm's own scan)."""
    return 2 * int(candidates)


_lock = threading.Lock()
_probe_vectors: dict[tuple[str, str], list[str]] = {}
_gates: dict[tuple, tuple[float, float | None]] = {}

# Seconds a process keeps a stored gate before reading it again (a worker may recalibrate).
GATE_CACHE_SECONDS = 60
# A calibration is stale once the vectors written since exceed this share of those it saw.
RECALIBRATE_SHARE = 0.2

logger = logging.getLogger(__name__)


def _probe_literals(embedder_name: str, version: str | None = None) -> list[str]:
    """The probes' query vectors as pgvector literals, per embedder version."""
    embedder = get_embedder(embedder_name, version)
    key = (embedder_name, embedder.version)
    with _lock:
        cached = _probe_vectors.get(key)
    if cached is None:
        vectors = embedder.encode_queries(list(nonsense_probes()))
        cached = ["[" + ",".join(repr(float(x)) for x in row) + "]" for row in vectors]
        with _lock:
            _probe_vectors[key] = cached
    return cached


def _own_vectors(content_type_id: int, embedder_name: str, version: str | None = None) -> SQL:
    """The condition on ``c`` (chunk embeddings) for this model's vectors of this embedder."""
    return compose(
        "c.embedder = {name} AND c.embedder_version = {version}"
        " AND c.content_type_id = {content_type}",
        name=embedder_name, version=get_embedder(embedder_name, version).version,
        content_type=content_type_id,
    )


def _calibration_sql(
    content_type_id: int, embedder_name: str, depth: int, version: str | None = None
) -> SQL:
    """The largest contrast (nearest similarity - median similarity of the ``depth`` nearest
    chunks) of the probes, and how many vectors the model has in this embedder."""
    embedder = get_embedder(embedder_name, version)
    dimension = SQL(str(int(embedder.dimension)))
    expression = SQL(vector_expression(int(embedder.dimension)))
    probes = join(", ", (
        compose("({vector}::halfvec({dimension}))", vector=literal, dimension=dimension)
        for literal in _probe_literals(embedder_name, version)
    ))
    own = _own_vectors(content_type_id, embedder_name, version)
    nearest = nearest_chunks(
        compose("1 - ({expression} <=> p.v) AS s, {expression} <=> p.v AS distance",
                expression=expression),
        own, SQL("p.v"), int(embedder.dimension), depth, index_kind(embedder_name),
        rescore_factor(embedder_name),
    )
    return compose(
        "SELECT (SELECT max(contrast) FROM (VALUES {probes}) AS p(v) CROSS JOIN LATERAL ("
        " SELECT max(s) - percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS contrast FROM ("
        "  {nearest}) nearest) probe),"
        " (SELECT count(*) FROM semantic_search_chunkembedding c WHERE {own})",
        probes=probes, nearest=nearest, own=own,
    )


_STORE = """
INSERT INTO semantic_search_floorcalibration
    (content_type_id, embedder, embedder_version, depth, gate, vectors, changed, computed_at)
VALUES (%s, %s, %s, %s, %s, %s, 0, now())
ON CONFLICT (content_type_id, embedder, embedder_version, depth) DO UPDATE
SET gate = EXCLUDED.gate, vectors = EXCLUDED.vectors, changed = 0, computed_at = now()
"""


def calibrate(
    content_type_id: int, embedder_name: str, depth: int, using: str, version: str | None = None
) -> float | None:
    """Measure the gate of this embedder's vectors of this model at ``depth`` and store it.
    Measured on a read-only server (a streaming replica, as a search routed to one does), it
    is stored on the router's write database for the model (the primary: the replica reads it
    back once replayed); where that is the same server, or fails, this process keeps it."""
    embedder = get_embedder(embedder_name, version)
    query = _calibration_sql(content_type_id, embedder_name, depth, version)
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        # The same scan settings as a search's vector arm (see query.py).
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true),"
                       " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                       " set_config('hnsw.max_scan_tuples', %s, true),"
                       " pg_is_in_recovery() OR current_setting('transaction_read_only')::bool",
                       [str(max(int(conf.get("EF_SEARCH")), depth // 2)),
                        str(int(conf.get("MAX_SCAN_TUPLES")))])
        read_only = cursor.fetchone()[-1]
        cursor.execute(query.sql, query.params)
        gate, vectors = cursor.fetchone()
    gate = None if gate is None else float(gate)
    target = _write_database(content_type_id, using) if read_only else using
    try:
        if target is not None:
            with transaction.atomic(using=target), connections[target].cursor() as cursor:
                cursor.execute(_STORE, [content_type_id, embedder_name, embedder.version, depth,
                                        gate, vectors])
    except DatabaseError as error:
        logger.debug("Relevance floor calibration not stored (%s)", error)
    with _lock:
        _gates[(using, content_type_id, embedder_name, embedder.version, depth)] = (
            time.monotonic(), gate)
    return gate


def _write_database(content_type_id: int, using: str) -> str | None:
    """Where a calibration measured on the read-only ``using`` is stored: the router's write
    database for the searched model, whose database holds the app's rows of it (None: that is
    ``using`` itself)."""
    model = ContentType.objects.db_manager(using).get_for_id(content_type_id).model_class()
    target = router.db_for_write(model or FloorCalibration)
    return None if target == using else target


def _is_stale(vectors: int, changed: int) -> bool:
    return changed > RECALIBRATE_SHARE * max(vectors, 1)


def vector_gate(
    content_type_id: int, embedder_name: str, candidates: int, using: str,
    version: str | None = None,
) -> float | None:
    """The contrast a query must reach in this embedder's vectors of this model for its vector
    hits to count as matches (None: nothing indexed yet). Read from the stored calibration;
    measured here only when there is none or it is stale."""
    embedder = get_embedder(embedder_name, version)
    depth = reference_depth(candidates)
    key = (using, content_type_id, embedder_name, embedder.version, depth)
    with _lock:
        cached = _gates.get(key)
    if cached is not None and time.monotonic() - cached[0] < GATE_CACHE_SECONDS:
        return cached[1]
    row = FloorCalibration.objects.using(using).filter(
        content_type_id=content_type_id, embedder=embedder_name,
        embedder_version=embedder.version, depth=depth,
    ).values_list("gate", "vectors", "changed").first()
    if row is None or _is_stale(row[1], row[2]):
        return calibrate(content_type_id, embedder_name, depth, using, version)
    with _lock:
        _gates[key] = (time.monotonic(), row[0])
    return row[0]


_COUNT_CHANGES = """
UPDATE semantic_search_floorcalibration SET changed = changed + %s
WHERE content_type_id = %s AND embedder = %s AND embedder_version = %s
RETURNING depth, vectors, changed
"""



def vectors_written(counts: dict[tuple[int, str], int], using: str) -> None:
    """The indexer wrote ``counts[(content_type_id, embedder)]`` vectors (called after its own
    transaction): count them, and recalibrate what is stale (vectors written since, or a
    change in their number, e.g. deletions, above a fifth of those calibrated) or was never
    calibrated, so that searches rarely pay for it."""
    if not conf.get("FLOOR"):
        return
    default_depth = reference_depth(int(conf.get("CANDIDATES")))
    for (content_type_id, embedder_name), count in sorted(counts.items()):
        keys = [content_type_id, embedder_name, get_embedder(embedder_name).version]
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(_COUNT_CHANGES, [count, *keys])
            rows = cursor.fetchall()
            current = 0
            if rows:  # without a calibration there is nothing to compare (it is made below)
                counting = compose("SELECT count(*) FROM semantic_search_chunkembedding c"
                                   " WHERE {own}", own=_own_vectors(content_type_id, embedder_name))
                cursor.execute(counting.sql, counting.params)
                (current,) = cursor.fetchone()
        depths = {
            depth for depth, vectors, changed in rows
            if _is_stale(vectors, max(changed, abs(current - vectors)))
        }
        if default_depth not in {row[0] for row in rows}:
            depths.add(default_depth)
        for depth in sorted(depths):
            calibrate(content_type_id, embedder_name, depth, using)


def forget_cached_gates() -> None:
    """Drop this process's cached gates (the stored calibrations stay)."""
    with _lock:
        _gates.clear()
