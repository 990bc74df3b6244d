"""Fusion across languages: the default ranking and the same with ``SAME_LANGUAGE_FIRST`` (a
document that some arm cannot see, e.g. in another language, ranks just below the documents
that see more arms and are at least as strong on each of its own; see query._dominated_cap),
in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_fusion.py --data ../shared/data --limit-queries 400

Uses bench_quality's databases (bench_quality_xquad, bench_quality_scifact; indexed by
bench_quality.py or bench_floor.py) and bench_floor's corpora: XQuAD monolingual per language,
the pooled six-language corpus queried from each language (relevant: the question's paragraph
in all six languages), and SciFact. Writes bench/results/fusion.txt.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_floor as floor_bench  # noqa: E402
import bench_quality as quality  # noqa: E402


def same_language_first(on: bool):
    """The two sides compared: the default ranking, and with SAME_LANGUAGE_FIRST (floor on)."""
    from django.conf import settings
    from django.test.utils import override_settings

    return override_settings(SEMANTIC_SEARCH={**settings.SEMANTIC_SEARCH,
                                              "SAME_LANGUAGE_FIRST": on}), None


evaluate = functools.partial(floor_bench.evaluate, switch=same_language_first)


HEAD = [
    "| corpus | mode | queries | nDCG@10 default -> same first | Recall@10 default -> same first"
    " | Recall@100 default -> same first | ms per query default -> same first |",
    "|---|---|---|---|---|---|---|",
]


def main() -> int:
    parser = quality.comparison_parser(__doc__)
    args = parser.parse_args()
    started = time.perf_counter()
    floor_bench.evaluate = evaluate  # bench_floor's corpora, this comparison
    floor_bench.count_results = lambda *arguments: []
    quality.setup_django("bench_quality_xquad", 1)
    head = quality.header("xquad", "bench_quality_xquad", [Path(sys.executable).name, *sys.argv])
    with tempfile.TemporaryDirectory(prefix="bench-fusion-") as work:
        rows, _ = floor_bench.run_xquad(args.data, Path(work), args.limit_queries)
    from django.conf import settings
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    from semantic_search import floor, queryset

    connections.close_all()  # the same process, on SciFact's database: no cached ids
    settings.DATABASES["default"]["NAME"] = "bench_quality_scifact"
    ContentType.objects.clear_cache()
    floor.forget_cached_gates()
    queryset._indexed_languages.clear()
    folder = args.data / "scifact"
    rows += evaluate("scifact en", folder / "corpus.jsonl", folder / "queries.jsonl",
                     folder / "qrels" / "train.tsv", [("hybrid", None)], args.limit_queries)
    text = "\n".join([*head, "", "The default -> SAME_LANGUAGE_FIRST:", "", *HEAD,
                      *rows, "", f"{time.perf_counter() - started:.0f} s"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
