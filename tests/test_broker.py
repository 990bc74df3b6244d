"""A save never waits long for the broker, whatever the broker does; nothing is lost.

Each test points the Celery app at a broker of its own (refused, hung, slow, healthy) and times
``Article.objects.create()`` (autocommit: the task is sent right after the row is written).
The bound asserted (0.5 s) is generous against ENQUEUE_TIMEOUT (0.1 s); before the enqueuer
a refused broker cost ~6 s per save and a hung one ~40 s.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from brokers import DelayProxy, black_hole, private_valkey, queued_tasks, refused_url

from example_project.demo.models import Article
from semantic_search import enqueue
from semantic_search.models import IndexState, SearchEntry

pytestmark = pytest.mark.django_db(transaction=True)
SAVE_BOUND = 0.5


@pytest.fixture
def use_broker(monkeypatch):
    """Send the app's tasks to another broker, through a fresh enqueuer."""

    def use(url: str) -> enqueue.Enqueuer:
        fresh = enqueue.Enqueuer(broker_url=url)
        monkeypatch.setattr(enqueue, "enqueuer", fresh)
        return fresh

    return use


def timed_save(title: str) -> tuple[float, Article]:
    started = time.perf_counter()
    article = Article.objects.create(title=title, body="Text about rivers.", language="en")
    return time.perf_counter() - started, article


def eventually(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} stayed false for {timeout} s"
        time.sleep(0.05)


def assert_pending(article: Article) -> None:
    entry = SearchEntry.objects.get(object_id=str(article.pk))
    assert entry.state == IndexState.PENDING  # recorded durably in the save's transaction


def test_healthy_broker_gets_the_task_at_once(use_broker, tmp_path):
    with private_valkey(tmp_path / "valkey") as (url, _):
        enqueuer = use_broker(url)
        seconds, article = timed_save("Healthy")
        assert seconds < SAVE_BOUND
        eventually(lambda: queued_tasks(url) == 1)  # the first publish of a process is slow
        timed_save("Healthy again")
        assert queued_tasks(url) == 2 and not enqueuer.paused()  # warm: within the save
        assert_pending(article)


def test_refused_broker_costs_one_bounded_wait_then_none(use_broker):
    enqueuer = use_broker(refused_url())
    first, article = timed_save("Refused")
    eventually(enqueuer.paused)
    second, other = timed_save("Refused again")
    assert first < SAVE_BOUND and second < SAVE_BOUND, (first, second)
    assert_pending(article)
    assert_pending(other)


def test_black_hole_broker_does_not_hold_the_save(use_broker):
    with black_hole() as url:
        enqueuer = use_broker(url)
        first, article = timed_save("Black hole")
        second, _ = timed_save("Black hole again")  # while the first publish hangs
        eventually(enqueuer.paused)  # the publishing thread's socket timeouts end it
        third, _ = timed_save("Black hole, paused")
    assert max(first, second, third) < SAVE_BOUND, (first, second, third)
    assert_pending(article)


def test_stopped_broker_process_does_not_hold_the_save(use_broker, tmp_path):
    with private_valkey(tmp_path / "valkey") as (url, process):
        enqueuer = use_broker(url)
        timed_save("Warm the connection")
        eventually(lambda: queued_tasks(url) == 1)
        os.kill(process.pid, signal.SIGSTOP)
        try:
            first, article = timed_save("Stopped")
            second, _ = timed_save("Stopped again")
            eventually(enqueuer.paused)
            third, _ = timed_save("Stopped, paused")
        finally:
            os.kill(process.pid, signal.SIGCONT)
    assert max(first, second, third) < SAVE_BOUND, (first, second, third)
    assert_pending(article)


def test_slow_broker_does_not_hold_the_save_and_still_gets_the_task(use_broker, tmp_path):
    with private_valkey(tmp_path / "valkey") as (url, _):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        proxy = DelayProxy(port, delay=0.4)
        try:
            use_broker(proxy.url)
            seconds, article = timed_save("Slow")
            assert seconds < SAVE_BOUND
            eventually(lambda: queued_tasks(url) == 1)  # published in the background
        finally:
            proxy.close()
    assert_pending(article)


def test_forced_reindex_tasks_carry_force(use_broker, tmp_path, settings):
    """`reindex --force --async` must mean what `--force` means in process (re-embed)."""
    import base64
    import json

    import redis

    from semantic_search.changes import dispatch

    with private_valkey(tmp_path / "valkey") as (url, _):
        use_broker(url)
        assert dispatch([1, 2], force=True, timeout=10)
        message = json.loads(redis.Redis.from_url(url).lpop("celery"))
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [[1, 2], "default"] and kwargs == {"force": True}
