"""SQL pieces that carry their own parameters, composed the way Django's expressions compile.

    where = compose("c.embedder = {name} AND c.object_id <> {source}", name=name, source=pk)
    query = compose("SELECT * FROM t WHERE {where} LIMIT {limit}", where=where, limit=10)
    cursor.execute(query.sql, query.params)

Templates are the app's own constant strings; pieces are inserted as they are (never parsed
again), and a value that is not a piece becomes one ``%s`` parameter. Parameters always follow
their SQL, so nothing is kept in step by hand.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_formatter = string.Formatter()


@dataclass(frozen=True)
class SQL:
    """A fragment of SQL and the parameters of its ``%s`` placeholders, in order."""

    sql: str
    params: tuple[Any, ...] = ()

    def __add__(self, other: SQL) -> SQL:
        return SQL(self.sql + other.sql, self.params + other.params)

    def __bool__(self) -> bool:
        return bool(self.sql)


EMPTY = SQL("")


def param(value: Any) -> SQL:
    """One parameter."""
    return SQL("%s", (value,))


def piece(value: Any) -> SQL:
    return value if isinstance(value, SQL) else param(value)


def compose(template: str, /, **parts: Any) -> SQL:
    """Fill the ``{name}`` fields of ``template`` with SQL pieces or parameters.

    Literal braces in the template are written ``{{`` and ``}}``; ``%`` is written ``%%``.
    """
    sql: list[str] = []
    params: list[Any] = []
    for literal, field, spec, conversion in _formatter.parse(template):
        sql.append(literal)
        if field is None:
            continue
        if spec or conversion or field not in parts:
            raise KeyError(f"template field {{{field}}} has no piece")
        fragment = piece(parts[field])
        sql.append(fragment.sql)
        params.extend(fragment.params)
    return SQL("".join(sql), tuple(params))


def join(separator: str, pieces: Iterable[Any]) -> SQL:
    """Pieces (or parameters) joined by a constant separator."""
    fragments = [piece(p) for p in pieces]
    return SQL(
        separator.join(f.sql for f in fragments),
        tuple(p for f in fragments for p in f.params),
    )
