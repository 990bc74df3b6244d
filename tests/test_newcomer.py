"""A newcomer's project: the package as a stranger installs and uses it, step by step.

tests/newcomer/ is a small, independent Django project (a book catalogue in four languages, the
model registered from settings, Django's default manager, the admin mixin, Celery set up as in
Celery's "First steps with Django"). This module builds the package's wheel, puts its content
alone on the project's PYTHONPATH (not the repository's editable install), gives the project a
fresh database on the suite's Postgres server (without the pgvector extension) and its own
logical database on the suite's broker, then runs the real commands a user runs, in order:

    python manage.py migrate
    python manage.py check --database default
    python scenario.py create                      # the catalogue, saved through the ORM
    python manage.py semantic_search_reindex --no-progress
    python manage.py semantic_search_status --json
    python scenario.py search                      # ORM searches and the admin's changelist

Each test is one of these steps (or one fact of the last one); a step whose predecessor failed
is skipped. A failing step prints the command's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings
from django.db import connection

PROJECT_DIR = Path(__file__).resolve().parent.parent
NEWCOMER_DIR = Path(__file__).resolve().parent / "newcomer"
BOOKS = json.loads((NEWCOMER_DIR / "catalogue" / "books.json").read_text(encoding="utf-8"))
BROKER_DB = 7  # a logical database of the suite's broker that the suite's worker never reads
COMMAND_TIMEOUT = 600


# --- The wheel, the database, the broker ------------------------------------------------------


@pytest.fixture(scope="session")
def wheel_site(tmp_path_factory) -> Path:
    """The package's wheel, built once from the repository and unzipped into a site folder."""
    root = tmp_path_factory.mktemp("newcomer-wheel")
    wheels = root / "wheels"
    # setuptools builds in the source tree (build/, *.egg-info) and packs whatever build/lib
    # holds, stale files of earlier builds included: build in the temporary folder instead.
    extra_config = root / "setup-extra.cfg"
    extra_config.write_text(
        f"[build]\nbuild_base = {root / 'build'}\n[egg_info]\negg_base = {root}\n"
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels),
               str(PROJECT_DIR)]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd=root,
        env={**os.environ, "DIST_EXTRA_CONFIG": str(extra_config)},
    )
    if completed.returncode != 0:
        pytest.fail(_report("pip wheel", completed))
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 1, f"expected one wheel in {wheels}: {list(wheels.iterdir())}"
    site = root / "site"
    with zipfile.ZipFile(built[0]) as wheel:
        wheel.extractall(site)
    assert (site / "semantic_search" / "__init__.py").is_file()
    _check_distribution_name(site)
    return site


# Distribution names taken on PyPI by other projects: `pip install` of these installs
# somebody else's package.
TAKEN_NAMES = {"django-semantic-search"}


def _check_distribution_name(site: Path) -> None:
    """The wheel's name is the one the README tells people to install, and not a taken one."""
    import re
    from email.parser import Parser

    (metadata,) = site.glob("*.dist-info/METADATA")
    name = Parser().parsestr(metadata.read_text(encoding="utf-8"))["Name"]
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    installed = re.findall(r'pip install "([A-Za-z0-9_.-]+)\[models\]"', readme)
    assert installed == [name], (name, installed)
    assert name.lower().replace("_", "-") not in TAKEN_NAMES, name


def _server_params() -> dict:
    params = connection.settings_dict
    return {
        "host": str(params.get("HOST") or ""),
        "port": str(params.get("PORT") or ""),
        "user": params.get("USER") or "postgres",
        "password": params.get("PASSWORD") or "",
    }


@pytest.fixture(scope="module")
def newcomer_database():
    """A fresh, empty database on the suite's server (no pgvector: the app's migration adds it)."""
    params = _server_params()
    name = f"newcomer_{os.getpid()}"
    connect = {key: value for key, value in params.items() if value}
    with psycopg.connect(dbname="postgres", autocommit=True, **connect) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**params, "name": name}
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **connect) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _newcomer_broker_url(url: str) -> str:
    """The suite's broker URL with the logical database ``BROKER_DB``."""
    parts = urlsplit(url)
    if parts.scheme == "redis+socket":  # kombu: redis+socket:///path.sock?virtual_host=N
        query = dict(parse_qsl(parts.query))
        query["virtual_host"] = str(BROKER_DB)
        # Not urlunsplit: it drops the empty host, and "redis+socket:/path" means a host.
        return f"redis+socket://{parts.netloc}{parts.path}?{urlencode(query)}"
    if parts.scheme in {"redis", "rediss"}:  # redis://host:port/N
        return urlunsplit(parts._replace(path=f"/{BROKER_DB}"))
    pytest.skip(f"the newcomer test needs a Redis/Valkey broker, not {parts.scheme}://")


def _broker_client(url: str):
    import redis

    parts = urlsplit(url)
    if parts.scheme == "redis+socket":
        return redis.Redis(unix_socket_path=parts.path, db=BROKER_DB)
    return redis.Redis.from_url(url)


@pytest.fixture(scope="module")
def newcomer_broker():
    """The newcomer's logical database on the suite's broker, emptied before and after."""
    url = _newcomer_broker_url(settings.CELERY_BROKER_URL)
    client = _broker_client(url)
    client.flushdb()
    try:
        yield url, client
    finally:
        client.flushdb()
        client.close()


# --- Running the newcomer's commands ----------------------------------------------------------


@dataclass
class Newcomer:
    env: dict[str, str] = field(repr=False)
    site: Path
    broker: object = field(repr=False)
    passed: set[str] = field(default_factory=set)
    outputs: dict[str, subprocess.CompletedProcess] = field(default_factory=dict, repr=False)
    durations: dict[str, float] = field(default_factory=dict)
    facts: dict | None = field(default=None, repr=False)

    def run(self, step: str, *args: str) -> subprocess.CompletedProcess:
        """``python <args>`` in the newcomer's folder; the step passes if it exits with 0."""
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, *args], cwd=NEWCOMER_DIR, env=self.env, capture_output=True,
            text=True, timeout=COMMAND_TIMEOUT,
        )
        self.durations[step] = time.monotonic() - started
        self.outputs[step] = completed
        if completed.returncode != 0:
            pytest.fail(_report(f"python {' '.join(args)}", completed))
        self.passed.add(step)
        return completed

    def require(self, *steps: str) -> None:
        missing = [step for step in steps if step not in self.passed]
        if missing:
            pytest.skip(f"needs the step(s) {', '.join(missing)}, which did not pass")

    def search_facts(self) -> dict:
        self.require("search")
        assert self.facts is not None
        return self.facts


def _report(what: str, completed: subprocess.CompletedProcess) -> str:
    return (
        f"`{what}` exited with {completed.returncode}\n"
        f"--- stdout ---\n{completed.stdout[-20000:]}\n--- stderr ---\n{completed.stderr[-20000:]}"
    )


@pytest.fixture(scope="module")
def newcomer(wheel_site, newcomer_database, newcomer_broker):
    broker_url, broker_client = newcomer_broker
    # The host decides about Hugging Face's offline mode: the package must not (it used to
    # set HF_HUB_OFFLINE for the whole process); its packaged models are local folders.
    dropped = {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "CELERY_BROKER_URL",
               "PYTHONHOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(
        PYTHONPATH=os.pathsep.join([str(wheel_site), str(NEWCOMER_DIR)]),
        PYTHONDONTWRITEBYTECODE="1",  # leave no __pycache__ in tests/newcomer
        NEWCOMER_DB_NAME=newcomer_database["name"],
        NEWCOMER_DB_HOST=newcomer_database["host"],
        NEWCOMER_DB_PORT=newcomer_database["port"],
        NEWCOMER_DB_USER=newcomer_database["user"],
        NEWCOMER_DB_PASSWORD=newcomer_database["password"],
        NEWCOMER_BROKER_URL=broker_url,
    )
    return Newcomer(env=env, site=wheel_site, broker=broker_client)


def _books_of(language: str) -> set[str]:
    return {book["title"] for book in BOOKS["books"] if book["language"] == language}


def _book_on(topic: str, language: str) -> str:
    """The title of the catalogue's book on ``topic`` in ``language``."""
    return next(book["title"] for book in BOOKS["books"]
                if book["topic"] == topic and book["language"] == language)


def _table(results: list[dict]) -> str:
    """Results one per line: rank, language, title, fused score and the arms' scores."""
    def number(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    return "\n".join(
        f"{rank:2}. [{row['language']}] {row['title']!s:45} score {number(row['score'])}"
        f"  lexical {number(row.get('lexical'))}  vector {number(row.get('vector'))}"
        for rank, row in enumerate(results, 1)
    )


def _describe(search: dict) -> str:
    lines = [f"query {search['query']!r}"] if "query" in search else []
    if "route" in search:
        lines.append(f"route {search['route']!r}, query language {search['query_language']!r}")
    if "params" in search:
        lines.append(f"GET params {search['params']}, columns {search.get('list_display')}")
    return "\n".join([*lines, _table(search.get("results", []))])


def _scores(results: list[dict]) -> list[float]:
    return [row["score"] for row in results]


def _page(facts: dict, key: str) -> dict:
    """An admin page of the scenario: it rendered, with status 200 and a changelist."""
    page = facts[key]
    if "error" in page:
        pytest.fail(f"{key}: the request raised\n{page['error']}")
    assert page["status"] == 200, f"{key}: status {page['status']}\n{page.get('body', '')}"
    assert "results" in page, f"{key}: no changelist in the response: {page}"
    return page


def _descending(scores: list[float]) -> bool:
    return all(a >= b for a, b in zip(scores, scores[1:], strict=False))


# --- The steps --------------------------------------------------------------------------------


def test_01_migrate_a_fresh_database(newcomer):
    """`manage.py migrate` with system checks on, on a database without pgvector."""
    newcomer.run("migrate", "manage.py", "migrate", "--no-input")


def test_02_check_database(newcomer):
    newcomer.require("migrate")
    completed = newcomer.run("check", "manage.py", "check", "--database", "default")
    assert "System check identified no issues" in completed.stdout, completed.stdout


def test_03_create_the_catalogue_through_the_orm(newcomer):
    newcomer.require("migrate")
    completed = newcomer.run("create", "scenario.py", "create")
    counts = json.loads(completed.stdout.strip().splitlines()[-1])
    assert counts == {"languages": 4, "authors": 16, "books": len(BOOKS["books"])}, counts
    # The saves were recorded and sent to the newcomer's own broker (its Celery app, set up
    # from settings), where no worker consumes them.
    queued = sum(
        newcomer.broker.llen(key) for key in newcomer.broker.keys("celery*")
        if newcomer.broker.type(key) == b"list"
    )
    assert queued >= 1, (
        f"no indexing task reached the newcomer's broker {newcomer.env['NEWCOMER_BROKER_URL']}"
        f"\n{_report('python scenario.py create', completed)}"
    )


def test_04_reindex(newcomer):
    newcomer.require("create")
    newcomer.run("reindex", "manage.py", "semantic_search_reindex", "--no-progress")


def test_05_status_reports_every_book_indexed(newcomer):
    newcomer.require("reindex")
    completed = newcomer.run("status", "manage.py", "semantic_search_status", "--json")
    rows = json.loads(completed.stdout.strip().splitlines()[-1])
    # One model (the evaluation corpus is an optional app), one embedder: multilingual.
    assert [row["model"] for row in rows] == ["catalogue.Book"], rows
    row = rows[0]
    expected = {"embedder": "multilingual", "objects": len(BOOKS["books"]),
                "indexed": len(BOOKS["books"]), "stale": 0, "pending": 0, "failed": 0,
                "missing": 0, "orphaned": 0}
    assert {key: row[key] for key in expected} == expected, rows


def test_06_search_runs_on_the_wheel(newcomer):
    """`scenario.py search` runs, and imports semantic_search from the wheel's content."""
    newcomer.require("status")
    completed = newcomer.run("search", "scenario.py", "search")
    newcomer.facts = json.loads(completed.stdout.strip().splitlines()[-1])
    imported = Path(newcomer.facts["semantic_search_file"]).resolve()
    assert imported.is_relative_to(newcomer.site.resolve()), (
        f"semantic_search was imported from {imported}, not from the wheel in {newcomer.site}"
    )
    for key in ("orm", "orm_french", "nonsense", "admin_search"):  # shown by -rP or -s
        print(f"--- {key}\n{_describe(newcomer.facts[key])}")
    assert newcomer.facts["environment_changes"] == [], newcomer.facts["environment_changes"]


def test_07_orm_german_question_finds_the_books_on_its_topic_first(newcomer):
    """The books on the question's topic, in all four languages, lead the results; the German
    one, which shares no keyword with the question, among the first two."""
    facts = newcomer.search_facts()
    orm = facts["orm"]
    assert "error" not in orm, orm["error"]
    on_topic = {_book_on(facts["topic"], language) for language in ("de", "en", "fr", "es")}
    titles = [row["title"] for row in orm["results"]]
    assert set(titles[:4]) == on_topic, f"expected {sorted(on_topic)} first\n{_describe(orm)}"
    assert _book_on(facts["topic"], "de") in titles[:2], _describe(orm)
    assert _descending(_scores(orm["results"])), _describe(orm)


def test_08_orm_filter_keeps_only_french_books(newcomer):
    facts = newcomer.search_facts()
    french = facts["orm_french"]
    assert "error" not in french, french["error"]
    assert french["results"], f"no French results for {facts['query']!r}"
    titles = {row["title"] for row in french["results"]}
    assert {row["language"] for row in french["results"]} == {"fr"}, _describe(french)
    assert titles <= _books_of("fr"), titles
    expected = _book_on(facts["topic"], "fr")
    assert french["results"][0]["title"] == expected, (
        f"expected {expected!r} first\n{_describe(french)}"
    )


def test_09_nonsense_query_finds_little(newcomer):
    facts = newcomer.search_facts()
    nonsense = facts["nonsense"]
    assert "error" not in nonsense, nonsense["error"]
    assert nonsense["count"] <= 2, (
        f"found {nonsense['count']} of {len(BOOKS['books'])} books\n{_describe(nonsense)}"
    )


def test_10_admin_search_ranks_by_relevance(newcomer):
    facts = newcomer.search_facts()
    page = _page(facts, "admin_search")
    assert page["results"], page
    assert _descending(_scores(page["results"])), _describe(page)
    assert "error" not in facts["orm"], facts["orm"]["error"]
    assert page["results"][0]["id"] == facts["orm"]["results"][0]["id"], (
        f"admin:\n{_describe(page)}\nORM:\n{_describe(facts['orm'])}"
    )


def test_11_admin_sort_by_the_relevance_column(newcomer):
    facts = newcomer.search_facts()
    page = _page(facts, "admin_relevance_sort")
    assert page["list_display"][int(page["params"]["o"])] == "search_relevance", page
    assert page["results"], page
    assert _descending(_scores(page["results"])), _describe(page)


def test_12_admin_sort_by_title_while_searching(newcomer):
    facts = newcomer.search_facts()
    page = _page(facts, "admin_title_sort")
    assert page["list_display"][1] == "title", page["list_display"]
    titles = [row["title"] for row in page["results"]]
    assert titles, page
    assert titles == page["titles_in_database_order"], _describe(page)


def test_13_admin_list_filter_and_search(newcomer):
    facts = newcomer.search_facts()
    page = _page(facts, "admin_filter")
    assert page["results"], page
    assert {row["language"] for row in page["results"]} == {"fr"}, _describe(page)
    assert _descending(_scores(page["results"])), _describe(page)


def test_14_admin_header_marks_only_the_relevance_column(newcomer):
    """Ranked by relevance (no `o`), the headers show that, not the model's title ordering."""
    facts = newcomer.search_facts()
    page = _page(facts, "admin_search")
    relevance = page["list_display"].index("search_relevance")
    assert page["ordering_columns"] == {str(relevance): "desc"}, (
        f"sort markers {page['ordering_columns']} (column index: asc/desc) over the columns "
        f"{page['list_display']}"
    )


def test_15_snippets_are_the_books_own_words_with_the_query_marked(newcomer):
    """Each result's snippet is a piece of its own indexed text (title, summary, author: in its
    own language), HTML-escaped, also for the books found by meaning in another language."""
    import html
    import re

    orm = newcomer.search_facts()["orm"]
    assert "error" not in orm, orm["error"]
    for row in orm["results"]:
        plain = html.unescape(re.sub(r"</?b>", "", row["snippet"])).strip(" …")
        assert plain and plain in row["text"], (row["title"], row["snippet"])
    assert any("<b>" in row["snippet"] for row in orm["results"]), _describe(orm)


def test_16_two_word_queries_take_the_language_their_words_are_in(newcomer):
    routes = newcomer.search_facts()["short_queries"]
    assert "error" not in routes, routes["error"]
    decided = {query: route["language"] for query, route in routes.items()}
    assert decided == {"Siegermächte Besatzungszonen": "de", "rideau guerre": "fr",
                       "Schrodinger zebra": None}, routes
    assert routes["rideau guerre"]["method"] == "index", routes


def test_17_no_foreign_book_weaker_by_meaning_ranks_above_a_german_one(newcomer):
    """The German question: a German book without a keyword match is not ranked below a book
    in another language that is weaker on the one arm both share (the multilingual model,
    whose reported scores are language-centred); the lexical arm reads German only."""
    orm = newcomer.search_facts()["orm"]
    assert "error" not in orm, orm["error"]
    assert orm["query_language"] == "de", _describe(orm)
    results = orm["results"]
    violations = [
        (other["title"], german["title"])
        for position, german in enumerate(results) if german["language"] == "de"
        for other in results[:position]
        if other["language"] != "de" and (other["vector"] or float("-inf")) <= german["vector"]
    ]
    assert not violations, f"{violations}\n{_describe(orm)}"
    assert any(row["language"] != "de" for row in results[:4]), _describe(orm)
