"""Setting the app up on a database it has never seen, as the README's Quick start says.

`manage.py migrate` runs in a subprocess with system checks on, against a fresh database on
the suite's server; the newcomer test (test_newcomer.py) does the same with a superuser and a
project of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

PROJECT_DIR = Path(__file__).resolve().parent.parent
ROLE = "semantic_search_app"


def _server() -> dict:
    params = connection.settings_dict
    found = {"host": params.get("HOST"), "port": params.get("PORT"), "user": params.get("USER")}
    return {key: str(value) for key, value in found.items() if value}


def _url(database: str, user: str) -> str:
    from urllib.parse import quote

    server = _server()
    return f"postgresql://{user}@{quote(server['host'], safe='')}:{server['port']}/{database}"


@pytest.fixture
def fresh_database_of_a_plain_role():
    """A new database owned by a role that is not a superuser (like most application roles)."""
    name = f"setup_{os.getpid()}"
    server = _server()
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone():
            admin.execute(f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER")
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" OWNER {ROLE}')
    try:
        yield name
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(database: str, user: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": _url(database, user),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"], cwd=PROJECT_DIR, env=env,
        capture_output=True, text=True, timeout=300,
    )


def test_migrate_without_the_right_to_create_extensions_says_what_to_do(
    fresh_database_of_a_plain_role,
):
    database = fresh_database_of_a_plain_role
    refused = migrate(database, ROLE)
    assert refused.returncode != 0
    assert "SystemCheckError" not in refused.stderr  # the checks let migrate run
    assert "CREATE EXTENSION IF NOT EXISTS vector;" in refused.stderr, refused.stderr
    assert f"database '{database}'" in refused.stderr and "superuser" in refused.stderr

    # The administrator creates the extension once; the application's role migrates.
    with psycopg.connect(dbname=database, autocommit=True, **_server()) as admin:
        admin.execute("CREATE EXTENSION vector")
    done = migrate(database, ROLE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Applying semantic_search.0001_initial... OK" in done.stdout
