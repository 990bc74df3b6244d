"""Moving an index to a new model version without a gap.

Each (model, embedder) has a *serving* version (:class:`~semantic_search.models.ServingVersion`):
the version searches read and embed their queries with. It is the configured version once that
version's vectors are complete. When the settings point an embedder at a new model (a
fine-tuned folder, another model), its version changes and the index is stale for it; while
``semantic_search_reindex`` (or the workers) re-embed, each entry keeps its vectors of the
serving version beside the new ones, and searches go on reading the old version, with queries
embedded by the old model (loaded from the folder its version names). Once every indexed entry
the embedder applies to has vectors of the new version, the serving version switches (the
indexer checks at most every ``CHECK_SECONDS`` per process, the reindex command at its end),
and the old version's vectors are deleted ``retire_after()`` seconds later, when every process
has read the switch (by a later batch, or the reindex command, which waits for it). Versions
never mix: an arm reads one version.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction

from . import conf
from .embedders import get_embedder

logger = logging.getLogger(__name__)

# Seconds a process keeps a serving version before reading it again.
CACHE_SECONDS = 10.0
# Seconds between the indexer's checks whether a move is complete (per model and embedder).
CHECK_SECONDS = 30.0

_lock = threading.Lock()
_serving: dict[tuple, tuple[float, str | None]] = {}
_checked: dict[tuple, float] = {}
_retiring: set[tuple] = set()  # switched here; the old vectors still wait for retire_after()

_READ = """
SELECT version FROM semantic_search_servingversion
WHERE content_type_id = %s AND embedder = %s
"""
_CLAIM = """
INSERT INTO semantic_search_servingversion (content_type_id, embedder, version, switched_at)
VALUES (%s, %s, %s, now()) ON CONFLICT (content_type_id, embedder) DO NOTHING
"""
# Indexed entries the embedder applies to (their language) that have text but no vectors of
# the configured version: while there is one, the move is not complete.
_INCOMPLETE = """
SELECT EXISTS (
    SELECT 1 FROM semantic_search_searchentry e
    WHERE e.content_type_id = %(content_type)s AND e.state = 'indexed'
      AND (%(languages)s::text[] IS NULL OR e.language = ANY(%(languages)s::text[]))
      AND EXISTS (SELECT 1 FROM semantic_search_chunkembedding o
                  WHERE o.entry_id = e.id AND o.embedder = %(embedder)s)
      AND NOT EXISTS (SELECT 1 FROM semantic_search_chunkembedding c
                      WHERE c.entry_id = e.id AND c.embedder = %(embedder)s
                        AND c.embedder_version = %(version)s)
)
"""
_SWITCH = """
UPDATE semantic_search_servingversion SET version = %s, switched_at = now()
WHERE content_type_id = %s AND embedder = %s
"""
_LEFT = """
SELECT EXISTS (SELECT 1 FROM semantic_search_chunkembedding
               WHERE content_type_id = %s AND embedder = %s AND embedder_version <> %s)
"""
_RETIRE = """
DELETE FROM semantic_search_chunkembedding
WHERE content_type_id = %s AND embedder = %s AND embedder_version <> %s
"""


def stored_serving_version(content_type_id: int, name: str, using: str) -> str | None:
    """The serving version on record (None: none yet, or the table is not readable)."""
    key = (using, content_type_id, name)
    with _lock:
        cached = _serving.get(key)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        with connections[using].cursor() as cursor:
            cursor.execute(_READ, [content_type_id, name])
            row = cursor.fetchone()
    except DatabaseError:
        return None
    version = row[0] if row else None
    with _lock:
        _serving[key] = (time.monotonic(), version)
    return version


def serving_version(content_type_id: int, name: str, using: str) -> str:
    """The version a search of this model reads for embedder ``name``: the one on record
    while a move to the configured version is under way, else the configured one."""
    current = get_embedder(name).version
    stored = stored_serving_version(content_type_id, name, using)
    if stored is None or stored == current:
        return current
    try:
        get_embedder(name, stored)
    except (ImproperlyConfigured, OSError) as error:
        logger.warning("semantic_search: cannot load %s's serving version %s (%s); searching "
                       "the configured version %s", name, stored, error, current)
        return current
    return stored


def kept_versions(content_type_id: int, name: str, using: str) -> set[str]:
    """The versions an entry's vectors of ``name`` keep when it is re-embedded."""
    stored = stored_serving_version(content_type_id, name, using)
    return {get_embedder(name).version} | ({stored} if stored else set())


def switch_if_complete(content_type_id: int, name: str, using: str) -> bool:
    """Record the configured version as serving when none is, or when its vectors are
    complete (:func:`retire` deletes the others' later). True when the configured version is
    now serving."""
    current = get_embedder(name).version
    spec = conf.embedder_spec(name)
    languages = None if spec.languages is None else sorted(spec.languages)
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(_CLAIM, [content_type_id, name, current])
        cursor.execute(_READ + " FOR UPDATE", [content_type_id, name])
        (stored,) = cursor.fetchone()
        if stored == current:
            return True
        cursor.execute(_INCOMPLETE, {"content_type": content_type_id, "languages": languages,
                                     "embedder": name, "version": current})
        if cursor.fetchone()[0]:
            return False
        cursor.execute(_SWITCH, [current, content_type_id, name])
    logger.info("semantic_search: %s now serves version %s (was %s)", name, current, stored)
    forget()
    return True


def retire(content_type_id: int, name: str, using: str) -> float | None:
    """Delete the vectors of versions no longer served, once every process has seen the switch
    (``retire_after()`` seconds after it). Returns the seconds still to wait (None: nothing
    was left to retire, or the move is not complete)."""
    current = get_embedder(name).version
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM now() - switched_at) FROM semantic_search_servingversion"
            " WHERE content_type_id = %s AND embedder = %s AND version = %s",
            [content_type_id, name, current],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        wait = retire_after() - float(row[0])
        if wait > 0:
            cursor.execute(_LEFT, [content_type_id, name, current])
            return wait if cursor.fetchone()[0] else None
        cursor.execute(_RETIRE, [content_type_id, name, current])
    return None


def retire_after() -> float:
    """Seconds between a switch and the deletion of the old version's vectors: searches that
    read the serving version before the switch keep finding their rows."""
    return 3 * CACHE_SECONDS


def after_batch(pairs: set[tuple[int, str]], using: str) -> None:
    """The indexer wrote vectors of these (model, embedder) pairs: claim a first serving
    version, and, while a move is under way or its old vectors wait to go, check (throttled)
    whether it is complete. With nothing moving, a batch costs one cached read."""
    now = time.monotonic()
    for content_type_id, name in sorted(pairs):
        current = get_embedder(name).version
        key = (using, content_type_id, name, current)
        stored = stored_serving_version(content_type_id, name, using)
        with _lock:
            if stored == current and key not in _retiring:
                continue
            if now - _checked.get(key, -CHECK_SECONDS) < CHECK_SECONDS:
                continue
            _checked[key] = now
        if switch_if_complete(content_type_id, name, using):
            waiting = retire(content_type_id, name, using) is not None
            with _lock:
                if waiting:
                    _retiring.add(key)
                else:
                    _retiring.discard(key)


def forget() -> None:
    """Drop this process's cached serving versions."""
    with _lock:
        _serving.clear()
        _checked.clear()
        _retiring.clear()
