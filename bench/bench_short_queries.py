"""Short queries' language from the index (evidence.py) against the detectors alone, and what it
does to retrieval, on XQuAD's Latin-script languages (en, de, es), in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_short_queries.py --data ../shared/data

Development set: from each language's 1,190 questions, the first content word (a word of four
or more letters that is not one of the language's stop words), the first two content words, and
the whole question (a sentence); from each of its 240 paragraphs, one content word drawn at
random (seed 0). The index: bench_quality_xquad's EvaluationDocument corpora, XQuAD's en, de
and es paragraphs (indexed first when missing), so the site's Latin-script candidates are en, de
and es. Detection, four methods: the index's evidence with lingua's and with langdetect's
probabilities as the second opinion (evidence.py, SHORT_QUERY_DETECTOR), and each detector
alone (its best language among the candidates if its probability reaches LANGUAGE_CONFIDENCE);
over all items and over the odd-numbered ones (evidence.OPINIONS["lingua"] was tuned on the
even-numbered). Retrieval: the questions cut to their first two content words, and whole,
against the paragraphs in their language, default route with the evidence off, with langdetect
and with lingua. Writes bench/results/short-queries.txt.
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


def alone(detector: str, text: str, candidates: tuple[str, ...], threshold: float
          ) -> str | None:
    """``detector``'s best language among the candidates if its probability reaches
    ``threshold``."""
    from semantic_search.languages import second_opinion

    probabilities = second_opinion(text, frozenset(candidates), detector)
    if not probabilities:
        return None
    language, probability = max(probabilities.items(), key=lambda item: item[1])
    return language if probability >= threshold and language in candidates else None


# Index evidence with each detector as its second opinion (SHORT_QUERY_DETECTOR), then each
# detector alone (its best language when its probability reaches LANGUAGE_CONFIDENCE).
METHODS = ("index + lingua (default with the lingua extra)",
           "index + langdetect (default without it)", "lingua alone", "langdetect alone")


def detection_rows(items, content_type_id: int) -> list[str]:
    """Per kind of item and method: decided correctly / wrong / unsure, over all items and
    over the odd-numbered ones (the evidence's weights were tuned on the even-numbered)."""
    from django.conf import settings
    from django.test.utils import override_settings

    from semantic_search import conf
    from semantic_search.queryset import _index_evidence, indexed_languages
    from semantic_search.routing import query_languages, route

    threshold = float(conf.get("LANGUAGE_CONFIDENCE"))
    indexed = indexed_languages(content_type_id, "default")
    evidence = {}
    for detector in ("lingua", "langdetect"):
        options = {**settings.SEMANTIC_SEARCH, "SHORT_QUERY_DETECTOR": detector}
        with override_settings(SEMANTIC_SEARCH=options):
            evidence[detector] = _index_evidence(content_type_id, "default")
    tallies: dict[tuple[str, str, str], list[int]] = {}
    started = time.perf_counter()
    for number, (kind, language, text) in enumerate(items):
        answers = []
        for detector in ("lingua", "langdetect"):
            query_languages.clear()
            answers.append(route(text, indexed_languages=indexed,
                                 evidence=evidence[detector]).language)
        answers += [alone(detector, text, LANGUAGES, threshold)
                    for detector in ("lingua", "langdetect")]
        for method, answer in zip(METHODS, answers, strict=True):
            for part in ("all", "odd") if number % 2 else ("all",):
                tally = tallies.setdefault((part, kind, method), [0, 0, 0])
                tally[0] += 1
                tally[1] += answer == language
                tally[2] += answer is not None and answer != language
    ms = 1000 * (time.perf_counter() - started) / len(items)
    rows = ["| items | kind | method | count | decided correctly | wrong | unsure | precision |",
            "|---|---|---|---|---|---|---|---|"]
    for (part, kind, method), (count, right, wrong) in sorted(
        tallies.items(), key=lambda item: (item[0][0], item[0][1], METHODS.index(item[0][2]))
    ):
        decided = right + wrong
        rows.append(f"| {part} | {kind} | {method} | {count} | {right / count:.3f} | "
                    f"{wrong / count:.3f} | {(count - decided) / count:.3f} | "
                    f"{right / decided if decided else float('nan'):.4f} |")
    rows.append(f"\n{ms:.1f} ms per item (all four methods)")
    return rows


def index_paragraphs(data: Path, work: Path) -> dict[str, Path]:
    """Each Latin-script language's XQuAD paragraphs as an evaluation corpus, indexed (the
    evaluation reuses what is already there)."""
    from semantic_search.contrib.evaluation import evaluate as evaluation

    corpora = {}
    for language in LANGUAGES:
        paragraphs, _ = quality.load_xquad(data / "xquad" / f"xquad.{language}.json")
        corpora[language] = quality.write_jsonl(
            work / f"corpus-{language}.jsonl",
            [{"_id": pid, "title": "", "text": text, "language": language}
             for pid, text in paragraphs.items()])
        evaluation.prepare_corpus(corpora[language], progress=False)
    return corpora


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
    sides = {"off": {"SHORT_QUERY_EVIDENCE": 0},
             "langdetect": {"SHORT_QUERY_EVIDENCE": "auto", "SHORT_QUERY_DETECTOR": "langdetect"},
             "lingua": {"SHORT_QUERY_EVIDENCE": "auto", "SHORT_QUERY_DETECTOR": "lingua"}}
    rows = ["| queries | language | count | nDCG@10 evidence off / + langdetect / + lingua | "
            "Recall@10 | routed to the language |", "|---|---|---|---|---|---|"]
    corpora = index_paragraphs(data, work)
    for language in LANGUAGES:
        _, questions = sets[language]
        corpus = corpora[language]
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
            for side, changes in sides.items():
                options = {**settings.SEMANTIC_SEARCH, **changes}
                with override_settings(SEMANTIC_SEARCH=options):
                    result = evaluation.run_evaluation(
                        prepared, judged, qrels, evaluation.SearchOptions("hybrid"), cold=False,
                        progress=False)
                    routed[side] = route_share(judged, language)
                scores[side] = result.scores

            def cells(values) -> str:
                return " / ".join(f"{values[side]:.4f}" for side in sides)

            rows.append(
                f"| {variant} | {language} | {len(judged)} | "
                f"{cells({k: v['ndcg@10'] for k, v in scores.items()})} | "
                f"{cells({k: v['recall@10'] for k, v in scores.items()})} | "
                f"{' / '.join(f'{routed[side]:.3f}' for side in sides)} |")
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
    with tempfile.TemporaryDirectory(prefix="bench-short-") as work:
        index_paragraphs(args.data, Path(work))  # a fresh database gets its index first
    items = development_set(args.data)
    lines = [*head, "", "Language of short queries (XQuAD en/de/es questions and paragraphs):", "",
             *detection_rows(items, content_type.id)]
    print("\n".join(lines), flush=True)
    if not args.skip_retrieval:
        with tempfile.TemporaryDirectory(prefix="bench-short-") as work:
            lines += ["", "Retrieval, default route, the index's evidence off (langdetect alone),"
                      " with langdetect's and with lingua's second opinion, questions against"
                      " the paragraphs in their language:", "",
                      *retrieval_rows(args.data, Path(work), args.limit_queries)]
    lines.append(f"\n{time.perf_counter() - started:.0f} s")
    quality.save_report(args.out, "short-queries.txt", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
