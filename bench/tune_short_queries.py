"""How lingua's opinion counts in the short-query evidence (evidence.OPINIONS["lingua"]): a grid
over its weight, floor, threshold and when it decides alone, on the even-numbered items of
bench_short_queries.py's development set; the best setting that keeps precision >= 0.99 for
every kind of item, then checked on the odd-numbered items.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/tune_short_queries.py --data ../shared/data

The index's frequencies and both detectors' probabilities are read once per item; the grid runs
evidence.decide on them in memory. Needs bench_quality_xquad (bench_short_queries.py indexes it).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "bench"))

import bench_quality as quality  # noqa: E402

GRID = {"weight": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0),
        "floor": (0.003, 0.01, 0.02, 0.05),
        "threshold": (0.85, 0.88, 0.9, 0.92, 0.95, 0.98),
        "alone": (None, 0.6, 0.7, 0.8, 0.9, 0.95)}


def collect(data: Path) -> list[tuple]:
    """(kind, language, documents, frequencies, lingua's probabilities) per item."""
    import bench_short_queries as short
    from django.contrib.contenttypes.models import ContentType

    from semantic_search import evidence
    from semantic_search.contrib.evaluation.models import EvaluationDocument
    from semantic_search.languages import second_opinion

    content_type = ContentType.objects.get_for_model(EvaluationDocument).id
    rows = []
    for kind, language, text in short.development_set(data):
        words = evidence.query_words(text)
        documents, frequencies = evidence.index_frequencies(
            words, short.LANGUAGES, content_type, "default") if words else ({}, {})
        rows.append((kind, language, documents, frequencies,
                     second_opinion(text, frozenset(short.LANGUAGES), "lingua")))
    return rows


def tally(rows, opinion, parity: int | None) -> dict[str, tuple[float, float, float]]:
    """Per kind: share right, share wrong, precision."""
    from semantic_search.evidence import decide

    counts: dict[str, list[int]] = {}
    for number, (kind, language, documents, frequencies, probabilities) in enumerate(rows):
        if parity is not None and number % 2 != parity:
            continue
        detection = decide(documents, frequencies, None, probabilities, opinion)
        answer = detection.language if detection else None
        count = counts.setdefault(kind, [0, 0, 0])
        count[0] += 1
        count[1] += answer == language
        count[2] += answer is not None and answer != language
    return {kind: (right / n, wrong / n, right / max(1, right + wrong))
            for kind, (n, right, wrong) in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    quality.setup_django("bench_quality_xquad", 1)
    from semantic_search.evidence import Opinion

    rows = collect(args.data)
    results = []
    for values in itertools.product(*GRID.values()):
        opinion = Opinion("lingua", *values)
        scores = tally(rows, opinion, parity=0)
        precise = all(precision >= 0.99 for _, _, precision in scores.values())
        recall = min(scores["word pair"][0] / 0.9, scores["single word"][0] / 0.8)
        results.append((precise, recall, opinion, scores))
    results.sort(key=lambda result: (result[0], result[1]), reverse=True)
    print(f"{len(results)} settings, even-numbered items; best five:")
    for _, _, opinion, scores in results[:5]:
        print(opinion, {k: tuple(round(x, 3) for x in v) for k, v in scores.items()})
    best = results[0][2]
    print("odd-numbered items:", {k: tuple(round(x, 3) for x in v)
                                  for k, v in tally(rows, best, parity=1).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
