"""Fine-tuning an embedder on the project's own data (``manage.py semantic_search_finetune``).

Training pairs (anchor -> positive) come from the user's judgments (BEIR queries and qrels,
the files the evaluate command reads) or, with no labels at all, from two fields of the
registered model (title -> body, question -> answer). Hard negatives are what today's search
ranks high for the anchor that is not one of its positives. The loss is sentence-transformers'
MultipleNegativesRankingLoss (in-batch negatives plus the hard ones), trained in a plain
PyTorch loop (no ``datasets``/``accelerate``); the result is a new model folder whose version
differs from the base model's (a marker file is part of the folder's fingerprint), so pointing
the embedder at it moves the index without mixing vector spaces (versions.py).

Nothing a search runs imports this module.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .beir import Qrels, ndcg_at
from .reranking import MARKER  # written into every trained folder: a new version

# A reranker's relevance head starts from random weights: it learns at this rate (the encoder
# under it at the options' rate).
HEAD_LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Example:
    """One training pair: an anchor (query, title, question) and a text it should find."""

    query_id: str
    anchor: str
    positive_id: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingOptions:
    """CPU defaults: a small batch of short texts, one epoch, the usual fine-tuning rate."""

    epochs: int = 1
    batch_size: int = 16
    max_length: int = 256
    learning_rate: float = 2e-5
    warmup_share: float = 0.1
    hard_negatives: int = 1
    held_out_share: float = 0.2
    seed: int = 13


@dataclass
class TrainingReport:
    output: str
    base_version: str
    examples: int
    held_out_queries: int
    steps: int
    seconds: float
    peak_rss_mb: float
    ndcg_before: float | None = None
    ndcg_after: float | None = None
    options: dict = field(default_factory=dict)


class TrainingInputError(ValueError):
    """The training data cannot make a model (the message says why)."""


# --- Pairs ------------------------------------------------------------------------------------


def examples_from_judgments(
    queries: Mapping[str, str], qrels: Qrels, documents: Mapping[str, str]
) -> list[Example]:
    """One example per (query, relevant document) whose texts are known."""
    examples = [
        Example(query_id, queries[query_id], doc_id, documents[doc_id])
        for query_id, relevant in qrels.items() if query_id in queries
        for doc_id in sorted(relevant) if doc_id in documents and documents[doc_id].strip()
    ]
    if not examples:
        raise TrainingInputError(
            "no judged pair has both texts: the qrels' query ids must be in the queries file "
            "and their corpus ids among the documents"
        )
    return examples


def examples_from_fields(rows: Iterable[tuple[str, str | None, str | None]]) -> list[Example]:
    """One example per (id, anchor field, positive field) row with both texts; the anchor is
    its own query."""
    examples = [
        Example(str(key), str(anchor).strip(), str(key), str(positive).strip())
        for key, anchor, positive in rows
        if anchor and positive and str(anchor).strip() and str(positive).strip()
    ]
    if len(examples) < 2:
        raise TrainingInputError(
            "fewer than two objects have both fields filled: nothing to learn from"
        )
    return examples


def sample(examples: Sequence[Example], count: int, seed: int) -> list[Example]:
    """At most ``count`` examples, a seeded random sample in their original order."""
    if len(examples) <= count:
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), count))
    return [example for index, example in enumerate(examples) if index in keep]


def split_by_query(
    examples: Sequence[Example], held_out_share: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Training and held-out examples, split by query (a query is on one side only)."""
    if not 0 <= held_out_share < 1:
        raise TrainingInputError(f"the held-out share must be in [0, 1), got {held_out_share}")
    query_ids = sorted({example.query_id for example in examples})
    random.Random(seed).shuffle(query_ids)
    held = set(query_ids[: int(round(held_out_share * len(query_ids)))])
    train = [e for e in examples if e.query_id not in held]
    if not train:
        raise TrainingInputError("no training pairs left after the held-out split")
    return train, [e for e in examples if e.query_id in held]


def with_hard_negatives(
    examples: Sequence[Example],
    ranked: Callable[[str], Sequence[str]],
    documents: Mapping[str, str],
    count: int,
    seed: int,
) -> list[Example]:
    """Each example with ``count`` negatives: the documents ``ranked(anchor)`` puts highest
    that are none of the anchor's positives (random documents when the search has too few)."""
    positives: dict[str, set[str]] = {}
    for example in examples:
        positives.setdefault(example.query_id, set()).add(example.positive_id)
    rng, ids = random.Random(seed), sorted(documents)
    found: dict[str, list[str]] = {}
    result = []
    for example in examples:
        if count <= 0:
            result.append(example)
            continue
        if example.query_id not in found:
            found[example.query_id] = [
                doc_id for doc_id in ranked(example.anchor)
                if doc_id not in positives[example.query_id] and doc_id in documents
            ][:count]
        negatives = list(found[example.query_id])
        while len(negatives) < count and len(ids) > len(positives[example.query_id]):
            pick = rng.choice(ids)
            if pick not in positives[example.query_id] and pick not in negatives:
                negatives.append(pick)
        result.append(Example(example.query_id, example.anchor, example.positive_id,
                              example.positive, tuple(documents[n] for n in negatives)))
    return result


def batches(examples: Sequence[Example], size: int, seed: int) -> list[list[Example]]:
    """Shuffled batches in which no document is the positive of two examples (each one is an
    in-batch negative of the others: a repeated positive would be a false negative)."""
    pending = list(examples)
    random.Random(seed).shuffle(pending)
    result: list[list[Example]] = []
    while pending:
        batch, seen, rest = [], set(), []
        for example in pending:
            if len(batch) < size and example.positive_id not in seen:
                batch.append(example)
                seen.add(example.positive_id)
            else:
                rest.append(example)
        result.append(batch)
        pending = rest
    return result


# --- Training ---------------------------------------------------------------------------------


def _load(path: str, max_length: int):
    """The model at ``path`` for training: texts cut at ``max_length`` tokens (the saved model
    keeps its own limit, so the index's chunks do not change size)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu", local_files_only=True)
    model.saved_max_seq_length = model.max_seq_length
    model.max_seq_length = min(max_length, model.max_seq_length)
    return model


def _step(model, loss, optimizer, scheduler, batch: Sequence[Example], prefixes, negatives: int):
    query_prefix, passage_prefix = prefixes
    columns = [[query_prefix + e.anchor for e in batch],
               [passage_prefix + e.positive for e in batch]]
    columns += [[passage_prefix + e.negatives[i] for e in batch] for i in range(negatives)]
    features = [model.tokenize(texts) for texts in columns]
    return _update(loss(features, None), model, optimizer, scheduler)


def _update(value, model, optimizer, scheduler) -> float:
    """One optimizer step on the loss ``value`` (gradients clipped at 1)."""
    import torch

    value.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return float(value.detach())


def _optimizer(model, options: TrainingOptions, steps: int, new_head: str | None = None):
    """AdamW with linear warmup and decay; parameters whose name starts with ``new_head`` (a
    freshly initialized layer) learn at HEAD_LEARNING_RATE, the pretrained ones at the
    options' rate."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    named = list(model.named_parameters())
    head = [p for name, p in named if new_head and name.startswith(new_head)]
    body = [p for name, p in named if not (new_head and name.startswith(new_head))]
    groups = [{"params": body, "lr": options.learning_rate}]
    if head:
        groups.append({"params": head, "lr": max(HEAD_LEARNING_RATE, options.learning_rate)})
    optimizer = torch.optim.AdamW(groups)
    warmup = int(options.warmup_share * steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(steps, 1))


def _negatives_per_example(examples: Sequence[Example], wanted: int) -> int:
    return min([wanted, *(len(e.negatives) for e in examples)]) if wanted > 0 else 0


def estimate_seconds(
    base_path: str, prefixes: tuple[str, str], examples: Sequence[Example],
    options: TrainingOptions,
) -> tuple[float, int]:
    """Seconds the training will take (two timed steps on a copy of the model, that is then
    thrown away) and its number of steps."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    planned = batches(examples, options.batch_size, options.seed)
    steps = options.epochs * len(planned)
    model = _load(base_path, options.max_length)
    model.train()
    loss = MultipleNegativesRankingLoss(model)
    optimizer, scheduler = _optimizer(model, options, steps)
    negatives = _negatives_per_example(examples, options.hard_negatives)
    largest = max(planned, key=len)
    _step(model, loss, optimizer, scheduler, largest, prefixes, negatives)  # warm-up
    started = time.perf_counter()
    _step(model, loss, optimizer, scheduler, largest, prefixes, negatives)
    return (time.perf_counter() - started) * steps, steps


def train(
    base_path: str,
    prefixes: tuple[str, str],
    examples: Sequence[Example],
    options: TrainingOptions,
    output: Path,
    marker: Mapping[str, object],
    progress: bool = True,
) -> tuple[int, float]:
    """Fine-tune the model at ``base_path`` on ``examples`` and save it to ``output`` (with the
    marker file). Returns the steps taken and the seconds they took."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from tqdm import tqdm

    torch.manual_seed(options.seed)
    model = _load(base_path, options.max_length)
    model.train()
    loss = MultipleNegativesRankingLoss(model)
    negatives = _negatives_per_example(examples, options.hard_negatives)
    planned = [batches(examples, options.batch_size, options.seed + epoch)
               for epoch in range(options.epochs)]
    steps = sum(len(epoch) for epoch in planned)
    optimizer, scheduler = _optimizer(model, options, steps)
    started = time.perf_counter()
    with tqdm(total=steps, desc="fine-tuning", unit="step", disable=not progress) as bar:
        for epoch in planned:
            for batch in epoch:
                value = _step(model, loss, optimizer, scheduler, batch, prefixes, negatives)
                bar.set_postfix(loss=f"{value:.3f}")
                bar.update(1)
    seconds = time.perf_counter() - started
    model.eval()
    model.max_seq_length = model.saved_max_seq_length
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    (output / MARKER).write_text(json.dumps(marker, indent=2, default=str) + "\n",
                                 encoding="utf-8")
    return steps, seconds


def reranker_pairs(examples: Sequence[Example]) -> list[tuple[str, str, float]]:
    """(anchor, text, label): each positive 1, each of its hard negatives 0."""
    pairs = []
    for example in examples:
        pairs.append((example.anchor, example.positive, 1.0))
        pairs += [(example.anchor, negative, 0.0) for negative in example.negatives]
    return pairs


def train_reranker(
    base_path: str,
    examples: Sequence[Example],
    options: TrainingOptions,
    output: Path,
    marker: Mapping[str, object],
    progress: bool = True,
) -> tuple[int, float]:
    """Train a cross-encoder (a relevance head on the model at ``base_path``) to tell each
    example's positive from its hard negatives (binary cross-entropy), and save it to
    ``output``. Returns the steps taken and the seconds they took."""
    import torch
    from sentence_transformers import CrossEncoder
    from tqdm import tqdm

    pairs = reranker_pairs(examples)
    if not any(label == 0.0 for _, _, label in pairs):
        raise TrainingInputError("a reranker needs hard negatives (--hard-negatives >= 1)")
    torch.manual_seed(options.seed)
    model = CrossEncoder(base_path, num_labels=1, max_length=options.max_length, device="cpu",
                         local_files_only=True)
    network, tokenizer = model.model, model.tokenizer
    rng = random.Random(options.seed)
    planned = []
    for _ in range(options.epochs):
        order = list(pairs)
        rng.shuffle(order)
        planned += [order[i : i + options.batch_size]
                    for i in range(0, len(order), options.batch_size)]
    optimizer, scheduler = _optimizer(network, options, len(planned), new_head="classifier")
    loss = torch.nn.BCEWithLogitsLoss()
    network.train()
    started = time.perf_counter()
    with tqdm(total=len(planned), desc="training the reranker", unit="step",
              disable=not progress) as bar:
        for batch in planned:
            features = tokenizer([a for a, _, _ in batch], [t for _, t, _ in batch],
                                 padding=True, truncation=True, max_length=options.max_length,
                                 return_tensors="pt")
            labels = torch.tensor([label for _, _, label in batch], dtype=torch.float32)
            value = _update(loss(network(**features).logits.view(-1), labels), network,
                            optimizer, scheduler)
            bar.set_postfix(loss=f"{value:.3f}")
            bar.update(1)
    seconds = time.perf_counter() - started
    network.eval()
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    (output / MARKER).write_text(json.dumps({**marker, "kind": "reranker"}, indent=2,
                                            default=str) + "\n", encoding="utf-8")
    return len(planned), seconds


# Blend weights of the cross-encoder tried on the held-out queries (reranking.blend).
BLEND_GRID = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class RerankedQuery:
    """A held-out query's first stage (ids in fused order, fused scores), the cross-encoder's
    scores of the same objects, and the ids judged relevant."""

    ids: tuple[str, ...]
    fused: tuple[float, ...]
    reranked: tuple[float, ...]
    relevant: frozenset[str]


def blend_ndcgs(queries: Sequence[RerankedQuery], weight: float) -> list[float]:
    """Each query's nDCG@10 with its objects ordered by the blend at ``weight``."""
    from .reranking import blend

    values = []
    for query in queries:
        keys = blend(query.fused, query.reranked, weight)
        order = sorted(range(len(query.ids)), key=lambda i: (-keys[i], i))
        values.append(ndcg_at([query.ids[i] for i in order], dict.fromkeys(query.relevant, 1),
                              10))
    return values


# A blend must beat the fused order in this share of bootstrap resamples of the held-out
# queries: a gain a few queries make (noise on a small held-out set) does not count.
BLEND_CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 1000


def choose_blend(queries: Sequence[RerankedQuery], seed: int = 13
                 ) -> tuple[float, dict[float, float]]:
    """The grid weight with the best held-out nDCG@10, if it beats the fused order (weight 0)
    in BLEND_CONFIDENCE of bootstrap resamples of the queries, else 0 (the first stage is
    trusted unless the reranker clearly beats it); and every weight's mean nDCG@10."""
    per_query = {weight: blend_ndcgs(queries, weight) for weight in BLEND_GRID}
    scores = {weight: sum(values) / len(values) if values else math.nan
              for weight, values in per_query.items()}
    if not queries:
        return 1.0, scores
    best = max(scores.values())
    weight = min(w for w, value in scores.items() if value >= best - 1e-12)
    gains = [after - before for after, before in zip(per_query[weight], per_query[0.0],
                                                     strict=True)]
    rng = random.Random(seed)
    wins = sum(sum(rng.choices(gains, k=len(gains))) > 0 for _ in range(BOOTSTRAP_SAMPLES))
    return (weight if wins >= BLEND_CONFIDENCE * BOOTSTRAP_SAMPLES else 0.0), scores


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux: ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- Held-out metric --------------------------------------------------------------------------


def embedder_ndcg(
    encode_queries: Callable[[list[str]], np.ndarray],
    encode_documents: Callable[[list[str]], np.ndarray],
    held_out: Sequence[Example],
    documents: Mapping[str, str],
) -> float:
    """nDCG@10 of the held-out anchors against ``documents`` by the model alone (exact
    cosine over all documents)."""
    queries = held_out_queries(held_out)
    if not queries:
        return math.nan
    ids = sorted(documents)
    matrix = encode_documents([documents[i] for i in ids])
    scores = encode_queries([anchor for _, anchor, _ in queries]) @ matrix.T
    total = 0.0
    for row, (_, _, relevant) in zip(scores, queries, strict=True):
        top = [ids[i] for i in np.argsort(-row)[:10]]
        total += ndcg_at(top, dict.fromkeys(relevant, 1), 10)
    return total / len(queries)


def held_out_queries(held_out: Sequence[Example]) -> list[tuple[str, str, frozenset[str]]]:
    """``(query id, anchor, relevant ids)`` of each held-out query, by query id."""
    relevant: dict[str, set[str]] = {}
    anchors: dict[str, str] = {}
    for example in held_out:
        relevant.setdefault(example.query_id, set()).add(example.positive_id)
        anchors[example.query_id] = example.anchor
    return [(q, anchors[q], frozenset(relevant[q])) for q in sorted(anchors)]


def report_json(report: TrainingReport) -> str:
    return json.dumps(asdict(report), indent=2)
