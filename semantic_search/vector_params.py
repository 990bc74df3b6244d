"""Query vectors as statement parameters: binary where the connection binds on the server.

A search sends its query vector as a pgvector ``Vector`` parameter. Django's psycopg backend
binds parameters on the client by default (``ClientCursor``: every parameter is written into
the SQL text), so the vector travels as text there, as before; with
``"OPTIONS": {"server_side_binding": True}`` it travels in pgvector's binary format (4 bytes
per dimension, nothing to format or parse). Measured in bench/bench_query.py.

Only dumpers are registered, on each connection that searches (one catalogue read per new
connection): what Django reads from vector columns is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pgvector import Vector

_REGISTERED = "_semantic_search_vector_oid"


def vector_param(values: Sequence[float] | np.ndarray) -> Vector:
    """A query vector as a parameter (float32)."""
    return Vector(np.asarray(values, dtype=np.float32))


def register_vector_dumpers(connection) -> None:
    """Teach a Django connection's psycopg connection to send ``Vector`` parameters (in binary
    when it binds on the server). Idempotent; psycopg 2 connections are left alone."""
    connection.ensure_connection()
    raw = connection.connection
    if getattr(raw, _REGISTERED, None) is not None or not hasattr(raw, "adapters"):
        return
    from pgvector.psycopg.vector import VectorBinaryDumper, VectorDumper
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(raw, "vector")
    if info is None:  # the extension is missing: the search fails with its own clear error
        return
    raw.adapters.register_dumper(Vector, type("VectorText", (VectorDumper,), {"oid": info.oid}))
    raw.adapters.register_dumper(
        Vector, type("VectorBinary", (VectorBinaryDumper,), {"oid": info.oid}))
    setattr(raw, _REGISTERED, info.oid)
