"""``manage.py demo``: load a multilingual corpus, index it with a real Celery worker, search it
from the terminal, then serve the site (``make demo`` runs it with the embedded services).

Idempotent: a second run creates, saves and embeds nothing. Set ``DEMO_SERVE=0`` (or ``CI=true``)
or pass ``--no-serve`` to stop after the searches. ``--screenshots DIR`` (``make screenshots``)
takes the README's screenshots in headless Chromium instead of serving.
"""

from __future__ import annotations

import html
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import supports_color
from django.utils.termcolors import make_style

from semantic_search import conf
from semantic_search.embedders import get_embedder

from ...loading import SLICE_PATH, LoadReport, load_slice
from ...models import Article
from ...terminal import pad, render_highlight
from ...worker import WorkerError, WorkerProcess

ADDRESS = "127.0.0.1:8000"
ADMIN_USER = ("admin", "admin")  # username, password: a local demo only
# The demo's worker consumes a queue of its own, so that it never takes the tasks of another
# worker on the same broker (e.g. the test suite's, which indexes another database).
DEMO_QUEUE = "semantic_search_demo"
WORKER_LOG = settings.BASE_DIR / ".services" / "demo-worker.log"
SNIPPET_WIDTH = 80
TITLE_WIDTH = 22


@dataclass(frozen=True)
class DemoQuery:
    text: str
    language: str
    note: str
    languages: str = "auto"  # "auto" | "same" | "all"
    other_languages: bool = False  # leave out the articles in the query's own language


QUERIES = (
    DemoQuery("Which football club won the Polish championship in 2000?", "en", "English"),
    DemoQuery("Warum stiegen 1973 die Ölpreise so stark?", "de", "German"),
    DemoQuery("Откуда у растений появились хлоропласты?", "ru", "Russian"),
    DemoQuery("蒸汽机的效率受什么限制？", "zh", "Chinese"),
    DemoQuery(
        "¿Cómo se formó el desfiladero del Rin?", "es",
        "Spanish, cross-lingual: only articles in other languages", languages="all",
        other_languages=True,
    ),
    DemoQuery("qwxz blorft vrummel", "en", "nonsense: no good match, no results"),
)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


@contextmanager
def indexing_queue(queue: str) -> Iterator[None]:
    """Send this process's indexing tasks to ``queue`` while the demo runs (the demo's
    worker consumes only that queue)."""
    original = settings.SEMANTIC_SEARCH
    settings.SEMANTIC_SEARCH = {**original, "QUEUE": queue}
    try:
        yield
    finally:
        settings.SEMANTIC_SEARCH = original


def serving_disabled() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("DEMO_SERVE") == "0"


class Command(BaseCommand):
    help = (
        "Load the XQuAD demo corpus, index it through a real Celery worker, print a few "
        "multilingual searches, then run the development server."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--no-serve", action="store_true",
            help="stop after the searches (also with DEMO_SERVE=0 or CI=true)",
        )
        parser.add_argument(
            "--screenshots", metavar="DIR", type=Path,
            help="after the searches, save screenshots of the pages in DIR (headless Chromium, "
            "installed with apt if missing) instead of serving",
        )

    def handle(self, *args, no_serve: bool, no_color: bool, screenshots: Path | None = None,
               **options) -> None:
        self.bold = make_style(opts=("bold",)) if supports_color() and not no_color else str
        self.screenshots_dir = screenshots
        if screenshots:
            from ...browser import ensure_chromium, ensure_cjk_font

            if reason := ensure_chromium():
                raise CommandError(f"no headless Chromium for the screenshots: {reason}")
            if reason := ensure_cjk_font():
                self.stderr.write(f"Chinese text will show as boxes: {reason}")
            no_serve = True
        queue = conf.get("QUEUE") or DEMO_QUEUE
        worker = None if conf.get("SYNC") else WorkerProcess(queue, WORKER_LOG)
        serve = not (no_serve or serving_disabled())
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            with indexing_queue(queue):
                self.run_with_worker(worker, serve)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def run_with_worker(self, worker: WorkerProcess | None, serve: bool) -> None:
        """Run the demo; stop the worker however it ends (also on Ctrl-C and SIGTERM)."""
        try:
            self.run(worker, serve)
        except (KeyboardInterrupt, SystemExit):
            if worker and worker.died:
                raise CommandError(
                    f"the Celery worker stopped unexpectedly (exit code "
                    f"{worker.process.returncode}):\n{worker.log_tail()}"
                ) from None
            raise
        except WorkerError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if worker:
                worker.stop()

    def run(self, worker: WorkerProcess | None, serve: bool) -> None:
        started = time.monotonic()
        if worker:
            worker.start()  # it boots while the database is prepared
        call_command("migrate", verbosity=0, interactive=False)
        self.report_load(load_slice())
        self.ensure_superuser()
        self.index(worker)
        self.search()
        self.stdout.write(f"\nDemo ready in {time.monotonic() - started:.1f} s.")
        if self.screenshots_dir:
            self.take_screenshots(self.screenshots_dir)
        if serve:
            self.serve(worker)

    # --- Steps ------------------------------------------------------------------------------

    def report_load(self, report: LoadReport) -> None:
        self.stdout.write(
            f"Corpus {SLICE_PATH.name}: {len(report.created)} articles created, "
            f"{report.updated} updated, {report.unchanged} unchanged."
        )

    def ensure_superuser(self) -> None:
        username, password = ADMIN_USER
        users = get_user_model().objects
        if users.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} exists (password {password!r}).")
            return
        users.create_superuser(username, f"{username}@example.com", password)
        self.stdout.write(f"Admin user {username!r} created with password {password!r}.")

    def index(self, worker: WorkerProcess | None) -> None:
        """What ``semantic_search_reindex demo.Article --async --wait`` does, through the
        worker (in this process when ``SEMANTIC_SEARCH["SYNC"]`` is on)."""
        if worker is None:
            call_command("semantic_search_reindex", "demo.Article", stdout=self.stdout)
            return
        self.stdout.write(f"Waiting for the Celery worker (log: {worker.log_path}) ...")
        worker.wait_until_ready()
        call_command(
            "semantic_search_reindex", "demo.Article", use_workers=True, wait=True,
            stdout=self.stdout,
        )

    def search(self) -> None:
        self.load_query_models()
        for query in QUERIES:
            self.print_results(query)

    def load_query_models(self) -> None:
        """Load the embedding models now, so that the query times below are search times."""
        started = time.monotonic()
        for spec in conf.embedder_specs():
            get_embedder(spec.name).encode_queries(["warm-up"])
        self.stdout.write(f"\nQuery models loaded in {time.monotonic() - started:.1f} s.")

    def serve(self, worker: WorkerProcess | None) -> None:
        base = f"http://{ADDRESS}"
        username, password = ADMIN_USER
        self.stdout.write(f"\nSearch page: {base}/")
        self.stdout.write(f"Admin:       {base}/admin/  (user {username!r}, password {password!r})")
        if worker:
            self.stdout.write("The worker stays up: edits made in the admin are indexed.")
        self.stdout.write("Press Ctrl-C to stop.\n")
        call_command("runserver", ADDRESS, use_reloader=False)

    def take_screenshots(self, out_dir: Path) -> None:
        from ...browser import live_server
        from ...screenshots import take

        with live_server() as url:
            paths = take(url, out_dir, *ADMIN_USER)
        for path in paths:
            self.stdout.write(f"screenshot {path} ({path.stat().st_size // 1024} kB)")

    # --- Output -----------------------------------------------------------------------------

    def print_results(self, query: DemoQuery, limit: int = 3) -> None:
        articles = Article.objects.all()
        if query.other_languages:
            articles = articles.exclude(language=query.language)
        started = time.monotonic()
        results = list(
            articles.semantic_search(query.text, mode="hybrid", languages=query.languages)[:limit]
        )
        elapsed_ms = (time.monotonic() - started) * 1000
        heading = f"{self.bold(query.text)}  ({query.note}, languages={query.languages!r})"
        self.stdout.write(f"\n{heading}")
        if not results:
            self.stdout.write("  no results (nothing matches by keyword or stands out by meaning)")
            return
        first = results[0]
        self.stdout.write(
            f"  detected language: {first.search_language or '?'}, "
            f"route: {first.search_route}, {elapsed_ms:.0f} ms"
        )
        self.stdout.write(f"  {'#':>2}  {'score':>6}  lang  {pad('title', TITLE_WIDTH)}  snippet")
        for rank, article in enumerate(results, start=1):
            snippet = str(article.search_highlight) or html.escape(article.body)
            self.stdout.write(
                f"  {rank:>2}  {article.search_score:>6.3f}  {article.language:<4}  "
                f"{pad(article.title, TITLE_WIDTH)}  "
                f"{render_highlight(snippet, self.bold, SNIPPET_WIDTH)}"
            )
