"""Compact vectors: float32 (``vector``) vs 16-bit (``halfvec``, the default) vs a binary index
with re-scoring, on the same vectors. Prints one table per part, ratios first.

1. Quality on real data, exact search, no index (so only the storage differs): SciFact (all
   judged claims against the 5,183 abstracts) and XQuAD (each language's questions against its
   paragraphs), embedded with the real multilingual embedder (cached in bench/results/cache/).
   half: documents and queries rounded to float16, as Postgres stores and casts them. binary:
   the ``RESCORE x 200`` nearest by Hamming distance of the signs (what the package's binary
   index returns for its 200 chunks), re-ranked by cosine on the halfvec vectors.
2. At each size (100k and 1M rows, vectors synthesized as in bench_query.py: SciFact abstracts'
   real vectors plus gaussian noise), one table per storage with its HNSW index (pgvector
   defaults m=16, ef_construction=64): bytes per row of the table and of the index, index build
   time, recall@10 against exact float32 neighbours (numpy), latency p50/p95 of the package's
   scan (hnsw.ef_search=100, iterative relaxed_order, 200 chunks read, as a search with 100
   candidates); and the query vector sent as a text literal (Django's default client-side
   binding) vs a binary parameter (server-side binding).

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_compact.py --scifact /work/shared/data/scifact \\
        --xquad /work/shared/data/xquad --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from bench import bench_query  # noqa: E402  (after the path set-up)

RESULTS = PROJECT_DIR / "bench" / "results"
CACHE = RESULTS / "cache"
DATABASE = "bench_compact"
CHUNKS = 200  # what a search with CANDIDATES=100 reads from a vector index
EF_SEARCH = 100
RESCORES = (4, 8, 16)
TOP = 10
XQUAD_LANGUAGES = ("en", "de", "es", "ru", "zh", "ar")


# --- Embeddings (cached) -----------------------------------------------------------------------


def embed(kind: str, texts: Sequence[str], passages: bool) -> np.ndarray:
    from semantic_search.embedders import get_embedder

    embedder = get_embedder("multilingual")
    digest = hashlib.sha1("\x1e".join([embedder.version, kind, *texts]).encode()).hexdigest()
    path = CACHE / f"compact-{kind}-{len(texts)}-{digest[:12]}.npy"
    if path.exists():
        return np.load(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    encode = embedder.encode_passages if passages else embedder.encode_queries
    vectors = np.concatenate([encode(list(texts[i:i + 128])) for i in range(0, len(texts), 128)])
    np.save(path, vectors.astype(np.float32))
    return vectors.astype(np.float32)


def _document_text(title: str, text: str) -> str:
    """A SciFact document as bench_query.base_vectors embeds it."""
    return f"{title}\n\n{text}" if title else text


def scifact(data: Path) -> tuple[np.ndarray, list[str], np.ndarray, list[dict[str, int]]]:
    from semantic_search import beir

    corpus = beir.read_corpus(data / "corpus.jsonl")
    qrels = beir.read_qrels(data / "qrels" / "train.tsv")
    queries = beir.judged_queries(beir.read_queries(data / "queries.jsonl"), qrels)
    # The 5,000 abstracts bench_query.py embeds are cached: embed only the rest.
    pool = bench_query.read_corpus(data, 5000)
    base, _, _ = bench_query.base_vectors(pool)
    known = {_document_text(title, text): base[i] for i, (title, text) in enumerate(pool)}
    texts = [_document_text(d.title.strip(), d.text.strip()) for d in corpus]
    rest = sorted({text for text in texts if text not in known})
    known.update(zip(rest, embed("scifact-rest", rest, True), strict=True))
    documents = np.stack([known[text] for text in texts])
    asked = embed("scifact-queries", [q.text for q in queries], False)
    return documents, [d.doc_id for d in corpus], asked, [qrels[q.query_id] for q in queries]


def xquad(data: Path, language: str) -> tuple[np.ndarray, list[str], np.ndarray,
                                               list[dict[str, int]]]:
    articles = json.loads((data / f"xquad.{language}.json").read_text(encoding="utf-8"))["data"]
    paragraphs, questions, relevant = [], [], []
    for article in articles:
        for paragraph in article["paragraphs"]:
            pid = str(len(paragraphs))
            paragraphs.append(paragraph["context"])
            for qa in paragraph["qas"]:
                questions.append(qa["question"])
                relevant.append({pid: 1})
    documents = embed(f"xquad-{language}-paragraphs", paragraphs, True)
    asked = embed(f"xquad-{language}-questions", questions, False)
    return documents, [str(i) for i in range(len(paragraphs))], asked, relevant


# --- Rankings as each storage computes them ---------------------------------------------------


def half(vectors: np.ndarray) -> np.ndarray:
    return vectors.astype(np.float16).astype(np.float32)


def cosine_top(documents: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    norms = np.linalg.norm(documents, axis=1)
    scores = (queries @ documents.T) / np.maximum(norms, 1e-12)[None, :]
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def binary_top(documents: np.ndarray, queries: np.ndarray, k: int, rescore: int) -> np.ndarray:
    """The ``rescore * CHUNKS`` nearest by Hamming distance of the signs, re-ranked by cosine
    on the halfvec vectors."""
    bits, query_bits = documents > 0, queries > 0
    wide = min(rescore * CHUNKS, len(documents))
    stored, asked = half(documents), half(queries)
    result = []
    for row, q in enumerate(query_bits):
        hamming = np.count_nonzero(bits != q, axis=1)
        nearest = np.argpartition(hamming, wide - 1)[:wide]
        scores = stored[nearest] @ asked[row]
        result.append(nearest[np.argsort(-scores)[:k]])
    return np.array(result)


def quality_rows(name: str, dataset) -> list[tuple[str, str, float, float]]:
    from semantic_search import beir

    documents, ids, queries, relevant = dataset
    variants: dict[str, Callable[[], np.ndarray]] = {
        "float32": lambda: cosine_top(documents, queries, 100),
        "halfvec": lambda: cosine_top(half(documents), half(queries), 100),
    }
    for factor in RESCORES:
        variants[f"binary, rescore x{factor}"] = (
            lambda factor=factor: binary_top(documents, queries, 100, factor))
    rows = []
    for variant, rank in variants.items():
        top = rank()
        rankings = [[ids[i] for i in row] for row in top]
        ndcg = statistics.fmean(beir.ndcg_at(r, rel, 10)
                                for r, rel in zip(rankings, relevant, strict=True))
        recall = statistics.fmean(beir.recall_at(r, rel, 100)
                                  for r, rel in zip(rankings, relevant, strict=True))
        rows.append((name, variant, ndcg, recall))
    return rows


def quality_table(args: argparse.Namespace) -> list[str]:
    rows = quality_rows("SciFact (809 claims)", scifact(args.scifact))
    for language in XQUAD_LANGUAGES:
        rows += quality_rows(f"XQuAD {language} (1190 q.)", xquad(args.xquad, language))
    lines = ["Quality, exact search (no index): only the storage differs. XQuAD has 240"
             " paragraphs per language, fewer than a binary scan reads (x4: 800): exact there.",
             f"  {'data':<22} {'storage':<20} {'nDCG@10':>8} {'R@100':>7} {'dnDCG vs float':>15}"]
    floats = {name: ndcg for name, variant, ndcg, _ in rows if variant == "float32"}
    for name, variant, ndcg, recall in rows:
        lines.append(f"  {name:<22} {variant:<20} {ndcg:8.4f} {recall:7.4f}"
                     f" {ndcg - floats[name]:+15.4f}")
    return lines


# --- Storage, index and latency at scale -------------------------------------------------------

STORAGES = {
    "float32": ("compact_float", "vector(384)", "vector", "vector_cosine_ops"),
    "halfvec": ("compact_half", "halfvec(384)", "vector", "halfvec_cosine_ops"),
}
BINARY_INDEX = "(binary_quantize(vector)::bit(384)) bit_hamming_ops"


def connect(url: str) -> psycopg.Connection:
    from pgvector.psycopg import register_vector

    connection = psycopg.connect(url, autocommit=True)
    register_vector(connection)
    return connection


def load_tables(connection: psycopg.Connection, vectors: np.ndarray) -> dict[str, float]:
    """The two tables and three indexes; returns build seconds per index."""
    from pgvector import HalfVector, Vector

    builds = {}
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '4GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 1")
        for name, (table, column_type, expression, opclass) in STORAGES.items():
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(f"CREATE TABLE {table} (id int4 PRIMARY KEY, vector {column_type})")
            with cursor.copy(f"COPY {table} (id, vector) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", column_type.split("(")[0]])
                wrap = HalfVector if column_type.startswith("halfvec") else Vector
                for i, vector in enumerate(vectors):
                    copy.write_row((i, wrap(vector)))
            cursor.execute(f"VACUUM ANALYZE {table}")
            start = time.perf_counter()
            cursor.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw"
                           f" (({expression}) {opclass})")
            builds[name] = time.perf_counter() - start
        start = time.perf_counter()
        cursor.execute("CREATE INDEX compact_half_binary ON compact_half"
                       f" USING hnsw ({BINARY_INDEX})")
        builds["binary"] = time.perf_counter() - start
    return builds


def sizes(connection: psycopg.Connection, rows: int) -> dict[str, tuple[float, float]]:
    """(table bytes per row, index bytes per row) per storage."""
    def size(relation: str) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size(%s::regclass)"
                           " - pg_indexes_size(%s::regclass)", [relation, relation])
            return cursor.fetchone()[0]

    def index(relation: str) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_relation_size(%s::regclass)", [relation])
            return cursor.fetchone()[0]

    return {
        "float32": (size("compact_float") / rows, index("compact_float_hnsw") / rows),
        "halfvec": (size("compact_half") / rows, index("compact_half_hnsw") / rows),
        "binary": (size("compact_half") / rows, index("compact_half_binary") / rows),
    }


SCANS = {
    "float32": "SELECT id FROM compact_float ORDER BY vector <=> %s LIMIT {chunks}",
    "halfvec": "SELECT id FROM compact_half ORDER BY vector <=> %s::halfvec(384) LIMIT {chunks}",
}
BINARY_SCAN = (
    "SELECT id FROM (SELECT id, vector FROM compact_half"
    " ORDER BY binary_quantize(vector)::bit(384) <~> binary_quantize(%s::halfvec(384))::bit(384)"
    " LIMIT {wide}) r ORDER BY vector <=> %s::halfvec(384) LIMIT {chunks}"
)


def scan_sql(variant: str) -> tuple[str, int]:
    """The statement of a variant and how many times it takes the query vector."""
    if variant.startswith("binary"):
        factor = int(variant.rsplit("x", 1)[1])
        return BINARY_SCAN.format(wide=factor * CHUNKS, chunks=CHUNKS), 2
    base = variant.split(",")[0]
    return SCANS[base].format(chunks=CHUNKS), 1


def timed_scans(url: str, queries: np.ndarray, variants: Sequence[str]
                ) -> dict[str, tuple[list[float], list[list[int]]]]:
    """Per variant: per-query milliseconds and returned ids. Variants rotate per query; each
    timed scan follows the same scan untimed (hot cache: the variants' tables and indexes do
    not all fit in shared buffers together, and the order would decide who pays the misses)."""
    from pgvector import Vector

    server = connect(url)
    client = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor)
    for connection in (server, client):
        with connection.cursor() as cursor:
            cursor.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
            cursor.execute("SET hnsw.iterative_scan = relaxed_order")
    results = {variant: ([], []) for variant in variants}

    def run(variant: str, vector: np.ndarray) -> list[int]:
        sql, uses = scan_sql(variant)
        if variant.endswith("text literal"):
            literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
            with client.cursor() as cursor:
                cursor.execute(sql, [literal] * uses)
                return [row[0] for row in cursor.fetchall()]
        with server.cursor() as cursor:
            cursor.execute(sql, [Vector(vector)] * uses)
            return [row[0] for row in cursor.fetchall()]

    for number, vector in enumerate(queries):
        shift = number % len(variants)
        for variant in list(variants[shift:]) + list(variants[:shift]):
            run(variant, vector)  # the same scan right before: its pages are in the cache
            start = time.perf_counter()
            ids = run(variant, vector)
            results[variant][0].append((time.perf_counter() - start) * 1000)
            results[variant][1].append(ids)
    return results


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def scale_table(url: str, size: int, base: np.ndarray, queries: np.ndarray) -> list[str]:
    vectors = bench_query.synthesize(base, size)
    connection = connect(url)
    start = time.perf_counter()
    builds = load_tables(connection, vectors)
    load_seconds = time.perf_counter() - start
    bytes_per_row = sizes(connection, size)
    exact = cosine_top(vectors, queries, TOP)
    variants = ["float32", "halfvec", "halfvec, text literal",
                *(f"binary, rescore x{factor}" for factor in RESCORES)]
    measured = timed_scans(url, queries, variants)
    lines = [f"N = {size:,} vectors (setup {load_seconds:.0f} s)",
             f"  {'storage / scan':<24} {'table B/row':>11} {'index B/row':>11}"
             f" {'build s':>8} {'recall@10':>9} {'p50 ms':>7} {'p95 ms':>7}"]
    p50 = {}
    for variant in variants:
        kind = "binary" if variant.startswith("binary") else variant.split(",")[0]
        table, index = bytes_per_row[kind]
        times, ids = measured[variant]
        recall = statistics.fmean(len(set(got[:TOP]) & set(want)) / TOP
                                  for got, want in zip(ids, exact.tolist(), strict=True))
        p50[variant] = percentile(times, 0.5)
        lines.append(f"  {variant:<24} {table:11.0f} {index:11.0f} {builds[kind]:8.1f}"
                     f" {recall:9.3f} {p50[variant]:7.2f} {percentile(times, 0.95):7.2f}")
    total = {kind: sum(bytes_per_row[kind]) for kind in bytes_per_row}
    lines += [
        "  ratios: bytes/row (table + index) float32 / halfvec"
        f" {total['float32'] / total['halfvec']:.2f}, float32 / binary"
        f" {total['float32'] / total['binary']:.2f}; p50 halfvec / float32"
        f" {p50['halfvec'] / p50['float32']:.2f}, binary x4 / halfvec"
        f" {p50['binary, rescore x4'] / p50['halfvec']:.2f}; text literal / binary parameter"
        f" {p50['halfvec, text literal'] / p50['halfvec']:.2f}"
        f" ({p50['halfvec, text literal'] - p50['halfvec']:+.2f} ms per search)",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--xquad", type=Path, required=True)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS / "compact.txt")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    server = os.environ["DATABASE_URL"]
    bench_query.prepare_databases(server, [DATABASE], recreate=False)
    url = bench_query.database_url(server, DATABASE)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    lines = ["semantic_search compact vectors benchmark",
             f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
             f"machine: nproc={os.cpu_count()}, load {bench_query.load_average()}",
             f"code: {bench_query.code_version()}",
             "command: .venv/bin/python bench/bench_compact.py " + " ".join(sys.argv[1:]), ""]
    if not args.skip_quality:
        lines += quality_table(args) + [""]
        print("\n".join(lines), flush=True)
    pool = bench_query.read_corpus(args.scifact, 5000)
    base, _, _ = bench_query.base_vectors(pool)
    queries = embed("scifact-scan-queries", bench_query.read_queries(args.scifact, args.queries),
                    False)
    for size in (int(s) for s in args.sizes.split(",") if s):
        block = scale_table(url, size, base, queries)
        print("\n".join(block), flush=True)
        lines += block + [""]
    args.output.write_text("\n".join(lines) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
