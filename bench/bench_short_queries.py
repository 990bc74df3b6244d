"""Short queries' language from the index (evidence.py) against langdetect alone, and what it
does to retrieval, on XQuAD's Latin-script languages (en, de, es), in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_short_queries.py --data ../shared/data

Development set: from each language's 1,190 questions, the first content word (a word of four
or more letters that is not one of the language's stop words), the first two content words, and
the whole question (a sentence); from each of its 240 paragraphs, one content word drawn at
random (seed 0). The index is bench_quality_xquad's (its EvaluationDocument corpora: XQuAD's
paragraphs in six languages), so the site's Latin-script candidates are en, de and es.
Detection: the default route (SHORT_QUERY_EVIDENCE on) and langdetect alone (its best
language among the candidates if its probability reaches LANGUAGE_CONFIDENCE).
Retrieval: the questions cut to their first two content words, against the paragraphs in their
language, default route with SHORT_QUERY_EVIDENCE on and off. Writes
bench/results/short-queries.txt.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402

LANGUAGES = ("en", "de", "es")


def content_words(text: str, config: str, cursor) -> list[str]:
    """The text's words of 4+ letters that the configuration does not drop as stop words."""
    from semantic_search.evidence import query_words

    words = [w for w in query_words(text, limit=100) if len(w) >= 4]
    if not words:
        return []
    cursor.execute("SELECT w, to_tsvector(%s::regconfig, w) <> ''::tsvector"
                   " FROM unnest(%s::text[]) AS w", [config, words])
    kept = dict(cursor.fetchall())
    return [w for w in words if kept.get(w)]


def development_set(data: Path) -> list[tuple[str, str, str]]:
    """(kind, language, text) items."""
    from django.db import connection

    from semantic_search.languages import search_config

    rng = random.Random(0)
    items = []
    with connection.cursor() as cursor:
        for language in LANGUAGES:
            paragraphs, questions = quality.load_xquad(data / "xquad" / f"xquad.{language}.json")
            config = search_config(language)
            for _, question, _ in questions:
                words = content_words(question, config, cursor)
                if words:
                    items.append(("single word", language, words[0]))
                if len(words) >= 2:
                    items.append(("word pair", language, " ".join(words[:2])))
                items.append(("sentence", language, question))
            for text in paragraphs.values():
                words = content_words(text, config, cursor)
                if words:
                    items.append(("paragraph word", language, rng.choice(words)))
    return items


def langdetect_alone(text: str, candidates: tuple[str, ...], threshold: float) -> str | None:
    from semantic_search.languages import _langdetect_probabilities

    probabilities = _langdetect_probabilities(text, frozenset(candidates))
    if not probabilities:
        return None
    language, probability = max(probabilities.items(), key=lambda item: item[1])
    return language if probability >= threshold and language in candidates else None


def detection_rows(items, content_type_id: int) -> list[str]:
    from semantic_search import conf
    from semantic_search.queryset import _index_evidence, indexed_languages
    from semantic_search.routing import route

    evidence = _index_evidence(content_type_id, "default")
    threshold = float(conf.get("LANGUAGE_CONFIDENCE"))
    indexed = indexed_languages(content_type_id, "default")
    tallies: dict[tuple[str, str], list[int]] = {}
    started = time.perf_counter()
    for kind, language, text in items:
        detected = route(text, indexed_languages=indexed, evidence=evidence).language
        alone = langdetect_alone(text, LANGUAGES, threshold)
        for method, answer in (("default", detected), ("langdetect alone", alone)):
            tally = tallies.setdefault((kind, method), [0, 0, 0])
            tally[0] += 1
            tally[1] += answer == language
            tally[2] += answer is not None and answer != language
    ms = 1000 * (time.perf_counter() - started) / len(items)
    rows = ["| kind | method | items | decided correctly | wrong | unsure | precision |",
            "|---|---|---|---|---|---|---|"]
    for (kind, method), (count, right, wrong) in tallies.items():
        decided = right + wrong
        rows.append(f"| {kind} | {method} | {count} | {right / count:.3f} | {wrong / count:.3f}"
                    f" | {(count - decided) / count:.3f} | "
                    f"{right / decided if decided else float('nan'):.4f} |")
    rows.append(f"\n{ms:.1f} ms per item (both methods)")
    return rows


def retrieval_rows(data: Path, work: Path, limit: int | None) -> list[str]:
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings

    from semantic_search.contrib.evaluation import evaluate as evaluation
    from semantic_search.languages import search_config

    sets = {lang: quality.load_xquad(data / "xquad" / f"xquad.{lang}.json")
            for lang in quality.XQUAD_LANGUAGES}
    pairs = [(q, pid) for q, _, pid in sets["en"][1]]
    qrels_path = quality.write_qrels(work / "qrels.tsv", pairs)
    rows = ["| queries | language | count | nDCG@10 evidence off -> on | Recall@10 off -> on"
            " | routed to the language, off -> on |", "|---|---|---|---|---|---|"]
    for language in LANGUAGES:
        paragraphs, questions = sets[language]
        corpus = quality.write_jsonl(
            work / f"corpus-{language}.jsonl",
            [{"_id": pid, "title": "", "text": text, "language": language}
             for pid, text in paragraphs.items()])
        with connection.cursor() as cursor:
            cut = [(q, " ".join(content_words(text, search_config(language), cursor)[:2]))
                   for q, text, _ in questions]
        variants = {"first two content words": cut,
                    "whole question": [(q, text) for q, text, _ in questions]}
        prepared = evaluation.prepare_corpus(corpus, progress=False)
        qrels = evaluation.read_qrels(qrels_path)
        for variant, texts in variants.items():
            queries = quality.write_jsonl(work / f"{language}-{len(variant)}.jsonl",
                                          [{"_id": q, "text": text} for q, text in texts if text])
            judged = evaluation.judged_queries(evaluation.read_queries(queries), qrels, limit)
            scores, routed = {}, {}
            for on in (False, True):
                options = {**settings.SEMANTIC_SEARCH, "SHORT_QUERY_EVIDENCE": 0.95 if on else 0}
                with override_settings(SEMANTIC_SEARCH=options):
                    result = evaluation.run_evaluation(
                        prepared, judged, qrels, evaluation.SearchOptions("hybrid"), cold=False,
                        progress=False)
                    routed[on] = route_share(judged, language)
                scores[on] = result.scores
            rows.append(
                f"| {variant} | {language} | {len(judged)} | {scores[False]['ndcg@10']:.4f} -> "
                f"{scores[True]['ndcg@10']:.4f} | {scores[False]['recall@10']:.4f} -> "
                f"{scores[True]['recall@10']:.4f} | {routed[False]:.3f} -> {routed[True]:.3f} |")
            print(rows[-1], flush=True)
    return rows


def route_share(queries, language: str) -> float:
    """Share of the queries routed to ``language`` (the rest: unsure or another language)."""
    from django.contrib.contenttypes.models import ContentType

    from semantic_search.contrib.evaluation.models import EvaluationDocument
    from semantic_search.queryset import _index_evidence, indexed_languages
    from semantic_search.routing import route

    content_type = ContentType.objects.get_for_model(EvaluationDocument)
    evidence = _index_evidence(content_type.id, "default")
    indexed = indexed_languages(content_type.id, "default")
    hits = sum(route(q.text, indexed_languages=indexed, evidence=evidence).language == language
               for q in queries)
    return hits / max(len(queries), 1)


def main() -> int:
    parser = quality.comparison_parser(__doc__)
    parser.add_argument("--skip-retrieval", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    quality.setup_django("bench_quality_xquad", 1)
    from django.contrib.contenttypes.models import ContentType

    from semantic_search.contrib.evaluation.models import EvaluationDocument

    head = quality.header("xquad", "bench_quality_xquad", [Path(sys.executable).name, *sys.argv])
    content_type = ContentType.objects.get_for_model(EvaluationDocument)
    items = development_set(args.data)
    lines = [*head, "", "Language of short queries (XQuAD en/de/es questions and paragraphs):", "",
             *detection_rows(items, content_type.id)]
    print("\n".join(lines), flush=True)
    if not args.skip_retrieval:
        with tempfile.TemporaryDirectory(prefix="bench-short-") as work:
            lines += ["", "Retrieval, default route, SHORT_QUERY_EVIDENCE off (langdetect alone)"
                      " and on, questions against the paragraphs in their language:", "",
                      *retrieval_rows(args.data, Path(work), args.limit_queries)]
    lines.append(f"\n{time.perf_counter() - started:.0f} s")
    quality.save_report(args.out, "short-queries.txt", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
