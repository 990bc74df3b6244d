"""Settings of the indexing benchmark: the example project's, with the embedders picked by the
``BENCH_EMBEDDERS`` environment variable and the indexing tasks on a queue of their own.

    BENCH_EMBEDDERS=english            # only all-MiniLM-L6-v2
    BENCH_EMBEDDERS=multilingual,english
    (unset or empty: every embedder of example_project.settings)

The benchmark process and its Celery worker both use this module, so they agree on the queue
(``BENCH_QUEUE``, default ``bench_indexing``) and never touch the default queue other workers
on the same broker consume.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from example_project.settings import *  # noqa: F403
from example_project.settings import SEMANTIC_SEARCH as _PROJECT_SEMANTIC_SEARCH

_ALL_EMBEDDERS: dict = _PROJECT_SEMANTIC_SEARCH["EMBEDDERS"]


def _selected_embedders() -> dict:
    names = [n.strip() for n in os.environ.get("BENCH_EMBEDDERS", "").split(",") if n.strip()]
    if not names:
        return dict(_ALL_EMBEDDERS)
    unknown = [name for name in names if name not in _ALL_EMBEDDERS]
    if unknown:
        raise ImproperlyConfigured(
            f"BENCH_EMBEDDERS names unknown embedders {unknown}; known: {list(_ALL_EMBEDDERS)}"
        )
    return {name: _ALL_EMBEDDERS[name] for name in names}


SEMANTIC_SEARCH = {
    **_PROJECT_SEMANTIC_SEARCH,
    "EMBEDDERS": _selected_embedders(),
    "QUEUE": os.environ.get("BENCH_QUEUE", "bench_indexing"),
    "SYNC": False,
}
