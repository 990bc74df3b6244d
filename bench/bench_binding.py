"""The query vector as a binary parameter (server-side binding) against a text literal (Django's
default client-side binding, and the same text on a server-binding connection), on the halfvec
table that bench_compact.py leaves in the ``bench_compact`` database: one HNSW scan of 200
chunks per query, each variant run untimed and then timed back to back (hot cache), the
variants' order rotating per query. Prints the median milliseconds per variant.

    eval $(.venv/bin/python -m example_project.services env)
    .venv/bin/python bench/bench_binding.py --queries 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

SCAN = "SELECT id FROM compact_half ORDER BY vector <=> %s::halfvec(384) LIMIT 200"


def literal(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/bench_compact"
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(args.queries, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    server = psycopg.connect(url, autocommit=True)
    register_vector(server)
    client = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor)
    for connection in (server, client):
        connection.execute("SET hnsw.ef_search = 100")
        connection.execute("SET hnsw.iterative_scan = relaxed_order")
    variants = [
        ("binary parameter (server-side binding)", server, Vector),
        ("text literal (client-side binding, Django's default)", client, literal),
        ("text parameter (server-side binding)", server, literal),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for number, vector in enumerate(queries):
        shift = number % len(variants)
        for name, connection, make in variants[shift:] + variants[:shift]:
            connection.execute(SCAN, [make(vector)]).fetchall()
            start = time.perf_counter()
            connection.execute(SCAN, [make(vector)]).fetchall()
            times[name].append((time.perf_counter() - start) * 1000)
    print(f"load average {os.getloadavg()}; {args.queries} queries; median ms per scan:")
    for name, values in times.items():
        print(f"  {name:<55} {statistics.median(values):6.2f}")


if __name__ == "__main__":
    main()
