"""Retrieval quality on a BEIR-format test collection, measured through the public search API.

    corpus.jsonl   {"_id": ..., "title": ..., "text": ...[, "language": ...]}  per line
    queries.jsonl  {"_id": ..., "text": ...[, "language": ...]}                per line
    qrels.tsv      query-id  corpus-id  score   (a header line first; score > 0 is relevant)

The corpus is stored as :class:`~.models.EvaluationDocument` rows under a fingerprint of its
file and indexed through the ordinary pipeline once; later runs on the same file reuse it.
Every query runs as
``EvaluationDocument.objects.filter(corpus=key).semantic_search(text, ...)[:100]``.
Metrics follow BEIR / pytrec_eval: nDCG with gain = grade and a log2 discount, recall, and the
reciprocal rank of the first relevant document, averaged over the judged queries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from tqdm import tqdm

from semantic_search import conf, lexical, versions
from semantic_search.beir import (  # noqa: F401  (this module's API too)
    DOC_ID_MAX,
    CorpusDocument,
    EvaluationError,
    EvaluationInputError,
    Qrels,
    Query,
    judged_queries,
    mrr_at,
    ndcg_at,
    read_corpus,
    read_qrels,
    read_queries,
    recall_at,
    score_rankings,
)
from semantic_search.changes import dispatch, record_saved
from semantic_search.embedders import get_embedder
from semantic_search.indexes import ensure_vector_indexes
from semantic_search.indexing import IndexReport, index_entries
from semantic_search.languages import detect_language, normalize_code
from semantic_search.maintenance import entries, missing_pks, stale
from semantic_search.models import IndexState, SearchEntry
from semantic_search.registry import clean_text, get_registration
from semantic_search.routing import query_languages, query_vectors

from .models import EvaluationDocument

DEPTH = 100
BATCH_SIZE = 64


@dataclass(frozen=True)
class PreparedCorpus:
    """A corpus stored and indexed under ``key``; counts of what this run had to do."""

    key: str
    documents: int
    loaded: int
    chunks_embedded: int | None  # None when the workers indexed it
    index_seconds: float
    other_documents: int = 0  # of other corpora: they share the BM25 statistics


def corpus_key(path: str | Path) -> str:
    """The corpus fingerprint: the first 16 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def document_language(document: CorpusDocument) -> str:
    """The document's given language, else the one detected among the site's languages."""
    if document.language:
        return document.language
    text = f"{document.title}\n{document.text}"[:5000]
    detected = detect_language(text, conf.get("LANGUAGES"), threshold=0.5).language
    return detected or normalize_code(conf.get("DEFAULT_LANGUAGE")) or ""


def prepare_corpus(
    path: str | Path,
    documents: Sequence[CorpusDocument] | None = None,
    *,
    fresh: bool = False,
    use_workers: bool = False,
    using: str = "default",
    progress: bool = True,
) -> PreparedCorpus:
    """Store and index the corpus file unless it already is (``fresh`` rebuilds it).

    ``documents`` are the file's, when the caller has read them already. After indexing, BM25
    impacts are recomputed with the final average document length.
    """
    documents = read_corpus(path) if documents is None else documents
    key = corpus_key(path)
    started = time.perf_counter()
    if fresh:
        delete_corpus(key, using)
    loaded = _insert_missing(key, documents, using)
    ensure_vector_indexes(using=using, drop_unused=False)
    work = _work_ids(key, using)
    chunks: int | None = None
    if use_workers:
        _index_with_workers(work, using, progress)
    else:
        chunks = _index_here(work, using, progress).chunks_embedded
    content_type = ContentType.objects.db_manager(using).get_for_model(EvaluationDocument)
    if work:
        lexical.refresh_impacts(using, content_type.id)
    for spec in conf.embedder_specs():  # a new embedder version: serve it once complete
        if versions.switch_if_complete(content_type.id, spec.name, using):
            versions.retire(content_type.id, spec.name, using)
    seconds = time.perf_counter() - started
    others = EvaluationDocument.objects.using(using).exclude(corpus=key).count()
    return PreparedCorpus(key, len(documents), loaded, chunks, seconds, others)


def delete_corpus(key: str, using: str = "default") -> int:
    """Delete a corpus's documents and, here and now, their index entries."""
    documents = EvaluationDocument.objects.using(using).filter(corpus=key)
    with transaction.atomic(using=using):
        pks = list(documents.values_list("pk", flat=True))
        entry_ids = record_saved(EvaluationDocument, pks, using=using, enqueue=False)
        deleted, _ = documents.delete()
    for start in range(0, len(entry_ids), BATCH_SIZE):
        index_entries(entry_ids[start : start + BATCH_SIZE], using=using)  # finds them gone
    return deleted


def _insert_missing(key: str, documents: Sequence[CorpusDocument], using: str) -> int:
    manager = EvaluationDocument.objects.using(using)
    present = set(manager.filter(corpus=key).values_list("doc_id", flat=True))
    new = [
        EvaluationDocument(
            corpus=key, doc_id=doc.doc_id, title=clean_text(doc.title),
            text=clean_text(doc.text), language=document_language(doc),
        )
        for doc in documents
        if doc.doc_id not in present
    ]
    manager.bulk_create(new, batch_size=1000)
    return len(new)


def _corpus_entries(key: str, using: str):
    registration = get_registration(EvaluationDocument)
    object_ids = (
        EvaluationDocument.objects.using(using)
        .filter(corpus=key)
        .annotate(pk_text=Cast("pk", TextField()))
        .values("pk_text")
    )
    return entries(registration, using).filter(object_id__in=object_ids)


def _work_ids(key: str, using: str) -> list[int]:
    """Entries of the corpus that are pending, failed or stale (recording missing ones)."""
    registration = get_registration(EvaluationDocument)
    missing = list(missing_pks(registration, using).filter(corpus=key))
    if missing:
        record_saved(EvaluationDocument, missing, using=using, enqueue=False)
    todo = _corpus_entries(key, using).filter(
        Q(state__in=[IndexState.PENDING, IndexState.FAILED])
        | Q(pk__in=stale(registration, using))
    )
    return list(todo.order_by("id").values_list("id", flat=True))


def _index_here(ids: list[int], using: str, progress: bool) -> IndexReport:
    report = IndexReport()
    with tqdm(total=len(ids), desc="indexing", unit="doc", disable=not progress) as bar:
        for start in range(0, len(ids), BATCH_SIZE):
            batch = ids[start : start + BATCH_SIZE]
            report.add(index_entries(batch, using=using))
            bar.update(len(batch))
    return report


def _index_with_workers(ids: list[int], using: str, progress: bool, poll: float = 0.5) -> None:
    if conf.get("SYNC"):
        raise EvaluationError("--async needs Celery workers, but SEMANTIC_SEARCH['SYNC'] is on.")
    SearchEntry.objects.using(using).filter(id__in=ids).update(state=IndexState.PENDING)
    for start in range(0, len(ids), BATCH_SIZE):
        if not dispatch(ids[start : start + BATCH_SIZE], using, timeout=30.0):
            raise EvaluationError("The broker did not take the indexing tasks (see the log).")
    pending = SearchEntry.objects.using(using).filter(id__in=ids, state=IndexState.PENDING)
    with tqdm(total=len(ids), desc="indexing (workers)", unit="doc", disable=not progress) as bar:
        while (left := pending.count()) > 0:
            bar.update(len(ids) - left - bar.n)
            time.sleep(poll)
        bar.update(len(ids) - bar.n)


# --- Searching and scoring --------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOptions:
    """Arguments of ``semantic_search()``; None takes the setting's default."""

    mode: str = "hybrid"
    languages: str | None = None
    fusion: str | None = None
    query_language: bool = False  # pass each query's "language" instead of detecting it
    floor: bool | None = None  # the relevance floor (None: the FLOOR setting)
    rerank: bool = False  # the RERANKER's second stage

    def describe(self) -> str:
        languages = self.languages or conf.get("LANGUAGE_MODE")
        fusion = self.fusion or conf.get("FUSION")
        floor = conf.get("FLOOR") if self.floor is None else self.floor
        return (f"mode={self.mode} languages={languages} fusion={fusion} "
                f"floor={'on' if floor else 'off'}" + (" rerank=on" if self.rerank else ""))


@dataclass(frozen=True)
class EvaluationResult:
    scores: dict[str, float]
    queries: int
    documents: int
    index_seconds: float
    search_seconds: float
    corpus: PreparedCorpus | None = field(default=None, compare=False)

    @property
    def mean_query_ms(self) -> float:
        return 1000 * self.search_seconds / self.queries if self.queries else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            **{name: round(value, 6) for name, value in self.scores.items()},
            "queries": self.queries,
            "documents": self.documents,
            "index_seconds": round(self.index_seconds, 3),
            "search_seconds": round(self.search_seconds, 3),
            "mean_query_ms": round(self.mean_query_ms, 3),
        }


def search_queries(
    key: str,
    queries: Sequence[Query],
    options: SearchOptions,
    *,
    using: str = "default",
    progress: bool = False,
    cold: bool = True,
) -> tuple[dict[str, list[str]], float]:
    """Each query's top ``DEPTH`` corpus ids, and the seconds all searches took. ``cold``
    empties the query vector cache first, so query encoding is part of the time."""
    corpus = EvaluationDocument.objects.using(using).filter(corpus=key)

    def ranked(query: Query) -> list[str]:
        results = corpus.semantic_search(
            query.text, mode=options.mode, languages=options.languages, fusion=options.fusion,
            language=query.language if options.query_language else None, floor=options.floor,
            rerank=options.rerank,
        )
        return list(results.values_list("doc_id", flat=True)[:DEPTH])

    if queries:  # load the models and warm the connection outside the timing
        for spec in conf.embedder_specs():
            get_embedder(spec.name).encode_queries(["warm-up"])
        ranked(queries[0])
    if cold:
        query_vectors.clear()
        query_languages.clear()
    rankings = {}
    started = time.perf_counter()
    for query in tqdm(queries, desc="searching", unit="query", disable=not progress):
        rankings[query.query_id] = ranked(query)
    return rankings, time.perf_counter() - started


def run_evaluation(
    prepared: PreparedCorpus,
    queries: Sequence[Query],
    qrels: Qrels,
    options: SearchOptions,
    *,
    using: str = "default",
    progress: bool = False,
    cold: bool = True,
) -> EvaluationResult:
    """Search every query on a prepared corpus and score the rankings (``cold``: see
    :func:`search_queries`)."""
    rankings, seconds = search_queries(
        prepared.key, queries, options, using=using, progress=progress, cold=cold
    )
    return EvaluationResult(
        score_rankings(rankings, qrels), len(queries), prepared.documents,
        prepared.index_seconds, seconds, prepared,
    )


def evaluate(
    corpus_path: str | Path,
    queries_path: str | Path,
    qrels_path: str | Path,
    options: SearchOptions | None = None,
    *,
    fresh: bool = False,
    use_workers: bool = False,
    limit_queries: int | None = None,
    using: str = "default",
    progress: bool = True,
) -> EvaluationResult:
    """Read the three files, prepare the corpus and evaluate the judged queries."""
    queries = read_queries(queries_path)
    qrels = read_qrels(qrels_path)
    documents = read_corpus(corpus_path)  # every file is checked before the database is used
    judged = judged_queries(queries, qrels, limit_queries)
    prepared = prepare_corpus(
        corpus_path, documents, fresh=fresh, use_workers=use_workers, using=using,
        progress=progress,
    )
    return run_evaluation(
        prepared, judged, qrels, options or SearchOptions(), using=using, progress=progress
    )
