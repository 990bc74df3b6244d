"""Shared fixtures: the real database (pytest-django, one per session) and a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _test_database_url() -> str:
    params = connection.settings_dict
    host = params.get("HOST") or ""
    port = params.get("PORT") or ""
    user = params.get("USER") or "postgres"
    name = params["NAME"]
    password = f":{quote(params['PASSWORD'], safe='')}" if params.get("PASSWORD") else ""
    return f"postgresql://{user}{password}@{quote(str(host), safe='')}:{port}/{name}"


@pytest.fixture(autouse=True)
def _fresh_floor_gates():
    """Each test reads the relevance floor's calibration from its own database state."""
    from semantic_search import floor

    floor.forget_cached_gates()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker):
    """A real ``celery worker`` process on the real broker, using the test database."""
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    log_path = PROJECT_DIR / ".services" / "test-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "SEMANTIC_SEARCH_SYNC": "0",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "example_project", "worker",
        "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--purge",
        "--hostname", f"test-worker-{os.getpid()}@%h",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=log)
    try:
        _wait_until_ready(process, log_path)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_ready(process: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{log_path.read_text()}")
        if "ready." in log_path.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError(f"celery worker not ready after {timeout}s:\n{log_path.read_text()}")
