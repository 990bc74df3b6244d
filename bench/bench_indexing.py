"""Indexing throughput: the embedder alone versus the full asynchronous path.

Per embedder (each measured alone):

* raw: ``encode_passages`` called in this process on the objects' document texts, 32 at a time;
* raw chunked: the same, on the chunks the indexer embeds (one call per 32 objects, exactly the
  encode calls a task makes), i.e. the model-bound ceiling of the full path;
* full path: ``bulk_create`` -> ``index_objects`` (durable entries, tasks of TASK_BATCH_SIZE) ->
  broker -> a real ``celery worker`` process -> rows in Postgres, timed until no entry is
  pending;
* breakdown: ``index_entries`` run here on batches of 32, timed per stage and per SQL statement.

``--backfill N`` instead indexes N objects with every embedder on and samples the worker's RSS
every second. ``--workers 1,2`` instead times the full path alone with each number of worker
processes (solo pool each, all on the queue, the embedders together). Everything runs in the
database ``bench_indexing`` (dropped and created again at each run) of the server
``DATABASE_URL`` points to, and on the queue ``bench_indexing`` of ``CELERY_BROKER_URL``.
``--code HEAD`` measures a snapshot of a commit instead of the working tree, so that edits in
progress cannot change the code between the phases of a run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_indexing.py --data /work/shared/data/scifact --docs 1000
    nohup .venv/bin/python bench/bench_indexing.py --data /work/shared/data/scifact \\
        --backfill 10000 > bench/results/logs/indexing-backfill.log 2>&1 &

Reports: bench/results/indexing.txt, bench/results/indexing-backfill.txt (+ -rss.csv),
bench/results/indexing-workers.txt; worker logs in bench/results/logs/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
LOG_DIR = RESULTS_DIR / "logs"
BENCH_DATABASE = "bench_indexing"
BENCH_QUEUE = "bench_indexing"
SETTINGS_MODULE = "bench.settings_bench"
WARMUP_DOCS = 32
TASK_DONE = re.compile(r"Task semantic_search\.index_entries\[[^\]]+\] succeeded in ([0-9.]+)s")

if str(PROJECT_DIR) not in sys.path:  # run as a script: make `bench` and the project importable
    sys.path.insert(0, str(PROJECT_DIR))

# Where semantic_search/ and example_project/ are imported from: the working tree, or a
# snapshot of a commit (--code REV) so that edits in progress cannot change a run midway.
code_root: Path = PROJECT_DIR
code_label = "working tree"


def git(*arguments: str) -> str:
    result = subprocess.run(
        ["git", *arguments], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def use_snapshot(revision: str) -> Path:
    """Extract semantic_search/ and example_project/ of ``revision`` and import from there."""
    global code_root, code_label
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    if not commit:
        raise SystemExit(f"--code: no commit {revision!r}")
    target = Path(tempfile.mkdtemp(prefix="bench-indexing-code-"))
    archive = subprocess.run(
        ["git", "archive", commit, "semantic_search", "example_project"],
        cwd=PROJECT_DIR, capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    sys.path.insert(0, str(target))
    code_root, code_label = target, f"snapshot of commit {commit[:12]} (git archive)"
    return target


# --- Environment ------------------------------------------------------------------------------


def bench_database_url(database_url: str, name: str = BENCH_DATABASE) -> str:
    """The same server and credentials as ``database_url``, another database."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def recreate_database(database_url: str, name: str = BENCH_DATABASE) -> None:
    """Drop and create the benchmark database, so its schema follows the current migrations
    (which may still be edited in place)."""
    with psycopg.connect(bench_database_url(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(database_url: str, embedders: Sequence[str]) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ["BENCH_EMBEDDERS"] = ",".join(embedders)
    os.environ["BENCH_QUEUE"] = BENCH_QUEUE
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def machine_description() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    memory = psutil.virtual_memory().total / 2**30
    return (
        f"nproc={os.cpu_count()}, CPU: {model}, RAM: {memory:.0f} GiB, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}"
    )


def code_version() -> str:
    """Which code was measured: a snapshot, or the working tree (and whether it is dirty)."""
    if code_root != PROJECT_DIR:
        return code_label
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "semantic_search", "example_project")
    changes = " + uncommitted changes in semantic_search/ or example_project/" if dirty else ""
    return f"working tree at commit {commit}{changes}"


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


# --- Texts ------------------------------------------------------------------------------------


def read_corpus(data: Path) -> list[tuple[str, str]]:
    """(title, text) of every non-empty document of a BEIR ``corpus.jsonl``."""
    path = data / "corpus.jsonl" if data.is_dir() else data
    pairs = []
    with path.open(encoding="utf-8") as corpus:
        for line in corpus:
            record = json.loads(line)
            title, text = record.get("title", "").strip(), record.get("text", "").strip()
            if text:
                pairs.append((title, text))
    if not pairs:
        raise SystemExit(f"no documents in {path}")
    return pairs


def take(pool: list[tuple[str, str]], count: int, offset: int = 0) -> list[tuple[str, str]]:
    """``count`` documents from ``offset`` on, cycling the pool with a suffix (distinct hashes)."""
    docs = []
    for index in range(offset, offset + count):
        copy, position = divmod(index, len(pool))
        title, text = pool[position]
        docs.append((title, f"{text} (copy {copy})" if copy else text))
    return docs


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- Database helpers (after django.setup()) --------------------------------------------------


def empty_tables() -> None:
    """Truncate the demo articles and every table of the semantic_search app."""
    from django.apps import apps
    from django.db import connection

    from example_project.demo.models import Article

    models = [Article, *apps.get_app_config("semantic_search").get_models()]
    tables = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in models)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} CASCADE")


def create_articles(docs: Sequence[tuple[str, str]]) -> None:
    from example_project.demo.models import Article

    Article.objects.bulk_create(
        [Article(title=title, body=body, language="en") for title, body in docs], batch_size=1000
    )


def document_texts(docs: Sequence[tuple[str, str]]) -> list[str]:
    """The text the indexer embeds for each document (fields joined in weight order)."""
    from example_project.demo.models import Article
    from semantic_search.registry import get_registration

    registration = get_registration(Article)
    return [
        registration.document(Article(title=title, body=body, language="en")).text
        for title, body in docs
    ]


def entry_states() -> dict[str, int]:
    from django.db.models import Count

    from semantic_search.models import SearchEntry

    rows = SearchEntry.objects.values("state").annotate(n=Count("id")).order_by()
    return {row["state"]: row["n"] for row in rows}


def chunk_count() -> int:
    from semantic_search.models import ChunkEmbedding

    return ChunkEmbedding.objects.count()


# --- The worker -------------------------------------------------------------------------------


class Worker:
    """A real ``celery worker`` process (solo pool) on the benchmark queue and database."""

    def __init__(
        self, embedders: Sequence[str], database_url: str, log_path: Path, index: int = 0
    ) -> None:
        self.embedders = list(embedders)
        self.database_url = database_url
        self.log_path = log_path
        self.index = index  # tells the hostnames of several workers apart
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        roots = dict.fromkeys([str(code_root), str(PROJECT_DIR), os.environ.get("PYTHONPATH")])
        pythonpath = os.pathsep.join(filter(None, roots))
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "BENCH_EMBEDDERS": ",".join(self.embedders),
            "BENCH_QUEUE": BENCH_QUEUE,
            "SEMANTIC_SEARCH_SYNC": "0",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": pythonpath,
        }
        command = [
            sys.executable, "-m", "celery", "-A", "example_project", "worker",
            "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
            "--queues", BENCH_QUEUE, "--purge",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"bench-indexing-{os.getpid()}-{self.index}@%h",
        ]  # fmt: skip
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=code_root, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while "ready." not in self.log_path.read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the celery worker exited:\n{self.log_tail()}")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def task_seconds(self, since: int) -> list[float]:
        """Run times of the indexing tasks logged after byte offset ``since``."""
        with self.log_path.open(errors="replace") as log:
            log.seek(since)
            return [float(m.group(1)) for m in TASK_DONE.finditer(log.read())]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_worker(embedders: Sequence[str], database_url: str, log_name: str):
    worker = Worker(embedders, database_url, LOG_DIR / log_name)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


class WorkerGroup:
    """Several workers on the same queue, seen as one by the indexing helpers."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.check_alive()


@contextmanager
def running_workers(embedders: Sequence[str], database_url: str, count: int):
    workers = [
        Worker(embedders, database_url, LOG_DIR / f"worker-{count}-workers-{index}.log", index)
        for index in range(count)
    ]
    try:
        for worker in workers:
            worker.start()
        yield WorkerGroup(workers)
    finally:
        for worker in workers:
            worker.stop()


def wait_until_indexed(
    worker: Worker,
    expected: int,
    timeout: float,
    poll: float,
    on_poll: Callable[[float], None] | None = None,
) -> None:
    """Poll the entries until none is pending (and all ``expected`` exist)."""
    from semantic_search.models import IndexState, SearchEntry

    started = time.perf_counter()
    while True:
        pending = SearchEntry.objects.filter(state=IndexState.PENDING).count()
        if on_poll is not None:
            on_poll(time.perf_counter() - started)
        if pending == 0:
            total = SearchEntry.objects.count()
            if total != expected:
                raise RuntimeError(f"{total} entries exist, {expected} expected")
            return
        worker.check_alive()
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{pending} entries still pending after {timeout:.0f}s")
        time.sleep(poll)


def index_through_worker(
    worker: Worker,
    docs: Sequence[tuple[str, str]],
    timeout: float,
    poll: float,
    on_poll: Callable[[float], None] | None = None,
) -> float:
    """Seconds from ``bulk_create`` until the worker left no entry pending."""
    import semantic_search
    from example_project.demo.models import Article

    empty_tables()
    started = time.perf_counter()
    create_articles(docs)
    semantic_search.index_objects(Article.objects.all())
    wait_until_indexed(worker, len(docs), timeout, poll, on_poll)
    return time.perf_counter() - started


# --- Measurements -----------------------------------------------------------------------------


class CpuMeter:
    """Cores used over an interval by some processes, and by the whole machine (to tell
    whether someone else competed for the CPU)."""

    def __init__(self, *pids: int) -> None:
        self.processes = [psutil.Process(pid) for pid in pids or (os.getpid(),)]
        self.started = time.perf_counter()
        self.ours = self._ours()
        self.machine = self._machine()

    def _ours(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes)

    @staticmethod
    def _machine() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def cores(self) -> tuple[float, float]:
        """(cores used by the processes, cores busy machine-wide) since creation."""
        elapsed = time.perf_counter() - self.started
        return (
            (self._ours() - self.ours) / elapsed,
            (self._machine() - self.machine) / elapsed,
        )


@dataclass
class Row:
    embedder: str
    docs: int
    raw_rate: float = 0.0
    raw_chunked_rate: float = 0.0
    full_rate: float = 0.0
    chunks_per_doc: float = 0.0
    task_busy: float = 0.0  # share of the full-path wall time spent inside indexing tasks
    tasks: int = 0
    failed: int = 0
    load: str = ""
    raw_cores: tuple[float, float] = (0.0, 0.0)  # (this process, machine)
    full_cores: tuple[float, float] = (0.0, 0.0)  # (worker, machine)

    @property
    def ratio(self) -> float:
        return self.full_rate / self.raw_rate if self.raw_rate else 0.0

    @property
    def ratio_chunked(self) -> float:
        return self.full_rate / self.raw_chunked_rate if self.raw_chunked_rate else 0.0


def measure_raw(
    name: str, texts: list[str], warmup: list[str], batch_size: int
) -> tuple[float, tuple[float, float]]:
    """Documents per second of ``encode_passages`` on ``batch_size`` texts per call, and the
    cores used (this process, machine)."""
    from semantic_search.embedders import get_embedder

    embedder = get_embedder(name)
    embedder.encode_passages(warmup)
    meter = CpuMeter()
    started = time.perf_counter()
    for batch in batched(texts, batch_size):
        embedder.encode_passages(batch)
    return len(texts) / (time.perf_counter() - started), meter.cores()


def measure_raw_chunked(name: str, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Documents per second when encoding the chunks the indexer embeds, one call per
    ``batch_size`` documents (as in a task); and the chunks per document."""
    from semantic_search import conf
    from semantic_search.chunking import chunk_text
    from semantic_search.embedders import get_embedder

    embedder = get_embedder(name)
    overlap = int(conf.get("CHUNK_OVERLAP_TOKENS"))
    calls = []
    for batch in batched(texts, batch_size):
        unique = {c.text_hash: c.text for t in batch for c in chunk_text(t, embedder, overlap)}
        calls.append(list(unique.values()))
    started = time.perf_counter()
    for chunks in calls:
        embedder.encode_passages(chunks)
    elapsed = time.perf_counter() - started
    return len(texts) / elapsed, sum(map(len, calls)) / len(texts)


def measure_full(
    name: str, docs: list[tuple[str, str]], warmup: list[tuple[str, str]], args, row: Row
) -> None:
    from semantic_search.models import IndexState

    with running_worker([name], args.database_url, f"worker-{name}.log") as worker:
        index_through_worker(worker, warmup, args.timeout, args.poll)  # loads the model
        offset = worker.log_size()
        meter = CpuMeter(worker.pid)
        elapsed = index_through_worker(worker, docs, args.timeout, args.poll)
        row.full_cores = meter.cores()
        time.sleep(0.5)  # let the last "succeeded" line reach the log
        task_times = worker.task_seconds(offset)
    states = entry_states()
    row.full_rate = len(docs) / elapsed
    row.tasks = len(task_times)
    row.task_busy = sum(task_times) / elapsed
    row.failed = states.get(IndexState.FAILED, 0)
    if states.get(IndexState.INDEXED, 0) != len(docs):
        raise RuntimeError(f"not all entries indexed: {states}")
    row.chunks_per_doc = chunk_count() / len(docs)


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def wrap(self, label: str, function: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        return timed


SQL_WRITE = re.compile(r'\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)
SQL_READ = re.compile(r'\bFROM\s+"?(\w+)"?', re.IGNORECASE)


def sql_kind(sql: str) -> str:
    """``VERB table`` of a statement (its write, if any), e.g. ``UPDATE semantic_search_x``."""
    if match := SQL_WRITE.search(sql):
        return f"{match.group(1).split()[0].upper()} {match.group(2)}"
    if match := SQL_READ.search(sql):
        return f"SELECT {match.group(1)}"
    return sql.split(None, 1)[0].upper() if sql.strip() else "?"


def measure_breakdown(name: str, docs: list[tuple[str, str]], batch_size: int) -> StageTimes:
    """Run ``index_entries`` here on batches of ``batch_size`` entries (what one task does),
    timing its stages and its SQL statements."""
    from unittest import mock

    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    import semantic_search
    from example_project.demo.models import Article
    from semantic_search import indexing

    configured = settings.SEMANTIC_SEARCH
    only = {**configured, "EMBEDDERS": {name: configured["EMBEDDERS"][name]}}
    times = StageTimes()

    def record_sql(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            times.seconds["sql: " + sql_kind(sql)] += time.perf_counter() - started
            times.calls["sql: " + sql_kind(sql)] += 1

    with override_settings(SEMANTIC_SEARCH=only):
        empty_tables()
        create_articles(docs)
        with mock.patch("semantic_search.changes.dispatch"):
            entry_ids = semantic_search.index_objects(Article.objects.all())
        stages = ["_existing_chunks", "_plan", "_embed", "_write", "_replace_chunks"]
        patches = [
            mock.patch.object(indexing, stage, times.wrap(stage, getattr(indexing, stage)))
            for stage in stages
        ]
        for patch in patches:
            patch.start()
        try:
            with connection.execute_wrapper(record_sql):
                for batch in batched(sorted(entry_ids), batch_size):
                    times.wrap("index_entries (total)", indexing.index_entries)(list(batch))
        finally:
            for patch in patches:
                patch.stop()
        empty_tables()
    return times


# --- Reports ----------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'embedder':<13} {'docs':>6} {'raw docs/s':>11} {'full-path docs/s':>17} "
        f"{'ratio':>6}   {'chunks/doc':>10} {'raw chunked docs/s':>19} {'full/chunked':>12} "
        f"{'in tasks':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.embedder:<13} {r.docs:>6} {r.raw_rate:>11.1f} {r.full_rate:>17.1f} "
            f"{r.ratio:>6.2f}   {r.chunks_per_doc:>10.2f} {r.raw_chunked_rate:>19.1f} "
            f"{r.ratio_chunked:>12.2f} {r.task_busy:>7.0%}"
        )
    return "\n".join(lines)


def format_breakdown(name: str, times: StageTimes, docs: int, batch_size: int) -> str:
    batches = max(1, -(-docs // batch_size))
    lines = [
        f"breakdown, {name}: index_entries in-process on {docs} docs, {batches} batches of "
        f"{batch_size} (ms per batch, calls per batch)"
    ]
    total = times.seconds.get("index_entries (total)", 0.0)
    for label in sorted(times.seconds, key=lambda k: (k.startswith("sql"), -times.seconds[k])):
        seconds = times.seconds[label]
        share = f"{seconds / total:6.1%}" if total else ""
        lines.append(
            f"  {label:<45} {1000 * seconds / batches:9.1f} ms {times.calls[label] / batches:7.1f}"
            f"  {share}"
        )
    return "\n".join(lines)


def header_lines(args) -> list[str]:
    return [
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {machine_description()}",
        f"code: {code_version()}",
        f"command: {args.command}",
        f"database: {BENCH_DATABASE} (recreated; server of DATABASE_URL), queue: {BENCH_QUEUE}",
    ]


def write_report(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"\nwritten to {path}", flush=True)


# --- Runs -------------------------------------------------------------------------------------


def run_comparison(args) -> None:
    pool = read_corpus(args.data)
    docs = take(pool, args.docs)
    warmup = take(pool, WARMUP_DOCS, offset=args.docs)
    texts, warmup_texts = document_texts(docs), document_texts(warmup)
    rows, breakdowns = [], []
    for name in args.embedders:
        row = Row(name, len(docs))
        load_before = load_average()
        print(f"[{name}] raw encode_passages ...", flush=True)
        row.raw_rate, row.raw_cores = measure_raw(name, texts, warmup_texts, args.batch_size)
        row.raw_chunked_rate, _ = measure_raw_chunked(name, texts, args.batch_size)
        if args.breakdown:
            print(f"[{name}] in-process stage breakdown ...", flush=True)
            sample = docs[: args.breakdown]
            times = measure_breakdown(name, sample, args.batch_size)
            breakdowns.append(format_breakdown(name, times, len(sample), args.batch_size))
        print(f"[{name}] full path through the worker ...", flush=True)
        measure_full(name, docs, warmup, args, row)
        row.load = f"{load_before} -> {load_average()}"
        print(
            f"[{name}] raw {row.raw_rate:.1f}/s, full {row.full_rate:.1f}/s, ratio {row.ratio:.2f}",
            flush=True,
        )
        rows.append(row)
    empty_tables()
    notes = [
        "raw: encode_passages on the document texts (title + body), "
        f"{args.batch_size} per call, in-process, after a warm-up call;",
        "  the model truncates texts longer than its window (512 tokens e5, 256 MiniLM).",
        "raw chunked: encode_passages on the chunks the indexer embeds (token windows with "
        "overlap),",
        f"  one call per {args.batch_size} documents, like one task: the model-bound ceiling.",
        "full path: bulk_create -> index_objects -> broker -> celery worker (solo) -> Postgres, "
        "from bulk_create",
        "  until no entry is pending; worker warmed up with one batch first.",
        "in tasks: sum of the worker's task run times / full-path wall time.",
        "failed entries: " + ", ".join(f"{r.embedder}={r.failed}" for r in rows),
        "tasks per run: " + ", ".join(f"{r.embedder}={r.tasks}" for r in rows),
        "load average (1/5/15 min) before -> after each embedder: "
        + "; ".join(f"{r.embedder} {r.load}" for r in rows),
        "cores used during raw (this process / whole machine): "
        + "; ".join(f"{r.embedder} {r.raw_cores[0]:.2f} / {r.raw_cores[1]:.2f}" for r in rows),
        "cores used during full path (worker / whole machine, incl. Postgres): "
        + "; ".join(f"{r.embedder} {r.full_cores[0]:.2f} / {r.full_cores[1]:.2f}" for r in rows),
    ]
    report = "\n".join(
        ["# semantic_search indexing throughput", *header_lines(args), "", format_table(rows),
         "", *notes, "", *breakdowns]
    )  # fmt: skip
    print("\n" + report, flush=True)
    write_report(args.output or RESULTS_DIR / "indexing.txt", report)


def rss_by_tenth(
    samples: list[tuple[float, int, int]], total: int
) -> list[tuple[float, float, float]]:
    """(min, median, max) RSS of the samples taken in each tenth of the objects indexed. The
    minimum is the floor between encode calls; median and max include the activations of the
    batch in flight. A flat profile has no upward trend from the first tenth to the last."""
    tenths = []
    for k in range(10):
        low, high = total * k / 10, total * (k + 1) / 10
        rss = [r for _, r, n in samples if low <= n < high or (k == 9 and n >= high)]
        if rss:
            tenths.append((float(min(rss)), float(statistics.median(rss)), float(max(rss))))
    return tenths


def read_rss_samples(path: Path) -> list[tuple[float, int, int]]:
    """The samples of a backfill's -rss.csv, as (seconds, rss bytes, indexed entries)."""
    with path.open() as handle:
        return [
            (float(row["seconds"]), int(float(row["rss_mib"]) * 2**20), int(row["indexed"]))
            for row in csv.DictReader(handle)
        ]


def rss_profile_lines(samples: list[tuple[float, int, int]], total: int) -> list[str]:
    mib = 2**20
    tenths = rss_by_tenth(samples, total)
    growth = [(last - first) / mib for first, last in zip(tenths[0], tenths[-1], strict=True)]
    return [
        "worker RSS by tenth of the backfill, min / median / max MiB: "
        + ", ".join(f"{a / mib:.0f}/{m / mib:.0f}/{x / mib:.0f}" for a, m, x in tenths),
        f"growth from the first tenth to the last: min {growth[0]:+.0f} MiB, "
        f"median {growth[1]:+.0f} MiB, max {growth[2]:+.0f} MiB",
    ]


def run_backfill(args) -> None:
    from semantic_search.models import IndexState, SearchEntry

    pool = read_corpus(args.data)
    docs = take(pool, args.backfill)
    warmup = take(pool, WARMUP_DOCS, offset=args.backfill)
    samples: list[tuple[float, int, int]] = []  # (seconds, rss bytes, indexed entries)
    with running_worker(args.embedders, args.database_url, "worker-backfill.log") as worker:
        process = psutil.Process(worker.pid)
        index_through_worker(worker, warmup, args.timeout, args.poll)
        rss_after_warmup = process.memory_info().rss
        print(f"worker warmed up, RSS {rss_after_warmup / 2**20:.0f} MiB", flush=True)
        last_print = [0.0]

        def sample(seconds: float) -> None:
            indexed = SearchEntry.objects.filter(state=IndexState.INDEXED).count()
            samples.append((seconds, process.memory_info().rss, indexed))
            if seconds - last_print[0] >= 60:
                last_print[0] = seconds
                print(
                    f"  {seconds:7.0f}s  {indexed:6d} indexed  "
                    f"RSS {samples[-1][1] / 2**20:.0f} MiB",
                    flush=True,
                )

        meter = CpuMeter(worker.pid)
        elapsed = index_through_worker(worker, docs, args.timeout, 1.0, on_poll=sample)
        worker_cores, machine_cores = meter.cores()
    states = entry_states()
    chunks = chunk_count()
    empty_tables()
    peak = max(rss for _, rss, _ in samples)
    tenth = next((s for s in samples if s[2] >= len(docs) / 10), samples[-1])
    mib = 2**20
    lines = [
        "# semantic_search backfill: worker memory and time",
        *header_lines(args),
        "",
        f"objects: {len(docs)} (language en), embedders: {', '.join(args.embedders)}",
        f"entry states at the end: {states}, chunk rows: {chunks}",
        f"total time: {elapsed:.0f} s ({len(docs) / elapsed:.1f} objects/s)",
        f"worker RSS after warm-up: {rss_after_warmup / mib:.0f} MiB",
        f"worker RSS after the first 10% ({tenth[2]} indexed, {tenth[0]:.0f} s): "
        f"{tenth[1] / mib:.0f} MiB",
        f"worker RSS at the end: {samples[-1][1] / mib:.0f} MiB",
        f"worker peak RSS (sampled every second): {peak / mib:.0f} MiB",
        *rss_profile_lines(samples, len(docs)),
        f"cores used: worker {worker_cores:.2f}, whole machine {machine_cores:.2f}; "
        f"load average at the end: {load_average()}",
    ]
    output = args.output or RESULTS_DIR / "indexing-backfill.txt"
    rss_path = output.with_name(output.stem + "-rss.csv")
    rss_path.parent.mkdir(parents=True, exist_ok=True)
    rss_path.write_text(
        "seconds,rss_mib,indexed\n"
        + "".join(f"{t:.1f},{rss / mib:.1f},{n}\n" for t, rss, n in samples)
    )
    lines.append(f"RSS samples: {rss_path}")
    report = "\n".join(lines)
    print("\n" + report, flush=True)
    write_report(output, report)


def run_workers(args) -> None:
    """The full path (bulk_create -> broker -> workers -> rows) with 1, 2, ... worker processes
    consuming the same queue, each warmed up (models loaded) before the timed run."""
    from semantic_search.models import IndexState

    pool = read_corpus(args.data)
    docs = take(pool, args.docs)
    lines = []
    for count in args.workers:
        load_before = load_average()
        print(f"[{count} workers] starting and warming up ...", flush=True)
        with running_workers(args.embedders, args.database_url, count) as group:
            for attempt in range(3):  # until every worker has run a task (loaded its models)
                warmup = take(pool, WARMUP_DOCS * count, offset=args.docs + attempt * 100)
                index_through_worker(group, warmup, args.timeout, args.poll)
                if all(worker.task_seconds(0) for worker in group.workers):
                    break
            else:
                raise RuntimeError("a worker ran no warm-up task")
            time.sleep(0.5)  # the warm-up's last "succeeded" lines before the offsets
            offsets = [worker.log_size() for worker in group.workers]
            meter = CpuMeter(*group.pids)
            print(f"[{count} workers] indexing {len(docs)} documents ...", flush=True)
            elapsed = index_through_worker(group, docs, args.timeout, args.poll)
            workers_cores, machine_cores = meter.cores()
            time.sleep(0.5)  # let the last "succeeded" lines reach the logs
            tasks = [len(w.task_seconds(o)) for w, o in zip(group.workers, offsets, strict=True)]
        states = entry_states()
        if states.get(IndexState.INDEXED, 0) != len(docs):
            raise RuntimeError(f"not all entries indexed: {states}")
        line = (
            f"{count:>7} {len(docs):>6} {elapsed:>9.1f} {len(docs) / elapsed:>8.2f}"
            f"   {'+'.join(map(str, tasks)):<12} {workers_cores:>12.2f} {machine_cores:>13.2f}"
            f"   {load_before} -> {load_average()}"
        )
        print(line, flush=True)
        lines.append(line)
    empty_tables()
    header = (
        f"{'workers':>7} {'docs':>6} {'seconds':>9} {'docs/s':>8}   {'tasks each':<12} "
        f"{'worker cores':>12} {'machine cores':>13}   load average (1/5/15 min) before -> after"
    )
    import torch

    report = "\n".join([
        "# semantic_search indexing throughput by number of worker processes",
        *header_lines(args), "",
        f"embedders: {', '.join(args.embedders)}; each worker: celery --pool solo, torch "
        f"{torch.get_num_threads()} threads (its default here); tasks of TASK_BATCH_SIZE objects",
        "full path: bulk_create -> index_objects -> broker -> the workers -> Postgres, until no "
        "entry is pending",
        "", header, "-" * len(header), *lines,
    ])
    print("\n" + report, flush=True)
    write_report(args.output or RESULTS_DIR / "indexing-workers.txt", report)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (corpus.jsonl)")
    parser.add_argument("--docs", type=int, default=1000, help="documents per embedder")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per encode call")
    parser.add_argument(
        "--embedders", default="multilingual,english", help="comma-separated embedder names"
    )
    parser.add_argument(
        "--breakdown", type=int, default=256, help="documents for the stage breakdown (0: skip)"
    )
    parser.add_argument(
        "--backfill", type=int, default=0,
        help="instead: index this many objects with all the embedders, sampling worker RSS",
    )  # fmt: skip
    parser.add_argument(
        "--workers", default="",
        help="instead: time the full path with each of these numbers of workers, e.g. 1,2",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="print the RSS profile of a backfill's -rss.csv (with --backfill N) and exit",
    )  # fmt: skip
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between state polls")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per indexing run")
    parser.add_argument("--output", type=Path, default=None, help="report file")
    parser.add_argument(
        "--code", default="worktree",
        help="measure the working tree (default) or a snapshot of this git revision, e.g. HEAD",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.embedders = [name.strip() for name in args.embedders.split(",") if name.strip()]
    args.workers = [int(count) for count in args.workers.split(",") if count.strip()]
    count = args.backfill or args.docs
    args.timeout = args.timeout or 300 + 2.0 * count
    args.command = f"cd {shlex.quote(os.getcwd())} && {shlex.join([sys.executable, *sys.argv])}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        print("\n".join(rss_profile_lines(read_rss_samples(args.profile), args.backfill)))
        return 0
    # A plain `kill` must still stop the worker: turn SIGTERM into SystemExit (runs finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    database_url = os.environ.get("DATABASE_URL")
    if not database_url or not os.environ.get("CELERY_BROKER_URL"):
        raise SystemExit(
            "set DATABASE_URL and CELERY_BROKER_URL first: "
            "eval $(.venv/bin/python -m example_project.services env)"
        )
    # The materialized e5 model lives in the project's cache, whichever code root is used.
    os.environ.setdefault("SEMANTIC_SEARCH_MODEL_CACHE", str(PROJECT_DIR / ".cache" / "models"))
    args.data = args.data.resolve()
    args.output = args.output.resolve() if args.output else None
    snapshot = use_snapshot(args.code) if args.code != "worktree" else None
    # Celery's Django fixup puts the current directory first on sys.path: make it the code root.
    os.chdir(code_root)
    try:
        args.database_url = bench_database_url(database_url)
        recreate_database(database_url)
        setup_django(args.database_url, args.embedders)
        if args.backfill:
            run_backfill(args)
        elif args.workers:
            run_workers(args)
        else:
            run_comparison(args)
    finally:
        if snapshot is not None:
            shutil.rmtree(snapshot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
