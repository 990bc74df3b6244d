"""The full asynchronous path: save -> durable entry -> broker -> real Celery worker -> tables."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest

from example_project import services
from example_project.demo.models import Article
from semantic_search.maintenance import sweep
from semantic_search.models import ChunkEmbedding, IndexState, SearchEntry

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_for_state(article: Article, state: str, timeout: float = 120) -> SearchEntry:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = SearchEntry.objects.filter(object_id=str(article.pk)).first()
        if entry is not None and entry.state == state:
            return entry
        time.sleep(0.2)
    raise AssertionError(f"entry of {article} did not reach {state!r} in {timeout}s")


def test_save_update_delete_reach_the_index_through_the_worker(celery_worker_process):
    article = Article.objects.create(title="Worker", body="Indexed by a worker.", language="en")
    entry = wait_for_state(article, IndexState.INDEXED)
    assert set(ChunkEmbedding.objects.filter(entry=entry).values_list("embedder", flat=True)) == {
        "english", "multilingual",
    }
    first_revision = entry.revision
    article.body = "Changed text about rivers."
    article.save()
    deadline = time.monotonic() + 120
    while SearchEntry.objects.get(pk=entry.pk).revision == first_revision or (
        SearchEntry.objects.get(pk=entry.pk).state != IndexState.INDEXED
    ):
        assert time.monotonic() < deadline, "update was not indexed"
        time.sleep(0.2)
    assert "river" in SearchEntry.objects.filter(pk=entry.pk).values_list(
        "search_vector", flat=True
    )[0]
    article.delete()  # the worker finds the object gone and removes its entry and vectors
    deadline = time.monotonic() + 120
    while SearchEntry.objects.filter(pk=entry.pk).exists():
        assert time.monotonic() < deadline, "delete did not reach the index"
        time.sleep(0.2)
    assert not ChunkEmbedding.objects.filter(entry_id=entry.pk).exists()


def test_many_saves_in_one_transaction_become_batched_tasks(celery_worker_process):
    from django.db import transaction

    with transaction.atomic():
        articles = [
            Article.objects.create(title=f"Batch {i}", body=f"text {i}", language="de")
            for i in range(10)
        ]
    for article in articles:
        wait_for_state(article, IndexState.INDEXED)


@pytest.mark.skipif(
    bool(os.environ.get("CELERY_BROKER_URL"))
    and os.environ["CELERY_BROKER_URL"] != services.valkey_url(),
    reason="needs the embedded broker, which this test stops and restarts",
)
def test_save_while_broker_is_down_succeeds_and_is_indexed_after(celery_worker_process):
    services.stop_valkey()
    try:
        started = time.monotonic()
        article = Article.objects.create(title="Outage", body="Saved while down.", language="en")
        assert time.monotonic() - started < 10  # the save did not hang on the broker
        entry = SearchEntry.objects.get(object_id=str(article.pk))
        assert entry.state == IndexState.PENDING  # recorded durably, nothing lost
    finally:
        services.start_valkey()
    assert sweep(grace=timedelta(0)) >= 1
    wait_for_state(article, IndexState.INDEXED, timeout=180)


def test_forced_reindex_through_the_workers_re_embeds_like_in_process(celery_worker_process):
    """`--force --async` means what `--force` means: every vector is computed again."""
    import numpy as np
    from django.core.management import call_command

    article = Article.objects.create(title="Force", body="Glaciers carve valleys.", language="en")
    entry = wait_for_state(article, IndexState.INDEXED)
    chunk = ChunkEmbedding.objects.get(entry=entry, embedder="english", chunk=0)
    true_vector = np.asarray(chunk.vector)
    # Same text hash and model version: only a forced re-embed replaces this vector.
    ChunkEmbedding.objects.filter(pk=chunk.pk).update(vector=-true_vector)
    call_command(
        "semantic_search_reindex", "demo.Article", "--force", "--async", "--wait",
        "--no-progress",
    )
    restored = np.asarray(
        ChunkEmbedding.objects.get(entry=entry, embedder="english", chunk=0).vector
    )
    assert float(restored @ true_vector) > 0.99
