"""A real ``celery worker`` process for the demo, started and stopped by ``manage.py demo``."""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings


class WorkerError(RuntimeError):
    """The worker did not start, or stopped while it was still needed."""


class WorkerProcess:
    """``celery -A example_project worker`` on one queue, logging to a file.

    It inherits the environment (``DATABASE_URL``, ``CELERY_BROKER_URL``) and runs in a session
    of its own, so a Ctrl-C reaches only the demo, which stops it. If it exits once ready but
    before :meth:`stop`, the main thread gets a ``KeyboardInterrupt`` and :attr:`died` is set,
    so that a wait for its results cannot hang.
    """

    def __init__(self, queue: str, log_path: Path, name: str = "demo-worker") -> None:
        self.queue = queue
        self.log_path = log_path
        self.name = name
        self.process: subprocess.Popen | None = None
        self.died = False
        self._stopping = False

    def command(self) -> list[str]:
        # INFO, not WARNING: the "ready." line that tells the worker consumes is logged at INFO.
        return [
            sys.executable, "-m", "celery", "-A", "example_project", "worker",
            "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--queues", self.queue, "--hostname", f"{self.name}-{os.getpid()}@%h",
        ]

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SEMANTIC_SEARCH_SYNC": "0"}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=settings.BASE_DIR, env=env, stdout=log, stderr=log,
                start_new_session=True,
            )

    def _watch(self) -> None:
        self.process.wait()
        if not self._stopping:
            self.died = True
            _thread.interrupt_main()

    def wait_until_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerError(f"the Celery worker exited:\n{self.log_tail()}")
            if "ready." in self.log_path.read_text(errors="replace"):
                threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True).start()
                return
            time.sleep(0.1)
        raise WorkerError(f"the Celery worker was not ready after {timeout:.0f} s: {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM: the current task finishes), then kill if it hangs."""
        self._stopping = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
