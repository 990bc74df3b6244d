"""The status page's reindex button: ``semantic_search_reindex --async --wait`` in a thread of
the web process. The thread only sends the work to the Celery workers and waits for them (then
the command recomputes BM25 impacts and switches embedder versions, as on the command line);
the indexing itself happens in the workers. One run at a time per process."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections


@dataclass
class ReindexRun:
    force: bool
    started: float = field(default_factory=time.time)
    finished: float | None = None
    lines: list[str] = field(default_factory=list)
    error: str = ""

    def snapshot(self) -> dict:
        end = self.finished or time.time()
        return {
            "force": self.force, "running": self.finished is None, "error": self.error,
            "lines": list(self.lines), "seconds": round(end - self.started, 1),
        }


class _Lines(io.TextIOBase):
    """The command's stdout, kept line by line on the run (read by the status page's poll)."""

    def __init__(self, run: ReindexRun) -> None:
        self.run = run
        self.partial = ""

    def write(self, text: str) -> int:
        self.partial += text
        *done, self.partial = self.partial.split("\n")
        self.run.lines.extend(line for line in done if line.strip())
        return len(text)


_lock = threading.Lock()
_current: ReindexRun | None = None


def current() -> ReindexRun | None:
    return _current


def start(force: bool = False) -> tuple[ReindexRun, bool]:
    """Start a run unless one is under way; returns (the run, whether this call started it)."""
    global _current
    with _lock:
        if _current is not None and _current.finished is None:
            return _current, False
        run = _current = ReindexRun(force=force)
    threading.Thread(target=_work, args=(run,), name="demo-reindex", daemon=True).start()
    return run, True


def _work(run: ReindexRun) -> None:
    try:
        call_command(
            "semantic_search_reindex", use_workers=True, wait=True, force=run.force,
            no_progress=True, stdout=_Lines(run),
        )
    except CommandError as exc:
        run.error = str(exc)
    except Exception as exc:  # shown on the page rather than lost in a thread
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        connections.close_all()
        run.finished = time.time()

