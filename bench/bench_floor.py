"""The relevance floor: quality with and without it, and how many results queries that match
nothing get, in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_floor.py --data ../shared/data --dataset scifact
    .venv/bin/python bench/bench_floor.py --data ../shared/data --dataset xquad

Uses bench_quality's databases and corpora (bench_quality_<dataset>: indexed once, reused by
both scripts). For every setting it runs the judged queries through the evaluation module with
the floor on and off (nDCG@10, Recall@10, Recall@100 over the top 100), then 600 queries that
match nothing through ``semantic_search()`` on the same corpus: 200 of random letters, 200 of
random English words from the XQuAD questions (1-4 words) and 200 of random words of the SciFact
abstracts (1-4 words; in-domain words do match some abstracts by keyword), counting their
results (all of them, not a page). Writes bench/results/floor-<dataset>.txt.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402

NOISE = 200


def noise_queries(data: Path) -> dict[str, list[str]]:
    rng = random.Random(7)

    def words_of(texts) -> list[str]:
        return sorted({w.lower() for t in texts for w in re.findall(r"[A-Za-z]{4,}", t)})

    def pick(vocabulary: list[str]) -> list[str]:
        return [" ".join(rng.sample(vocabulary, rng.randint(1, 4))) for _ in range(NOISE)]

    def letters() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))

    _, questions = quality.load_xquad(data / "xquad" / "xquad.en.json")
    corpus = [json.loads(line) for line in (data / "scifact" / "corpus.jsonl").open()]
    return {
        "random letters": [" ".join(letters() for _ in range(rng.randint(1, 4)))
                           for _ in range(NOISE)],
        "random English words": pick(words_of(text for _, text, _ in questions)),
        "random SciFact words": pick(words_of(d["text"] for d in corpus[:2000])),
    }


def floor_switch(on: bool):
    """The two sides this bench compares: the relevance floor off and on."""
    return nullcontext(), on


def evaluate(
    label: str, corpus: Path, queries: Path, qrels: Path, modes, limit, switch=floor_switch
) -> list[str]:
    """Rows of metrics for each mode, ``switch(False) -> switch(True)``: a context manager to
    search in and the floor option of each side (default: the floor off -> on)."""
    from semantic_search.contrib.evaluation import evaluate as evaluation

    prepared = evaluation.prepare_corpus(corpus)
    qrels_map = evaluation.read_qrels(qrels)
    judged = evaluation.judged_queries(evaluation.read_queries(queries), qrels_map, limit)
    quality.encode_once(label.split("->")[0].split()[-1], judged)
    rows = []
    for mode, languages in modes:
        scores = {}
        for on in (False, True):
            context, floor = switch(on)
            options = evaluation.SearchOptions(mode, languages, None, floor=floor)
            with context:
                started = time.perf_counter()
                result = evaluation.run_evaluation(prepared, judged, qrels_map, options,
                                                   cold=False)
            scores[on] = (result.scores, 1000 * (time.perf_counter() - started) / len(judged))
        off, on = scores[False][0], scores[True][0]
        rows.append(
            f"| {label} | {mode} {languages or 'auto'} | {len(judged)} | "
            + " | ".join(f"{off[m]:.4f} -> {on[m]:.4f}"
                         for m in ("ndcg@10", "recall@10", "recall@100"))
            + f" | {scores[False][1]:.0f} -> {scores[True][1]:.0f} |"
        )
        print(rows[-1], flush=True)
    return rows


def count_results(label: str, corpus: Path, noise: dict[str, list[str]]) -> list[str]:
    from semantic_search.contrib.evaluation import evaluate as evaluation
    from semantic_search.contrib.evaluation.models import EvaluationDocument

    documents = EvaluationDocument.objects.filter(corpus=evaluation.corpus_key(corpus))
    rows = []
    for kind, texts in noise.items():
        counts = {}
        for floor in (False, True):
            counts[floor] = [documents.semantic_search(t, floor=floor).count() for t in texts]
        off, on = counts[False], counts[True]
        rows.append(
            f"| {label} | {kind} | {len(texts)} | {sum(off) / len(off):.1f} -> "
            f"{sum(on) / len(on):.1f} | {sum(c > 0 for c in off) / len(off):.0%} -> "
            f"{sum(c > 0 for c in on) / len(on):.0%} | {sorted(on)[len(on) // 2]} |"
        )
        print(rows[-1], flush=True)
    return rows


QUALITY_HEAD = [
    "| corpus | mode | queries | nDCG@10 off -> on | Recall@10 off -> on | "
    "Recall@100 off -> on | ms per query off -> on |",
    "|---|---|---|---|---|---|---|",
]
NOISE_HEAD = [
    "| corpus | queries that match nothing | queries | results per query, mean, off -> on | "
    "queries with any result, off -> on | median results, on |",
    "|---|---|---|---|---|---|",
]


def run_scifact(data: Path, limit: int | None) -> tuple[list[str], list[str]]:
    folder = data / "scifact"
    corpus = folder / "corpus.jsonl"
    modes = [("hybrid", None), ("vector", "all"), ("vector", "same"), ("lexical", None)]
    quality_rows = evaluate("scifact en", corpus, folder / "queries.jsonl",
                            folder / "qrels" / "train.tsv", modes, limit)
    return quality_rows, count_results("scifact", corpus, noise_queries(data))


def run_xquad(data: Path, work: Path, limit: int | None) -> tuple[list[str], list[str]]:
    languages = quality.XQUAD_LANGUAGES
    sets = {lang: quality.load_xquad(data / "xquad" / f"xquad.{lang}.json")
            for lang in languages}
    pairs = [(q, pid) for q, _, pid in sets["en"][1]]
    qrels = quality.write_qrels(work / "qrels.tsv", pairs)
    pooled_qrels = quality.write_qrels(
        work / "qrels-pooled.tsv", [(q, f"{pid}-{x}") for q, pid in pairs for x in languages]
    )
    corpora, queries = {}, {}
    for lang, (paragraphs, questions) in sets.items():
        corpora[lang] = quality.write_jsonl(
            work / f"corpus-{lang}.jsonl",
            [{"_id": pid, "title": "", "text": text, "language": lang}
             for pid, text in paragraphs.items()],
        )
        queries[lang] = quality.write_jsonl(
            work / f"queries-{lang}.jsonl",
            [{"_id": q, "text": text, "language": lang} for q, text, _ in questions],
        )
    pooled = quality.write_jsonl(
        work / "corpus-pooled.jsonl",
        [{"_id": f"{pid}-{lang}", "title": "", "text": text, "language": lang}
         for lang, (paragraphs, _) in sets.items() for pid, text in paragraphs.items()],
    )
    rows = []
    for lang in languages:
        rows += evaluate(f"xquad {lang}", corpora[lang], queries[lang], qrels,
                         [("hybrid", None)], limit)
    for lang in languages:
        rows += evaluate(f"pooled {lang}->all", pooled, queries[lang], pooled_qrels,
                         [("hybrid", None), ("hybrid", "all")], limit)
    noise = count_results("xquad en", corpora["en"], noise_queries(data))
    noise += count_results("pooled", pooled, noise_queries(data))
    return rows, noise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", choices=("xquad", "scifact"), required=True)
    parser.add_argument("--limit-queries", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "results")
    args = parser.parse_args()
    started = time.perf_counter()
    database = f"bench_quality_{args.dataset}"
    quality.setup_django(database, args.torch_threads)
    head = quality.header(args.dataset, database, [Path(sys.executable).name, *sys.argv])
    if args.dataset == "xquad":
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as work:
            rows, noise = run_xquad(args.data, Path(work), args.limit_queries)
    else:
        rows, noise = run_scifact(args.data, args.limit_queries)
    text = "\n".join([
        *head, "", "Judged queries, the relevance floor off -> on:", "", *QUALITY_HEAD, *rows,
        "", "Queries that match nothing, every result counted, floor off -> on:", "",
        *NOISE_HEAD, *noise, "", f"{time.perf_counter() - started:.0f} s",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"floor-{args.dataset}.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
