"""Data for choosing the relevance floor: vectors of SciFact and XQuAD documents and queries, and
of random-word queries that match nothing, from the two packaged models.

    .venv/bin/python bench/floor_study.py --data ../shared/data --out .cache/floor

    .venv/bin/python bench/floor_study.py --data ../shared/data --out .cache/floor --analyse

Writes one ``.npz`` per (collection, model): chunk vectors with their document index (chunked
the way the indexer chunks), query vectors, and the query/document ids. ``--analyse`` reads them
and prints, per file, what a vector-side rule does (seconds, not an hour of encoding): the
contrast of a query (best similarity minus the median of its 200 nearest chunks) for real
queries and for nonsense, how many real queries stay under a gate set by the first 32 nonsense
queries (the other 168 are held out), and, for each relative floor, how many relevant documents
of the vector top 10 fall under it and how many documents a real query keeps. This is where
floor.py's rule and its 0.3 come from. Not part of the test run.
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
sys.path[:0] = [str(PROJECT_DIR), str(PROJECT_DIR / "bench")]

from bench_quality import load_xquad  # noqa: E402

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


def analyse(path: Path, qrels: dict[str, set[str]], depth: int = 200) -> None:
    data = np.load(path)
    chunk_sims = data["queries"] @ data["chunks"].T
    owners, query_ids = data["owners"], [str(q) for q in data["query_ids"]]
    documents = {d: i for i, d in enumerate(data["doc_ids"])}
    sims = np.full((len(query_ids), len(documents)), -1.0, dtype=np.float32)
    for chunk, owner in enumerate(owners):
        np.maximum(sims[:, owner], chunk_sims[:, chunk], out=sims[:, owner])
    nearest = -np.sort(-chunk_sims, axis=1)[:, :depth]
    best, background = nearest[:, 0], np.median(nearest, axis=1)
    contrast = best - background
    kinds = {k: [i for i, q in enumerate(query_ids) if q.startswith(k)]
             for k in ("gibberish", "xquad-words", "scifact-words")}
    real = [i for i, q in enumerate(query_ids) if "|" in q or q.isdigit()]
    probes, held = kinds["gibberish"][:32], kinds["gibberish"][32:]
    gate = contrast[probes].max()

    def relevant(query_id: str) -> set[str]:
        return {query_id.split("|")[1]} if "|" in query_id else qrels.get(query_id, set())

    positions = []  # where relevant documents of the vector top 10 lie in their query's contrast
    for i in real:
        for doc in relevant(query_ids[i]) & set(documents):
            similarity = sims[i][documents[doc]]
            if (sims[i] > similarity).sum() < 10 and contrast[i] > 0:
                positions.append((similarity - background[i]) / contrast[i])
    positions = np.asarray(positions)
    print(f"{path.name}: gate {gate:.3f}; real queries under the gate "
          f"{np.mean(contrast[real] < gate):.1%}; nonsense over it: "
          + ", ".join(f"{k} {np.mean(contrast[held if k == 'gibberish' else v] >= gate):.1%}"
                      for k, v in kinds.items()))
    for share in (0.1, 0.2, 0.3, 0.4, 0.5):
        kept = [(sims[i] >= background[i] + share * contrast[i]).sum()
                for i in real if contrast[i] >= gate]
        print(f"  relative floor {share}: relevant of the vector top 10 under it "
              f"{np.mean(positions < share):.1%}; documents kept per real query "
              f"{np.mean(kept):.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / ".cache" / "floor")
    parser.add_argument("--analyse", action="store_true", help="analyse the files written")
    args = parser.parse_args()
    if args.analyse:
        qrels: dict[str, set[str]] = {}
        for line in (args.data / "scifact" / "qrels" / "train.tsv").open():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit() and int(parts[2]) > 0:
                qrels.setdefault(parts[0], set()).add(parts[1])
        for path in sorted(args.out.glob("*.npz")):
            analyse(path, qrels)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    collect(args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
