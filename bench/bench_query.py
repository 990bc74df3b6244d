"""Query latency and HNSW recall of ``semantic_search`` at 10,000 and 100,000 objects.

For each size N, a database of N ``demo.Article`` rows (SciFact abstracts cycled with a suffix,
language "en", 1% of them published) indexed in bulk without the workers, then:

* latency (p50 / p95 / mean, ms) of ``Article.objects.semantic_search(q)[:10]`` in the modes
  hybrid (rrf), hybrid (weighted), vector-only and lexical-only, and of a naive baseline (two ORM
  queries fused in Python), each unfiltered and under ``filter(published=True)`` (1% of rows);
* recall@10 of the vector arm against exact search, unfiltered and with the 1% filter (the
  default path: exact ranking when the filter keeps <= EXACT_FILTER_THRESHOLD objects; and the
  HNSW path forced with EXACT_FILTER_THRESHOLD=0).

Vectors are synthesized: up to ``--base-docs`` distinct abstracts are embedded once with the real
multilingual embedder (cached in bench/results/cache/), and row i gets
``normalize(base[i % n] + 0.35 * gaussian / sqrt(dim))`` (rows i < n get base[i] itself). Query
vectors come from the real model and are computed before any timing (query encoding is
excluded). Databases: ``bench_query`` holds N=100,000 and is kept for reruns (``--reuse``);
other sizes live in ``bench_query_<N>``.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_query.py --data /work/shared/data/scifact
    .venv/bin/python bench/bench_query.py --data /work/shared/data/scifact --reuse
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
CACHE_DIR = RESULTS_DIR / "cache"
SETTINGS_MODULE = "bench.settings_query"
DATABASE = "bench_query"
EMBEDDER = "multilingual"
NOISE = 0.35
SEED = 20251125
PUBLISHED_EVERY = 100  # 1% of the rows are published
RRF_K = 60
NAIVE_EF_SEARCH = 100  # session setting of the naive baseline (pgvector's default is 40)
POSTING_BATCH = 5_000
COPY_BATCH = 10_000
TOP = 10

if str(PROJECT_DIR) not in sys.path:  # run as a script: make `bench` and the project importable
    sys.path.insert(0, str(PROJECT_DIR))


# --- Environment ------------------------------------------------------------------------------


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def database_name(size: int) -> str:
    """``bench_query`` for the 100k database kept for reruns, ``bench_query_<N>`` otherwise
    (a fixed name per size, whichever sizes a run asks for)."""
    return DATABASE if size == 100_000 else f"{DATABASE}_{size}"


def database_names(sizes: Sequence[int]) -> dict[int, tuple[str, str]]:
    """size -> (Django alias, database name); the largest size is the ``default`` alias."""
    largest = max(sizes)
    return {
        size: ("default" if size == largest else f"n{size}", database_name(size))
        for size in sizes
    }


def prepare_databases(server_url: str, names: Sequence[str], recreate: bool) -> None:
    """Create missing databases; with ``recreate``, drop them first (the schema then follows the
    current migrations even if they were edited in place)."""
    with psycopg.connect(database_url(server_url, "postgres"), autocommit=True) as conn:
        for name in names:
            if recreate:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(aliases: dict[str, str]) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ["BENCH_QUERY_DATABASES"] = json.dumps(aliases)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import django
    from django.core.management import call_command

    django.setup()
    for alias in aliases:
        call_command("migrate", database=alias, verbosity=0, interactive=False)


def git(*arguments: str) -> str:
    result = subprocess.run(
        ["git", *arguments], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def code_version() -> str:
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "semantic_search", "example_project")
    digest = hashlib.sha1()
    for path in sorted((PROJECT_DIR / "semantic_search").glob("*.py")):
        digest.update(path.read_bytes())
    state = " + uncommitted changes" if dirty else ""
    return f"commit {commit}{state} (semantic_search/*.py sha1 {digest.hexdigest()[:10]})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def matching_processes(pattern: str) -> list[str]:
    result = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    own = str(os.getpid())
    return [line for line in result.stdout.splitlines() if line.split(" ", 1)[0] != own]


def wait_until_quiet(pattern: str, max_load: float, minutes: float, poll: float = 30.0) -> str:
    """Wait (up to ``minutes``) until no process matches ``pattern`` and the 1-minute load
    average is below ``max_load``; describe the wait."""
    start = time.monotonic()

    def busy() -> list[str]:
        found = matching_processes(pattern)
        if os.getloadavg()[0] >= max_load:
            found.append(f"load {load_average()} >= {max_load}")
        return found

    first = busy()
    while (waiting := busy()) and time.monotonic() - start < minutes * 60:
        print(f"waiting: {'; '.join(w[:80] for w in waiting)}", flush=True)
        time.sleep(poll)
    waited = time.monotonic() - start
    if waiting:
        return (f"NOT QUIET after {waited / 60:.0f} min: " + "; ".join(w[:100] for w in waiting))
    done = f"no process matching {pattern!r}, 1-min load < {max_load} (now {load_average()})"
    return f"waited {waited / 60:.1f} min: {done}" if first else done


def server_settings(alias: str) -> str:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        values = []
        for name in ("server_version", "shared_buffers", "work_mem", "jit"):
            cursor.execute(f"SHOW {name}")
            values.append(f"{name}={cursor.fetchone()[0]}")
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        values.append(f"pgvector={cursor.fetchone()[0]}")
    return ", ".join(values)


# --- Data -------------------------------------------------------------------------------------


def read_corpus(data: Path, limit: int) -> list[tuple[str, str]]:
    """(title, abstract) of the first ``limit`` distinct non-empty SciFact documents."""
    pairs: dict[str, tuple[str, str]] = {}
    with (data / "corpus.jsonl").open(encoding="utf-8") as corpus:
        for line in corpus:
            record = json.loads(line)
            title, text = record.get("title", "").strip(), record.get("text", "").strip()
            if text and text not in pairs:
                pairs[text] = (title, text)
            if len(pairs) == limit:
                break
    return list(pairs.values())


def read_queries(data: Path, limit: int) -> list[str]:
    queries: list[str] = []
    with (data / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line).get("text", "").strip()
            if text and text not in queries:
                queries.append(text)
            if len(queries) == limit:
                break
    return queries


def row_text(pool: Sequence[tuple[str, str]], index: int) -> tuple[str, str]:
    """Row ``index``: abstract ``index % len(pool)``, with a suffix after the first cycle."""
    copy, position = divmod(index, len(pool))
    title, text = pool[position]
    return title, (f"{text} (copy {copy})" if copy else text)


def base_vectors(pool: Sequence[tuple[str, str]]) -> tuple[np.ndarray, str, float]:
    """The real embeddings of the pool's documents (cached); returns (vectors, cache file,
    seconds spent embedding, 0 when cached)."""
    from semantic_search.embedders import get_embedder

    embedder = get_embedder(EMBEDDER)
    texts = [f"{title}\n\n{text}" if title else text for title, text in pool]
    digest = hashlib.sha1("\x1e".join([embedder.version, *texts]).encode()).hexdigest()[:12]
    path = CACHE_DIR / f"scifact-{EMBEDDER}-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path), str(path.relative_to(PROJECT_DIR)), 0.0
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    ignore = CACHE_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    embedder.encode_passages(["warm-up"])  # load the model outside the measured time
    start = time.perf_counter()
    parts = []
    for begin in range(0, len(texts), 256):
        parts.append(embedder.encode_passages(texts[begin : begin + 256]))
        done = begin + len(parts[-1])
        rate = done / (time.perf_counter() - start)
        print(f"  embedded {done}/{len(texts)} base documents ({rate:.1f} docs/s)", flush=True)
    vectors = np.concatenate(parts).astype(np.float32)
    np.save(path, vectors)
    return vectors, str(path.relative_to(PROJECT_DIR)), time.perf_counter() - start


def synthesize(base: np.ndarray, size: int, seed: int = SEED) -> np.ndarray:
    """Row i: base[i] for i < n, else normalize(base[i % n] + NOISE * gaussian / sqrt(dim))."""
    count, dimension = base.shape
    rng = np.random.default_rng(seed)
    vectors = np.empty((size, dimension), dtype=np.float32)
    for start in range(0, size, COPY_BATCH):
        rows = np.arange(start, min(size, start + COPY_BATCH))
        block = base[rows % count].copy()
        noise = rng.standard_normal(block.shape).astype(np.float32) * (NOISE / np.sqrt(dimension))
        block[rows >= count] += noise[rows >= count]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[rows] = block
    return vectors


def published_rows(size: int, seed: int = SEED) -> np.ndarray:
    """A random 1% of the rows (uncorrelated with which abstract a row repeats)."""
    flags = np.zeros(size, dtype=bool)
    chosen = np.random.default_rng(seed + 1).choice(size, size // PUBLISHED_EVERY, replace=False)
    flags[chosen] = True
    return flags


# --- Loading ----------------------------------------------------------------------------------

TABLES = (
    "demo_article", "semantic_search_searchentry", "semantic_search_lexicalterm",
    "semantic_search_lexicalstats", "semantic_search_documentfrequency",
    "semantic_search_chunkembedding",
)
# Secondary indexes dropped during the bulk load and built once afterwards.
DEFERRED_INDEXES = ("semantic_search_term_cover",)
# The naive baseline's full-text index (the package has none: it reads its postings); built
# after the load, left out of the package's bytes.
NAIVE_FTS_INDEX = "bench_naive_fts"

_INSERT_ENTRIES = """
INSERT INTO semantic_search_searchentry
    (content_type_id, object_id, revision, state, language, search_config, search_vector,
     text_hash, attempts, last_error, changed_at, indexed_at)
SELECT %s, a.id::text, 1, 'indexed', 'en', 'english',
       setweight(to_tsvector('english'::regconfig, a.title), 'A')
       || setweight(to_tsvector('english'::regconfig, a.body), 'B'),
       encode(sha256(convert_to(a.title || a.body, 'UTF8')), 'hex'), 0, '', now(), now()
FROM demo_article a ORDER BY a.id
"""


def marker(size: int, base_count: int, version: str) -> dict[str, Any]:
    """What a loaded database holds (stored as the database's comment, checked by --reuse)."""
    return {"size": size, "base": base_count, "noise": NOISE, "seed": SEED,
            "published_every": PUBLISHED_EVERY, "embedder": EMBEDDER, "version": version}


def read_marker(alias: str) -> dict[str, Any]:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = current_database()"
        )
        comment = cursor.fetchone()[0]
    try:
        return json.loads(comment or "{}")
    except ValueError:
        return {}


def write_marker(alias: str, content: dict[str, Any]) -> None:
    from django.db import connections

    connection = connections[alias]
    literal = json.dumps(content).replace("'", "''")
    with connection.cursor() as cursor:
        name = connection.ops.quote_name(connection.settings_dict["NAME"])
        cursor.execute(f"COMMENT ON DATABASE {name} IS '{literal}'")


class Steps:
    """Wall time of named setup steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        print(f"  {name} ...", end="", flush=True)
        result = function()
        self.seconds[name] = time.perf_counter() - start
        print(f" {self.seconds[name]:.1f} s", flush=True)
        return result


def load(alias: str, size: int, pool: Sequence[tuple[str, str]], base: np.ndarray,
         refresh: bool = True) -> Steps:
    """Fill the database of ``alias`` with ``size`` indexed articles, in bulk. ``refresh``:
    recompute the postings' impacts with the final average length afterwards (and compact the
    rewritten tables); without it, each posting keeps the impact written with the average
    length of the rows loaded before it (every batch of rows repeats the pool, so that average
    is the final one within the few tokens of the " (copy k)" suffix)."""
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from example_project.demo.models import Article
    from semantic_search import lexical
    from semantic_search.embedders import get_embedder
    from semantic_search.indexes import INDEX_PREFIX, TABLE, ensure_vector_indexes

    connection = connections[alias]
    steps = Steps()
    content_type = ContentType.objects.db_manager(alias).get_for_model(Article).id
    version = get_embedder(EMBEDDER).version
    published = published_rows(size)
    vectors = steps.run("synthesize vectors", lambda: synthesize(base, size))

    write_marker(alias, {})  # a load that fails midway must not look complete to --reuse
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        cursor.execute(f"DROP INDEX IF EXISTS {NAIVE_FTS_INDEX}")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)"
            " OR (tablename = %s AND indexname LIKE %s)",
            [list(DEFERRED_INDEXES), TABLE, INDEX_PREFIX + "%"],
        )
        deferred = {}
        for name, definition in cursor.fetchall():
            if not name.startswith(INDEX_PREFIX):
                deferred[name] = definition
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
    if set(deferred) != set(DEFERRED_INDEXES):
        raise SystemExit(f"indexes {sorted(set(DEFERRED_INDEXES) - set(deferred))} are missing "
                         "(an interrupted load?): run without --reuse to recreate the database")
    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)

    def copy_articles() -> None:
        with raw.cursor() as cursor, cursor.copy(
            "COPY demo_article (id, title, body, language, published, external_id) FROM STDIN"
        ) as copy:
            for index in range(size):
                title, body = row_text(pool, index)
                copy.write_row((index + 1, title, body, "en", bool(published[index]),
                                f"scifact-{index}"))
        with connection.cursor() as cursor:
            cursor.execute("SELECT setval(pg_get_serial_sequence('demo_article', 'id'), %s)",
                           [size])

    def insert_entries() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_ENTRIES, [content_type])
            cursor.execute("SELECT id FROM semantic_search_searchentry ORDER BY id")
            return [row[0] for row in cursor.fetchall()]

    def postings(entry_ids: list[int]) -> None:
        with connection.cursor() as cursor:
            for start in range(0, len(entry_ids), POSTING_BATCH):
                lexical.write_postings(cursor, entry_ids[start : start + POSTING_BATCH])

    def copy_vectors() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, object_id FROM semantic_search_searchentry"
                " ORDER BY object_id::bigint"
            )
            owners = cursor.fetchall()
        columns = ("entry_id, content_type_id, object_id, language, embedder, embedder_version,"
                   " chunk, text_hash, start, \"end\", vector")
        with raw.cursor() as cursor, cursor.copy(
            f"COPY {TABLE} ({columns}) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int4", "varchar", "varchar", "varchar", "varchar", "int4",
                            "varchar", "int4", "int4", "halfvec"])
            for entry_id, object_id in owners:
                index = int(object_id) - 1
                title, body = row_text(pool, index)
                text = f"{title}\n\n{body}"
                digest = hashlib.sha256(text.encode()).hexdigest()
                copy.write_row((entry_id, content_type, object_id, "en", EMBEDDER, version, 0,
                                digest, 0, len(text), HalfVector(vectors[index])))

    def vacuum_full(tables: Sequence[str] = ("semantic_search_lexicalterm",
                                             "semantic_search_searchentry")) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (FULL) {', '.join(tables)}")

    def build_deferred() -> None:
        with connection.cursor() as cursor:
            for definition in deferred.values():
                cursor.execute(definition)
            cursor.execute(f"CREATE INDEX {NAIVE_FTS_INDEX} ON semantic_search_searchentry"
                           " USING gin (search_vector)")

    def build_hnsw() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
        ensure_vector_indexes(using=alias)

    def analyze() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")

    steps.run("COPY articles", copy_articles)
    entry_ids = steps.run("search entries (to_tsvector A/B)", insert_entries)
    steps.run(f"postings (write_postings x {POSTING_BATCH})", lambda: postings(entry_ids))
    if refresh:
        steps.run("refresh_impacts", lambda: lexical.refresh_impacts(using=alias))
        steps.run("VACUUM FULL postings+entries", vacuum_full)
    else:  # the postings were written once; the entries were updated (their lengths)
        steps.run("VACUUM FULL entries", lambda: vacuum_full(["semantic_search_searchentry"]))
    steps.run("COPY vectors (binary)", copy_vectors)
    steps.run("build impact index (+ the naive baseline's GIN)", build_deferred)
    steps.run("build HNSW index", build_hnsw)
    steps.run("VACUUM ANALYZE", analyze)
    return steps


def table_counts(alias: str) -> dict[str, int]:
    from django.db import connections

    counts = {}
    with connections[alias].cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
    return counts


def relation_sizes(alias: str, size: int) -> str:
    """The package's on-disk bytes per object: every table of the app with its TOAST and
    indexes (the naive baseline's GIN left out), then per table: heap (with TOAST) + indexes."""
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_table_size(c.oid),"
            " pg_indexes_size(c.oid) - coalesce((SELECT pg_relation_size(i.indexrelid)"
            "  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            "  WHERE i.indrelid = c.oid AND ic.relname = %s), 0)"
            " FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'semantic\\_search\\_%%'"
            " ORDER BY 2 + 3 DESC",
            [NAIVE_FTS_INDEX],
        )
        rows = cursor.fetchall()
    total = sum(heap + indexes for _, heap, indexes in rows)
    parts = ", ".join(f"{name.removeprefix('semantic_search_')} {heap / size:,.0f} + "
                      f"{indexes / size:,.0f}" for name, heap, indexes in rows
                      if heap + indexes >= 0.001 * total)
    return (f"package on disk: {total / size:,.0f} bytes per object ({total / 2**20:,.0f} MB);"
            f" per table, heap + indexes per object: {parts}")


# --- The searches -----------------------------------------------------------------------------

METHODS = ("hybrid", "weighted", "vector", "lexical", "naive")
LABELS = {
    "hybrid": "hybrid (rrf)", "weighted": "hybrid (weighted)", "vector": "vector-only",
    "lexical": "lexical-only", "naive": "naive: 2 ORM + Python RRF",
}
FILTERS = ("none", "1%")
RECALL_SCOPES = ("none", "1%", "1%, HNSW")


@dataclass
class Context:
    alias: str
    content_type: int
    version: str
    dimension: int
    vectors: dict[str, tuple[float, ...]]  # query -> its (cached) query vector


def base_queryset(context: Context, filtered: bool):
    from example_project.demo.models import Article

    articles = Article.objects.db_manager(context.alias).all()
    return articles.filter(published=True) if filtered else articles


def semantic(context: Context, method: str, filtered: bool, query: str) -> list[int]:
    queryset = base_queryset(context, filtered)
    if method == "weighted":
        results = queryset.semantic_search(query, fusion="weighted")
    elif method in ("vector", "lexical"):
        results = queryset.semantic_search(query, mode=method)
    else:  # the library's default fusion may change: the "hybrid" row is RRF by name
        results = queryset.semantic_search(query, fusion="rrf")
    return [article.pk for article in results[:TOP]]


_WORD = re.compile(r"[^\W_]+")  # letters and digits only: no tsquery operator can get through


def naive(context: Context, filtered: bool, query: str) -> list[int]:
    """Two ORM queries (ts_rank over an OR tsquery; pgvector cosine order on the indexed
    expression), reciprocal rank fusion in Python, then the objects by ``pk__in``."""
    from django.contrib.postgres.search import SearchQuery, SearchRank
    from django.db.models import CharField, F
    from django.db.models.functions import Cast
    from pgvector.django import CosineDistance, HalfVectorField

    from semantic_search.models import ChunkEmbedding, SearchEntry

    alias = context.alias
    entries = SearchEntry.objects.using(alias).filter(content_type_id=context.content_type)
    chunks = ChunkEmbedding.objects.using(alias).filter(
        embedder=EMBEDDER, embedder_version=context.version, content_type_id=context.content_type
    )
    articles = base_queryset(context, filtered)
    if filtered:
        keys = articles.annotate(key=Cast("pk", CharField())).values("key")
        entries, chunks = entries.filter(object_id__in=keys), chunks.filter(object_id__in=keys)
    lexical_ids: list[str] = []
    words = _WORD.findall(query)
    if words:
        tsquery = SearchQuery(" | ".join(words), search_type="raw", config="english")
        ranked = entries.filter(search_vector=tsquery).annotate(
            rank=SearchRank(F("search_vector"), tsquery)
        )
        lexical_ids = list(ranked.order_by("-rank", "pk").values_list("object_id", flat=True)[:100])
    indexed = Cast("vector", HalfVectorField(dimensions=context.dimension))  # the HNSW expression
    nearest = chunks.annotate(distance=CosineDistance(indexed, list(context.vectors[query])))
    vector_ids = list(nearest.order_by("distance").values_list("object_id", flat=True)[:100])
    scores: dict[str, float] = defaultdict(float)
    for ranking in (lexical_ids, vector_ids):
        for rank, object_id in enumerate(dict.fromkeys(ranking), start=1):
            scores[object_id] += 1.0 / (RRF_K + rank)
    top = [int(key) for key in sorted(scores, key=lambda key: (-scores[key], int(key)))[:TOP]]
    found = {article.pk: article for article in articles.filter(pk__in=top)}
    return [pk for pk in top if pk in found]


def search(context: Context, method: str, filtered: bool, query: str) -> list[int]:
    if method == "naive":
        return naive(context, filtered, query)
    return semantic(context, method, filtered, query)


def exact_neighbours(context: Context, filtered: bool, query: str) -> list[int]:
    """The exact top 10 objects by cosine distance: the vector arm's ordering, index disabled."""
    from django.db import connections, transaction

    expression = f"c.vector::vector({context.dimension})"
    published = (
        " AND EXISTS (SELECT 1 FROM demo_article a WHERE a.id = c.object_id::bigint"
        " AND a.published)" if filtered else ""
    )
    sql = (
        f"SELECT c.object_id FROM semantic_search_chunkembedding c"
        " WHERE c.embedder = %s AND c.embedder_version = %s AND c.content_type_id = %s"
        f"{published} GROUP BY c.object_id"
        f" ORDER BY min({expression} <=> %s::vector({context.dimension})), c.object_id LIMIT %s"
    )
    literal = "[" + ",".join(repr(x) for x in context.vectors[query]) + "]"
    params = [EMBEDDER, context.version, context.content_type, literal, TOP]
    with transaction.atomic(using=context.alias), connections[context.alias].cursor() as cursor:
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(sql, params)
        rows = [int(row[0]) for row in cursor.fetchall()]
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    if "hnsw" in plan:
        raise RuntimeError(f"the exact query used the HNSW index:\n{plan}")
    return rows


# --- Measurement ------------------------------------------------------------------------------


@dataclass
class Measured:
    milliseconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.milliseconds, q))

    @property
    def mean(self) -> float:
        return float(np.mean(self.milliseconds))


@dataclass
class SizeResult:
    size: int
    steps: dict[str, float]
    reused: bool
    counts: dict[str, int]
    sizes: str
    quiet: str
    load_before: str
    load_after: str
    routes: Counter
    latency: dict[tuple[str, str], Measured]
    recall: dict[str, float]
    recall_short: dict[str, int]
    naive_vector_plan: str


def measure(context: Context, queries: Sequence[str], recall_queries: int) -> tuple[
    dict[tuple[str, str], Measured], dict[str, float], dict[str, int]
]:
    from django.conf import settings
    from django.test.utils import override_settings

    variants = [(method, scope) for method in METHODS for scope in FILTERS]
    print(f"  warm-up: every query once in each of {len(variants)} variants", flush=True)
    for query in queries:
        for method, scope in variants:
            search(context, method, scope == "1%", query)
    latency = {variant: Measured() for variant in variants}
    print("  timing", flush=True)
    for number, query in enumerate(queries):
        # rotate the order of the variants so that no one always runs first after a query
        shift = number % len(variants)
        for method, scope in variants[shift:] + variants[:shift]:
            start = time.perf_counter()
            found = search(context, method, scope == "1%", query)
            latency[method, scope].milliseconds.append((time.perf_counter() - start) * 1000)
            latency[method, scope].rows.append(len(found))
    print("  recall", flush=True)
    recall, short = {}, {}
    for scope in RECALL_SCOPES:
        filtered = scope != "none"
        # "1%, HNSW": the filtered index path, which the default takes only for filters that
        # keep more than EXACT_FILTER_THRESHOLD objects (1% of 100k are ranked exactly).
        forced = {"EXACT_FILTER_THRESHOLD": 0} if scope == "1%, HNSW" else {}
        hits, total, short[scope] = 0, 0, 0
        with override_settings(SEMANTIC_SEARCH={**settings.SEMANTIC_SEARCH, **forced}):
            for query in queries[:recall_queries]:
                approximate = semantic(context, "vector", filtered, query)
                exact = exact_neighbours(context, filtered, query)
                hits += len(set(approximate) & set(exact))
                total += len(exact)
                short[scope] += len(approximate) < len(exact)
        recall[scope] = hits / max(total, 1)
    return latency, recall, short


def explain(context: Context, query: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements of one query, every variant."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    out = []
    connection = connections[context.alias]
    for method in METHODS:
        for scope in FILTERS:
            with CaptureQueriesContext(connection) as captured:
                search(context, method, scope == "1%", query)
            statements = [q["sql"] for q in captured.captured_queries
                          if "django_content_type" not in q["sql"]]
            for sql in statements:
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, VERBOSE) " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                out.append(f"=== {LABELS[method]} / filter {scope} / N={context.alias}\n"
                           f"{sql[:400]}...\n{plan}\n")
    return "\n".join(out)


def query_context(alias: str, queries: Sequence[str]) -> Context:
    """Route every query once and cache its query vector (encoding is never timed)."""
    from django.contrib.contenttypes.models import ContentType

    from example_project.demo.models import Article
    from semantic_search.embedders import get_embedder
    from semantic_search.routing import normalize_query, query_vectors, split_operators

    embedder = get_embedder(EMBEDDER)
    vectors = {}
    for query in queries:
        plain = split_operators(normalize_query(query))[0]
        vectors[query] = query_vectors.get(EMBEDDER, plain or normalize_query(query))
    content_type = ContentType.objects.db_manager(alias).get_for_model(Article).id
    return Context(alias, content_type, embedder.version, int(embedder.dimension), vectors)


def routes_of(alias: str, queries: Sequence[str]) -> Counter:
    from example_project.demo.models import Article

    manager = Article.objects.db_manager(alias)
    return Counter(manager.semantic_search(query).search_route.label for query in queries)


def naive_vector_plan(context: Context, query: str) -> str:
    """How the naive ORM vector query is executed (must be the HNSW index, not a seq scan)."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    connection = connections[context.alias]
    with CaptureQueriesContext(connection) as captured:
        naive(context, False, query)
    sql = next((q["sql"] for q in captured.captured_queries if "<=>" in q["sql"]), None)
    if sql is None:  # seen once at 100k (after a 1M run in another process); not worth a crash
        return "not captured"
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        plan = [row[0].strip() for row in cursor.fetchall()]
    return " / ".join(line for line in plan if "Scan" in line or "Limit" in line)[:300]


# --- Report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def format_size(result: SizeResult) -> list[str]:
    lines = [f"N = {result.size:,} objects  (load average before/after timing: "
             f"{result.load_before} / {result.load_after})",
             f"quiet check: {result.quiet}", ""]
    header = f"  {'method':<28}{'filter':<8}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'rows':>7}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for method in METHODS:
        for scope in FILTERS:
            m = result.latency[method, scope]
            lines.append(
                f"  {LABELS[method]:<28}{scope:<8}{m.percentile(50):>9.1f}"
                f"{m.percentile(95):>9.1f}{m.mean:>9.1f}{np.mean(m.rows):>7.1f}"
            )
    lines.append("")
    big = result.size >= 100_000
    lines.append(f"  {'ratio':<40}{'none':>8}{'1%':>8}   target")
    for stat, q in (("p50", 50), ("p95", 95)):
        values = [result.latency["hybrid", s].percentile(q)
                  / result.latency["vector", s].percentile(q) for s in FILTERS]
        state = verdict(all(v <= 1.5 for v in values))
        lines.append(f"  {'hybrid / vector-only (' + stat + ')':<40}{values[0]:>8.2f}"
                     f"{values[1]:>8.2f}   <= 1.5: {state}")
    for stat, q in (("p50", 50), ("p95", 95)):
        values = [result.latency["naive", s].percentile(q)
                  / result.latency["hybrid", s].percentile(q) for s in FILTERS]
        state = verdict(all(v >= 2 for v in values)) if big else "(target at 100k)"
        lines.append(f"  {'naive / hybrid (' + stat + ')':<40}{values[0]:>8.2f}"
                     f"{values[1]:>8.2f}   >= 2: {state}")
    p95 = [result.latency["hybrid", s].percentile(95) for s in FILTERS]
    state = verdict(all(v < 50 for v in p95)) if big else "(target at 100k)"
    lines.append(f"  {'hybrid p95 ms':<40}{p95[0]:>8.1f}{p95[1]:>8.1f}   < 50: {state}")
    lines.append("")
    recall = result.recall
    lines.append(
        f"  recall@10 of the vector arm vs exact: none {recall['none']:.3f} "
        f"(>= 0.95: {verdict(recall['none'] >= 0.95)}), 1% filter {recall['1%']:.3f} "
        f"(>= 0.9: {verdict(recall['1%'] >= 0.9)}), 1% filter forced onto the HNSW path "
        f"(EXACT_FILTER_THRESHOLD=0) {recall['1%, HNSW']:.3f}; queries returning fewer than "
        "exact: " + ", ".join(f"{scope} {n}" for scope, n in result.recall_short.items())
    )
    lines.append("  routes: " + ", ".join(f"{label} x{n}" for label, n in result.routes.items()))
    lines.append(f"  naive vector query plan: {result.naive_vector_plan}")
    lines.append("  rows: " + ", ".join(f"{t} {n:,}" for t, n in result.counts.items()))
    lines.append(f"  {result.sizes}")
    setup = "reused from an earlier run; its setup was: " if result.reused else ""
    total = sum(result.steps.values())
    lines.append(f"  setup ({setup}total {total:.0f} s): " + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in result.steps.items()))
    return lines


def report(args: argparse.Namespace, header: list[str], results: list[SizeResult]) -> str:
    lines = list(header)
    for result in results:
        lines += ["", *format_size(result)]
    return "\n".join(lines) + "\n"


# --- Main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="a BEIR folder with corpus.jsonl and queries.jsonl (SciFact)")
    parser.add_argument("--sizes", default="10000,100000",
                        help="comma-separated object counts (default 10000,100000)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries (default 200)")
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--base-docs", type=int, default=5000,
                        help="distinct abstracts embedded with the real model (default 5000)")
    parser.add_argument("--refresh-max", type=int, default=100_000,
                        help="recompute BM25 impacts after loading sizes up to this (default "
                        "100,000; larger loads keep the impacts written at load time)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep loaded databases whose content matches (else drop + reload)")
    parser.add_argument("--wait-minutes", type=float, default=40,
                        help="wait up to this long for a quiet machine (0: no wait)")
    parser.add_argument("--wait-for", default="bench_(indexing|quality)",
                        help="pgrep -f pattern of the processes to wait for")
    parser.add_argument("--max-load", type=float, default=(os.cpu_count() or 2) / 2,
                        help="wait until the 1-minute load average is below (default nproc/2)")
    parser.add_argument("--index-filter", action="store_true",
                        help="index the 1%% filter's column (published) before timing")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "query.txt")
    parser.add_argument("--explain", type=Path, default=RESULTS_DIR / "query-explain.txt",
                        help="EXPLAIN (ANALYZE, BUFFERS) of one query per variant, largest N")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    code = code_version()  # before anything of semantic_search is imported
    command = shlex.join([os.path.relpath(sys.executable, PROJECT_DIR), *sys.argv])
    server = os.environ.get("DATABASE_URL")
    if not server:
        raise SystemExit("DATABASE_URL is not set: eval $(.venv/bin/python -m "
                         "example_project.services env)")
    sizes = sorted({int(size) for size in args.sizes.split(",")})
    names = database_names(sizes)
    def quiet_check() -> str:
        if not args.wait_minutes:
            return "not checked (--wait-minutes 0)"
        return wait_until_quiet(args.wait_for, args.max_load, args.wait_minutes)

    quiet = quiet_check()
    workers = matching_processes("celery.*worker")
    quiet += f"; {len(workers)} celery worker process(es) running at start, load {load_average()}"
    print(quiet, flush=True)
    prepare_databases(server, [name for _, name in names.values()], recreate=not args.reuse)
    setup_django({alias: name for alias, name in names.values()})

    from semantic_search import conf
    from semantic_search.embedders import get_embedder

    pool = read_corpus(args.data, args.base_docs)
    queries = read_queries(args.data, args.queries)
    print(f"base vectors: {len(pool)} abstracts with {EMBEDDER}", flush=True)
    base, cache_file, embed_seconds = base_vectors(pool)
    version = get_embedder(EMBEDDER).version

    results = []
    for size in sizes:
        alias, name = names[size]
        print(f"N={size:,} (database {name})", flush=True)
        quiet_before = quiet_check()
        wanted = marker(size, len(pool), version)
        reused = args.reuse and {k: v for k, v in read_marker(alias).items()
                                 if k != "setup"} == wanted
        if reused:
            steps = read_marker(alias)["setup"]
            print("  reusing the loaded database", flush=True)
        else:
            steps = load(alias, size, pool, base, refresh=size <= args.refresh_max).seconds
            write_marker(alias, {**wanted, "setup": steps})
        context = query_context(alias, queries)
        with_naive_settings(alias)
        index_filter_column(alias, args.index_filter)
        routes = routes_of(alias, queries)
        quiet_before += "; before timing: " + quiet_check()  # loading may have taken long
        load_before = load_average()
        latency, recall, short = measure(context, queries, args.recall_queries)
        load_after = load_average()
        results.append(SizeResult(
            size, steps, reused, table_counts(alias), relation_sizes(alias, size), quiet_before,
            load_before,
            load_after, routes, latency, recall, short, naive_vector_plan(context, queries[0]),
        ))
        if size == sizes[-1] and args.explain:
            args.explain.parent.mkdir(parents=True, exist_ok=True)
            args.explain.write_text(explain(context, queries[0]))

    embedded = (f"embedded now in {embed_seconds:.0f} s ({len(pool) / embed_seconds:.1f} docs/s)"
                if embed_seconds else "cached")
    header = [
        "semantic_search query benchmark",
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: nproc={os.cpu_count()}, CPU: {cpu_model()}, "
        f"RAM: {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}",
        f"postgres: {server_settings('default')}",
        f"code: {code} (read at start; the modules are imported once)",
        f"command: {command}",
        f"quiet check: {quiet}",
        f"data: {len(queries)} SciFact claims (timed; {args.recall_queries} for recall), texts: "
        f"{len(pool)} distinct SciFact abstracts cycled, ' (copy k)' appended after the first "
        "cycle; language en; 1% published (random rows)",
        f"vectors: SYNTHESIZED. {len(pool)} abstracts embedded with the real '{EMBEDDER}' "
        f"embedder ({version}; {embedded}; {cache_file}); row i = base[i] for i < "
        f"{len(pool)}, else normalize(base[i % {len(pool)}] + {NOISE} * N(0, I) / sqrt(dim)). "
        "One chunk per object. Query vectors: real model, computed and cached "
        "(routing.query_vectors) before any timing, so encoding is excluded.",
        "timing: wall time in this process of list(queryset[:10]) (SQL + ORM), warm cache: "
        "every query ran once untimed in every variant; variants rotate per query.",
        f"naive: ts_rank over to_tsquery('english', 'w1 | w2 | ...') (words = letters/digits) "
        f"over a GIN index of its own ({NAIVE_FTS_INDEX}) LIMIT 100 + ChunkEmbedding ordered by "
        "CosineDistance(Cast('vector', HalfVectorField(dimensions=384)), q) LIMIT 100 (the Cast "
        "renders vector::halfvec(384), the indexed expression), "
        f"session hnsw.ef_search={NAIVE_EF_SEARCH}, RRF (k={RRF_K}) in "
        "Python, then Article.objects.filter(pk__in=top10); 1% filter: object_id__in "
        "(published pks as text) in both arms.",
        "filter column: " + (f"indexed (--index-filter: {FILTER_INDEX}, partial on published)"
                             if args.index_filter else "published has no index"),
        "settings: bench/settings_query.py (only the multilingual embedder); semantic_search "
        "defaults: " + ", ".join(f"{key} {conf.get(key)}" for key in (
            "FUSION", "CANDIDATES", "EF_SEARCH", "MAX_SCAN_TUPLES", "RRF_K",
            "LEXICAL_TERM_DEPTH", "EXACT_FILTER_THRESHOLD", "EXACT_FILTER_SHARE"))
        + " (the hybrid row passes fusion='rrf').",
    ]
    text = report(args, header, results)
    print("\n" + text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}")


FILTER_INDEX = "bench_demo_article_published"


def index_filter_column(alias: str, wanted: bool) -> None:
    """``--index-filter``: a partial index for the 1% filter (``published``), as an application
    would have for a filter it searches under; dropped again by runs without the flag."""
    from django.db import connections

    with connections[alias].cursor() as cursor:
        if wanted:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {FILTER_INDEX} ON demo_article (id)"
                           " WHERE published")
        else:
            cursor.execute(f"DROP INDEX IF EXISTS {FILTER_INDEX}")
        cursor.execute("ANALYZE demo_article")


def with_naive_settings(alias: str) -> None:
    """The naive baseline's session: ef_search high enough for its LIMIT 100 (semantic_search
    sets its own per statement, so this does not affect it)."""
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute(f"SET hnsw.ef_search = {NAIVE_EF_SEARCH}")


if __name__ == "__main__":
    main()
