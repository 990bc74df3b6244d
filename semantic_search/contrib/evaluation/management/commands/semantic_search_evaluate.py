"""Retrieval quality (nDCG@10, Recall@10/100, MRR@10) on a BEIR-format test collection."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from semantic_search.contrib.evaluation.evaluate import (
    EvaluationError,
    EvaluationResult,
    SearchOptions,
    evaluate,
)
from semantic_search.routing import LANGUAGE_MODES, MODES

LABELS = {"ndcg@10": "nDCG@10", "recall@10": "Recall@10", "recall@100": "Recall@100",
          "mrr@10": "MRR@10"}


class Command(BaseCommand):
    help = (
        "Evaluate search quality on BEIR-format files: the corpus is loaded and indexed once "
        "(reused by later runs of the same file), every judged query runs through "
        "semantic_search(). With --json the last line is a JSON object of the results."
    )

    def add_arguments(self, parser):
        parser.add_argument("--corpus", required=True, help="corpus.jsonl (_id, title, text)")
        parser.add_argument("--queries", required=True, help="queries.jsonl (_id, text)")
        parser.add_argument("--qrels", required=True, help="qrels TSV: query-id corpus-id score")
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--languages", choices=LANGUAGE_MODES, default=None,
                            help="routing (default: the LANGUAGE_MODE setting)")
        parser.add_argument("--fusion", choices=("rrf", "weighted"), default=None,
                            help="fusion (default: the FUSION setting)")
        parser.add_argument("--no-floor", dest="floor", action="store_false", default=None,
                            help="keep candidates below the relevance floor")
        parser.add_argument("--rerank", action="store_true",
                            help="reorder the first results with the RERANKER setting's model")
        parser.add_argument("--query-language", action="store_true",
                            help='pass each query\'s "language" instead of detecting it')
        parser.add_argument("--limit-queries", type=int, default=None, metavar="N",
                            help="only the first N judged queries")
        parser.add_argument("--fresh", action="store_true",
                            help="delete this corpus's documents and index them again")
        parser.add_argument("--async", dest="use_workers", action="store_true",
                            help="index through the Celery workers")
        parser.add_argument("--json", action="store_true", help="end with a JSON line")
        parser.add_argument("--database", default="default")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        if options["limit_queries"] is not None and options["limit_queries"] < 1:
            raise CommandError("--limit-queries must be at least 1.")
        search = SearchOptions(
            mode=options["mode"], languages=options["languages"], fusion=options["fusion"],
            query_language=options["query_language"], floor=options["floor"],
            rerank=options["rerank"],
        )
        try:
            result = evaluate(
                options["corpus"], options["queries"], options["qrels"], search,
                fresh=options["fresh"], use_workers=options["use_workers"],
                limit_queries=options["limit_queries"], using=options["database"],
                progress=not options["no_progress"],
            )
        except (EvaluationError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self._table(result, search)
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))

    def _table(self, result: EvaluationResult, search: SearchOptions) -> None:
        corpus = result.corpus
        embedded = "?" if corpus.chunks_embedded is None else corpus.chunks_embedded
        self.stdout.write(
            f"corpus {corpus.key}: {result.documents} documents "
            f"({corpus.loaded} loaded, {embedded} chunks embedded, {result.index_seconds:.1f} s)"
        )
        self.stdout.write(
            f"{result.queries} judged queries, {search.describe()}: "
            f"{result.search_seconds:.1f} s, {result.mean_query_ms:.1f} ms per query"
        )
        if corpus.other_documents:
            self.stdout.write(
                f"note: {corpus.other_documents} documents of other corpora are loaded too; "
                "BM25 statistics include them (use a database of its own for exact BM25)"
            )
        for name, label in LABELS.items():
            self.stdout.write(f"  {label:<11} {result.scores[name]:.4f}")
