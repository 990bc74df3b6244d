"""Which models are searchable, which of their fields are indexed, and where languages come from.

    semantic_search.register(Article, fields={"title": "A", "body": "B"}, language_field="lang")

    @semantic_search.register(fields={"name": "A"}, language="auto")
    class Product(models.Model): ...

or in settings: ``SEMANTIC_SEARCH["MODELS"] = {"shop.Product": {"fields": {...}, ...}}``.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from . import conf
from .languages import detect_language, normalize_code

logger = logging.getLogger(__name__)

WEIGHTS = ("A", "B", "C", "D")
# Postgres limits a tsvector to 1 MB. The first MAX_LEXICAL_CHARS of a field keep their word
# positions (phrases, BM25 frequencies), the rest up to MAX_LEXICAL_TEXT only its words (each
# counted once); text beyond that is left out of the lexical index (not of the vectors) and the
# entry counted as ``lexical_truncated`` by the status command.
MAX_LEXICAL_CHARS = 200_000
MAX_LEXICAL_TEXT = 4_000_000


class NotRegistered(LookupError):
    """The model was never registered with semantic_search.register()."""


@dataclass(frozen=True)
class DocumentPart:
    field: str
    weight: str
    text: str


@dataclass(frozen=True)
class Document:
    """The indexed text of one object and its language."""

    parts: tuple[DocumentPart, ...]
    language: str | None

    @property
    def text(self) -> str:
        """Fields joined in weight order: what is chunked and embedded."""
        return "\n\n".join(part.text for part in self.parts if part.text)


@dataclass(frozen=True)
class Registration:
    model: type[models.Model]
    fields: dict[str, str]
    language_field: str | None = None
    language: str | None = None  # a fixed ISO code, or "auto"
    embedders: tuple[str, ...] | None = None  # restrict to these embedder names

    @property
    def label(self) -> str:
        return self.model._meta.label

    def document(self, instance: models.Model) -> Document:
        parts = self._parts(instance)
        return Document(parts, self.language_of(instance, parts))

    def text(self, instance: models.Model) -> str:
        """The instance's indexed text as it is chunked (``Document.text``), without detecting
        its language."""
        return Document(self._parts(instance), None).text

    def _parts(self, instance: models.Model) -> tuple[DocumentPart, ...]:
        return tuple(
            DocumentPart(name, weight, clean_text(_read_value(instance, name)))
            for name, weight in self.fields.items()
        )

    def language_of(self, instance: models.Model, parts: tuple[DocumentPart, ...]) -> str | None:
        if self.language_field:
            value = _read_value(instance, self.language_field)
            code = normalize_code(value)
            if code is None and value.strip():
                _warn_unknown_language(self.label, self.language_field, value)
            return code
        if self.language and self.language != "auto":
            return normalize_code(self.language)
        text = " ".join(part.text for part in parts)[:5000]
        detected = detect_language(text, conf.get("LANGUAGES"), threshold=0.5)
        return detected.language or normalize_code(conf.get("DEFAULT_LANGUAGE"))


@functools.cache
def _warn_unknown_language(label: str, field: str, value: str) -> None:
    """Once per process and value: the object is indexed with no language."""
    logger.warning(
        "semantic_search: %s.%s is %r, neither a language code (ISO 639, e.g. 'de' or "
        "'pt-BR') nor a language name; such objects are indexed with no language (the "
        "'simple' text search configuration). Point language_field at a code, e.g. "
        "'language__code'.", label, field, value[:80],
    )


def _read_value(instance: models.Model, path: str) -> str:
    """Follow ``a__b`` attribute paths; call callables; ``None`` becomes ``""``."""
    value: Any = instance
    for attribute in path.split("__"):
        value = getattr(value, attribute, None)
        if value is None:
            return ""
    if callable(value):
        value = value()
    return "" if value is None else str(value)


def clean_text(text: str) -> str:
    """Drop what Postgres cannot store (NUL) and control characters; keep newlines and tabs."""
    if not text:
        return ""
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in {"Cc", "Cs"}
    )


_registry: dict[type[models.Model], Registration] = {}


def register(
    model: type[models.Model] | None = None,
    *,
    fields: dict[str, str] | list[str],
    language_field: str | None = None,
    language: str | None = None,
    embedders: list[str] | tuple[str, ...] | None = None,
) -> Any:
    """Make ``model`` searchable. Usable as a function or as a class decorator.

    ``fields`` maps field names (``a__b`` paths and methods allowed) to full-text weights A-D; a
    list gives them all weight A. The language comes from ``language_field``, or is a fixed
    ``language`` code, or ``language="auto"`` detects it per object (the default).
    """
    weighted = {name: "A" for name in fields} if isinstance(fields, list | tuple) else fields

    def decorate(target: type[models.Model]) -> type[models.Model]:
        _validate(target, weighted, language_field)
        _registry[target] = Registration(
            model=target,
            fields=dict(weighted),
            language_field=language_field,
            language=language or (None if language_field else "auto"),
            embedders=tuple(embedders) if embedders else None,
        )
        from .signals import connect_model

        connect_model(target)
        return target

    return decorate if model is None else decorate(model)


def _validate(model: type[models.Model], fields: dict[str, str], language_field: str | None):
    if not fields:
        raise ImproperlyConfigured(f"register({model.__name__}): give at least one field.")
    bad = {name: w for name, w in fields.items() if w not in WEIGHTS}
    if bad:
        raise ImproperlyConfigured(
            f"register({model.__name__}): weights must be one of {WEIGHTS}, got {bad}."
        )


def unregister(model: type[models.Model]) -> None:
    from .signals import disconnect_model

    _registry.pop(model, None)
    disconnect_model(model)


def get_registration(model: type[models.Model] | models.Model) -> Registration:
    """The registration of a model (or of an instance's model)."""
    target = model if isinstance(model, type) else type(model)
    concrete = target._meta.concrete_model
    for candidate in (target, concrete):
        if candidate in _registry:
            return _registry[candidate]
    raise NotRegistered(
        f"{target._meta.label} is not registered for semantic search: call "
        f"semantic_search.register({target.__name__}, fields={{...}}) in your app's ready()."
    )


def registrations() -> list[Registration]:
    return list(_registry.values())


def is_registered(model: type[models.Model]) -> bool:
    return model in _registry or model._meta.concrete_model in _registry


def register_from_settings() -> None:
    """Register the models named in ``SEMANTIC_SEARCH["MODELS"]`` (label -> options)."""
    for label, options in (conf.get("MODELS") or {}).items():
        register(apps.get_model(label), **options)

