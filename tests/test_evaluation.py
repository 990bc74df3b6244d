"""The evaluation command and its metrics, on a tiny trilingual collection in the real database."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from semantic_search.contrib.evaluation.evaluate import (
    mrr_at,
    ndcg_at,
    read_qrels,
    recall_at,
    score_rankings,
)
from semantic_search.contrib.evaluation.models import EvaluationDocument
from semantic_search.embedders import SentenceTransformerEmbedder
from semantic_search.models import SearchEntry

pytestmark = pytest.mark.django_db

TOPICS = {
    "photo": (
        "Photosynthesis",
        "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen.",
        "Pflanzen nutzen Sonnenlicht, Wasser und Kohlendioxid, um Zucker herzustellen und "
        "Sauerstoff freizusetzen.",
        "Las plantas usan la luz del sol, el agua y el dióxido de carbono para producir azúcar "
        "y liberar oxígeno.",
    ),
    "volcano": (
        "Volcanoes",
        "A volcano erupts when molten rock, ash and gases escape from the magma chamber.",
        "Ein Vulkan bricht aus, wenn geschmolzenes Gestein, Asche und Gase aus der "
        "Magmakammer entweichen.",
        "Un volcán entra en erupción cuando la roca fundida, la ceniza y los gases escapan de "
        "la cámara de magma.",
    ),
    "coffee": (
        "Coffee",
        "Coffee beans are roasted seeds of the coffee plant, grown in Ethiopia and Brazil.",
        "Kaffeebohnen sind die gerösteten Samen der Kaffeepflanze, die in Äthiopien und "
        "Brasilien angebaut wird.",
        "Los granos de café son semillas tostadas de la planta del café, cultivada en Etiopía "
        "y Brasil.",
    ),
    "tower": (
        "Eiffel Tower",
        "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889.",
        "Der Eiffelturm ist ein schmiedeeiserner Turm in Paris, der 1889 fertiggestellt wurde.",
        "La Torre Eiffel es una torre de hierro forjado en París, terminada en 1889.",
    ),
}
QUERIES = [
    ("q1", "how do plants turn sunlight into sugar", "photo-en"),
    ("q2", "Warum bricht ein Vulkan aus und was entweicht dabei", "volcano-de"),
    ("q3", "¿dónde se cultivan las semillas del café?", "coffee-es"),
    ("q4", "when was the iron tower in Paris finished", "tower-en"),
]


@pytest.fixture
def collection(tmp_path: Path) -> dict[str, Path]:
    """12 documents (4 topics x en/de/es; only German ones declare their language), 4 queries,
    graded judgments: the document in the query's language 2, its translations 1."""
    corpus = []
    for topic, (title, en, de, es) in TOPICS.items():
        corpus.append({"_id": f"{topic}-en", "title": title, "text": en})
        corpus.append({"_id": f"{topic}-de", "title": title, "text": de, "language": "de"})
        corpus.append({"_id": f"{topic}-es", "title": title, "text": es})
    qrels = ["query-id\tcorpus-id\tscore"]
    for query_id, _, best in QUERIES:
        topic = best.split("-")[0]
        qrels += [f"{query_id}\t{topic}-{lang}\t{2 if f'{topic}-{lang}' == best else 1}"
                  for lang in ("en", "de", "es")]
    qrels.append("q5\tphoto-en\t0")  # judged not relevant only: q5 is skipped
    queries = [{"_id": q, "text": text} for q, text, _ in QUERIES]
    queries.append({"_id": "q5", "text": "photosynthesis"})
    queries.append({"_id": "q6", "text": "a query nobody judged"})
    paths = {name: tmp_path / name for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv")}
    _write_jsonl(paths["corpus.jsonl"], corpus)
    _write_jsonl(paths["queries.jsonl"], queries)
    paths["qrels.tsv"].write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return paths


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")


def evaluate_json(paths: dict[str, Path], *options: str, capsys) -> dict:
    call_command(
        "semantic_search_evaluate", "--corpus", str(paths["corpus.jsonl"]),
        "--queries", str(paths["queries.jsonl"]), "--qrels", str(paths["qrels.tsv"]),
        "--json", "--no-progress", *options,
    )
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# --- metrics ----------------------------------------------------------------------------------


def test_a_perfect_ranking_scores_one():
    relevant = {"a": 2, "b": 1}
    for metric, k in ((ndcg_at, 10), (recall_at, 10), (mrr_at, 10), (ndcg_at, 1)):
        assert metric(["a", "b", "x"], relevant, k) == pytest.approx(1.0)


def test_an_imperfect_ranking_against_hand_computed_values():
    relevant = {"a": 2, "b": 1, "z": 0}
    ranking = ["x", "a", "y", "b"]
    dcg = 2 / math.log2(3) + 1 / math.log2(5)  # gains at ranks 2 and 4
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert dcg / idcg == pytest.approx(0.643322, abs=1e-6)
    assert ndcg_at(ranking, relevant, 10) == pytest.approx(0.643322, abs=1e-6)
    assert ndcg_at(ranking, relevant, 2) == pytest.approx((2 / math.log2(3)) / idcg)
    assert recall_at(ranking, relevant, 2) == 0.5
    assert recall_at(ranking, relevant, 10) == 1.0
    assert mrr_at(ranking, relevant, 10) == 0.5
    assert mrr_at(ranking, relevant, 1) == 0.0
    assert ndcg_at([], relevant, 10) == recall_at([], relevant, 10) == 0.0


def test_scores_are_averaged_over_judged_queries_only():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    scores = score_rankings({"q1": ["a"], "q2": ["x", "b"], "unjudged": ["a"]}, qrels)
    assert scores["mrr@10"] == pytest.approx(0.75)
    assert scores["recall@10"] == 1.0
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_qrels_skip_the_header_and_non_positive_grades(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t-1\n\nq3 d4 2\n")
    assert read_qrels(path) == {"q1": {"d1": 1}, "q3": {"d4": 2}}


# --- the command ------------------------------------------------------------------------------


def test_the_command_reports_good_quality_on_an_easy_collection(collection, capsys):
    result = evaluate_json(collection, capsys=capsys)
    assert set(result) == {
        "ndcg@10", "recall@10", "recall@100", "mrr@10", "queries", "documents",
        "index_seconds", "search_seconds", "mean_query_ms",
    }
    assert result["queries"] == 4 and result["documents"] == 12
    assert result["ndcg@10"] > 0.5
    assert result["recall@100"] == 1.0
    assert result["mean_query_ms"] > 0
    languages = dict(EvaluationDocument.objects.values_list("doc_id", "language"))
    assert languages["photo-de"] == "de" and languages["photo-en"] == "en"
    assert languages["coffee-es"] == "es"  # detected once, at load time


def test_a_second_run_embeds_nothing_and_fresh_rebuilds(collection, capsys, monkeypatch):
    calls = []
    original = SentenceTransformerEmbedder.encode_passages

    def counting(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(SentenceTransformerEmbedder, "encode_passages", counting)
    first = evaluate_json(collection, "--mode", "lexical", capsys=capsys)
    assert sum(calls) >= 12
    entries = set(SearchEntry.objects.values_list("id", "indexed_at"))

    calls.clear()
    second = evaluate_json(collection, "--mode", "vector", "--languages", "all", capsys=capsys)
    assert calls == []
    assert set(SearchEntry.objects.values_list("id", "indexed_at")) == entries
    assert second["documents"] == first["documents"] == EvaluationDocument.objects.count()

    old_pks = set(EvaluationDocument.objects.values_list("pk", flat=True))
    evaluate_json(collection, "--fresh", "--limit-queries", "1", capsys=capsys)
    assert sum(calls) >= 12
    assert EvaluationDocument.objects.count() == 12
    assert not old_pks & set(EvaluationDocument.objects.values_list("pk", flat=True))
    assert SearchEntry.objects.filter(
        content_type__model="evaluationdocument", object_id__in=map(str, old_pks)
    ).count() == 0


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', "line 2.*JSON"),
        ("corpus.jsonl", '{"_id": "a", "text": "x"}\n\n{"_id": "b"}\n', "line 3.*'text'"),
        ("queries.jsonl", '{"text": "no id"}\n', "line 1.*'_id'"),
        ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", "line 3.*3 columns"),
        ("qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "line 2.*not an integer"),
    ],
)
def test_malformed_input_names_the_file_and_line(collection, name, content, expected):
    collection[name].write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=f"{name}, {expected}"):
        call_command(
            "semantic_search_evaluate", "--corpus", str(collection["corpus.jsonl"]),
            "--queries", str(collection["queries.jsonl"]), "--qrels", str(collection["qrels.tsv"]),
        )
    assert not EvaluationDocument.objects.exists()
