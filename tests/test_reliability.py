"""Reliability: the index never breaks, blocks or fails the user's own writes.

Interleavings of a user's transaction and an indexing worker on the real database, each run
many times: the user's transaction must never die of a deadlock (the worker may lose and
retry, or skip rows the user holds), and after the dust settles the index equals the data.
The worker here is the indexer in a thread (``index_entries``, what the Celery task runs) with
a fast stand-in embedder: what is under test is locking, not embedding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from django.db import connection, connections, transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from example_project.demo.models import Article
from semantic_search import changes, embedders, indexing
from semantic_search.models import ChunkEmbedding, IndexState, LexicalTerm, SearchEntry

pytestmark = pytest.mark.django_db(transaction=True)

REPEATS = 8


@pytest.fixture(autouse=True)
def unconsumed_queue(settings):
    """Tasks go to a queue no worker reads: the test's own thread is the worker."""
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "QUEUE": "semantic_search_reliability"}
    yield
    from example_project.celery import app

    with app.connection_for_write() as broker:
        broker.default_channel.queue_purge("semantic_search_reliability")


@pytest.fixture(autouse=True)
def fast_embedder(monkeypatch):
    """Deterministic unit vectors from the text's hash: milliseconds per batch."""

    def encode(self, texts):
        rows = []
        for text in texts:
            rng = np.random.default_rng(abs(hash(text)) % 2**32)
            vector = rng.standard_normal(int(self.dimension)).astype(np.float32)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows) if rows else np.zeros((0, int(self.dimension)), np.float32)

    monkeypatch.setattr(embedders.SentenceTransformerEmbedder, "encode_passages", encode)


def entry_ids(*articles: Article) -> list[int]:
    keys = [str(a.pk) for a in articles]
    return list(
        SearchEntry.objects.filter(content_type__model="article", object_id__in=keys)
        .order_by("id").values_list("id", flat=True)
    )


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@dataclass
class Outcome:
    user_error: BaseException | None = None
    worker_error: BaseException | None = None


def interleave(
    first_step: Callable[[], None], second_step: Callable[[], None], worker_ids: list[int]
) -> Outcome:
    """The user's transaction takes its first step; the worker indexes ``worker_ids`` until it
    finishes or waits on a lock; then the user takes the second step and commits."""
    outcome = Outcome()
    first_done, worker_done = threading.Event(), threading.Event()

    def user() -> None:
        try:
            with transaction.atomic():
                first_step()
                first_done.set()
                deadline = time.monotonic() + 10
                while not worker_done.is_set() and time.monotonic() < deadline:
                    if waiting_on_a_lock():
                        break
                    time.sleep(0.02)
                second_step()
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            outcome.user_error = error
        finally:
            first_done.set()
            connections.close_all()

    def worker() -> None:
        try:
            first_done.wait(10)
            indexing.index_entries(worker_ids)
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            outcome.worker_error = error
        finally:
            worker_done.set()
            connections.close_all()

    threads = [threading.Thread(target=user), threading.Thread(target=worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcome


def settle() -> None:
    """What the workers and the sweep do eventually: index every pending entry."""
    pending = SearchEntry.objects.filter(state=IndexState.PENDING)
    indexing.index_entries(list(pending.values_list("id", flat=True)))


def assert_index_equals_data() -> None:
    articles = {str(pk): (title, body) for pk, title, body in
                Article.objects.values_list("pk", "title", "body")}
    entries = SearchEntry.objects.filter(content_type__model="article")
    assert sorted(entries.values_list("object_id", flat=True)) == sorted(articles)
    assert not entries.exclude(state=IndexState.INDEXED).exists()
    chunked = set(ChunkEmbedding.objects.values_list("object_id", flat=True))
    assert chunked == set(articles)
    assert not ChunkEmbedding.objects.exclude(entry__in=entries).exists()
    assert not LexicalTerm.objects.exclude(entry__in=entries).exists()
    for object_id, (title, _) in articles.items():
        word = title.split()[0].lower()
        entry = entries.get(object_id=object_id)
        with connection.cursor() as cursor:
            cursor.execute("SELECT search_vector::text FROM semantic_search_searchentry"
                           " WHERE id = %s", [entry.id])
            assert word in cursor.fetchone()[0], (title, object_id)


def two_indexed_articles(round_: int) -> tuple[Article, Article]:
    low = Article.objects.create(title=f"alpha{round_} first", body="one", language="en")
    high = Article.objects.create(title=f"beta{round_} second", body="two", language="en")
    indexing.index_entries(entry_ids(low, high))
    return low, high


def rename(article: Article, title: str) -> Callable[[], None]:
    def step() -> None:
        article.title = title
        article.save()
    return step


def delete(article: Article) -> Callable[[], None]:
    return lambda: Article.objects.filter(pk=article.pk).delete()


def bulk_update(*articles: Article, title: str) -> Callable[[], None]:
    def step() -> None:
        pks = [a.pk for a in articles]
        Article.objects.filter(pk__in=pks).update(title=title)
        changes.index_objects(Article.objects.filter(pk__in=pks).order_by("-pk"))
    return step


INTERLEAVINGS = {
    # name: (user's first step, user's second step), given (low, high, round)
    "save descending": lambda low, high, r: (rename(high, f"gamma{r} x"),
                                             rename(low, f"delta{r} y")),
    "save ascending": lambda low, high, r: (rename(low, f"gamma{r} x"),
                                            rename(high, f"delta{r} y")),
    "delete descending": lambda low, high, r: (delete(high), delete(low)),
    "delete ascending": lambda low, high, r: (delete(low), delete(high)),
    "delete then save": lambda low, high, r: (delete(high), rename(low, f"delta{r} y")),
    "save then delete": lambda low, high, r: (rename(high, f"gamma{r} x"), delete(low)),
    "bulk update descending": lambda low, high, r: (
        bulk_update(high, title=f"gamma{r} x"), bulk_update(low, high, title=f"delta{r} y")
    ),
}


@pytest.mark.parametrize("name", sorted(INTERLEAVINGS))
def test_user_transactions_and_workers_never_deadlock(name):
    """The worker indexes both rows while the user's transaction holds the second and then
    wants the first: before, the worker took them in id order, waited for the user, and one of
    the two died of "deadlock detected" (often the user's save)."""
    for round_ in range(REPEATS):
        low, high = two_indexed_articles(round_)
        for article in (low, high):  # both pending again, as after a save
            changes.record_saved(Article, [article.pk], enqueue=False)
        first, second = INTERLEAVINGS[name](low, high, round_)
        outcome = interleave(first, second, entry_ids(low, high))
        assert outcome.user_error is None, f"round {round_}: {outcome.user_error!r}"
        assert outcome.worker_error is None, f"round {round_}: {outcome.worker_error!r}"
        settle()
        assert_index_equals_data()


def test_a_worker_waiting_on_the_statistics_never_blocks_a_deleting_user():
    """A user's delete must not lock the BM25 statistics: a worker writing postings would wait
    for the user's transaction, and the user's next save for the worker."""
    for round_ in range(REPEATS):
        low, high = two_indexed_articles(round_)
        other = Article.objects.create(title=f"omega{round_} third", body="three", language="en")
        changes.record_saved(Article, [low.pk], enqueue=False)
        outcome = interleave(delete(high), rename(low, f"delta{round_} y"), entry_ids(low, other))
        assert outcome.user_error is None, f"round {round_}: {outcome.user_error!r}"
        assert outcome.worker_error is None, f"round {round_}: {outcome.worker_error!r}"
        settle()
        assert_index_equals_data()


def test_entries_another_transaction_holds_are_reported_busy_not_waited_for():
    article = Article.objects.create(title="Held", body="A row a user holds.", language="en")
    (entry_id,) = entry_ids(article)
    indexing.index_entries([entry_id])  # the models are loaded before the clock starts
    article.body = "A changed row a user holds."
    article.save()  # pending again, with new text
    held, release = threading.Event(), threading.Event()

    def user() -> None:
        try:
            with transaction.atomic():
                changes.record_saved(Article, [article.pk], enqueue=False)
                held.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=user)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    report = indexing.index_entries([entry_id])
    assert time.monotonic() - started < 5  # not the user's 30 s
    assert (report.busy, report.indexed) == ([entry_id], 0)
    release.set()
    thread.join(30)
    assert indexing.index_entries([entry_id]).indexed == 1


@pytest.mark.parametrize("crowding, scan_budget", [
    ((1000,), None), ((300, 300, 300), None),
    # The index scan gives up inside the long document's chunks (as when near-identical chunks
    # cut the rest of the graph off): the remaining entries are ranked exactly.
    ((1000,), 1),
])
def test_long_documents_do_not_crowd_out_the_others(monkeypatch, settings, crowding, scan_budget):
    """Documents of hundreds of chunks, all nearer the query than anything else (the second
    nearer than the rest, the third after it), must not fill the vector arm's candidates alone:
    candidates are distinct objects, and a page fills."""
    from semantic_search.chunking import chunk_capacity

    if scan_budget is not None:
        settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "MAX_SCAN_TUPLES": scan_budget}

    rng = np.random.default_rng(3)
    direction = rng.standard_normal(384).astype(np.float32)
    direction /= np.linalg.norm(direction)

    def near(scale: float) -> np.ndarray:
        row = direction + scale * rng.standard_normal(384).astype(np.float32) / 20
        return row / np.linalg.norm(row)

    def encode_passages(self, texts):
        layers = {f"crowding{i}": 0.1 + 0.15 * i for i in range(len(crowding))}
        return np.stack([
            near(next((scale for word, scale in layers.items() if word in t), 1.0))
            for t in texts
        ])

    def encode_queries(self, texts):
        return np.stack([direction for _ in texts])

    monkeypatch.setattr(embedders.SentenceTransformerEmbedder, "encode_passages", encode_passages)
    monkeypatch.setattr(embedders.SentenceTransformerEmbedder, "encode_queries", encode_queries)
    normal = [Article(title=f"Normal {i}", body=f"an ordinary text number {i}", language="en")
              for i in range(30)]
    Article.objects.bulk_create(normal)
    capacity = chunk_capacity(embedders.get_embedder("english"))
    long = []
    for layer, chunk_count in enumerate(crowding):
        words = " ".join([f"crowding{layer}"] * (capacity // 3))
        long.append(Article.objects.create(
            title=f"Manual {layer}", body="\n\n".join([words] * chunk_count), language="en"))
    indexing.index_entries(changes.index_objects(Article.objects.all()))
    chunks = ChunkEmbedding.objects.filter(entry__object_id=str(long[0].pk), embedder="english")
    assert chunks.count() > 250
    for mode, languages in (("vector", "same"), ("vector", "all"), ("hybrid", "auto")):
        page = list(Article.objects.semantic_search(
            "uniquely crowded query", mode=mode, languages=languages, language="en", floor=False,
        )[:10])
        assert len(page) == 10, (mode, languages, [a.title for a in page])
        assert [a.pk for a in page[: len(long)]] == [a.pk for a in long]


def test_a_two_megabyte_document_is_findable_by_a_word_near_its_end(capsys):
    from django.core.management import call_command

    filler = "Rivers carry water and sediment from the mountains down to the sea. " * 30_000
    long = Article.objects.create(title="Atlas", body=filler + " zanzibarite", language="en")
    assert len(long.body) > 2_000_000
    indexing.index_entries(entry_ids(long))
    found = Article.objects.semantic_search("zanzibarite", mode="lexical", floor=False)
    assert [a.pk for a in found] == [long.pk]
    call_command("semantic_search_status", "--json")
    assert '"lexical_truncated": 0' in capsys.readouterr().out


def test_text_beyond_the_lexical_limit_is_reported_by_the_status_command(monkeypatch, capsys):
    from django.core.management import call_command

    from semantic_search import registry

    monkeypatch.setattr(registry, "MAX_LEXICAL_TEXT", 250_000)
    long = Article.objects.create(title="Atlas", body="word " * 60_000 + " zanzibarite",
                                  language="en")
    indexing.index_entries(entry_ids(long))
    assert not Article.objects.semantic_search("zanzibarite", mode="lexical", floor=False)
    call_command("semantic_search_status", "--json")
    assert '"lexical_truncated": 1' in capsys.readouterr().out


def test_words_overflowing_a_tsvector_keep_the_positioned_part_and_are_reported(monkeypatch):
    """130,000 distinct random words are more than a tsvector holds (1 MB of lexemes)."""
    monkeypatch.setattr(indexing, "MAX_LEXICAL_CHARS", 20_000)  # fewer postings to write
    rng = np.random.default_rng(5)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(row) for row in rng.choice(letters, size=(130_000, 9))]
    body = "zanzibarite " + " ".join(words)
    article = Article.objects.create(title="Noise", body=body, language="en")
    indexing.index_entries(entry_ids(article))
    entry = SearchEntry.objects.get(pk=entry_ids(article)[0])
    assert (entry.state, entry.lexical_truncated) == (IndexState.INDEXED, True)
    found = Article.objects.semantic_search("zanzibarite", mode="lexical", floor=False)
    assert [a.pk for a in found] == [article.pk]


# Any text Postgres can store in the user's own fields (no NUL, no lone surrogates).
_ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                    max_size=300)


@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=_ANY_TEXT, body=_ANY_TEXT | st.just("") | _ANY_TEXT.map(lambda t: t * 50),
       language=st.none() | _ANY_TEXT.map(lambda t: t[:8])
       | st.sampled_from(["el", "zh-Hans", "German"]))
def test_any_document_text_and_language_index_without_error(title, body, language):
    article = Article.objects.create(title=title[:200], body=body, language=language or "")
    report = indexing.index_entries(entry_ids(article))
    assert report.indexed == 1, report
    entry = SearchEntry.objects.get(object_id=str(article.pk), content_type__model="article")
    assert entry.state == IndexState.INDEXED
    article.delete()
    assert indexing.index_entries([entry.id]).orphaned == 1


def test_the_task_sends_busy_entries_again_a_little_later(monkeypatch):
    from semantic_search import tasks

    sent = []
    monkeypatch.setattr(indexing, "index_entries",
                        lambda ids, using, force: indexing.IndexReport(indexed=1, busy=[7]))
    monkeypatch.setattr(tasks.index_entries_task, "apply_async",
                        lambda *args, **options: sent.append((args, options)))
    report = tasks.index_entries_task.run([6, 7], "default")
    assert report["busy"] == [7]
    (((ids, using), extra), options), = sent
    assert (ids, using, extra) == ([7], "default", {})
    assert options["countdown"] == tasks.BUSY_RETRY_SECONDS
    assert options["queue"] == "semantic_search_reliability"
