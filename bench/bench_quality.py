"""Retrieval quality of the search modes, measured with semantic_search.contrib.evaluation.

* ``--dataset xquad``: XQuAD (6 languages, 240 parallel paragraphs, 1,190 questions each;
  a question's one relevant document is the paragraph it was asked about), converted to BEIR
  files: monolingual (questions in L, paragraphs in L), cross-lingual (questions in L, English
  paragraphs) and pooled (questions in L, the paragraphs of all 6 languages; the paragraph in
  every language is relevant).
* ``--dataset scifact``: SciFact in BEIR format (corpus, queries, qrels/train.tsv).

Each setting's corpus is loaded and indexed once through the ordinary pipeline, then every
mode runs every judged query through ``EvaluationDocument.objects.filter(corpus=...)
.semantic_search(...)``. Each query is encoded once per embedder (timed on its own) and its
vector cached, so the per-mode timings are the search without encoding: encoding every query
again for each of ~20 settings x modes would cost hours on 2 cores. Torch runs with
``--torch-threads`` (default 1: on a shared 2-core machine, 2 threads make a single-query
encode 5-20x slower through thread oversubscription). Corpora stay in the database
``bench_quality_<dataset>`` (created if missing, then migrated; one per dataset because BM25
statistics are shared by the corpora of a database), so a second run embeds nothing.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_quality.py --data /work/shared/data --dataset xquad
    nohup .venv/bin/python bench/bench_quality.py --data /work/shared/data --dataset scifact \\
        > bench/results/logs/quality-scifact.log 2>&1 &

Reports: <out>/quality-<dataset>.txt (the table) and <out>/quality-<dataset>.png (bar chart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(PROJECT_DIR))

XQUAD_LANGUAGES = ("en", "de", "es", "ru", "zh", "ar")
SCIFACT_ANCHORS = (
    "published nDCG@10 on the SciFact test split (we use the 809 train claims): "
    "BM25 0.665 (title and text as fields) - 0.679 (one field); BGE-base-en-v1.5 dense 0.741"
)


@dataclass(frozen=True)
class Mode:
    label: str
    mode: str
    languages: str | None
    fusion: str | None
    only: tuple[str, ...] | None = None  # query languages it applies to (None: all)


DEFAULT = "default"
SINGLE_ARMS = ("lexical", "vector:multilingual", "vector:english")
MODES = (
    Mode("lexical", "lexical", "auto", None),
    Mode("vector:multilingual", "vector", "all", None),
    Mode("vector:english", "vector", "same", None, only=("en",)),
    Mode("hybrid all rrf", "hybrid", "all", "rrf"),
    Mode("hybrid all weighted", "hybrid", "all", "weighted"),
    Mode("hybrid same rrf", "hybrid", "same", "rrf"),
    Mode("hybrid auto rrf", "hybrid", "auto", "rrf"),
    Mode("hybrid auto weighted", "hybrid", "auto", "weighted"),
    Mode(DEFAULT, "hybrid", None, None),  # LANGUAGE_MODE and FUSION from the settings
)
# Lexical shares of the weighted fusion tried besides the default (0.3), "auto" routing: the
# evidence for the WEIGHTS default (reported in a table of their own, not in the chart).
LEXICAL_WEIGHTS = (0.1, 0.2, 0.4, 0.5)
SWEEP = " (lexical weight)"
# "same" keeps only documents in the query's language: meaningless across languages.
CROSS_MODES = tuple(m for m in MODES if m.languages != "same")


@dataclass
class Cell:
    group: str  # "monolingual", "cross-lingual", "pooled", "scifact"
    language: str
    mode: str
    scores: dict[str, float]
    queries: int
    mean_query_ms: float  # search with the query vectors cached


ENCODE_MS: dict[tuple[str, str], float] = {}  # (query language, embedder) -> ms per query


# --- Environment ------------------------------------------------------------------------------


def service_urls() -> dict[str, str]:
    if os.environ.get("DATABASE_URL") and os.environ.get("CELERY_BROKER_URL"):
        return dict(os.environ)
    from example_project import services

    services.start()
    return services.environment()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def setup_django(database: str, torch_threads: int) -> None:
    """Point Django at ``database`` (created if missing), migrate it."""
    urls = service_urls()
    with psycopg.connect(with_database(urls["DATABASE_URL"], "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    os.environ["DATABASE_URL"] = with_database(urls["DATABASE_URL"], database)
    os.environ["CELERY_BROKER_URL"] = urls["CELERY_BROKER_URL"]
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    os.environ["SEMANTIC_SEARCH_SYNC"] = "0"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import django
    import torch
    from django.conf import settings
    from django.core.management import call_command

    torch.set_num_threads(torch_threads)
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    settings.SEMANTIC_SEARCH["QUERY_CACHE_SIZE"] = 100_000  # every query vector stays cached


# --- Running ----------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_qrels(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in pairs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def encode_once(language: str, queries: Sequence) -> None:
    """Encode (and cache) the queries with each embedder that serves their language, timing
    it the first time a language's queries are seen."""
    from semantic_search import conf
    from semantic_search.routing import normalize_query, query_vectors, split_operators

    for spec in conf.embedder_specs():
        if (language, spec.name) in ENCODE_MS or not spec.serves(language):
            continue
        started = time.perf_counter()
        for query in queries:
            text = normalize_query(query.text)
            query_vectors.get(spec.name, split_operators(text)[0] or text)
        ENCODE_MS[language, spec.name] = 1000 * (time.perf_counter() - started) / len(queries)


def measure(
    group: str, language: str, corpus: Path, queries: Path, qrels: Path,
    modes: Sequence[Mode], limit: int | None,
) -> list[Cell]:
    """Prepare the corpus (reused if already indexed), then run every applicable mode."""
    from semantic_search.contrib.evaluation import evaluate as evaluation

    prepared = evaluation.prepare_corpus(corpus)
    qrels_map = evaluation.read_qrels(qrels)
    judged = evaluation.judged_queries(evaluation.read_queries(queries), qrels_map, limit)
    print(f"\n{group} {language}: {prepared.documents} documents ({prepared.loaded} loaded, "
          f"index {prepared.index_seconds:.0f} s), {len(judged)} queries", flush=True)
    encode_once(language.split("->")[0], judged)
    cells = []
    for mode in modes:
        if mode.only is not None and language not in mode.only:
            continue
        options = evaluation.SearchOptions(mode.mode, mode.languages, mode.fusion)
        result = evaluation.run_evaluation(prepared, judged, qrels_map, options, cold=False)
        cells.append(Cell(group, language, mode.label, result.scores, result.queries,
                          result.mean_query_ms))
        print(f"  {mode.label:<22} nDCG@10 {result.scores['ndcg@10']:.4f}  "
              f"R@10 {result.scores['recall@10']:.4f}  {result.mean_query_ms:.0f} ms/query",
              flush=True)
    if group in ("monolingual", "scifact"):
        cells += weight_sweep(group, language, prepared, judged, qrels_map)
    return cells


def weight_sweep(group: str, language: str, prepared, judged, qrels_map) -> list[Cell]:
    """Routed hybrid ("auto", weighted) with each lexical share of LEXICAL_WEIGHTS."""
    from django.conf import settings
    from django.test.utils import override_settings

    from semantic_search.contrib.evaluation import evaluate as evaluation

    cells = []
    options = evaluation.SearchOptions("hybrid", "auto", "weighted")
    for share in LEXICAL_WEIGHTS:
        weights = {"lexical": share, "vector": round(1 - share, 3)}
        with override_settings(SEMANTIC_SEARCH={**settings.SEMANTIC_SEARCH, "WEIGHTS": weights}):
            result = evaluation.run_evaluation(prepared, judged, qrels_map, options, cold=False)
        cells.append(Cell(group + SWEEP, language, f"lexical {share} / vector {1 - share:.1f}",
                          result.scores, result.queries, result.mean_query_ms))
        print(f"  lexical weight {share:<8} nDCG@10 {result.scores['ndcg@10']:.4f}", flush=True)
    return cells


def load_xquad(path: Path) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Paragraphs (id "article-paragraph" -> text) and questions (id, text, paragraph id)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs, questions = {}, []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            pid = f"{a}-{p}"
            paragraphs[pid] = paragraph["context"]
            questions += [(qa["id"], qa["question"], pid) for qa in paragraph["qas"]]
    return paragraphs, questions


def run_xquad(data: Path, work: Path, limit: int | None) -> list[Cell]:
    sets = {lang: load_xquad(data / "xquad" / f"xquad.{lang}.json") for lang in XQUAD_LANGUAGES}
    pairs = [(q, pid) for q, _, pid in sets["en"][1]]  # question ids align across languages
    qrels = write_qrels(work / "qrels.tsv", pairs)
    pooled_qrels = write_qrels(
        work / "qrels-pooled.tsv", [(q, f"{pid}-{x}") for q, pid in pairs for x in XQUAD_LANGUAGES]
    )
    corpora, queries = {}, {}
    for lang, (paragraphs, questions) in sets.items():
        corpora[lang] = write_jsonl(
            work / f"corpus-{lang}.jsonl",
            [{"_id": pid, "title": "", "text": text, "language": lang}
             for pid, text in paragraphs.items()],
        )
        queries[lang] = write_jsonl(
            work / f"queries-{lang}.jsonl",
            [{"_id": q, "text": text, "language": lang} for q, text, _ in questions],
        )
    pooled = write_jsonl(
        work / "corpus-pooled.jsonl",
        [{"_id": f"{pid}-{lang}", "title": "", "text": text, "language": lang}
         for lang, (paragraphs, _) in sets.items() for pid, text in paragraphs.items()],
    )
    cells = []
    for lang in XQUAD_LANGUAGES:
        cells += measure("monolingual", lang, corpora[lang], queries[lang], qrels, MODES, limit)
    for lang in XQUAD_LANGUAGES[1:]:
        cells += measure("cross-lingual", f"{lang}->en", corpora["en"], queries[lang], qrels,
                         CROSS_MODES, limit)
    for lang in XQUAD_LANGUAGES:
        cells += measure("pooled", f"{lang}->all", pooled, queries[lang], pooled_qrels,
                         CROSS_MODES, limit)
    return cells


def run_scifact(data: Path, limit: int | None) -> list[Cell]:
    folder = data / "scifact"
    return measure("scifact", "en", folder / "corpus.jsonl", folder / "queries.jsonl",
                   folder / "qrels" / "train.tsv", MODES, limit)


# --- Reporting --------------------------------------------------------------------------------


def table(cells: Sequence[Cell], group: str, metric: str) -> list[str]:
    rows = [c for c in cells if c.group == group]
    modes = list(dict.fromkeys(c.mode for c in rows))
    languages = list(dict.fromkeys(c.language for c in rows))
    width = max(len(m) for m in modes) + 2
    lines = [f"{group}, {metric}", f"{'mode':<{width}}" + "".join(f"{x:>10}" for x in languages)]
    for mode in modes:
        values = {c.language: c.scores[metric] for c in rows if c.mode == mode}
        lines.append(f"{mode:<{width}}" + "".join(
            f"{values[x]:>10.4f}" if x in values else f"{'-':>10}" for x in languages))
    return lines


def timing_line(cells: Sequence[Cell], group: str) -> str:
    rows = [c for c in cells if c.group == group]
    by_mode: dict[str, list[float]] = {}
    for cell in rows:
        by_mode.setdefault(cell.mode, []).append(cell.mean_query_ms)
    parts = [f"{mode} {sum(v) / len(v):.1f}" for mode, v in by_mode.items()]
    return f"{group}, search ms per query (query vectors cached): " + ", ".join(parts)


def encoding_line() -> str:
    parts = [f"{name} {lang} {ms:.0f}" for (lang, name), ms in ENCODE_MS.items()]
    return "query encoding, ms per query (once per language and embedder): " + ", ".join(parts)


def target_checks(cells: Sequence[Cell]) -> list[str]:
    """The acceptance targets for the routed default on XQuAD."""
    from semantic_search.languages import UNSEGMENTED_LANGUAGES

    def score(group: str, language: str, mode: str, metric: str) -> float | None:
        for c in cells:
            if (c.group, c.language, c.mode) == (group, language, mode):
                return c.scores[metric]
        return None

    lines = [f"targets (routed default = hybrid, {default_options()}):"]
    for lang in XQUAD_LANGUAGES:
        default = score("monolingual", lang, DEFAULT, "ndcg@10")
        multilingual = score("monolingual", lang, "vector:multilingual", "ndcg@10")
        if lang in UNSEGMENTED_LANGUAGES:
            delta = default - multilingual
            ok = delta >= -0.01
            lines.append(f"  monolingual {lang}: default - multilingual = {delta:+.4f} nDCG@10 "
                         f"(target >= -0.010) {'PASS' if ok else 'FAIL'}")
            continue
        singles = {m: score("monolingual", lang, m, "ndcg@10") for m in SINGLE_ARMS}
        best_mode, best = max(((m, v) for m, v in singles.items() if v is not None),
                              key=lambda item: item[1])
        delta = default - best
        verdict = "PASS" if delta >= 0.015 else "FAIL"
        lines.append(f"  monolingual {lang}: default - best single arm ({best_mode}) = "
                     f"{delta:+.4f} nDCG@10 (target >= +0.015) {verdict}")
    for group, suffix in (("cross-lingual", "->en"), ("pooled", "->all")):
        for lang in XQUAD_LANGUAGES:
            key = f"{lang}{suffix}"
            default = score(group, key, DEFAULT, "recall@10")
            multilingual = score(group, key, "vector:multilingual", "recall@10")
            if default is None or multilingual is None:
                continue
            delta = default - multilingual
            lines.append(f"  {group} {key}: default - multilingual = {delta:+.4f} Recall@10 "
                         f"(target >= 0) {'PASS' if delta >= 0 else 'FAIL'}")
    return lines


def default_options() -> str:
    from semantic_search import conf

    return f"languages {conf.get('LANGUAGE_MODE')}, fusion {conf.get('FUSION')}"


def header(dataset: str, database: str, argv: Sequence[str]) -> list[str]:
    import torch
    from django.conf import settings

    embedders = ", ".join(
        f"{name}={spec['MODEL']}" for name, spec in settings.SEMANTIC_SEARCH["EMBEDDERS"].items()
    )
    return [
        f"# semantic_search retrieval quality: {dataset}",
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: nproc={os.cpu_count()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}",
        f"command: {' '.join(argv)}",
        f"database: {database}; embedders: {embedders}",
        "metrics: BEIR / pytrec_eval definitions (nDCG gain = grade, log2 discount), "
        "top 100 per query",
    ]


SWEEP_NOTE = (
    "hybrid auto weighted with other lexical shares (the default is "
    "lexical 0.3 / vector 0.7, rows above):"
)


def comparison_parser(doc: str, limit: int | None = None) -> argparse.ArgumentParser:
    """``--data``, ``--limit-queries`` and ``--out``: what every comparison bench takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit-queries", type=int, default=limit)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "results")
    return parser


def save_report(out: Path, name: str, lines: Sequence[str]) -> None:
    """Write a report's lines to ``out/name`` and print them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def report(dataset: str, cells: Sequence[Cell], head: list[str], seconds: float) -> str:
    lines = [*head, f"wall time: {seconds / 60:.1f} min", ""]
    if dataset == "scifact":
        lines += [SCIFACT_ANCHORS, f"default = the settings' defaults ({default_options()})", ""]
        lines += table(cells, "scifact", "ndcg@10") + [""]
        lines += table(cells, "scifact", "recall@100") + [""]
        lines += [SWEEP_NOTE] + table(cells, "scifact" + SWEEP, "ndcg@10") + [""]
        lines += [timing_line(cells, "scifact"), encoding_line()]
        return "\n".join(lines) + "\n"
    lines += [
        "XQuAD: 240 parallel paragraphs and 1,190 questions per language; relevant = the "
        "question's paragraph",
        "(pooled: that paragraph in each of the 6 languages, so Recall@10 needs all six).",
        "modes: lexical = BM25 arm alone; vector:X = one embedder alone; hybrid <languages> "
        f"<fusion>; default = the settings' defaults ({default_options()}).",
        "",
    ]
    for group in ("monolingual", "cross-lingual", "pooled"):
        for metric in ("ndcg@10", "recall@10"):
            lines += table(cells, group, metric) + [""]
        lines += [timing_line(cells, group), ""]
        if group == "monolingual":
            lines += [SWEEP_NOTE] + table(cells, group + SWEEP, "ndcg@10") + [""]
    lines += [encoding_line(), ""]
    lines += target_checks(cells)
    return "\n".join(lines) + "\n"


def chart(dataset: str, cells: Sequence[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {mode.label: f"C{i}" for i, mode in enumerate(MODES)}
    cells = [c for c in cells if not c.group.endswith(SWEEP)]
    groups = list(dict.fromkeys(c.group for c in cells))
    metrics = ("ndcg@10", "recall@10") if dataset == "xquad" else ("ndcg@10", "recall@100")
    figure, axes = plt.subplots(len(groups), len(metrics), squeeze=False,
                                figsize=(7 * len(metrics), 3.6 * len(groups) + 0.6))
    for row, group in enumerate(groups):
        rows = [c for c in cells if c.group == group]
        modes = list(dict.fromkeys(c.mode for c in rows))
        languages = list(dict.fromkeys(c.language for c in rows))
        width = 0.8 / len(modes)
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            strong = [c.scores[metric] for c in rows if c.scores[metric] > 0.5]
            bottom = int(20 * (min(strong) - 0.02)) / 20 if strong and min(strong) > 0.8 else 0.0
            for i, mode in enumerate(modes):
                values = {c.language: c.scores[metric] for c in rows if c.mode == mode}
                xs = [j + i * width for j, x in enumerate(languages) if x in values]
                ax.bar(xs, [values[x] for x in languages if x in values], width,
                       color=colors[mode])
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(languages))], languages)
            ax.set_ylim(bottom, 1)  # zoomed in when every arm that works scores > 0.8
            where = dataset if group == dataset else f"{dataset} {group}"
            ax.set_title(f"{where}: {metric}")
            if dataset == "scifact" and metric == "ndcg@10":
                ax.axhspan(0.665, 0.679, color="grey", alpha=0.3)
                ax.axhline(0.741, color="black", linestyle="--")
    used = dict.fromkeys(c.mode for c in cells)
    handles = [Patch(color=colors[mode], label=mode) for mode in used]
    if dataset == "scifact":
        handles += [Patch(color="grey", alpha=0.3, label="BM25, published (test split)"),
                    Patch(color="black", label="BGE-base dense, published (dashed)")]
    figure.legend(handles=handles, loc="upper center", ncol=5, fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.84 if len(groups) == 1 else 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with xquad/, scifact/")
    parser.add_argument("--dataset", choices=("xquad", "scifact"), required=True)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "results")
    parser.add_argument("--limit-queries", type=int, default=None,
                        help="first N judged queries per setting (default: all)")
    parser.add_argument("--database", default=None, help="default: bench_quality_<dataset>")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)
    database = args.database or f"bench_quality_{args.dataset}"
    started = time.perf_counter()
    setup_django(database, args.torch_threads)
    head = header(args.dataset, database, [Path(sys.executable).name, *sys.argv])
    print("\n".join(head), flush=True)
    if args.dataset == "xquad":
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
            cells = run_xquad(args.data, Path(work), args.limit_queries)
    else:
        cells = run_scifact(args.data, args.limit_queries)
    text = report(args.dataset, cells, head, time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"quality-{args.dataset}.txt").write_text(text, encoding="utf-8")
    chart(args.dataset, cells, args.out / f"quality-{args.dataset}.png")
    print("\n" + text, flush=True)
    print(f"wrote {args.out / f'quality-{args.dataset}.txt'} and .png", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
