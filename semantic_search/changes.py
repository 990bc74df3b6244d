"""Recording changes durably and handing them to the workers after commit.

Public entry points for the paths that send no signals (``bulk_create``, ``QuerySet.update()``,
raw SQL): :func:`index_objects` and :func:`forget_objects`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.contenttypes.models import ContentType
from django.db import connections, models, router, transaction

from . import conf

_UPSERT_PENDING = """
INSERT INTO semantic_search_searchentry
    (content_type_id, object_id, revision, state, language, search_config, text_hash,
     attempts, last_error, changed_at)
SELECT %s, pk, 1, 'pending', '', 'simple', '', 0, '', now()
FROM unnest(%s::text[]) AS pk
ON CONFLICT (content_type_id, object_id) DO UPDATE
SET revision = semantic_search_searchentry.revision + 1, state = 'pending', attempts = 0,
    last_error = '', changed_at = now()
RETURNING id
"""



def _content_type_id(model: type[models.Model], using: str) -> int:
    return ContentType.objects.db_manager(using).get_for_model(model, for_concrete_model=True).id


def record_saved(
    model: type[models.Model], pks: Iterable, using: str = "default", enqueue: bool = True
) -> list[int]:
    """Mark objects pending in the current transaction; enqueue them once it commits (unless
    ``enqueue`` is false: the caller indexes or dispatches the returned entry ids itself).

    This upsert is all a user's transaction does to the app's tables: it locks the objects'
    entries (in key order, so that two bulk changes take them in one order) and nothing else."""
    keys = sorted({str(pk) for pk in pks if pk is not None})
    if not keys:
        return []
    with connections[using].cursor() as cursor:
        cursor.execute(_UPSERT_PENDING, [_content_type_id(model, using), keys])
        entry_ids = [row[0] for row in cursor.fetchall()]
    if enqueue:
        enqueue_after_commit(entry_ids, using)
    return entry_ids


def record_deleted(model: type[models.Model], pks: Iterable, using: str = "default") -> None:
    """Mark deleted objects' entries pending, like a save: the indexer finds the objects gone and
    removes their entries, vectors and postings (searches never return deleted objects: results
    are the model's own rows). Taking them out here would lock the BM25 statistics, shared by
    all of the model's rows, in the user's transaction."""
    record_saved(model, pks, using=using)


def index_objects(objects: models.QuerySet | Iterable[models.Model]) -> list[int]:
    """(Re)index objects whose changes sent no signal, e.g. after ``bulk_create`` or
    ``update()``: ``index_objects(Article.objects.filter(pk__in=ids))``."""
    if isinstance(objects, models.QuerySet):
        using = objects.db
        return record_saved(objects.model, objects.values_list("pk", flat=True), using=using)
    entry_ids: list[int] = []
    for instance in objects:
        using = instance._state.db or router.db_for_write(type(instance))
        entry_ids += record_saved(type(instance), [instance.pk], using=using)
    return entry_ids


def forget_objects(model: type[models.Model], pks: Iterable, using: str | None = None) -> None:
    """Take objects out of the index, e.g. after a raw ``DELETE`` (the indexer removes their
    entries once it finds the objects gone)."""
    record_deleted(model, pks, using=using or router.db_for_write(model))


class _PendingBatch:
    """An on-commit callback collecting the entry ids of one transaction."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.entry_ids: list[int] = []

    def __call__(self) -> None:
        dispatch(sorted(set(self.entry_ids)), self.using)


def enqueue_after_commit(entry_ids: list[int], using: str) -> None:
    """Send the ids to the workers when the current transaction commits (one batch per
    transaction, however many objects it saves)."""
    connection = connections[using]
    if not connection.in_atomic_block:
        dispatch(entry_ids, using)
        return
    for _savepoints, callback, _robust in connection.run_on_commit:
        if isinstance(callback, _PendingBatch):
            callback.entry_ids.extend(entry_ids)
            return
    batch = _PendingBatch(using)
    batch.entry_ids.extend(entry_ids)
    transaction.on_commit(batch, using=using)


def dispatch(
    entry_ids: list[int], using: str = "default", force: bool = False,
    timeout: float | None = None,
) -> bool:
    """Index now (``SYNC`` mode) or send Celery tasks of ``TASK_BATCH_SIZE`` entries; ``force``
    re-embeds even unchanged text.

    Never raises for the broker and never waits for it longer than ``timeout`` (default
    ``ENQUEUE_TIMEOUT``, see enqueue.py): entries that could not be sent stay pending until
    the sweep or the reindex command picks them up. Returns whether they were handed over.
    """
    if not entry_ids:
        return True
    if conf.get("SYNC"):
        from .indexing import index_entries

        index_entries(entry_ids, using=using, force=force)
        return True
    from .enqueue import enqueuer

    size = max(1, int(conf.get("TASK_BATCH_SIZE")))
    messages = [
        ([entry_ids[start : start + size], using], task_keywords(force))
        for start in range(0, len(entry_ids), size)
    ]
    return enqueuer.send(messages, task_options(), timeout)


def task_keywords(force: bool) -> dict:
    """The indexing task's keyword arguments (none unless forced: older workers accept it)."""
    return {"force": True} if force else {}


def task_options() -> dict:
    """Celery options of the indexing tasks: the ``QUEUE`` setting, if any."""
    return {"queue": conf.get("QUEUE")} if conf.get("QUEUE") else {}
