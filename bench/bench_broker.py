"""What a misbehaving broker costs a save: before (Celery's apply_async(retry=False) in the saving
request, as semantic_search did up to 3f39682) and now (the bounded enqueuer), in one run.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_broker.py [--saves 5] [--output bench/results/broker.txt]

Each (broker, variant) runs in a fresh process (no connection or pause state carried over)
that saves ``--saves`` articles one after another with ``Article.objects.create()`` in
autocommit, with ``CELERY_BROKER_URL`` pointing at: a healthy Valkey of its own, a port where
nothing listens (refused), a port that accepts connections and never answers (black hole), the
healthy Valkey stopped with SIGSTOP (hung), and the healthy Valkey behind a proxy that delays
every packet by 0.4 s (slow). Times are seconds per save, first save and the median of the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT_DIR), str(PROJECT_DIR / "tests")]

from brokers import DelayProxy, black_hole, private_valkey, refused_url  # noqa: E402


def old_dispatch(entry_ids, using="default", force=False, timeout=None):
    """The dispatch of 3f39682: apply_async(retry=False) through Celery's pool, in the caller."""
    from semantic_search.tasks import index_entries_task

    try:
        index_entries_task.apply_async(args=[entry_ids, using], retry=False)
    except Exception:  # noqa: BLE001  (it logged and returned, too)
        return False
    return True


def child(variant: str, saves: int) -> None:
    """Runs in the subprocess: time the saves, print JSON."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    django.setup()
    from example_project.demo.models import Article
    from semantic_search import changes

    if variant == "before":
        changes.dispatch = old_dispatch
    times, ids = [], []
    for number in range(saves):
        started = time.perf_counter()
        article = Article.objects.create(title=f"bench {number}", body="x", language="en")
        times.append(time.perf_counter() - started)
        ids.append(article.pk)
    Article.objects.filter(pk__in=ids).delete()
    print(json.dumps(times))


def run_child(variant: str, broker_url: str, saves: int, timeout: float) -> list[float] | str:
    env = {**os.environ, "CELERY_BROKER_URL": broker_url}
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--saves", str(saves)],
            env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_DIR,
        )
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s for {saves} saves"
    if done.returncode != 0:
        return "failed: " + done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def brokers(folder: Path):
    """name -> URL of every broker condition, set up for the duration."""
    with private_valkey(folder / "healthy") as (healthy, _), \
            private_valkey(folder / "stopped") as (stopped, process), black_hole() as hole:
        port = int(healthy.rsplit(":", 1)[1].split("/")[0])
        proxy = DelayProxy(port, delay=0.4)
        os.kill(process.pid, signal.SIGSTOP)
        try:
            yield {"healthy": healthy, "refused": refused_url(), "black hole": hole,
                   "hung (SIGSTOP)": stopped, "slow (0.4 s a packet)": proxy.url}
        finally:
            os.kill(process.pid, signal.SIGCONT)
            proxy.close()


def cell(result: list[float] | str) -> str:
    if isinstance(result, str):
        return result
    rest = statistics.median(result[1:]) if len(result) > 1 else float("nan")
    return f"{result[0]:.3f} / {rest:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--child", choices=("before", "now"))
    parser.add_argument("--timeout", type=float, default=400.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.saves)
        return 0
    lines = [
        f"# bench_broker.py --saves {args.saves}: seconds per save, first / median of the rest",
        "| broker | before (apply_async in the request) | now (bounded enqueuer) | "
        "before / now (median) |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder, brokers(Path(folder)) as urls:
        for name, url in urls.items():
            before = run_child("before", url, args.saves, args.timeout)
            now = run_child("now", url, args.saves, args.timeout)
            ratio = "-"
            if not isinstance(before, str) and not isinstance(now, str) and len(now) > 1:
                ratio = f"{statistics.median(before[1:]) / statistics.median(now[1:]):.0f}x"
            lines.append(f"| {name} | {cell(before)} | {cell(now)} | {ratio} |")
            print(lines[-1], flush=True)
    report = "\n".join(lines)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
