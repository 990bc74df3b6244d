"""From a query string to a search plan: language, route, query vectors.

Routes (``languages=``):

- ``"auto"`` (default): the lexical arm in the query language's configuration, the multilingual
  embedder over every document, and the query language's monolingual embedder when one exists.
- ``"same"``: only documents in the query's language, each arm as above.
- ``"all"``: cross-lingual; the multilingual embedder alone (``mode="lexical"`` still reads
  lexemes in the query's language).

An unsure detection never guesses: it takes the multilingual embedder and reads the query's
lexemes with every configuration the model's index holds. Languages Postgres does not segment
(Chinese, Japanese, Thai, ...) are read as character bigrams, as their documents are indexed
(segmentation.py).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import conf
from .embedders import get_embedder
from .languages import (
    Detection,
    detect_language,
    normalize_code,
    script_candidates,
    search_config,
    unsegmented,
)
from .query import LexicalArm, SearchPlan, VectorArm
from .registry import clean_text
from .segmentation import segment, segment_websearch

MODES = ("hybrid", "vector", "lexical")
LANGUAGE_MODES = ("auto", "same", "all")
MAX_QUERY_CHARS = 2000

# Detections the index's evidence replaces: langdetect's (its confidence is not evidence:
# "Schrodinger cat zebra" is German at 0.99999) and those it could not make.
EVIDENCE_DECIDES = ("langdetect", "unsure", "too-short")

_PHRASE = re.compile(r'"[^"]*"')
_EXCLUDED_PHRASE = re.compile(r'(?:^|(?<=\s))-("[^"]*")')
_EXCLUSION = re.compile(r"(?:^|\s)-(\w[\w'-]*)", re.UNICODE)


@dataclass(frozen=True)
class Route:
    """What was decided for a query (exposed on the results as ``search_route``)."""

    language: str | None
    detection: Detection
    lexical_configs: tuple[str, ...] | None  # None: every configuration the index holds
    embedders: tuple[str, ...]
    restrict_language: str | None

    @property
    def label(self) -> str:
        parts = []
        if self.lexical_configs is None:
            parts.append("lexical:indexed")
        elif self.lexical_configs:
            parts.append("lexical:" + "+".join(self.lexical_configs))
        parts += [f"vector:{name}" for name in self.embedders]
        return " ".join(parts)


def split_operators(query: str) -> tuple[str, str, str]:
    """Separate websearch syntax the user wrote ("phrases", -exclusions) from plain words.

    Returns (plain words, the phrases, the exclusions), the last two in websearch syntax.
    Phrases must match in lexical hits (vector hits are kept: natural questions often quote);
    exclusions (-word, -"a phrase") hold for every result.
    """
    excluded_phrases = _EXCLUDED_PHRASE.findall(query)
    query = _EXCLUDED_PHRASE.sub(" ", query)
    phrases = _PHRASE.findall(query)
    exclusions = [*excluded_phrases, *_EXCLUSION.findall(query)]
    plain = _EXCLUSION.sub(" ", _PHRASE.sub(" ", query))
    plain = " ".join(p.strip('"') for p in phrases) + " " + plain
    plain = re.sub(r"(?i)\bor\b", " ", plain)
    return " ".join(plain.split()), " ".join(phrases), " ".join(f"-{w}" for w in exclusions)


def normalize_query(query: str) -> str:
    return " ".join(clean_text(str(query)).split())[:MAX_QUERY_CHARS]


def route(
    query: str,
    *,
    languages: str = "auto",
    language: str | None = None,
    mode: str = "hybrid",
    indexed_languages: frozenset[str] = frozenset(),
    evidence: Callable[[str, tuple[str, ...]], Detection | None] | None = None,
) -> Route:
    """Decide the query language and which arms serve it.

    Detection chooses among the site's ``LANGUAGES``, the languages of the monolingual
    embedders and ``indexed_languages`` (those the model's documents are indexed in), so a
    corpus in a language the settings do not list still gets its own full text. When the script
    leaves several languages, ``evidence`` (the index's, see evidence.py) decides when given,
    with langdetect's probabilities as a second opinion: called with the query and the
    candidate languages of its script, it returns a detection, or None when the index holds
    no evidence (langdetect's answer stands).
    """
    if languages not in LANGUAGE_MODES:
        raise ValueError(f"languages must be one of {LANGUAGE_MODES}, got {languages!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    specs = conf.embedder_specs()
    if language is not None:
        code = normalize_code(language)
        if code is None:
            raise ValueError(f"language must be an ISO 639 code such as 'de', got {language!r}")
        detection = Detection(code, 1.0, "given")
    else:
        candidates = candidate_languages(specs, indexed_languages)
        detection = query_languages.get(query, candidates, float(conf.get("LANGUAGE_CONFIDENCE")))
        if detection.method in EVIDENCE_DECIDES and evidence is not None:
            decided = evidence(query, tuple(sorted(script_candidates(query, candidates))))
            detection = decided or detection
    lang = detection.language
    embedders: list[str] = []
    if mode != "lexical":
        monolingual = [s.name for s in specs if not s.multilingual and lang and s.serves(lang)]
        multilingual = [s.name for s in specs if s.multilingual]
        if languages == "all" or not monolingual:
            embedders = multilingual or monolingual
        elif languages == "same":
            embedders = monolingual
        else:
            embedders = multilingual + monolingual
    configs: tuple[str, ...] | None = ()
    # Across languages only the multilingual vector space compares documents: a lexical arm
    # (one language's lexemes) would pull same-language documents ahead (measured on pooled
    # XQuAD, README). Typed -exclusions still hold (they filter every result).
    cross_lingual = languages == "all" and mode == "hybrid"
    if mode != "vector" and not cross_lingual:
        # Unsure: read the query's lexemes with every configuration the index holds.
        configs = (search_config(lang),) if lang else None
    restrict = lang if languages == "same" and lang else None
    return Route(lang, detection, configs, tuple(embedders), restrict)


def candidate_languages(
    specs: list[conf.EmbedderSpec], indexed_languages: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """The languages a query may be detected as: the site's, the monolingual embedders', and
    those the model's documents are indexed in."""
    codes = set(filter(None, map(normalize_code, conf.get("LANGUAGES") or ())))
    for spec in specs:
        codes |= spec.languages or set()
    return tuple(sorted(codes | set(indexed_languages)))


class BoundedCache:
    """A thread-safe LRU of at most ``size`` computed values (default: QUERY_CACHE_SIZE)."""

    def __init__(self, size: int | None = None) -> None:
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get_or_compute(self, key: tuple, compute: Callable[[], Any]) -> Any:
        return self.get_many([key], lambda missing: [compute()])[0]

    def get_many(self, keys: list[tuple], compute: Callable[[list[tuple]], Sequence[Any]]
                 ) -> list[Any]:
        """The values of ``keys``; the missing ones computed together: ``compute(missing)``."""
        with self._lock:
            found = {key: self._items[key] for key in keys if key in self._items}
            for key in found:
                self._items.move_to_end(key)
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        if missing:
            found.update(zip(missing, compute(missing), strict=True))
            with self._lock:
                for key in missing:
                    self._items[key] = found[key]
                limit = self._size or int(conf.get("QUERY_CACHE_SIZE"))
                while len(self._items) > limit:
                    self._items.popitem(last=False)
        return [found[key] for key in keys]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class _QueryVectorCache(BoundedCache):
    """Query vectors per (embedder, version, text)."""

    def get(self, name: str, text: str, version: str | None = None) -> tuple[float, ...]:
        embedder = get_embedder(name, version)
        return self.get_or_compute(
            (name, embedder.version, text),
            lambda: tuple(float(x) for x in embedder.encode_queries([text])[0]),
        )


class _QueryLanguageCache(BoundedCache):
    """Query language detections per (text, site languages, threshold)."""

    def get(self, text: str, languages: list[str], threshold: float) -> Detection:
        return self.get_or_compute(
            (text, tuple(languages), threshold),
            lambda: detect_language(text, languages, threshold),
        )


query_vectors = _QueryVectorCache()
query_languages = _QueryLanguageCache()


def arm_weights(has_lexical: bool, n_vectors: int, fusion: str) -> tuple[float, float]:
    """(lexical weight, weight of each vector arm)."""
    if fusion == "rrf":
        return 1.0, 1.0
    if not n_vectors:
        return 1.0, 0.0
    weights = conf.get_dict("WEIGHTS")
    lexical = float(weights["lexical"]) if has_lexical else 0.0
    return lexical, float(weights["vector"]) / n_vectors


# pgvector's largest hnsw.ef_search: a vector arm cannot return more candidates.
MAX_CANDIDATES = 1000
FUSIONS = ("weighted", "rrf")


def checked_candidates(candidates: object) -> int | None:
    """``candidates`` if it is a whole number from 1 to MAX_CANDIDATES (or None)."""
    if candidates is None:
        return None
    if isinstance(candidates, bool) or not isinstance(candidates, int) or not (
        1 <= candidates <= MAX_CANDIDATES
    ):
        raise ValueError(
            f"candidates must be a whole number from 1 to {MAX_CANDIDATES}, got {candidates!r}"
        )
    return candidates


def checked_fusion(fusion: object) -> str | None:
    """``fusion`` if it is one of FUSIONS (or None)."""
    if fusion is not None and fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    return fusion


def plan_settings(candidates: int | None = None, fusion: str | None = None) -> dict[str, Any]:
    """The fields of a search plan that come from the settings (their only defaults)."""
    return {
        "fusion": checked_fusion(fusion) or conf.get("FUSION"),
        "rrf_k": int(conf.get("RRF_K")),
        "candidates": checked_candidates(candidates) or int(conf.get("CANDIDATES")),
        "term_depth": int(conf.get("LEXICAL_TERM_DEPTH")),
        "ef_search": int(conf.get("EF_SEARCH")),
        "max_scan_tuples": int(conf.get("MAX_SCAN_TUPLES")),
        "exact_threshold": int(conf.get("EXACT_FILTER_THRESHOLD")),
        "exact_share": float(conf.get("EXACT_FILTER_SHARE")),
    }


def make_plan(
    content_type_id: int,
    query: str,
    chosen: Route,
    *,
    fusion: str | None = None,
    candidates: int | None = None,
    floor: bool | None = None,
    using: str = "default",
) -> SearchPlan:
    """The search plan of a routed query (embeds the query with each routed embedder; with
    the relevance floor on, each vector arm carries its calibrated gate, see floor.py)."""
    from .floor import vector_gate
    from .indexes import index_kind, rescore_factor
    from .versions import serving_version

    plain, phrases, exclusions = split_operators(query)
    words = segment(plain or query)  # what the lexical arm and the floor read
    settings = plan_settings(candidates, fusion)
    has_lexical = chosen.lexical_configs != ()
    lexical_weight, vector_weight = arm_weights(
        has_lexical, len(chosen.embedders), settings["fusion"]
    )
    lexical = None
    if has_lexical:
        lexical = LexicalArm(chosen.lexical_configs, words, lexical_weight,
                             segment_websearch(phrases))
    specs = {spec.name: spec for spec in conf.embedder_specs()}
    with_floor = conf.get("FLOOR") if floor is None else floor
    vectors = []
    for name in chosen.embedders:
        version = serving_version(content_type_id, name, using)
        embedder = get_embedder(name, version)
        served = specs[name].languages
        vectors.append(
            VectorArm(name, version, int(embedder.dimension),
                      query_vectors.get(name, plain or query, version), vector_weight,
                      None if served is None else tuple(sorted(served)),
                      vector_gate(content_type_id, name, settings["candidates"], using, version)
                      if with_floor else None, index_kind(name), rescore_factor(name))
        )
    return SearchPlan(
        content_type_id=content_type_id,
        lexical=lexical,
        vectors=tuple(vectors),
        **settings,
        language=chosen.restrict_language,
        exclusions=segment_websearch(exclusions),
        relative_floor=float(conf.get("FLOOR_RELATIVE")),
        query_language=chosen.language,
        centring=not conf.get("SAME_LANGUAGE_FIRST"),
        text=words,
        unsegmented=unsegmented(plain or query, chosen.language),
    )
