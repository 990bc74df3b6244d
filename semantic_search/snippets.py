"""Snippets that show the part of a result that matched (``search_highlight``).

For each fetched result: the text of its best-matching chunk (the span the search statement
returns for the best-ranked vector arm; the whole indexed text for a keyword-only hit), split
into sentences; each sentence is scored by the share of the query's words it contains and, in
a result that holds none of them (found by meaning: another language, other words), by meaning
(cosine between the query vector and the sentence's vector from the same embedder: encoded in
one batch per page, ~20-50 ms a sentence on a CPU, and cached; SNIPPET_MEANING); the best
sentence and its neighbours up to
``SNIPPET_CHARS`` form the snippet, HTML-escaped, with the query's words marked ``<b>``. It is
in the document's own language, so a result found across languages shows its own words.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db.models import Model
from django.utils.functional import Promise
from django.utils.html import escape

from . import conf
from .embedders import get_embedder
from .query import SearchPlan, VectorArm
from .registry import get_registration
from .routing import BoundedCache
from .segmentation import has_unsegmented, segment

logger = logging.getLogger(__name__)

# Sentence ends: Latin, CJK, Arabic, Devanagari and Thai-style punctuation, or a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?;:…])\s+|(?<=[。！？；])|(?<=[؟۔।])\s*|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
# Words shorter than this do not count as evidence (most stop words are this short).
MIN_TERM_CHARS = 4
# Two words share a stem when both are at least this long and agree on this many characters.
STEM_CHARS = 5
# Share of the best sentence's score from the query words it contains (tuned on XQuAD, see
# bench/bench_snippets.py).
LEXICAL_SHARE = 0.1
# Text of a keyword-only hit that is looked at (no chunk span: the document's first part).
MAX_SCANNED_CHARS = 100_000


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[Sentence]:
    """The sentences of ``text[start:end]`` as spans of ``text`` (blank ones dropped)."""
    end = len(text) if end is None else min(end, len(text))
    sentences, position = [], start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.start() > position:
            sentences.append(Sentence(position, match.start()))
        position = max(position, match.end())
    if position < end:
        sentences.append(Sentence(position, end))
    return [s for s in sentences if text[s.start : s.end].strip()]


def query_terms(query: str) -> list[str]:
    """The query's words that count as evidence, casefolded (CJK/Thai as bigrams)."""
    words = _WORD.findall(segment(query).casefold())
    return list(dict.fromkeys(
        w for w in words if len(w) >= MIN_TERM_CHARS or w.isdigit() or has_unsegmented(w)
    ))


def _same_word(word: str, term: str) -> bool:
    if word == term:
        return True
    return (len(word) >= STEM_CHARS and len(term) >= STEM_CHARS
            and word[:STEM_CHARS] == term[:STEM_CHARS])


def _words(text: str) -> list[str]:
    return _WORD.findall(segment(text).casefold())


def lexical_evidence(sentence: str, terms: Sequence[str]) -> float:
    """The share of the query's terms the sentence contains."""
    if not terms:
        return 0.0
    words = set(_words(sentence))
    found = sum(any(_same_word(word, term) for word in words) for term in terms)
    return found / len(terms)


def choose_window(
    text: str, sentences: Sequence[Sentence], scores: Sequence[float], max_chars: int
) -> tuple[int, int]:
    """The best sentence, then its neighbours (next, then previous) while they fit."""
    best = int(np.argmax(scores)) if len(scores) else 0
    first = last = best
    while True:
        grown = False
        for candidate in (last + 1, first - 1):
            if 0 <= candidate < len(sentences):
                low, high = min(first, candidate), max(last, candidate)
                if sentences[high].end - sentences[low].start <= max_chars:
                    first, last, grown = low, high, True
        if not grown:
            break
    return sentences[first].start, sentences[last].end


def render(text: str, start: int, end: int, terms: Sequence[str], max_chars: int) -> str:
    """``text[start:end]`` cut to ``max_chars`` around its first marked word, HTML-escaped, query
    words in ``<b>``, with "…" where the text goes on."""
    if end - start > max_chars:
        anchor = _first_match(text, start, end, terms)
        start = max(start, min(anchor - max_chars // 4, end - max_chars))
        end = start + max_chars
        start, end = _word_bounds(text, start, end)
    pieces, position = [], start
    for match in _WORD.finditer(text, start, end):
        if _matches_any(match.group(), terms):
            pieces += [escape(text[position : match.start()]), "<b>",
                       escape(match.group()), "</b>"]
            position = match.end()
    pieces.append(escape(text[position:end]))
    body = "".join(pieces).strip()
    return ("… " if start > 0 else "") + body + (" …" if end < len(text.rstrip()) else "")


def _matches_any(word: str, terms: Sequence[str]) -> bool:
    words = _words(word)
    return any(_same_word(w, t) or (has_unsegmented(w) and t in w) for w in words for t in terms)


def _first_match(text: str, start: int, end: int, terms: Sequence[str]) -> int:
    for match in _WORD.finditer(text, start, end):
        if _matches_any(match.group(), terms):
            return match.start()
    return start


def _word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """Move a cut to the nearest spaces inside it, when there are any."""
    if start > 0 and not text[start - 1].isspace():
        space = text.find(" ", start, end)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(text) and not text[end].isspace():
        space = text.rfind(" ", start, end)
        end = space if space > end - 30 else end
    return start, end


SENTENCE_CACHE_SIZE = 20_000
SENTENCE_BATCH = 8
# Sentences a batch of results may encode (the first results' first): bounds a page's first
# view to about a second on a 2-core CPU.
MAX_MEANING_SENTENCES = 24
SNIPPET_MEANINGS = ("unmatched", "ties", "all", "none")


class _SentenceVectors(BoundedCache):
    """Sentence vectors per (embedder, version, sentence); the missing ones encoded together."""

    def get(self, name: str, sentences: Sequence[str], version: str | None = None) -> np.ndarray:
        embedder = get_embedder(name, version)

        def encode(missing: list[tuple]) -> np.ndarray:
            texts = [key[2] for key in missing]
            return np.concatenate([  # small batches: less padding (~1.3x faster on a CPU)
                embedder.encode_passages(texts[i : i + SENTENCE_BATCH])
                for i in range(0, len(texts), SENTENCE_BATCH)
            ]).astype(np.float32)

        keys = [(name, str(embedder.version), text) for text in sentences]
        return np.stack(self.get_many(keys, encode))


sentence_vectors = _SentenceVectors(SENTENCE_CACHE_SIZE)


def _snippet_arm(plan: SearchPlan | None) -> VectorArm | None:
    """The vector arm whose space scores sentences: the multilingual one, else the first."""
    if plan is None or not plan.vectors:
        return None
    return next((arm for arm in plan.vectors if arm.languages is None), plan.vectors[0])


def highlight(
    objects: Sequence[Model], query: str, plan: SearchPlan | None, language: str | None = None
) -> None:
    """Set ``search_highlight`` on fetched results: a lazy string, computed for the whole batch
    the first time one of them is read (pages that never show snippets pay nothing).
    ``language``: the query's (results in another language are scored by meaning)."""
    batch = _Batch(list(objects), query, plan, language)
    for index, obj in enumerate(objects):
        obj.search_highlight = LazyHighlight(batch, index)


class _Batch:
    """Results fetched together, whose snippets are computed together."""

    def __init__(
        self, objects: list[Model], query: str, plan: SearchPlan | None,
        language: str | None = None,
    ) -> None:
        self.objects, self.query, self.plan, self.language = objects, query, plan, language
        self._values: list[str] | None = None
        self._lock = threading.Lock()

    def value(self, index: int) -> str:
        with self._lock:
            if self._values is None:
                try:
                    self._values = snippets_of(self.objects, self.query, self.plan,
                                               language=self.language)
                except Exception:  # noqa: BLE001  (a snippet must never break a result page)
                    logger.warning("semantic_search: snippets by meaning failed; using the "
                                   "query's words", exc_info=True)
                    self._values = snippets_of(self.objects, self.query, None)
                self.objects = []  # the results no longer need each other
            return self._values[index]


class LazyHighlight(Promise):
    """``search_highlight``: HTML (escaped text, query words in ``<b>``), computed on first use.

    Behaves as its string does (``str()``, ``in``, ``==``, templates, ``DjangoJSONEncoder``,
    pickling); ``str(result.search_highlight)`` gives a plain ``str``."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch, self._index = batch, index

    def __str__(self) -> str:
        return self._batch.value(self._index)

    def __repr__(self) -> str:
        return repr(str(self))

    def __eq__(self, other: object) -> bool:
        return str(self) == (str(other) if isinstance(other, LazyHighlight) else other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __contains__(self, item: str) -> bool:
        return item in str(self)

    def __len__(self) -> int:
        return len(str(self))

    def __add__(self, other: str) -> str:
        return str(self) + other

    def __radd__(self, other: str) -> str:
        return other + str(self)

    def __reduce__(self):
        return (str, (str(self),))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(str(self), name)


def snippets_of(
    objects: Sequence[Model], query: str, plan: SearchPlan | None, meaning: str | None = None,
    language: str | None = None,
) -> list[str]:
    """The snippet of each result (see the module docstring); ``plan`` None: by words only.
    ``meaning`` (default: the SNIPPET_MEANING setting): which sentences are also scored by
    meaning: ``"unmatched"`` all sentences of a result found by meaning (its chunk holds none of
    the query's words, or it is in another language than ``language``, the query's, or the
    query's is unknown: shared names and cognates are weak evidence across languages),
    ``"ties"`` also those sharing the most query words when several do, ``"all"``, ``"none"``."""
    meaning = meaning or str(conf.get("SNIPPET_MEANING"))
    if meaning not in SNIPPET_MEANINGS:
        raise ValueError(f"SNIPPET_MEANING must be one of {SNIPPET_MEANINGS}, got {meaning!r}")
    if not objects:
        return []
    registration = get_registration(objects[0])
    max_chars = int(conf.get("SNIPPET_CHARS"))
    terms = query_terms(query)
    arm = _snippet_arm(plan) if meaning != "none" else None
    work = []
    for obj in objects:
        text = registration.text(obj)
        start = getattr(obj, "search_chunk_start", None)
        end = getattr(obj, "search_chunk_end", None)
        in_chunk = start is not None and end is not None and start < len(text)
        if not in_chunk:
            start, end = 0, min(len(text), MAX_SCANNED_CHARS)
        sentences = split_sentences(text, start, end)
        words = [lexical_evidence(text[s.start : s.end], terms) for s in sentences]
        encode = [False] * len(sentences)
        if arm is not None and in_chunk and sentences:
            best = max(words)
            encode = [meaning == "all" or share == best for share in words]
            foreign = getattr(obj, "search_document_language", None) != language or not language
            if meaning == "unmatched" and foreign:
                encode = [True] * len(sentences)
            elif (meaning == "ties" and sum(encode) == 1) or (meaning == "unmatched" and best > 0):
                encode = [False] * len(sentences)
        work.append((text, sentences, words, encode))
    work = _within_budget(work)
    similarities = _meaning_scores(work, arm)
    snippets = []
    for (text, sentences, words, encode), semantic in zip(work, similarities, strict=True):
        if not sentences:
            snippets.append("")
            continue
        scores = [LEXICAL_SHARE * share for share in words]
        if any(encode):
            scores = [score + float(sim) if chosen else -math.inf
                      for score, sim, chosen in zip(scores, semantic, encode, strict=True)]
        start, end = choose_window(text, sentences, scores, max_chars)
        snippets.append(render(text, start, end, terms, max_chars))
    return snippets


def _within_budget(work: list) -> list:
    """``work`` with meaning scoring kept for results in order while their sentences fit in
    MAX_MEANING_SENTENCES (the others are scored by words)."""
    left, kept = MAX_MEANING_SENTENCES, []
    for text, sentences, words, encode in work:
        count = sum(encode)
        if count > left:
            encode, count = [False] * len(encode), 0
        left -= count
        kept.append((text, sentences, words, encode))
    return kept


def _meaning_scores(work: list, arm: VectorArm | None) -> list[np.ndarray]:
    """Per result, the cosine of each sentence marked for encoding with the query vector (one
    batch for all results; 0 for the others)."""
    texts = [text[s.start : s.end] for text, sentences, _, encode in work
             for s, chosen in zip(sentences, encode, strict=True) if chosen]
    scores = [np.zeros(len(sentences), dtype=np.float32) for _, sentences, _, _ in work]
    if arm is None or not texts:
        return scores
    vectors = sentence_vectors.get(arm.embedder, texts, arm.version)
    query = np.asarray(arm.vector, dtype=np.float32)
    similarities = iter(vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12))
    for (_, _, _, encode), row in zip(work, scores, strict=True):
        for index, chosen in enumerate(encode):
            if chosen:
                row[index] = next(similarities)
    return scores
