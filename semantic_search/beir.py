"""BEIR-format files (corpus.jsonl, queries.jsonl, qrels TSV) and the ranking metrics, as
pure functions: read by the evaluation command and the fine-tuning command alike."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .languages import normalize_code

DOC_ID_MAX = 255

Qrels = dict[str, dict[str, int]]


class EvaluationError(Exception):
    """The evaluation cannot run (the message says why)."""


class EvaluationInputError(EvaluationError, ValueError):
    """A malformed line of an input file (the message names the file and the line)."""


@dataclass(frozen=True)
class CorpusDocument:
    doc_id: str
    title: str
    text: str
    language: str | None


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str
    language: str | None


# --- Readers ----------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a UTF-8 file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise _error(path, number, f"not UTF-8 ({exc.reason})") from exc
            if line.strip():
                yield number, line


def _error(path: Path, number: int, problem: str) -> EvaluationInputError:
    return EvaluationInputError(f"{path}, line {number}: {problem}")


def _json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in _lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(path, number, f"invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise _error(path, number, "expected a JSON object")
        yield number, row


def _required(row: dict, key: str, path: Path, number: int) -> str:
    if row.get(key) is None:
        raise _error(path, number, f"missing key {key!r}")
    return str(row[key])


def _identifier(row: dict, path: Path, number: int, seen: set[str]) -> str:
    identifier = _required(row, "_id", path, number)
    if identifier in seen:
        raise _error(path, number, f"duplicate _id {identifier!r}")
    if len(identifier) > DOC_ID_MAX:
        raise _error(path, number, f"_id longer than {DOC_ID_MAX} characters")
    seen.add(identifier)
    return identifier


def read_corpus(path: str | Path) -> list[CorpusDocument]:
    """The documents of a BEIR ``corpus.jsonl``."""
    path, seen, documents = Path(path), set(), []
    for number, row in _json_objects(path):
        documents.append(
            CorpusDocument(
                doc_id=_identifier(row, path, number, seen),
                title=str(row.get("title") or ""),
                text=_required(row, "text", path, number),
                language=normalize_code(row.get("language")),
            )
        )
    return documents


def read_queries(path: str | Path) -> list[Query]:
    """The queries of a BEIR ``queries.jsonl``, in file order."""
    path, seen, queries = Path(path), set(), []
    for number, row in _json_objects(path):
        query_id = _identifier(row, path, number, seen)
        text = _required(row, "text", path, number)
        queries.append(Query(query_id, text, normalize_code(row.get("language"))))
    return queries


def read_qrels(path: str | Path) -> Qrels:
    """query id -> {relevant corpus id: grade} from a BEIR qrels TSV (grades <= 0 dropped)."""
    path, qrels = Path(path), {}
    for index, (number, line) in enumerate(_lines(path)):
        columns = line.split()
        if index == 0 and not (len(columns) == 3 and _is_integer(columns[2])):
            continue  # the header line
        if len(columns) != 3:
            raise _error(
                path, number,
                f"expected 3 columns (query-id, corpus-id, score), found {len(columns)}",
            )
        query_id, doc_id, score = columns
        if not _is_integer(score):
            raise _error(path, number, f"score {score!r} is not an integer")
        if int(score) > 0:
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def judged_queries(queries: Sequence[Query], qrels: Qrels, limit: int | None = None) -> list[Query]:
    """The queries that have at least one relevant document, optionally the first ``limit``."""
    judged = [query for query in queries if qrels.get(query.query_id)]
    return judged[:limit] if limit is not None else judged


# --- Metrics ----------------------------------------------------------------------------------


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k with gain = grade and discount log2(rank + 1)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    return len(wanted.intersection(ranking[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top k (0 if none)."""
    for rank, doc in enumerate(ranking[:k], 1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


Metric = Callable[[Sequence[str], Mapping[str, int], int], float]
METRICS: dict[str, tuple[Metric, int]] = {
    "ndcg@10": (ndcg_at, 10),
    "recall@10": (recall_at, 10),
    "recall@100": (recall_at, 100),
    "mrr@10": (mrr_at, 10),
}


def score_rankings(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Each metric averaged over the ranked queries that have judgments."""
    judged = [query_id for query_id in rankings if qrels.get(query_id)]
    scores = {}
    for name, (metric, k) in METRICS.items():
        values = [metric(rankings[q], qrels[q], k) for q in judged]
        scores[name] = sum(values) / len(values) if values else 0.0
    return scores


# --- Loading and indexing the corpus ----------------------------------------------------------
