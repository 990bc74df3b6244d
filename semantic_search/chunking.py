"""Token-aware chunking of long texts, with overlap; nothing is ever silently truncated."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .embedders import Embedder


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # character offsets into the document text
    end: int
    text: str

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def chunk_capacity(embedder: Embedder) -> int | None:
    """Tokens of document text that fit in one chunk (None: the embedder has no limit)."""
    if not embedder.max_tokens:
        return None
    reserved = embedder.reserved_tokens() if hasattr(embedder, "reserved_tokens") else 2
    return max(16, int(embedder.max_tokens) - reserved)


def split_spans(
    spans: list[tuple[int, int]], capacity: int, overlap: int
) -> list[tuple[int, int]]:
    """Group token spans into windows of ``capacity`` tokens that overlap by ``overlap`` tokens.

    Returns (first token, last token exclusive) index pairs.
    """
    if len(spans) <= capacity:
        return [(0, len(spans))]
    overlap = max(0, min(overlap, capacity // 2))
    step = capacity - overlap
    windows = []
    start = 0
    while True:
        end = min(start + capacity, len(spans))
        windows.append((start, end))
        if end == len(spans):
            return windows
        start += step


def chunk_text(text: str, embedder: Embedder, overlap: int = 32) -> list[Chunk]:
    """Split ``text`` into chunks that each fit the embedder's token window."""
    if not text.strip():
        return []
    capacity = chunk_capacity(embedder)
    if capacity is None:
        return [Chunk(0, 0, len(text), text)]
    spans = [span for span in embedder.token_spans(text) if span[1] > span[0]]
    if len(spans) <= capacity:
        return [Chunk(0, 0, len(text), text)]
    chunks = []
    for index, (first, last) in enumerate(split_spans(spans, capacity, overlap)):
        start = 0 if first == 0 else spans[first][0]
        end = len(text) if last == len(spans) else spans[last - 1][1]
        chunks.append(Chunk(index, start, end, text[start:end]))
    return chunks
