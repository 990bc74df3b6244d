"""Snippets that show the answer: XQuAD questions come with their answer text, so the share of
top-1 results (the right paragraph) whose snippet contains the answer measures a snippet.
Today's snippets (``search_highlight`` from the best chunk's best sentences, snippets.py) against
the previous ones (Postgres ``ts_headline`` over the document with the query's lexemes, the same
options as before), same-language and across languages, in one run, with the time they add
to a page of 10.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_snippets.py --data ../shared/data --limit-queries 200

Uses bench_quality's database (bench_quality_xquad) and corpora: questions in L against the
paragraphs in L (same language) and against the English paragraphs (L->en). Writes
bench/results/snippets.txt.
"""

from __future__ import annotations

import html
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402

# (label, LEXICAL_SHARE, meaning): snippet policies compared on the same results.
POLICIES = (
    ("words only", 0.1, "none"),
    ("meaning only", 0.0, "all"),
    ("meaning + words", 0.1, "all"),
    ("words, meaning among ties", 0.1, "ties"),
    ("words; meaning where no word matches or across languages (default)", 0.1, "unmatched"),
)
PREVIOUS_OPTIONS = ("StartSel=<b>, StopSel=</b>, MaxWords=30, MinWords=10, MaxFragments=2, "
                    "FragmentDelimiter=\" … \"")
PREVIOUS = (
    "SELECT ts_headline(%(config)s::regconfig, %(text)s, coalesce(nullif(array_to_string(ARRAY("
    "SELECT '''' || replace(replace(l, '\\', '\\\\'), '''', '''''') || ''''"
    " FROM unnest(tsvector_to_array(to_tsvector(%(config)s::regconfig, %(query)s))) AS l),"
    " ' | '), ''), '')::tsquery, %(options)s)"
)
_TAG = re.compile(r"<[^>]+>")


def answers(data: Path, language: str) -> dict[str, tuple[str, str]]:
    """Question id -> (question, first answer text)."""
    raw = json.loads((data / "xquad" / f"xquad.{language}.json").read_text(encoding="utf-8"))
    return {qa["id"]: (qa["question"], qa["answers"][0]["text"])
            for article in raw["data"] for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]}


def contains(snippet: str, answer: str) -> bool:
    plain = " ".join(html.unescape(_TAG.sub("", str(snippet))).casefold().split())
    return " ".join(answer.casefold().split()) in plain


def previous_snippet(document, query: str) -> str:
    from django.db import connection

    from semantic_search.languages import search_config

    with connection.cursor() as cursor:
        cursor.execute(PREVIOUS, {"config": search_config(document.language),
                                  "text": document.text, "query": query,
                                  "options": PREVIOUS_OPTIONS})
        return cursor.fetchone()[0]


requested: set[str] = set()  # the sentences a policy asked vectors for


def count_requests() -> None:
    """Record which sentences are asked for (the cache still serves them after the first)."""
    from semantic_search import snippets

    get = snippets.sentence_vectors.get

    def recording(name, sentences):
        requested.update(sentences)
        return get(name, sentences)

    snippets.sentence_vectors.get = recording


def run_setting(setting: str, corpus: Path, questions: dict, answer_of: dict, limit: int) -> dict:
    from semantic_search import snippets
    from semantic_search.contrib.evaluation import evaluate as evaluation
    from semantic_search.contrib.evaluation.models import EvaluationDocument

    prepared = evaluation.prepare_corpus(corpus, progress=False)
    documents = EvaluationDocument.objects.filter(corpus=prepared.key)
    found = {label: 0 for label, _, _ in POLICIES}
    encoded = {label: [] for label, _, _ in POLICIES}
    stats = {"previous": 0, "right_top1": 0, "asked": 0, "page_ms": [], "snippet_ms": [],
             "previous_ms": []}
    for question_id, (question, _) in list(questions.items())[:limit]:
        stats["asked"] += 1
        search = documents.semantic_search(question)
        snippets.sentence_vectors.clear()  # a first view: no cached sentence vectors
        started = time.perf_counter()
        page = list(search[:10])
        fetched = time.perf_counter()
        shown = [str(result.search_highlight) for result in page]
        stats["page_ms"].append(1000 * (fetched - started))
        stats["snippet_ms"].append(1000 * (time.perf_counter() - fetched))
        started = time.perf_counter()
        previous = [previous_snippet(result, question) for result in page]
        stats["previous_ms"].append(1000 * (time.perf_counter() - started))
        plan = search._search_state.plan
        language = search.search_route.language
        for label, share, below in POLICIES:  # sentences a first view encodes, per policy
            requested.clear()
            snippets.LEXICAL_SHARE = share
            snippets.snippets_of(page, question, plan, meaning=below, language=language)
            encoded[label].append(len(requested))
        snippets.LEXICAL_SHARE = DEFAULT_SHARE
        if not page or page[0].doc_id != question_id.split("|")[0]:
            continue
        answer = answer_of[question_id.split("|")[1]]
        stats["right_top1"] += 1
        stats["previous"] += contains(previous[0], answer)
        assert shown[0] == snippets.snippets_of(page[:1], question, plan, language=language)[0]
        for label, share, below in POLICIES:
            snippets.LEXICAL_SHARE = share
            text = snippets.snippets_of(page[:1], question, plan, meaning=below,
                                        language=language)[0]
            found[label] += contains(text, answer)
        snippets.LEXICAL_SHARE = DEFAULT_SHARE
    right = max(stats["right_top1"], 1)
    row = [setting, str(stats["asked"]), str(stats["right_top1"]),
           f"{stats['previous'] / right:.3f}",
           *(f"{found[name] / right:.3f} ({statistics.mean(encoded[name]):.0f})"
             for name, _, _ in POLICIES),
           f"{statistics.median(stats['page_ms']):.0f}",
           f"{statistics.median(stats['snippet_ms']):.0f}",
           f"{statistics.median(stats['previous_ms']):.0f}"]
    print(" | ".join(row), flush=True)
    return {"row": row}


DEFAULT_SHARE = 0.1


def main() -> int:
    global DEFAULT_SHARE
    parser = quality.comparison_parser(__doc__, limit=200)
    parser.add_argument("--same", default=",".join(quality.XQUAD_LANGUAGES),
                        help="languages asked against their own paragraphs")
    parser.add_argument("--cross", default=",".join(quality.XQUAD_LANGUAGES[1:]),
                        help="languages asked against the English paragraphs")
    args = parser.parse_args()
    started = time.perf_counter()
    quality.setup_django("bench_quality_xquad", 1)
    from semantic_search import snippets

    DEFAULT_SHARE = snippets.LEXICAL_SHARE
    count_requests()
    head = quality.header("xquad", "bench_quality_xquad", [Path(sys.executable).name, *sys.argv])
    sets = {lang: quality.load_xquad(args.data / "xquad" / f"xquad.{lang}.json")
            for lang in quality.XQUAD_LANGUAGES}
    texts = {lang: answers(args.data, lang) for lang in quality.XQUAD_LANGUAGES}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-snippets-") as work:
        corpora = {}
        for lang, (paragraphs, _) in sets.items():
            corpora[lang] = quality.write_jsonl(
                Path(work) / f"corpus-{lang}.jsonl",
                [{"_id": pid, "title": "", "text": text, "language": lang}
                 for pid, text in paragraphs.items()])
        for lang in filter(None, args.same.split(",")):
            # "paragraph|question id": the relevant paragraph and whose answer to look for.
            asked = {f"{pid}|{q}": texts[lang][q] for q, _, pid in sets[lang][1]}
            rows.append(run_setting(f"{lang} (same language)", corpora[lang], asked,
                                    {q: a for q, (_, a) in texts[lang].items()},
                                    args.limit_queries)["row"])
        for lang in filter(None, args.cross.split(",")):
            asked = {f"{pid}|{q}": texts[lang][q] for q, _, pid in sets[lang][1]}
            rows.append(run_setting(f"{lang}->en", corpora["en"], asked,
                                    {q: a for q, (_, a) in texts["en"].items()},
                                    args.limit_queries)["row"])
    shares = [label for label, _, _ in POLICIES]
    lines = [*head, "",
             "Top-1 results that are the question's paragraph: share whose snippet contains the"
             " answer (XQuAD's answer text in the paragraph's language), previous (ts_headline)"
             " and for each policy (in brackets: sentences encoded per page of 10); median ms of"
             " a page of 10 (the search), of its snippets with the default policy (first view:"
             " no cached sentence vectors) and previously (ts_headline).", "",
             "| setting | questions | right top-1 | previous | " + " | ".join(shares)
             + " | page ms | snippets ms now | snippets ms previous |",
             "|---" * (7 + len(POLICIES)) + "|",
             *("| " + " | ".join(row) + " |" for row in rows), "",
             f"{time.perf_counter() - started:.0f} s"]
    quality.save_report(args.out, "snippets.txt", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
