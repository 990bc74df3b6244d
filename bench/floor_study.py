"""Data for choosing the relevance floor: vectors of SciFact and XQuAD documents and queries, and
of random-word queries that match nothing, from the two packaged models.

    .venv/bin/python bench/floor_study.py --data ../shared/data --out .cache/floor

Writes one ``.npz`` per (collection, model): chunk vectors with their document index (chunked
the way the indexer chunks), query vectors, and the query/document ids. The analysis of the
floor rule reads these files (``--analyse``), so trying a rule costs seconds, not an hour of
encoding. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import string
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

LANGUAGES = ("en", "de", "es", "ru", "zh", "ar")
RANDOM_QUERIES = 200


def random_queries(vocabulary: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(vocabulary, rng.randint(1, 4))) for _ in range(RANDOM_QUERIES)]


def gibberish(seed: int) -> list[str]:
    rng = random.Random(seed)
    word = lambda: "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))  # noqa: E731
    return [" ".join(word() for _ in range(rng.randint(1, 4))) for _ in range(RANDOM_QUERIES)]


def words(texts: list[str]) -> list[str]:
    found = {w.lower() for t in texts for w in re.findall(r"[A-Za-z]{4,}", t)}
    return sorted(found)


def load_xquad(path: Path):
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs, questions = {}, []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            pid = f"{a}-{p}"
            paragraphs[pid] = paragraph["context"]
            questions += [(qa["id"], qa["question"], pid) for qa in paragraph["qas"]]
    return paragraphs, questions


def encode(embedder, doc_ids, doc_texts, query_ids, query_texts, out: Path) -> None:
    from semantic_search.chunking import chunk_text

    if out.exists():
        print("exists", out)
        return
    started = time.time()
    chunk_texts, owners = [], []
    for index, text in enumerate(doc_texts):
        for chunk in chunk_text(text, embedder, overlap=32):
            chunk_texts.append(chunk.text)
            owners.append(index)
    chunks = embedder.encode_passages(chunk_texts)
    queries = embedder.encode_queries(query_texts)
    np.savez_compressed(
        out, chunks=chunks.astype(np.float32), owners=np.asarray(owners),
        queries=queries.astype(np.float32), doc_ids=np.asarray(doc_ids),
        query_ids=np.asarray(query_ids), query_texts=np.asarray(query_texts),
    )
    print(f"{out.name}: {len(doc_texts)} docs, {len(chunk_texts)} chunks, "
          f"{len(query_texts)} queries, {time.time() - started:.0f} s", flush=True)


def collect(data: Path, out: Path) -> None:
    import torch

    from semantic_search.embedders import SentenceTransformerEmbedder

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    e5 = SentenceTransformerEmbedder("multilingual", "packaged:multilingual-e5-small")
    minilm = SentenceTransformerEmbedder("english", "packaged:all-MiniLM-L6-v2")

    corpus = [json.loads(line) for line in (data / "scifact" / "corpus.jsonl").open()]
    lines = (data / "scifact" / "queries.jsonl").open()
    claims = {q["_id"]: q["text"] for q in map(json.loads, lines)}
    judged = sorted({line.split()[0] for line in (data / "scifact" / "qrels" / "train.tsv").open()
                     if line.split()[0] in claims}, key=int)
    xquad = {lang: load_xquad(data / "xquad" / f"xquad.{lang}.json") for lang in LANGUAGES}
    off_domain = words([q for _, q, _ in xquad["en"][1]])
    in_domain = words([d["text"] for d in corpus[:2000]])
    noise = {"gibberish": gibberish(1), "xquad-words": random_queries(off_domain, 2),
             "scifact-words": random_queries(in_domain, 3)}
    noise_ids = [f"{kind}-{i}" for kind, texts in noise.items() for i in range(len(texts))]
    noise_texts = [t for texts in noise.values() for t in texts]

    doc_ids = [d["_id"] for d in corpus]
    doc_texts = ["\n\n".join(p for p in (d.get("title") or "", d["text"]) if p) for d in corpus]
    query_ids = [*judged, *noise_ids]
    query_texts = [*(claims[q] for q in judged), *noise_texts]
    for name, embedder in (("minilm", minilm), ("e5", e5)):
        encode(embedder, doc_ids, doc_texts, query_ids, query_texts, out / f"scifact-{name}.npz")
    for lang in LANGUAGES:
        paragraphs, questions = xquad[lang]
        q_ids = [f"{q}|{pid}" for q, _, pid in questions] + noise_ids
        q_texts = [text for _, text, _ in questions] + noise_texts
        models = (("e5", e5), ("minilm", minilm)) if lang == "en" else (("e5", e5),)
        for name, embedder in models:
            encode(embedder, list(paragraphs), list(paragraphs.values()), q_ids, q_texts,
                   out / f"xquad-{lang}-{name}.npz")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / ".cache" / "floor")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    collect(args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
