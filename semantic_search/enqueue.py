"""Handing indexing tasks to the broker without ever holding up the saving request.

A save records its change durably in the same transaction (a pending ``SearchEntry``), so
sending the task is only an optimisation: when the broker is down, hung or slow, the entry stays
pending and the sweep (or ``semantic_search_reindex``) indexes it later. Therefore:

- tasks are published by one background thread per process, on a broker connection of its own
  with short socket timeouts and no connection retries;
- the caller waits at most ``ENQUEUE_TIMEOUT`` seconds (default 0.1) for the broker to take
  them; a healthy broker answers in milliseconds, so the normal path is effectively synchronous
  (a slower publish, e.g. the first one of a process, finishes in the background);
- when publishing fails (after one reconnection) the process stops trying for
  ``ENQUEUE_PAUSE`` seconds (default 30): a broker outage costs each save at most one bounded
  wait, and none while paused;
- at exit, a process waits up to 5 s for the tasks it handed over to be published.

With Celery's ``task_always_eager`` (tests) tasks run in the caller, as Celery documents.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import conf

logger = logging.getLogger(__name__)

# Socket timeouts of the publishing connection: they only bound how long the background thread
# can stay stuck on a hung broker (the caller never waits longer than ENQUEUE_TIMEOUT).
SOCKET_TIMEOUT = 5.0


@dataclass
class _Job:
    messages: list[tuple[list, dict]]  # (args, kwargs) of each task
    options: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Enqueuer:
    """Publishes indexing tasks from a background thread; see the module documentation."""

    def __init__(self, broker_url: str | None = None) -> None:
        self.broker_url = broker_url  # None: the Celery app's broker_write_url / broker_url
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] | None = None
        self._pid: int | None = None
        self._paused_until = 0.0

    def send(
        self, messages: list[tuple[list, dict]], options: dict[str, Any],
        timeout: float | None = None,
    ) -> bool:
        """Publish the tasks; True if the broker took them within ``timeout`` seconds.

        Saves use the default (``ENQUEUE_TIMEOUT``) and skip the broker while enqueueing is
        paused; callers that give a ``timeout`` (commands, the sweep: they hold up no user) try
        the broker whatever happened before. A publish still under way when the caller stops
        waiting goes on in the background."""
        from .tasks import index_entries_task

        if index_entries_task.app.conf.task_always_eager:
            for args, kwargs in messages:
                index_entries_task.apply_async(args, kwargs, **options)
            return True
        if timeout is None:
            if self.paused():
                return False
            timeout = float(conf.get("ENQUEUE_TIMEOUT"))
        job = _Job(messages, options)
        self._queue().put(job)
        return job.done.wait(timeout) and job.error is None

    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def resume(self) -> None:
        """Try the broker again at the next save (tests, or after an operator fixed it)."""
        self._paused_until = 0.0

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until the tasks handed over so far are published: at exit, so a
        short script's last saves are not left to the sweep."""
        jobs = self._jobs
        if jobs is None or self._pid != os.getpid():
            return
        marker = _Job([], {})
        jobs.put(marker)
        marker.done.wait(timeout)

    def _pause(self, error: BaseException) -> None:
        seconds = float(conf.get("ENQUEUE_PAUSE"))
        self._paused_until = time.monotonic() + seconds
        logger.warning(
            "semantic_search: could not enqueue indexing tasks (%s: %s); the changes stay "
            "pending and are indexed by the sweep or `manage.py semantic_search_reindex`. Not "
            "trying again for %g s.", type(error).__name__, error, seconds,
        )

    def _queue(self) -> queue.SimpleQueue[_Job]:
        with self._lock:
            if self._jobs is None or self._pid != os.getpid():  # first use, or a forked child
                self._jobs = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._publish_forever, args=(self._jobs,), daemon=True,
                    name="semantic-search-enqueue",
                ).start()
            return self._jobs

    def _publish_forever(self, jobs: queue.SimpleQueue[_Job]) -> None:
        publisher = _Publisher(self.broker_url)
        while True:
            job = jobs.get()
            try:
                publisher.publish(job)
            except Exception as exc:  # noqa: BLE001  (the changes stay pending)
                self._pause(exc)
                for failed in _drain(jobs, job):  # queued behind a dead broker: give up too
                    failed.error = exc
                    failed.done.set()
            else:
                if job.messages:
                    self.resume()  # the broker works (again)
                job.done.set()


class _Publisher:
    """The background thread's broker connection: reused while it works, replaced once after
    a failure (a broker restart), given up after a second failure."""

    def __init__(self, broker_url: str | None) -> None:
        self.broker_url = broker_url
        self.connection = None

    def publish(self, job: _Job) -> None:
        if not job.messages:
            return
        try:
            self._send(job)
        except Exception:  # noqa: BLE001
            self._close()
            self._send(job)  # one fresh connection; a second failure is the caller's

    def _send(self, job: _Job) -> None:
        from .tasks import index_entries_task

        if self.connection is None:
            self.connection = _connection(self.broker_url)
        for args, kwargs in job.messages:
            index_entries_task.apply_async(
                args, kwargs, connection=self.connection, retry=False, **job.options
            )

    def _close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # noqa: BLE001  (a broken connection may not close cleanly)
                logger.debug("semantic_search: closing a failed connection", exc_info=True)
        self.connection = None


def _drain(jobs: queue.SimpleQueue[_Job], current: _Job) -> list[_Job]:
    drained = [current]
    while True:
        try:
            drained.append(jobs.get_nowait())
        except queue.Empty:
            return drained


def _connection(broker_url: str | None = None):
    """A broker connection that fails fast: one connection attempt, short socket timeouts
    (Redis/Valkey and AMQP option names; each transport ignores the other's), the user's other
    transport options kept."""
    from .tasks import index_entries_task

    return index_entries_task.app.connection_for_write(
        broker_url,
        connect_timeout=SOCKET_TIMEOUT,
        transport_options={
            "max_retries": 0,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
            "read_timeout": SOCKET_TIMEOUT,
            "write_timeout": SOCKET_TIMEOUT,
        },
    )


enqueuer = Enqueuer()
atexit.register(lambda: enqueuer.flush())
