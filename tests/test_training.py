"""Fine-tuning on a tiny corpus: the command writes a loadable model with a new version, and
the index moves to it."""

from __future__ import annotations

import json

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from example_project.demo.models import Article
from semantic_search import embedders, training, versions
from semantic_search.models import ServingVersion

pytestmark = pytest.mark.django_db(transaction=True)

BOOKS = [
    ("Tides and the moon", "Why the sea rises twice a day: the pull of the moon and the sun."),
    ("Baking sourdough", "A starter of flour and water, long fermentation and a hot oven."),
    ("Chess openings", "The Sicilian defence, the Ruy Lopez and the queen's gambit explained."),
    ("Volcano eruptions", "Magma chambers, ash clouds and the lava flows of Etna and Hekla."),
    ("Training a puppy", "House rules, short sessions and rewards for a young dog."),
    ("Medieval castles", "Keeps, moats and curtain walls: how lords defended their land."),
    ("Growing tomatoes", "Sunny beds, deep watering and pinching out the side shoots."),
    ("The stock market", "Shares, bonds and indices: how prices move on an exchange."),
]
FAST = ["--epochs", "1", "--batch-size", "4", "--max-length", "48", "--held-out", "0.25",
        "--no-progress"]


@pytest.fixture
def books(settings):
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "SYNC": True}
    versions.forget()
    return [Article.objects.create(title=t, body=b, language="en") for t, b in BOOKS]


def test_pairs_batches_and_splits_are_sound():
    examples = training.examples_from_fields([(str(i), f"q{i}", f"d{i % 3}") for i in range(9)])
    for batch in training.batches(examples, 4, seed=1):
        assert len({e.positive_id for e in batch}) == len(batch)  # no false in-batch negative
    train, held = training.split_by_query(examples, 0.34, seed=1)
    assert {e.query_id for e in train}.isdisjoint({e.query_id for e in held}) and len(held) == 3
    documents = {str(i): f"text {i}" for i in range(5)}
    mined = training.with_hard_negatives(
        training.examples_from_fields([("0", "a", "text 0"), ("1", "b", "text 1")]),
        lambda anchor: ["0", "1", "2"], documents, count=2, seed=1,
    )
    assert mined[0].negatives == ("text 1", "text 2") and mined[1].negatives == ("text 0",
                                                                                 "text 2")
    with pytest.raises(training.TrainingInputError):
        training.examples_from_fields([("1", "", "x")])


def test_finetune_without_labels_writes_a_new_version_and_the_index_moves_to_it(
    books, tmp_path, settings, capsys, monkeypatch
):
    output = tmp_path / "english-tuned"
    base = embedders.get_embedder("english")
    call_command("semantic_search_finetune", "english", "--model", "demo.Article",
                 "--fields", "title:body", "--output", str(output), *FAST)
    printed = capsys.readouterr().out
    assert "held-out nDCG@10" in printed and "min on this machine" in printed
    marker = json.loads((output / training.MARKER).read_text())
    assert marker["base"] == base.version and marker["source"] == "fields title:body"
    report = json.loads((output / "training-report.json").read_text())
    assert report["steps"] >= 1 and report["ndcg_before"] is not None
    tuned = embedders.SentenceTransformerEmbedder("english", str(output), local_files_only=True)
    assert tuned.version != base.version and tuned.encode_queries(["tides"]).shape == (1, 384)
    assert tuned.max_tokens == base.max_tokens  # --max-length cut training texts, not chunks

    monkeypatch.setattr(versions, "CACHE_SECONDS", 0.0)
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "EMBEDDERS": {
        **settings.SEMANTIC_SEARCH["EMBEDDERS"],
        "english": {**settings.SEMANTIC_SEARCH["EMBEDDERS"]["english"], "MODEL": str(output)},
    }}
    embedders.reset_embedders()
    try:
        assert embedders.get_embedder("english").version == tuned.version
        assert Article.objects.semantic_search("why does the sea rise", floor=False).exists()
        call_command("semantic_search_reindex", "demo.Article", "--no-progress")
        content_type = ContentType.objects.get_for_model(Article)
        serving = ServingVersion.objects.get(content_type=content_type, embedder="english")
        assert serving.version == tuned.version
        top = Article.objects.semantic_search("why does the sea rise twice a day")[0]
        assert top.title == "Tides and the moon"
    finally:
        embedders.reset_embedders()


def test_dry_run_trains_nothing_and_bad_input_is_a_clear_error(books, tmp_path, capsys):
    output = tmp_path / "dry"
    call_command("semantic_search_finetune", "english", "--model", "demo.Article",
                 "--fields", "title:body", "--output", str(output), "--dry-run", *FAST)
    assert "steps of 4 pairs" in capsys.readouterr().out and not output.exists()
    with pytest.raises(CommandError, match="--fields"):
        call_command("semantic_search_finetune", "english", "--model", "demo.Article",
                     "--fields", "title:nonexistent", "--output", str(output), *FAST)
    with pytest.raises(CommandError, match="--queries and --qrels"):
        call_command("semantic_search_finetune", "english", "--model", "demo.Article",
                     "--output", str(output))
    with pytest.raises(CommandError, match="no embedder"):
        call_command("semantic_search_finetune", "nope", "--model", "demo.Article",
                     "--fields", "title:body", "--output", str(output))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CommandError, match="not empty"):
        call_command("semantic_search_finetune", "english", "--model", "demo.Article",
                     "--fields", "title:body", "--output", str(tmp_path / "full"))


QUESTIONS = [
    "why does the sea rise twice a day", "how do I bake bread with a starter",
    "which defence answers e4 with c5", "where does lava come from",
    "how to teach a young dog", "how did lords defend their land",
    "how do I grow tomatoes", "how do share prices move",
]


def test_a_trained_reranker_orders_a_known_pair_first_and_keeps_a_queryset(
    books, tmp_path, settings, monkeypatch
):
    from django.core.paginator import Paginator

    from semantic_search import reranking

    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": text}) + "\n"
                               for i, text in enumerate(QUESTIONS)))
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\t{book.pk}\t1\n" for i, book in enumerate(books)))
    output = tmp_path / "reranker"
    call_command("semantic_search_finetune", "english", "--model", "demo.Article",
                 "--queries", str(queries), "--qrels", str(qrels), "--output", str(output),
                 "--reranker", "--hard-negatives", "2", "--epochs", "10",
                 "--learning-rate", "3e-4", "--batch-size", "4", "--max-length", "64",
                 "--held-out", "0", "--no-progress")
    assert json.loads((output / training.MARKER).read_text())["kind"] == "reranker"
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH,
                                "RERANKER": {"MODEL": str(output), "TOP_N": 5}}
    reranking.forget()
    for question, book in list(zip(QUESTIONS, books, strict=True))[:4]:
        results = Article.objects.semantic_search(question, rerank=True, floor=False)
        ranked = [(a.title, a.search_rerank_score) for a in results[:5]]
        assert ranked[0][0] == book.title, (question, ranked)
        scored = [score for _, score in ranked]
        assert None not in scored and scored == sorted(scored, reverse=True)
    searched = Article.objects.semantic_search("sea and moon", rerank=True, floor=False)
    page = Paginator(searched, 3).page(2)
    assert len(page.object_list) == 3 and searched.count() == len(BOOKS)
    first_page = [a.pk for a in searched[:3]]
    assert first_page == [a.pk for a in list(searched)[:3]]  # slicing keeps the reranked order

    # The command measures the blend on held-out queries and writes it beside the model; a
    # search reads it (here: two trained questions, where the reranker alone is right).
    from semantic_search.management.commands.semantic_search_finetune import Command

    documents = {str(book.pk): f"{book.title}\n{book.body}" for book in books}
    held_out = [training.Example(f"q{i}", QUESTIONS[i], key, documents[key])
                for i, key in ((2, str(books[2].pk)), (5, str(books[5].pk)))]
    Command()._choose_blend(output, held_out, documents, Article.objects.all(), "pk")
    marker = json.loads((output / training.MARKER).read_text())
    assert marker["held_out_queries"] == 2 and set(marker["held_out_ndcg"]) == {
        str(w) for w in training.BLEND_GRID}
    by_weight = marker["held_out_ndcg"]
    assert marker["blend"] == 0.0 or by_weight[str(marker["blend"])] == max(by_weight.values())
    reranking.forget()
    assert reranking.blend_weight(reranking.options()) == marker["blend"]
    # BLEND 0 in the setting: the reranked top N keeps the fused order.
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH,
                                "RERANKER": {"MODEL": str(output), "TOP_N": 5, "BLEND": 0}}
    def no_scoring(*args, **kwargs):
        raise AssertionError("a reranker with no say is not run")

    monkeypatch.setattr(reranking, "scores", no_scoring)
    for question in QUESTIONS[:4]:
        fused = [a.pk for a in Article.objects.semantic_search(question, floor=False)[:5]]
        reranked = list(Article.objects.semantic_search(question, rerank=True, floor=False)[:5])
        assert [a.pk for a in reranked] == fused
        assert all(a.search_rerank_score is not None for a in reranked)


def test_the_blend_trusts_the_first_stage_unless_the_reranker_beats_it_on_held_out_queries():
    from semantic_search import reranking

    assert reranking.blend([3.0, 2.0, 1.0], [0.0, 5.0, 10.0], 0.5) == [0.5, 0.5, 0.5]
    assert reranking.blend([1.0, 1.0], [0.0, 2.0], 0.0) == [0.0, 0.0]  # no spread, no say
    ids, fused = ("a", "b", "c"), (3.0, 2.0, 1.0)
    wrong = training.RerankedQuery(ids, fused, (0.0, 1.0, 2.0), frozenset({"a"}))
    weight, scores = training.choose_blend([wrong])
    assert weight == 0.0 and scores[0.0] == 1.0 and scores[1.0] < 1.0
    right = training.RerankedQuery(ids, fused, (0.0, 1.0, 2.0), frozenset({"c"}))
    weight, scores = training.choose_blend([right])
    assert weight > 0.5 and scores[weight] == 1.0 > scores[0.0]
    assert training.choose_blend([])[0] == 1.0
    # A mean gain that rests on one of two queries (the other loses) is not trusted.
    helped = training.RerankedQuery(ids, fused, (0.0, 1.0, 2.0), frozenset({"c"}))
    hurt = training.RerankedQuery(ids, fused, (1.0, 0.0, 2.0), frozenset({"a"}))
    weight, scores = training.choose_blend([helped, hurt])
    assert scores[1.0] > scores[0.0] and weight == 0.0
    weight, _ = training.choose_blend([helped, hurt] + [right] * 8)
    assert weight > 0.5


def test_a_reranker_that_cannot_load_keeps_the_fused_order(books, settings, caplog):
    from semantic_search import reranking

    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH,
                                "RERANKER": {"MODEL": "/nowhere/reranker", "TOP_N": 5,
                                             "LOCAL_FILES_ONLY": True}}
    reranking.forget()
    fused = [a.pk for a in Article.objects.semantic_search("castles and moats", floor=False)]
    reranked = list(Article.objects.semantic_search("castles and moats", floor=False,
                                                    rerank=True))
    assert [a.pk for a in reranked] == fused
    assert all(a.search_rerank_score is None for a in reranked)
    assert "reranker" in caplog.text and "fused order" in caplog.text
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "RERANKER": None}
    with pytest.raises(ImproperlyConfigured):
        Article.objects.semantic_search("castles", rerank=True)
