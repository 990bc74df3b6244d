"""Fusion across languages: the ranking before language centring, the default, the
``SAME_LANGUAGE_FIRST`` setting and the multilingual model alone, in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_fusion.py --data ../shared/data --limit-queries 400

The rankings compared (see semantic_search/centring.py and query._dominated_cap):

- before: raw cosines, and a document's fused score divided by the weight of the arms that
  can see it (a foreign document keeps its full vector score, a same-language one without a
  keyword match is capped at 0.7);
- default: the multilingual model's similarities language-centred, and a document some arm
  cannot see ranked below the documents that dominate it on every arm it has;
- SAME_LANGUAGE_FIRST: raw cosines (the model's own-language preference) with the same rule;
- e5 alone (``languages="all"``), centred and raw.

Corpora (bench_quality's databases, indexed by bench_quality.py or bench_floor.py): XQuAD
monolingual per language; the pooled six-language corpus queried from each language, relevant
= the question's paragraph in all six languages, both binary and graded (the paragraph in the
query's language 2, its translations 1: nDCG only); SciFact. Writes bench/results/fusion.txt.
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402


@dataclass(frozen=True)
class Ranking:
    label: str
    raw_cosines: bool  # SAME_LANGUAGE_FIRST
    cap: bool  # query.CAP_DOMINATED
    languages: str | None = None


BEFORE = Ranking("before", raw_cosines=True, cap=False)
DEFAULT = Ranking("default", raw_cosines=False, cap=True)
SAME_FIRST = Ranking("SAME_LANGUAGE_FIRST", raw_cosines=True, cap=True)
ALONE = Ranking("e5 alone", raw_cosines=False, cap=True, languages="all")
ALONE_RAW = Ranking("e5 alone, raw", raw_cosines=True, cap=True, languages="all")
MONOLINGUAL = (BEFORE, DEFAULT, SAME_FIRST)
POOLED = (BEFORE, DEFAULT, SAME_FIRST, ALONE, ALONE_RAW)


@contextmanager
def ranking_settings(ranking: Ranking):
    from django.conf import settings
    from django.test.utils import override_settings

    from semantic_search import query

    query.CAP_DOMINATED = ranking.cap
    try:
        with override_settings(SEMANTIC_SEARCH={**settings.SEMANTIC_SEARCH,
                                                "SAME_LANGUAGE_FIRST": ranking.raw_cosines}):
            yield
    finally:
        query.CAP_DOMINATED = True


def compare(label: str, corpus: Path, queries: Path, qrels: dict[str, Path],
            rankings: tuple[Ranking, ...], limit: int | None) -> list[str]:
    """One row per qrels kind: each ranking's nDCG@10 / Recall@10 and ms per query."""
    from semantic_search.contrib.evaluation import evaluate as evaluation

    prepared = evaluation.prepare_corpus(corpus)
    judgments = {kind: evaluation.read_qrels(path) for kind, path in qrels.items()}
    first = next(iter(judgments.values()))
    judged = evaluation.judged_queries(evaluation.read_queries(queries), first, limit)
    quality.encode_once(label.split("->")[0].split()[-1], judged)
    results = {}
    for ranking in rankings:
        options = evaluation.SearchOptions("hybrid", ranking.languages)
        with ranking_settings(ranking):
            lists, seconds = evaluation.search_queries(prepared.key, judged, options, cold=False)
        results[ranking] = (lists, 1000 * seconds / len(judged))
    rows = []
    for kind, qrels_map in judgments.items():
        cells = []
        for ranking in rankings:
            lists, ms = results[ranking]
            scores = evaluation.score_rankings(lists, qrels_map)
            recall = "" if kind == "graded" else f" / {scores['recall@10']:.4f}"
            cells.append(f"{scores['ndcg@10']:.4f}{recall} ({ms:.0f} ms)")
        rows.append(f"| {label} | {kind} | {len(judged)} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def head(rankings: tuple[Ranking, ...]) -> list[str]:
    names = " | ".join(ranking.label for ranking in rankings)
    return [f"| corpus | qrels | queries | {names} |",
            "|---|---|---|" + "---|" * len(rankings)]


def run_xquad(data: Path, work: Path, limit: int | None) -> tuple[list[str], list[str]]:
    languages = quality.XQUAD_LANGUAGES
    sets = {lang: quality.load_xquad(data / "xquad" / f"xquad.{lang}.json")
            for lang in languages}
    pairs = [(q, pid) for q, _, pid in sets["en"][1]]
    qrels = quality.write_qrels(work / "qrels.tsv", pairs)
    pooled_qrels = quality.write_qrels(
        work / "qrels-pooled.tsv", [(q, f"{pid}-{x}") for q, pid in pairs for x in languages]
    )
    graded = {}
    for lang in languages:  # the paragraph in the query's language counts twice
        path = work / f"qrels-graded-{lang}.tsv"
        path.write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{pid}-{x}\t{2 if x == lang else 1}\n" for q, pid in pairs for x in languages
        ), encoding="utf-8")
        graded[lang] = path
    monolingual, pooled_rows = [], []
    pooled = quality.write_jsonl(
        work / "corpus-pooled.jsonl",
        [{"_id": f"{pid}-{lang}", "title": "", "text": text, "language": lang}
         for lang, (paragraphs, _) in sets.items() for pid, text in paragraphs.items()],
    )
    for lang, (paragraphs, questions) in sets.items():
        corpus = quality.write_jsonl(
            work / f"corpus-{lang}.jsonl",
            [{"_id": pid, "title": "", "text": text, "language": lang}
             for pid, text in paragraphs.items()],
        )
        queries = quality.write_jsonl(
            work / f"queries-{lang}.jsonl",
            [{"_id": q, "text": text, "language": lang} for q, text, _ in questions],
        )
        monolingual += compare(f"xquad {lang}", corpus, queries, {"binary": qrels},
                               MONOLINGUAL, limit)
        pooled_rows += compare(f"pooled {lang}->all", pooled, queries,
                               {"binary": pooled_qrels, "graded": graded[lang]}, POOLED, limit)
    return monolingual, pooled_rows


def main() -> int:
    parser = quality.comparison_parser(__doc__)
    args = parser.parse_args()
    started = time.perf_counter()
    quality.setup_django("bench_quality_xquad", 1)
    lines = quality.header("xquad", "bench_quality_xquad", [Path(sys.executable).name, *sys.argv])
    with tempfile.TemporaryDirectory(prefix="bench-fusion-") as work:
        monolingual, pooled = run_xquad(args.data, Path(work), args.limit_queries)
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.db import connections

    from semantic_search import floor, queryset

    connections.close_all()  # the same process, on SciFact's database: no cached ids
    settings.DATABASES["default"]["NAME"] = "bench_quality_scifact"
    call_command("migrate", verbosity=0, interactive=False)
    ContentType.objects.clear_cache()
    floor.forget_cached_gates()
    queryset._indexed_languages.clear()
    folder = args.data / "scifact"
    monolingual += compare("scifact en", folder / "corpus.jsonl", folder / "queries.jsonl",
                           {"binary": folder / "qrels" / "train.tsv"}, MONOLINGUAL,
                           args.limit_queries)
    lines += [
        "", "One language per corpus, nDCG@10 / Recall@10 (ms per query):", "",
        *head(MONOLINGUAL), *monolingual,
        "", "Pooled: all six languages, relevant = the paragraph in each; nDCG@10 / Recall@10"
        " (binary) or nDCG@10 (graded: the query's language 2, translations 1):", "",
        *head(POOLED), *pooled, "", f"{time.perf_counter() - started:.0f} s",
    ]
    quality.save_report(args.out, "fusion.txt", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
