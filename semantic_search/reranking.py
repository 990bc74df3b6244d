"""A second stage: a cross-encoder reorders a search's first ``TOP_N`` results.

``semantic_search(query, rerank=True)`` with the ``RERANKER`` setting (any sentence-transformers
``CrossEncoder``, by name or folder; ``manage.py semantic_search_finetune --reranker`` trains
one, since no package ships cross-encoder weights). When the search is first compiled, the
fused statement's top ``TOP_N`` objects are read with their indexed text (the fields the
registration names), scored against the query by the cross-encoder in batches, and the search
statement orders those objects by that score ahead of the rest (which keep the fused order).
The results stay a queryset of the model: slicing, pagination, ``values()``.

The top ``TOP_N`` are ordered by a blend of the two stages, ``(1 - BLEND) x fused + BLEND x
cross-encoder``, each min-max scaled over those objects (``search_rerank_score``). A reranker
trained by the command carries the weight that did best on its held-out queries, when it beat
the fused order there beyond noise (training.choose_blend), else 0: a weak reranker then leaves
the first stage's order; ``BLEND`` in the setting overrides it; other cross-encoders get 1
(their order alone).

A reranker that cannot be loaded or fails to score logs a warning and leaves the fused order
(and is not tried again for ``RETRY_SECONDS``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import conf

logger = logging.getLogger(__name__)

DEFAULTS = {"TOP_N": 20, "BATCH_SIZE": 16, "MAX_LENGTH": 256, "LOCAL_FILES_ONLY": False,
            "BLEND": None}
# The file the fine-tuning command (training.py) writes into a trained model's folder; a
# reranker's holds the blend weight its held-out queries chose.
MARKER = "semantic_search.json"
RETRY_SECONDS = 60.0
# Characters of a document's text given to the cross-encoder (its MAX_LENGTH tokens cut it).
MAX_CHARS = 4000

_lock = threading.Lock()
_models: dict[str, Any] = {}
_failed: dict[str, float] = {}
_blends: dict[str, float] = {}


def options() -> dict[str, Any]:
    """The ``RERANKER`` setting with its defaults; ImproperlyConfigured when it is not set."""
    configured = conf.get("RERANKER")
    if not configured or not configured.get("MODEL"):
        raise ImproperlyConfigured(
            "rerank=True needs SEMANTIC_SEARCH['RERANKER'] = {'MODEL': <a CrossEncoder name or "
            "folder>} (manage.py semantic_search_finetune --reranker trains one)."
        )
    merged = {**DEFAULTS, **configured}
    if not isinstance(merged["TOP_N"], int) or not 1 <= merged["TOP_N"] <= 1000:
        raise ImproperlyConfigured("SEMANTIC_SEARCH['RERANKER']['TOP_N'] must be 1-1000")
    blend_weight = merged["BLEND"]
    if blend_weight is not None and (
        isinstance(blend_weight, bool) or not isinstance(blend_weight, int | float)
        or not 0 <= blend_weight <= 1
    ):
        raise ImproperlyConfigured("SEMANTIC_SEARCH['RERANKER']['BLEND'] must be a number in "
                                   "[0, 1] or None (the trained weight)")
    return merged


def blend(fused: Sequence[float], reranked: Sequence[float], weight: float) -> list[float]:
    """``(1 - weight) x fused + weight x reranked``, each min-max scaled over the objects
    given (a stage whose scores are all equal adds nothing)."""

    def scaled(values: Sequence[float]) -> list[float]:
        low, high = min(values, default=0.0), max(values, default=0.0)
        return [(v - low) / (high - low) if high > low else 0.0 for v in values]

    return [(1 - weight) * f + weight * r
            for f, r in zip(scaled(fused), scaled(reranked), strict=True)]


def blend_weight(settings: dict[str, Any]) -> float:
    """The setting's ``BLEND``, else the weight a trained reranker's folder carries (read once
    per process), else 1."""
    if settings["BLEND"] is not None:
        return float(settings["BLEND"])
    key = str(settings["MODEL"])
    with _lock:
        if key in _blends:
            return _blends[key]
    weight = _folder_blend(key)
    with _lock:
        _blends[key] = weight
    return weight


def _folder_blend(model: str) -> float:
    from .embedders import resolve_model

    marker = Path(resolve_model(model)) / MARKER
    try:
        weight = float(json.loads(marker.read_text(encoding="utf-8"))["blend"])
    except (OSError, ValueError, KeyError, TypeError):  # not ours, or trained before blends
        return 1.0
    if weight == 0:
        logger.warning("semantic_search: reranker %r did not beat the fused order on its "
                       "held-out queries (blend 0 in %s): rerank=True keeps the fused order",
                       model, marker)
    return weight


def load(settings: dict[str, Any]):
    """The cross-encoder ``settings`` name, loaded as searches load it."""
    from sentence_transformers import CrossEncoder

    from .embedders import resolve_model

    path = resolve_model(str(settings["MODEL"]))
    return CrossEncoder(path, device="cpu", max_length=int(settings["MAX_LENGTH"]),
                        local_files_only=bool(settings["LOCAL_FILES_ONLY"]))


def get_reranker(settings: dict[str, Any]):
    """The process's cross-encoder, or None (logged) when it cannot be loaded."""
    key = str(settings["MODEL"])
    with _lock:
        if key in _models:
            return _models[key]
        if time.monotonic() - _failed.get(key, -RETRY_SECONDS) < RETRY_SECONDS:
            return None
    try:
        model = load(settings)
    except Exception as error:  # any loading failure: fused order, not an error page
        logger.warning("semantic_search: reranker %r not loaded (%s); results keep the fused "
                       "order", key, error)
        with _lock:
            _failed[key] = time.monotonic()
        return None
    with _lock:
        _models[key] = model
    return model


def scores(query: str, texts: Sequence[str], settings: dict[str, Any] | None = None
           ) -> list[float] | None:
    """The cross-encoder's score of each (query, text), or None when there is no reranker to
    use (a warning says why)."""
    settings = settings or options()
    model = get_reranker(settings)
    if model is None or not texts:
        return None
    try:
        return predict(model, query, texts, settings)
    except Exception as error:  # a failing model: fused order
        logger.warning("semantic_search: reranking failed (%s); results keep the fused order",
                       error)
        return None


def predict(model, query: str, texts: Sequence[str], settings: dict[str, Any]) -> list[float]:
    """``model``'s score of each (query, text), texts cut at MAX_CHARS, in BATCH_SIZE batches."""
    predicted = model.predict([(query, text[:MAX_CHARS]) for text in texts],
                              batch_size=int(settings["BATCH_SIZE"]),
                              show_progress_bar=False, convert_to_numpy=True)
    return [float(value) for value in predicted]


def forget() -> None:
    """Drop the loaded rerankers and remembered failures (after a settings change)."""
    with _lock:
        _models.clear()
        _failed.clear()
        _blends.clear()
