"""Fine-tuning the English embedder on SciFact: the default ranking before and after, in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_finetune.py --data ../shared/data

SciFact's judged training claims (qrels/train.tsv) are split by claim: ``--held-out`` of them
(seeded) are the test and are never trained on. Compared on the test claims, with the default
search (hybrid, routed, floor on) through the evaluation module:

- before: the packaged all-MiniLM-L6-v2 as the ``english`` embedder;
- (a) judged: ``semantic_search_finetune english --queries --qrels`` on the other claims (hard
  negatives from today's search);
- (m) (a) with the multilingual embedder (multilingual-e5-small) instead, and XQuAD by that
  model alone before and after: each language's questions against its own paragraphs and
  against the English ones (do other languages lose what English SciFact taught it?);
- (b) no labels: ``semantic_search_finetune english --fields title:text`` over the corpus alone
  (each abstract's title -> its text; in-batch negatives; ``--max-pairs`` of them, 128 tokens);
- (c) reranking: ``semantic_search_finetune english --reranker`` on the judged training claims
  (a cross-encoder on all-MiniLM-L6-v2's weights; ``--reranker-held-out`` of those claims kept
  aside to choose the blend with the fused order), then the default with ``rerank=True``, the
  first 20 and 50 reranked, at the chosen blend and by the cross-encoder alone (blend 1).

Each side points the ``english`` embedder at its model folder and lets the evaluation re-embed
the corpus (the index moves to the new version, versions.py). Runs on a copy of
bench_quality_scifact (``bench_finetune``, made from it as a template), so the benchmark
databases keep their models. Writes bench/results/finetune.txt.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402

DATABASE = "bench_finetune"
TEMPLATE = "bench_quality_scifact"


def copy_database() -> None:
    """A fresh ``bench_finetune``: a copy of the quality bench's indexed SciFact database, or
    empty when there is none (the first measurement then indexes the corpus)."""
    urls = quality.service_urls()
    with psycopg.connect(quality.with_database(urls["DATABASE_URL"], "postgres"),
                         autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              [TEMPLATE]).fetchone():
            connection.execute(f'CREATE DATABASE "{DATABASE}" TEMPLATE "{TEMPLATE}"')
        else:
            print(f"no {TEMPLATE}: the corpus is indexed first", flush=True)


def split_claims(qrels_path: Path, share: float, seed: int, work: Path) -> tuple[Path, Path]:
    lines = [line for line in qrels_path.read_text().splitlines()[1:] if line.strip()]
    claims = sorted({line.split()[0] for line in lines})
    random.Random(seed).shuffle(claims)
    test = set(claims[: int(round(share * len(claims)))])
    head = "query-id\tcorpus-id\tscore\n"
    train_path, test_path = work / "train.tsv", work / "test.tsv"
    train_path.write_text(head + "".join(f"{x}\n" for x in lines if x.split()[0] not in test))
    test_path.write_text(head + "".join(f"{x}\n" for x in lines if x.split()[0] in test))
    return train_path, test_path


PACKAGED = {"english": "packaged:all-MiniLM-L6-v2",
            "multilingual": "packaged:multilingual-e5-small"}


def use_model(folder: str | None, embedder: str = "english") -> None:
    """Point ``embedder`` at ``folder`` (None: the packaged model)."""
    from django.conf import settings

    from semantic_search import embedders, versions

    embedder_settings = settings.SEMANTIC_SEARCH["EMBEDDERS"]
    changed = {**embedder_settings[embedder], "MODEL": folder or PACKAGED[embedder]}
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH,
                                "EMBEDDERS": {**embedder_settings, embedder: changed}}
    embedders.reset_embedders()
    versions.forget()


def xquad_by_model(data: Path, embedder: str, limit: int) -> dict[str, float]:
    """nDCG@10 of the embedder alone (exact cosine) on XQuAD: each language's first ``limit``
    questions against its own 240 paragraphs (mono) and against the English ones (L->en)."""
    import numpy as np

    from semantic_search.beir import ndcg_at
    from semantic_search.embedders import get_embedder

    model = get_embedder(embedder)
    scores = {}
    english, _ = quality.load_xquad(data / "xquad" / "xquad.en.json")
    english_ids = sorted(english)
    english_matrix = model.encode_passages([english[i] for i in english_ids])
    for language in quality.XQUAD_LANGUAGES:
        paragraphs, questions = quality.load_xquad(data / "xquad" / f"xquad.{language}.json")
        questions = questions[:limit]
        ids = sorted(paragraphs)
        matrix = model.encode_passages([paragraphs[i] for i in ids])
        vectors = model.encode_queries([text for _, text, _ in questions])
        for side, (side_ids, side_matrix) in {"mono": (ids, matrix),
                                              "->en": (english_ids, english_matrix)}.items():
            if side == "->en" and language == "en":
                continue
            similarity = vectors @ side_matrix.T
            scores[f"{language} {side}"] = float(np.mean([
                ndcg_at([side_ids[j] for j in np.argsort(-row)[:10]], {pid: 1}, 10)
                for row, (_, _, pid) in zip(similarity, questions, strict=True)]))
    return scores


def measure(label: str, corpus: Path, queries: Path, qrels: Path,
            rerank_top: tuple[int, ...] = ()) -> list[dict]:
    """The default search on the test claims; with ``rerank_top``, also reranking the first N
    (the RERANKER setting must be set)."""
    from django.conf import settings
    from django.test.utils import override_settings

    from semantic_search.contrib.evaluation import evaluate as evaluation

    started = time.perf_counter()
    prepared = evaluation.prepare_corpus(corpus, progress=False)
    reindex = time.perf_counter() - started
    qrels_map = evaluation.read_qrels(qrels)
    judged = evaluation.judged_queries(evaluation.read_queries(queries), qrels_map)
    rows = []
    for top in (None, *rerank_top):
        over = dict(settings.SEMANTIC_SEARCH)
        if top is not None:
            over["RERANKER"] = {**over["RERANKER"], "TOP_N": top}
        with override_settings(SEMANTIC_SEARCH=over):
            options = evaluation.SearchOptions("hybrid", rerank=top is not None)
            result = evaluation.run_evaluation(prepared, judged, qrels_map, options, cold=False)
        name = label if top is None else f"{label}, reranking the first {top}"
        rows.append({"label": name, **{k: result.scores[k] for k in ("ndcg@10", "recall@100")},
                     "queries": len(judged), "reindex_s": reindex if top is None else 0.0,
                     "ms": result.mean_query_ms})
        print(rows[-1], flush=True)
    return rows


def use_reranker(folder: str, blend: float | None = None) -> None:
    """Rerank with the cross-encoder in ``folder``, at ``blend`` (None: the folder's own)."""
    from django.conf import settings

    from semantic_search import reranking

    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH,
                                "RERANKER": {"MODEL": folder, "BLEND": blend}}
    reranking.forget()


def finetune(output: Path, key: str, *arguments: str, held_out: float = 0.0,
             embedder: str = "english") -> dict:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("semantic_search_finetune", embedder, "--model",
                 "semantic_search_evaluation.EvaluationDocument", "--filter", f"corpus={key}",
                 "--id-field", "doc_id", "--output", str(output), "--held-out", str(held_out),
                 "--no-progress", *arguments)
    report = output / "training-report.json"
    if report.exists():
        return json.loads(report.read_text())
    marker = json.loads((output / "semantic_search.json").read_text())  # a reranker
    return {"examples": marker["pairs"], "steps": "-", "peak_rss_mb": training_peak(),
            "seconds": time.perf_counter() - started}


def training_peak() -> float:
    from semantic_search.training import peak_rss_mb

    return peak_rss_mb()


def main() -> int:
    parser = quality.comparison_parser(__doc__)
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", default="a,b,c,m", help="which of a, b, c, m to run")
    parser.add_argument("--max-pairs", type=int, default=1000, help="(b): pairs sampled")
    parser.add_argument("--rerank-top", type=int, nargs="+", default=[20, 50],
                        help="(c): how many first results to rerank")
    parser.add_argument("--xquad-questions", type=int, default=300,
                        help="(m): XQuAD questions per language for the multilingual check")
    parser.add_argument("--reranker-held-out", type=float, default=0.2,
                        help="(c): share of the training claims the command keeps to choose "
                             "the blend (never the test claims)")
    args = parser.parse_args()
    started = time.perf_counter()
    copy_database()
    quality.setup_django(DATABASE, 2)
    from semantic_search import versions
    from semantic_search.contrib.evaluation import evaluate as evaluation

    versions.CACHE_SECONDS = 0.0  # one process: the old vectors may go right after a switch
    folder = args.data / "scifact"
    corpus, queries = folder / "corpus.jsonl", folder / "queries.jsonl"
    key = evaluation.corpus_key(corpus)
    rows, reports, xquad_rows = [], {}, []
    steps = set(args.steps.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as temporary:
        work = Path(temporary)
        train_qrels, test_qrels = split_claims(folder / "qrels" / "train.tsv", args.held_out,
                                               args.seed, work)
        rows += measure("before (packaged all-MiniLM-L6-v2)", corpus, queries, test_qrels)
        epochs = ["--epochs", str(args.epochs)]
        if "a" in steps:
            reports["a"] = finetune(work / "judged", key, "--queries", str(queries),
                                    "--qrels", str(train_qrels), *epochs)
            use_model(str(work / "judged"))
            rows += measure("(a) fine-tuned on judged claims", corpus, queries, test_qrels)
            use_model(None)
        if "c" in steps:
            folder = work / "reranker"
            reports["c"] = finetune(folder, key, "--queries", str(queries),
                                    "--qrels", str(train_qrels), "--reranker", *epochs,
                                    held_out=args.reranker_held_out)
            marker = json.loads((folder / "semantic_search.json").read_text())
            chosen = marker.get("blend", 1.0)
            reports["c"]["blend"] = (f"blend {chosen} chosen on {marker.get('held_out_queries', 0)}"
                                     f" validation claims: {marker.get('held_out_ndcg')}")
            for blend in dict.fromkeys([chosen, 1.0]):
                use_reranker(str(folder), blend)
                measured = measure("before (packaged all-MiniLM-L6-v2)", corpus, queries,
                                   test_qrels, tuple(args.rerank_top))
                rows += [{**row, "label": f"{row['label']} (blend {blend})"}
                         for row in measured[1:]]
        if "m" in steps:  # (a) with the multilingual embedder, and what XQuAD says of it
            before = xquad_by_model(args.data, "multilingual", args.xquad_questions)
            reports["m"] = finetune(work / "judged-e5", key, "--queries", str(queries),
                                    "--qrels", str(train_qrels), *epochs,
                                    embedder="multilingual")
            use_model(str(work / "judged-e5"), "multilingual")
            after = xquad_by_model(args.data, "multilingual", args.xquad_questions)
            xquad_rows += [f"| {name} | {before[name]:.4f} | {after[name]:.4f} | "
                           f"{after[name] - before[name]:+.4f} |" for name in before]
            print("\n".join(xquad_rows), flush=True)
            rows += measure("(a) multilingual-e5-small fine-tuned on judged claims", corpus,
                            queries, test_qrels)
            use_model(None, "multilingual")
        if "b" in steps:
            reports["b"] = finetune(work / "fields", key, "--fields", "title:text",
                                    "--hard-negatives", "0", "--max-pairs", str(args.max_pairs),
                                    "--max-length", "128", *epochs)
            use_model(str(work / "fields"))
            rows += measure("(b) fine-tuned on titles -> abstracts, no labels", corpus,
                            queries, test_qrels)
            use_model(None)
    lines = quality.header("scifact", DATABASE, [Path(sys.executable).name, *sys.argv])
    lines += ["", f"Test: {rows[0]['queries']} held-out SciFact training claims (seed "
              f"{args.seed}, share {args.held_out}); default search (hybrid, routed, floor on).",
              "", "| embedders | nDCG@10 | Recall@100 | ms per query | re-embedding the "
              "corpus |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} | "
                     f"{row['ms']:.0f} | {row['reindex_s']:.0f} s |")
    lines += ["", "| training | pairs | steps | minutes (with mining hard negatives) | peak RSS "
              "of the process |",
              "|---|---|---|---|---|"]
    for name, report in reports.items():
        lines.append(f"| ({name}) | {report['examples']} | {report['steps']} | "
                     f"{report['seconds'] / 60:.1f} | {report['peak_rss_mb']:.0f} MB |")
    lines += [f"({name}) {report['blend']}" for name, report in reports.items()
              if "blend" in report]
    if xquad_rows:
        lines += ["", f"XQuAD, multilingual-e5-small alone (exact cosine, first "
                  f"{args.xquad_questions} questions per language), before and after (m):", "",
                  "| questions -> paragraphs | nDCG@10 before | after | change |",
                  "|---|---|---|---|", *xquad_rows]
    lines += ["", f"{time.perf_counter() - started:.0f} s"]
    quality.save_report(args.out, "finetune.txt", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
