"""Chinese full text as character bigrams (segmentation.py): the lexical arm, the multilingual
model alone (the route Chinese queries took before: vector-only) and the routed default, on
XQuAD zh, in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_unsegmented.py --data ../shared/data

Uses bench_quality's database (bench_quality_xquad; its Chinese entries are re-indexed by
migration 0009 on the first run, their vectors reused) and bench_quality's corpora: monolingual
zh (1,190 questions, 240 paragraphs) and pooled zh->all (the paragraph in all six languages is
relevant). Writes bench/results/unsegmented.txt.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402

MODES = tuple(m for m in quality.MODES
              if m.label in ("lexical", "vector:multilingual", "hybrid auto rrf", quality.DEFAULT))
POOLED_MODES = tuple(m for m in MODES if m.label != "hybrid auto rrf")


def corpora(data: Path, work: Path) -> dict[str, Path]:
    """bench_quality's files for zh (byte for byte, so its indexed corpora are reused)."""
    sets = {lang: quality.load_xquad(data / "xquad" / f"xquad.{lang}.json")
            for lang in quality.XQUAD_LANGUAGES}
    pairs = [(q, pid) for q, _, pid in sets["en"][1]]
    paragraphs, questions = sets["zh"]
    return {
        "qrels": quality.write_qrels(work / "qrels.tsv", pairs),
        "pooled_qrels": quality.write_qrels(
            work / "qrels-pooled.tsv",
            [(q, f"{pid}-{x}") for q, pid in pairs for x in quality.XQUAD_LANGUAGES]),
        "corpus": quality.write_jsonl(
            work / "corpus-zh.jsonl",
            [{"_id": pid, "title": "", "text": text, "language": "zh"}
             for pid, text in paragraphs.items()]),
        "queries": quality.write_jsonl(
            work / "queries-zh.jsonl",
            [{"_id": q, "text": text, "language": "zh"} for q, text, _ in questions]),
        "pooled": quality.write_jsonl(
            work / "corpus-pooled.jsonl",
            [{"_id": f"{pid}-{lang}", "title": "", "text": text, "language": lang}
             for lang, (texts, _) in sets.items() for pid, text in texts.items()]),
    }


def main() -> int:
    parser = quality.comparison_parser(__doc__)
    args = parser.parse_args()
    started = time.perf_counter()
    quality.setup_django("bench_quality_xquad", 1)
    head = quality.header("xquad", "bench_quality_xquad", [Path(sys.executable).name, *sys.argv])
    with tempfile.TemporaryDirectory(prefix="bench-unsegmented-") as work:
        files = corpora(args.data, Path(work))
        cells = quality.measure("monolingual", "zh", files["corpus"], files["queries"],
                                files["qrels"], MODES, args.limit_queries)
        cells += quality.measure("pooled", "zh->all", files["pooled"], files["queries"],
                                 files["pooled_qrels"], POOLED_MODES, args.limit_queries)
    lines = [*head, "", "vector:multilingual is the route Chinese queries took before (no lexical"
             " arm); the default now adds the bigram lexical arm.", ""]
    for group in ("monolingual", "monolingual" + quality.SWEEP, "pooled"):
        for metric in ("ndcg@10", "recall@10"):
            lines += [*quality.table(cells, group, metric), ""]
    lines += [quality.timing_line(cells, "monolingual"), quality.timing_line(cells, "pooled"),
              quality.encoding_line()]
    lines.append(f"{time.perf_counter() - started:.0f} s")
    quality.save_report(args.out, "unsegmented.txt", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
