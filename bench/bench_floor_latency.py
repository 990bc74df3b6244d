"""What the relevance floor costs per search, and what one calibration costs, in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_floor_latency.py --data ../shared/data
    # writes bench/results/floor-latency.txt

Uses bench_quality's SciFact database (bench_quality_scifact, indexed by bench_quality.py or
bench_floor.py). Query vectors are encoded before timing; each search is timed from
evaluation to rows (the statement and the page's objects), floor off and on alternating per
query so drift on a shared machine hits both alike, unfiltered and under a queryset filter
that keeps half of the corpus. Calibration: one full measurement (128 nonsense probes, their
nearest 200 chunks each) per embedder, and encoding the probes before it (once per process
and model; the model is already loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=PROJECT_DIR.parent / "shared" / "data")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--output", type=Path,
                        default=PROJECT_DIR / "bench" / "results" / "floor-latency.txt")
    args = parser.parse_args()
    quality.setup_django("bench_quality_scifact", 2)
    from django.contrib.contenttypes.models import ContentType

    from semantic_search import floor
    from semantic_search.contrib.evaluation.models import EvaluationDocument
    from semantic_search.models import FloorCalibration

    lines = (args.data / "scifact" / "queries.jsonl").open(encoding="utf-8")
    texts = [json.loads(line)["text"] for line in lines][: args.queries]
    documents = EvaluationDocument.objects.all()  # the database holds SciFact only
    if not documents.exists():
        sys.exit("bench_quality_scifact is empty: run bench/bench_quality.py --dataset scifact")
    ids = list(documents.order_by("pk").values_list("pk", flat=True))
    half = documents.filter(pk__lt=ids[len(ids) // 2])
    rows = ["| search | mode | floor off p50 / p95 ms | floor on p50 / p95 ms | on / off p50 |",
            "|---|---|---|---|---|"]
    for label, queryset in (("unfiltered", documents), ("filter: half the corpus", half)):
        for mode in ("hybrid", "vector"):
            for text in texts:  # encode every query vector and calibrate before timing
                list(queryset.semantic_search(text, mode=mode)[:10])
            timings: dict[bool, list[float]] = {False: [], True: []}
            for text in texts:
                for with_floor in (False, True):
                    search = queryset.semantic_search(text, mode=mode, floor=with_floor)
                    start = time.perf_counter()
                    list(search[:10])
                    timings[with_floor].append(1000 * (time.perf_counter() - start))
            off, on = percentiles(timings[False]), percentiles(timings[True])
            rows.append(f"| {label} | {mode} | {off[0]:.1f} / {off[1]:.1f} |"
                        f" {on[0]:.1f} / {on[1]:.1f} | {on[0] / off[0]:.2f} |")
    content_type = ContentType.objects.get_for_model(EvaluationDocument).id
    rows += ["", "| embedder | encoding the probes (once per process), s |"
             " one calibration statement, s | vectors |", "|---|---|---|---|"]
    for name in ("multilingual", "english"):
        start = time.perf_counter()
        floor._probe_literals(name)
        encoding = time.perf_counter() - start
        start = time.perf_counter()
        floor.calibrate(content_type, name, floor.reference_depth(100), "default")
        seconds = time.perf_counter() - start
        vectors = FloorCalibration.objects.get(
            content_type_id=content_type, embedder=name, depth=floor.reference_depth(100)
        ).vectors
        rows.append(f"| {name} | {encoding:.2f} | {seconds:.2f} | {vectors} |")
    header = [f"SciFact ({len(ids)} abstracts), {len(texts)} claims, top 10 per search;"
              " `python bench/bench_floor_latency.py`", ""]
    output = "\n".join(header + rows) + "\n"
    print(output)
    args.output.write_text(output, encoding="utf-8")


if __name__ == "__main__":
    main()
