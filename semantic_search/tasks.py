"""Celery tasks of the app. They hold no process-local state that matters: any worker can run
any task, any number of times (the indexer is idempotent)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import reset_queries

from . import conf

logger = logging.getLogger(__name__)

# Seconds before entries another transaction held are tried again.
BUSY_RETRY_SECONDS = 2


@shared_task(name="semantic_search.ping", ignore_result=False)
def ping() -> str:
    """A no-op round trip, for health checks of the worker and broker."""
    return "pong"


@shared_task(
    name="semantic_search.index_entries",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=None,  # bounded below by MAX_RETRIES, read from settings at run time
)
def index_entries_task(
    self, entry_ids: list[int], using: str = "default", force: bool = False
) -> dict:
    """Embed and store the given search entries (batched: one encode call per embedder);
    ``force`` re-embeds text whose vectors are current."""
    from .indexing import index_entries, mark_failed

    # Like a request: with DEBUG on, Django logs every query (vector literals included, ~0.5 MB
    # a batch) until reset; a worker has no requests to reset it, so its memory would grow.
    reset_queries()
    try:
        report = index_entries(entry_ids, using=using, force=force)
    except Exception as exc:
        if self.request.retries >= int(conf.get("MAX_RETRIES")):
            mark_failed(entry_ids, f"{type(exc).__name__}: {exc}", using=using)
            logger.exception("semantic_search: giving up on entries %s", entry_ids)
            return {"failed": len(entry_ids)}
        raise
    if report.busy and not self.request.is_eager:
        # Held by a user's transaction or another worker: try them again shortly (eager
        # tasks would retry in the same thread at once; the sweep picks those up).
        from .changes import task_keywords, task_options

        self.apply_async((report.busy, using), task_keywords(force),
                         countdown=BUSY_RETRY_SECONDS, **task_options())
    return vars(report)


@shared_task(name="semantic_search.sweep")
def sweep_task(using: str = "default") -> int:
    """Re-enqueue what was recorded but never indexed (a lost task, a broker outage).

    Schedule it with Celery beat, e.g. every five minutes (see the README).
    """
    from .maintenance import sweep

    reset_queries()
    return sweep(using=using)
