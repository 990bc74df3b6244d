"""Settings of the query benchmark (bench/bench_query.py): the example project's, with

* one database alias per benchmark size, on the server ``DATABASE_URL`` points to, from
  ``BENCH_QUERY_DATABASES`` (JSON ``{"alias": "database name"}``; ``default`` is required);
* only the multilingual embedder (e5-small): every object has one vector arm, the one whose
  vectors the benchmark synthesizes from real e5 embeddings;
* no indexing on save (rows are bulk-loaded by the benchmark, never through the workers).
"""

import json
import os
from urllib.parse import urlsplit, urlunsplit

import dj_database_url

from example_project.settings import *  # noqa: F403
from example_project.settings import SEMANTIC_SEARCH as _PROJECT_SEMANTIC_SEARCH
from example_project.settings import _urls

_NAMES: dict[str, str] = json.loads(
    os.environ.get("BENCH_QUERY_DATABASES") or '{"default": "bench_query"}'
)


def _database(name: str) -> dict:
    parts = urlsplit(_urls["DATABASE_URL"])
    return dj_database_url.parse(urlunsplit(parts._replace(path=f"/{name}")), conn_max_age=0)


DATABASES = {alias: _database(name) for alias, name in _NAMES.items()}

SEMANTIC_SEARCH = {
    **_PROJECT_SEMANTIC_SEARCH,
    "EMBEDDERS": {"multilingual": _PROJECT_SEMANTIC_SEARCH["EMBEDDERS"]["multilingual"]},
    "QUEUE": "bench_query",
    "SYNC": False,
}
