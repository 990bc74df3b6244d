"""Soak: concurrent saves, deletes and searches against a real Celery worker, bounded in time.

Writers change several articles per transaction in random order (updates, deletes, creates),
a reader searches, the session's worker indexes. At the end, once the worker has caught up,
the index must equal the data (no stale, missing, duplicate or orphaned rows, BM25 statistics
equal to the postings) and no log may mention a deadlock. ``SOAK_SECONDS`` (default 30) sets
the length; the numbers are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from example_project.demo.models import Article
from semantic_search.indexing import applicable_embedders, document_hash
from semantic_search.models import ChunkEmbedding, IndexState, SearchEntry
from semantic_search.registry import get_registration

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
WRITERS = 2
WORDS = {
    "en": "river mountain glacier harbour castle forest bridge island valley desert".split(),
    "de": "Fluss Berg Gletscher Hafen Burg Wald Brücke Insel Tal Wüste".split(),
}


def _text(rng: random.Random, language: str) -> tuple[str, str]:
    words = WORDS[language]
    title = " ".join(rng.sample(words, 2))
    body = " ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) + "."
    return title, body


def _postgres_log_size() -> tuple[Path | None, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('data_directory'), pg_current_logfile()")
        directory, logfile = cursor.fetchone()
    if not logfile:
        return None, 0
    path = Path(logfile) if Path(logfile).is_absolute() else Path(directory) / logfile
    return path, path.stat().st_size if path.exists() else 0


class Load:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def run(self, target, *args) -> threading.Thread:
        def guarded() -> None:
            try:
                target(*args)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                with self.lock:
                    self.errors.append(error)
            finally:
                connections.close_all()

        thread = threading.Thread(target=guarded)
        thread.start()
        return thread


def _writer(load: Load, seed: int) -> None:
    rng = random.Random(seed)
    while not load.stop.is_set():
        pks = list(Article.objects.values_list("pk", flat=True))
        picked = rng.sample(pks, min(len(pks), rng.randint(1, 4)))
        rng.shuffle(picked)  # any order: ascending, descending, mixed
        with transaction.atomic():
            for article in Article.objects.filter(pk__in=picked):
                action = rng.random()
                if action < 0.1:
                    article.delete()
                    load.count("deletes")
                else:
                    article.title, article.body = _text(rng, article.language)
                    article.save()
                    load.count("saves")
            if rng.random() < 0.6:
                language = rng.choice(list(WORDS))
                title, body = _text(rng, language)
                Article.objects.create(title=title, body=body, language=language)
                load.count("saves")
        time.sleep(rng.uniform(0.05, 0.3))


def _reader(load: Load) -> None:
    rng = random.Random(99)
    while not load.stop.is_set():
        language = rng.choice(list(WORDS))
        query = " ".join(rng.sample(WORDS[language], rng.randint(1, 3)))
        mode = rng.choice(["hybrid", "vector", "lexical"])
        list(Article.objects.semantic_search(query, mode=mode)[:10])
        load.count("searches")


def _wait_for_the_worker(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while SearchEntry.objects.exclude(state=IndexState.INDEXED).exists():
        assert time.monotonic() < deadline, (
            "the worker did not catch up: "
            f"{SearchEntry.objects.exclude(state=IndexState.INDEXED).count()} entries left"
        )
        time.sleep(0.5)


def assert_index_equals_data() -> None:
    registration = get_registration(Article)
    articles = {str(a.pk): a for a in Article.objects.all()}
    entries = {e.object_id: e for e in SearchEntry.objects.filter(content_type__model="article")}
    assert set(entries) == set(articles), "missing or orphaned entries"
    chunks: dict[tuple[str, str], int] = Counter(
        ChunkEmbedding.objects.values_list("object_id", "embedder")
    )
    for object_id, article in articles.items():
        document = registration.document(article)
        entry = entries[object_id]
        assert entry.state == IndexState.INDEXED and entry.text_hash == document_hash(document), (
            f"stale entry for article {object_id}"
        )
        for embedder in applicable_embedders(registration, document.language):
            assert chunks[(object_id, embedder)] >= 1, f"no {embedder} vector for {object_id}"
    assert {object_id for object_id, _ in chunks} <= set(articles), "orphaned vectors"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM semantic_search_lexicalstats s FULL JOIN ("
            " SELECT content_type_id, search_config, count(*) AS n, sum(lexical_length) AS len"
            " FROM semantic_search_searchentry WHERE lexical_length > 0"
            " GROUP BY content_type_id, search_config) e USING (content_type_id, search_config)"
            " WHERE coalesce(s.documents, 0) <> coalesce(e.n, 0)"
            " OR abs(coalesce(s.total_length, 0) - coalesce(e.len, 0)) > 1e-6"
        )
        assert cursor.fetchone()[0] == 0, "BM25 statistics differ from the entries"
        cursor.execute(
            "SELECT count(*) FROM semantic_search_documentfrequency d FULL JOIN ("
            " SELECT content_type_id, search_config, lexeme, count(*) AS n"
            " FROM semantic_search_lexicalterm GROUP BY 1, 2, 3) t"
            " USING (content_type_id, search_config, lexeme)"
            " WHERE coalesce(d.documents, 0) <> coalesce(t.n, 0)"
        )
        assert cursor.fetchone()[0] == 0, "document frequencies differ from the postings"


def test_concurrent_saves_deletes_and_searches_leave_the_index_equal_to_the_data(
    celery_worker_process,
):
    rng = random.Random(1)
    for _ in range(30):
        language = rng.choice(list(WORDS))
        title, body = _text(rng, language)
        Article.objects.create(title=title, body=body, language=language)
    _wait_for_the_worker(180)
    log_path, log_start = _postgres_log_size()
    worker_log = Path(__file__).resolve().parent.parent / ".services" / "test-worker.log"
    worker_start = worker_log.stat().st_size

    load = Load()
    started = time.monotonic()
    threads = [load.run(_writer, load, seed) for seed in range(WRITERS)]
    threads.append(load.run(_reader, load))
    time.sleep(SOAK_SECONDS)
    load.stop.set()
    for thread in threads:
        thread.join(60)
    seconds = time.monotonic() - started
    _wait_for_the_worker(300)
    caught_up = time.monotonic() - started - seconds

    print(
        f"\nsoak: {seconds:.0f} s, {load.counts['saves'] / seconds:.1f} saves/s, "
        f"{load.counts['deletes'] / seconds:.1f} deletes/s, "
        f"{load.counts['searches'] / seconds:.1f} searches/s; worker caught up "
        f"{caught_up:.1f} s after; {Article.objects.count()} articles"
    )
    assert not load.errors, load.errors[:3]
    assert load.counts["saves"] > 0 and load.counts["deletes"] > 0 and load.counts["searches"] > 0
    assert_index_equals_data()
    logs = worker_log.read_text(errors="replace")[worker_start:]
    if log_path is not None:
        with log_path.open("rb") as handle:
            handle.seek(log_start)
            logs += handle.read().decode(errors="replace")
    assert "deadlock detected" not in logs
