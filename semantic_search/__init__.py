"""Multilingual hybrid semantic search for Django models, inside Postgres with pgvector.

    import semantic_search
    semantic_search.register(Article, fields={"title": "A", "body": "B"}, language_field="lang")
"""

from .registry import NotRegistered, register, unregister

__all__ = [
    "register", "unregister", "index_objects", "forget_objects", "search", "NotRegistered",
]


def __getattr__(name: str):
    # Imported lazily: these touch models, which must not load before the app registry.
    if name in {"index_objects", "forget_objects"}:
        from . import changes

        return getattr(changes, name)
    if name == "search":
        from .queryset import search

        return search
    raise AttributeError(name)
