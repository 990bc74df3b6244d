"""Indexing on the real database with the real models: signals, chunks, races, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from example_project.demo.models import Article
from semantic_search import changes, embedders, indexing, memory
from semantic_search.chunking import chunk_capacity, chunk_text
from semantic_search.maintenance import stale, status
from semantic_search.models import ChunkEmbedding, IndexState, SearchEntry
from semantic_search.registry import get_registration

pytestmark = pytest.mark.django_db(transaction=True)


UNCONSUMED_QUEUE = "semantic_search_tests_unconsumed"


@pytest.fixture(autouse=True)
def no_worker_races(settings):
    """Tasks these tests enqueue go to a queue no worker reads: the session's real worker
    (tests/test_worker.py) must not index behind the back of a test that indexes in-process."""
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "QUEUE": UNCONSUMED_QUEUE}
    yield
    from example_project.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(UNCONSUMED_QUEUE)


@pytest.fixture
def sync_mode(settings):
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "SYNC": True}
    return settings


@pytest.fixture
def encode_calls(monkeypatch) -> list[tuple[str, int]]:
    """(embedder name, number of texts) of every encode_passages call during the test."""
    calls: list[tuple[str, int]] = []
    original = embedders.SentenceTransformerEmbedder.encode_passages

    def counting(self, texts):
        calls.append((self.name, len(texts)))
        return original(self, texts)

    monkeypatch.setattr(embedders.SentenceTransformerEmbedder, "encode_passages", counting)
    return calls


def entry_of(article: Article) -> SearchEntry:
    return SearchEntry.objects.get(object_id=str(article.pk), content_type__model="article")


def chunks_of(article: Article, embedder: str) -> list[ChunkEmbedding]:
    return list(
        ChunkEmbedding.objects.filter(entry=entry_of(article), embedder=embedder).order_by("chunk")
    )


def assert_multilingual_vector_of(article: Article, text: str) -> None:
    """The article's stored multilingual vector is the embedding of exactly ``text``."""
    stored = np.asarray(chunks_of(article, "multilingual")[0].vector)
    expected = embedders.get_embedder("multilingual").encode_passages([text])[0]
    assert float(stored @ expected) > 0.999


def lexemes(article: Article) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT search_vector::text FROM semantic_search_searchentry WHERE id = %s",
            [entry_of(article).id],
        )
        return cursor.fetchone()[0]


def test_save_indexes_text_language_and_vectors(sync_mode):
    with transaction.atomic():
        english = Article.objects.create(
            title="Photosynthesis", body="Plants convert light into chemical energy.",
            language="en",
        )
        german = Article.objects.create(
            title="Photosynthese", body="Pflanzen wandeln Licht in chemische Energie um.",
            language="de",
        )
    en_entry, de_entry = entry_of(english), entry_of(german)
    assert (en_entry.state, en_entry.search_config) == (IndexState.INDEXED, "english")
    assert (de_entry.state, de_entry.search_config) == (IndexState.INDEXED, "german")
    assert "'plant'" in lexemes(english)  # English stemming
    assert "'pflanz'" in lexemes(german)  # German stemming
    assert len(chunks_of(english, "english")) == 1
    assert len(chunks_of(english, "multilingual")) == 1
    assert chunks_of(german, "english") == []  # the English model never sees German
    assert_multilingual_vector_of(
        german, "Photosynthese\n\nPflanzen wandeln Licht in chemische Energie um."
    )


def test_update_and_delete_reach_the_index(sync_mode):
    article = Article.objects.create(title="Old title", body="old text", language="en")
    old_vector = np.asarray(chunks_of(article, "multilingual")[0].vector)
    article.body = "A completely different body about volcanoes."
    article.save()
    assert "'volcano'" in lexemes(article)
    new_vector = np.asarray(chunks_of(article, "multilingual")[0].vector)
    assert float(old_vector @ new_vector) < 0.99
    entry_id = entry_of(article).id
    article.delete()
    assert not SearchEntry.objects.filter(id=entry_id).exists()
    assert not ChunkEmbedding.objects.filter(entry_id=entry_id).exists()


def test_unchanged_text_is_not_embedded_again(sync_mode, encode_calls):
    article = Article.objects.create(title="Stable", body="Nothing changes here.", language="en")
    assert len(encode_calls) == 2  # the first save embeds with both models
    article.published = False
    article.save()  # a save that does not change indexed text
    assert len(encode_calls) == 2
    assert entry_of(article).state == IndexState.INDEXED


def test_one_encode_call_per_embedder_per_batch(encode_calls):
    with transaction.atomic():
        articles = [
            Article.objects.create(title=f"Title {i}", body=f"Body number {i}", language="en")
            for i in range(5)
        ]
    report = indexing.index_entries([entry_of(a).id for a in articles])
    assert report.indexed == 5
    assert sorted(encode_calls) == [("english", 5), ("multilingual", 5)]


def test_update_during_embedding_ends_with_newest_text(monkeypatch):
    """A task that read the old text must not overwrite the vectors of a newer save."""
    article = Article.objects.create(title="Version", body="first version", language="en")
    entry_id = entry_of(article).id
    original = embedders.SentenceTransformerEmbedder.encode_passages
    raced = []

    def racing(self, texts):
        if not raced:  # while the first indexing embeds, the object changes
            raced.append(True)
            article.body = "second version about glaciers"
            article.save()
        return original(self, texts)

    monkeypatch.setattr(embedders.SentenceTransformerEmbedder, "encode_passages", racing)
    first = indexing.index_entries([entry_id])
    assert (first.indexed, first.superseded) == (0, 1)
    assert entry_of(article).state == IndexState.PENDING
    second = indexing.index_entries([entry_id])
    assert second.indexed == 1
    assert "'glacier'" in lexemes(article)
    assert_multilingual_vector_of(article, "Version\n\nsecond version about glaciers")


def test_workers_swapping_languages_do_not_deadlock(monkeypatch):
    """Two tasks in parallel: one moves an article from English to German, the other one from
    German to English. Each takes its old configuration's statistics out, then adds its new one:
    without one lock order for all of a model's statistics rows they wait for each other."""
    import threading

    from django.db import connections

    from semantic_search import lexical

    first = Article.objects.create(title="Lakes", body="Lakes freeze in winter.", language="en")
    second = Article.objects.create(title="Seen", body="Seen frieren im Winter.", language="de")
    ids = [entry_of(first).id, entry_of(second).id]
    indexing.index_entries(ids)
    first.title, first.body, first.language = "Berge", "Berge sind im Winter kalt.", "de"
    first.save()
    second.title, second.body, second.language = "Rivers", "Rivers flow to the sea.", "en"
    second.save()

    both_forgot = threading.Barrier(2)
    original_forget = lexical.forget

    def forget_then_wait(cursor, entry_ids):
        original_forget(cursor, entry_ids)
        try:  # with the lock order the second task waits before forgetting: no rendezvous
            both_forgot.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass

    monkeypatch.setattr(lexical, "forget", forget_then_wait)
    errors: list[BaseException] = []

    def task(entry_id: int) -> None:
        try:
            indexing.index_entries([entry_id])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=task, args=(entry_id,)) for entry_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert [entry_of(a).search_config for a in (first, second)] == ["german", "english"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT search_config, documents FROM semantic_search_lexicalstats s "
            "JOIN django_content_type c ON c.id = s.content_type_id AND c.model = 'article' "
            "ORDER BY 1"
        )
        assert cursor.fetchall() == [("english", 1), ("german", 1)]


def test_empty_text_gets_no_vector_and_no_error(sync_mode):
    article = Article.objects.create(title="", body="   ", language="en")
    entry = entry_of(article)
    assert entry.state == IndexState.INDEXED
    assert not ChunkEmbedding.objects.filter(entry=entry).exists()


def test_long_text_is_chunked_with_overlap_never_truncated(sync_mode):
    body = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))
    article = Article.objects.create(title="Long", body=body, language="en")
    for name in ("english", "multilingual"):
        embedder = embedders.get_embedder(name)
        chunks = chunks_of(article, name)
        assert len(chunks) > 1
        text = "Long\n\n" + body
        assert chunks[0].start == 0 and chunks[-1].end == len(text)
        for previous, following in zip(chunks, chunks[1:], strict=False):
            assert following.start < previous.end  # overlap: nothing falls between chunks
        capacity = chunk_capacity(embedder)
        for chunk in chunk_text(text, embedder):
            assert len(embedder.token_spans(chunk.text)) <= capacity + 1


def test_binary_junk_and_odd_unicode_index_safely(sync_mode):
    junk = "caf\u00e9 \x01\x02\x1b[31m \x85 \u202e reversed \U0001f600 \ufffd \u200b" * 20
    article = Article.objects.create(title="Junk\x7f", body=junk, language="en")
    entry = entry_of(article)
    assert entry.state == IndexState.INDEXED
    assert ChunkEmbedding.objects.filter(entry=entry).exists()


def test_nul_bytes_from_computed_fields_are_dropped_before_postgres():
    unsaved = Article(title="bytes\x00inside", body="\x00\x00tail", language="en")
    document = get_registration(Article).document(unsaved)
    assert "\x00" not in document.text
    assert document.text == "bytesinside\n\ntail"


def test_unknown_language_uses_simple_config_and_multilingual_model(sync_mode):
    article = Article.objects.create(title="Kitabu", body="Habari za asubuhi", language="sw")
    entry = entry_of(article)
    assert (entry.language, entry.search_config) == ("sw", "simple")
    assert chunks_of(article, "english") == []
    assert len(chunks_of(article, "multilingual")) == 1


def test_bulk_paths_have_a_way_in(sync_mode):
    created = Article.objects.bulk_create(
        [Article(title=f"Bulk {i}", body="bulk body", language="en") for i in range(3)]
    )
    assert not SearchEntry.objects.filter(object_id__in=[str(a.pk) for a in created]).exists()
    changes.index_objects(Article.objects.filter(pk__in=[a.pk for a in created]))
    assert SearchEntry.objects.filter(
        object_id__in=[str(a.pk) for a in created], state=IndexState.INDEXED
    ).count() == 3


def test_indexing_tasks_do_not_accumulate_the_debug_query_log(settings):
    """With DEBUG on Django keeps every query (vectors included) until a request resets the log;
    a worker has no requests, so each task resets it (a 10k backfill grew ~0.5 GB without)."""
    from semantic_search.tasks import index_entries_task

    settings.DEBUG = True
    article = Article.objects.create(title="Debug log", body="some text", language="en")
    ids = [entry_of(article).id]
    connection.queries_log.clear()
    logged = []
    for number in range(3):
        article.body = f"some text, version {number}"
        article.save()  # new text: every task does the same work
        index_entries_task.apply(args=[ids], kwargs={"using": "default"})
        logged.append(len(connection.queries))
    assert logged[0] > 5 and logged[2] <= logged[0] + 2, logged


def test_release_free_memory_returns_a_fragmented_heap_to_the_system():
    """Freed blocks between live ones stay resident under glibc until trimmed: what encode
    batches of varying shapes leave behind in a worker (README: the backfill's RSS)."""
    import psutil

    process = psutil.Process()
    memory.release_free_memory()  # free pages left by earlier tests would hide the growth
    before = process.memory_info().rss
    blocks = [bytearray(8000) for _ in range(20_000)]  # ~160 MB of heap (not mmap) blocks
    survivors = blocks[::50]  # one in fifty stays alive, pinning the heap's pages
    del blocks
    retained = process.memory_info().rss - before
    assert memory.release_free_memory() is True
    after = process.memory_info().rss - before
    assert retained > 100 * 2**20, retained
    assert after < retained / 4, (retained, after)
    assert len(survivors) == 400


def test_indexer_releases_memory_after_each_encoding_batch(monkeypatch, sync_mode):
    releases = []
    monkeypatch.setattr(indexing, "release_free_memory", lambda: releases.append(1))
    article = Article.objects.create(title="Trim", body="One batch of text.", language="en")
    assert len(releases) == 1
    article.published = False
    article.save()  # nothing to encode: nothing to release
    assert len(releases) == 1


def test_reindex_command_picks_up_missing_and_pending_objects():
    created = Article.objects.bulk_create(
        [Article(title=f"Missing {i}", body="no signal", language="de") for i in range(3)]
    )
    call_command("semantic_search_reindex", "demo.Article", "--no-progress")
    for article in created:
        assert entry_of(article).state == IndexState.INDEXED


def _impact_drift() -> float:
    """Largest gap between a stored BM25 impact and one computed from today's statistics."""
    from semantic_search.lexical import K1, B

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(max(abs(t.impact - t.frequency * (%s + 1) / (t.frequency + %s"
            "  * (1 - %s + %s * e.lexical_length / (s.total_length / s.documents))))), 0)"
            " FROM semantic_search_lexicalterm t"
            " JOIN semantic_search_searchentry e ON e.id = t.entry_id"
            " JOIN semantic_search_lexicalstats s ON s.content_type_id = t.content_type_id"
            "  AND s.search_config = t.search_config",
            [K1, K1, B, B],
        )
        return cursor.fetchone()[0]


def test_reindex_after_a_large_run_recomputes_bm25_impacts():
    def pending(bodies: list[str]) -> list[int]:
        created = Article.objects.bulk_create(
            [Article(title="Impact", body=body, language="en") for body in bodies]
        )
        return changes.record_saved(Article, [a.pk for a in created], enqueue=False)

    indexing.index_entries(pending(["short text"]))
    indexing.index_entries(pending(["a much longer text " * 20] * 2))
    assert _impact_drift() > 0.01  # the first posting's impact used a smaller average length
    pending(["another long text about impacts " * 20] * 3)
    call_command("semantic_search_reindex", "demo.Article", "--no-progress")
    assert _impact_drift() < 1e-6  # impacts are 4-byte floats


def test_model_version_change_marks_rows_stale_and_reindex_moves_them(
    sync_mode, settings, monkeypatch
):
    from semantic_search import versions

    monkeypatch.setattr(versions, "CACHE_SECONDS", 0.0)  # the old vectors go right away
    article = Article.objects.create(title="Versioned", body="some text", language="en")
    registration = get_registration(Article)
    assert not stale(registration, "default").filter(pk=entry_of(article).pk).exists()
    embedders_conf = {
        **settings.SEMANTIC_SEARCH["EMBEDDERS"],
        "english": {**settings.SEMANTIC_SEARCH["EMBEDDERS"]["english"], "VERSION": "v2"},
    }
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "EMBEDDERS": embedders_conf}
    embedders.reset_embedders()
    try:
        assert stale(registration, "default").filter(pk=entry_of(article).pk).exists()
        english_row = next(
            row for row in status() if (row.model, row.embedder) == ("demo.Article", "english")
        )
        assert english_row.stale >= 1
        call_command("semantic_search_reindex", "demo.Article", "--no-progress")
        assert not stale(registration, "default").filter(pk=entry_of(article).pk).exists()
        assert {c.embedder_version for c in chunks_of(article, "english")} == {"v2"}
    finally:
        settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH}
        embedders.reset_embedders()


def test_status_command_prints_a_row_per_model_and_embedder(sync_mode, capsys):
    Article.objects.create(title="Status", body="text", language="en")
    call_command("semantic_search_status")
    out = capsys.readouterr().out
    assert "demo.Article" in out and "multilingual" in out and "english" in out
