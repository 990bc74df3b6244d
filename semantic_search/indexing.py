"""The indexer: from pending entries to full-text vectors and embeddings in the app's tables.

    read entries + objects -> documents -> chunks -> one encode call per embedder
    -> write (only where the entry's revision is unchanged)

Idempotent: unchanged text (same hash, same embedder version) is not embedded again, and a
result is written only if the entry has not changed since it was read, so two racing workers
never leave an older text's vectors behind.

Never waits for the user: users' transactions lock only their entries (changes.py), and the
indexer locks entries with ``SKIP LOCKED``. An entry locked by someone else is being changed
(its next revision brings a task of its own) or written by another worker; it is reported
``busy`` and the task sends it again a little later (a rolled-back change leaves it pending).
Statistics rows are then locked only by indexers, in one order, so no interleaving of users and
workers can deadlock.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from . import centring, conf, floor, lexical, registry, versions
from .chunking import Chunk, chunk_text, text_hash
from .embedders import get_embedder
from .languages import search_config
from .memory import release_free_memory
from .models import ChunkEmbedding, IndexState, SearchEntry
from .registry import MAX_LEXICAL_CHARS, Document, Registration, get_registration, is_registered
from .segmentation import segment
from .sql import SQL, compose, join

logger = logging.getLogger(__name__)


@dataclass
class PlannedEntry:
    """What one entry needs: its document, and per embedder the chunks to (re)write."""

    entry_id: int
    revision: int
    document: Document
    document_hash: str
    embedders: list[str]
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)  # embedder -> all its chunks
    reuse: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # hash -> vector


@dataclass
class IndexReport:
    indexed: int = 0
    skipped_unchanged: int = 0
    superseded: int = 0
    orphaned: int = 0
    chunks_embedded: int = 0
    busy: list[int] = field(default_factory=list)  # entries another transaction held

    def add(self, other: IndexReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def applicable_embedders(registration: Registration, language: str | None) -> list[str]:
    """Embedder names for a document: every multilingual one, plus monolingual ones that
    serve its language (optionally restricted by the registration)."""
    names = []
    for spec in conf.embedder_specs():
        if registration.embedders is not None and spec.name not in registration.embedders:
            continue
        if spec.serves(language):
            names.append(spec.name)
    return names


def document_hash(document: Document) -> str:
    parts = "\x1f".join(f"{p.field}\x1e{p.weight}\x1e{p.text}" for p in document.parts)
    return text_hash(f"{document.language or ''}\x1d{parts}")


def index_entries(entry_ids: list[int], using: str = "default", force: bool = False) -> IndexReport:
    """Index the given entries now (what the Celery task and the reindex command call)."""
    report = IndexReport()
    entries = list(
        SearchEntry.objects.using(using)
        .filter(id__in=entry_ids)
        .values("id", "content_type_id", "object_id", "revision", "text_hash", "state")
    )
    by_type: dict[int, list[dict]] = defaultdict(list)
    for entry in entries:
        by_type[entry["content_type_id"]].append(entry)
    for content_type_id, group in by_type.items():
        model = ContentType.objects.db_manager(using).get_for_id(content_type_id).model_class()
        if model is None or not is_registered(model):
            report.add(_delete_entries(group, using))
            continue
        report.add(_index_group(get_registration(model), group, using, force))
    return report


def _index_group(
    registration: Registration, entries: list[dict], using: str, force: bool
) -> IndexReport:
    report = IndexReport()
    model = registration.model
    objects = model._base_manager.using(using).in_bulk([e["object_id"] for e in entries])
    objects = {str(pk): obj for pk, obj in objects.items()}
    report.add(_delete_entries([e for e in entries if e["object_id"] not in objects], using))
    existing = _existing_chunks([e["id"] for e in entries if e["object_id"] in objects], using)
    content_type_id = entries[0]["content_type_id"]
    kept = {spec.name: versions.kept_versions(content_type_id, spec.name, using)
            for spec in conf.embedder_specs()}

    plans = []
    for entry in entries:
        instance = objects.get(entry["object_id"])
        if instance is None:
            continue
        plan = _plan(registration, entry, instance, existing.get(entry["id"], {}), force, kept)
        if plan is None:
            report.skipped_unchanged += 1
        else:
            plans.append(plan)
    vectors = _embed(plans)
    report.chunks_embedded += sum(len(v) for v in vectors.values())
    report.add(_write(plans, vectors, using, kept))
    return report


def _existing_chunks(entry_ids: list[int], using: str) -> dict[int, dict[str, dict]]:
    """entry -> embedder -> version -> {chunk hash: vector}."""
    result: dict[int, dict[str, dict]] = defaultdict(dict)
    rows = (
        ChunkEmbedding.objects.using(using)
        .filter(entry_id__in=entry_ids)
        .values_list("entry_id", "embedder", "embedder_version", "text_hash", "vector")
    )
    for entry_id, embedder, version, chunk_hash, vector in rows:
        result[entry_id].setdefault(embedder, {}).setdefault(version, {})[chunk_hash] = vector
    return result


def _plan(
    registration: Registration, entry: dict, instance, existing: dict[str, dict], force: bool,
    kept: dict[str, set[str]],
) -> PlannedEntry | None:
    """``kept``: per embedder, the versions an entry may hold (the configured one, and the
    serving one while the index moves to it: versions.py)."""
    document = registration.document(instance)
    digest = document_hash(document)
    names = applicable_embedders(registration, document.language)
    plan = PlannedEntry(entry["id"], entry["revision"], document, digest, names)
    unchanged = not force and entry["state"] == IndexState.INDEXED and entry["text_hash"] == digest
    overlap = int(conf.get("CHUNK_OVERLAP_TOKENS"))
    for name in names:
        embedder = get_embedder(name)
        held = existing.get(name, {})
        up_to_date = embedder.version in held and set(held) <= kept[name]
        if unchanged and up_to_date:
            continue
        plan.chunks[name] = chunk_text(document.text, embedder, overlap=overlap)
        if embedder.version in held and not force:
            plan.reuse[name] = held[embedder.version]
    stale_embedders = set(existing) - set(names)
    if unchanged and not plan.chunks and not stale_embedders:
        return None
    return plan


def _embed(plans: list[PlannedEntry]) -> dict[str, dict[str, np.ndarray]]:
    """One encode call per embedder over all chunks that have no reusable vector."""
    todo: dict[str, dict[str, str]] = defaultdict(dict)  # embedder -> hash -> text
    for plan in plans:
        for name, chunks in plan.chunks.items():
            reusable = plan.reuse.get(name, {})
            for chunk in chunks:
                if chunk.text_hash not in reusable:
                    todo[name][chunk.text_hash] = chunk.text
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for name, texts in todo.items():
        hashes = list(texts)
        encoded = get_embedder(name).encode_passages([texts[h] for h in hashes])
        vectors[name] = dict(zip(hashes, encoded, strict=True))
    if todo:
        release_free_memory()  # the batch's activations, or the worker's heap only grows
    return vectors


_LOCK_REVISIONS = (
    "SELECT id, revision, content_type_id, object_id FROM semantic_search_searchentry "
    "WHERE id = ANY(%s) ORDER BY id FOR UPDATE SKIP LOCKED"
)


def _lock_entries(cursor, entry_ids: list[int]) -> tuple[dict[int, tuple], list[int]]:
    """Lock the entries nobody else holds: ({id: (revision, content type, object id)}, the ids
    that exist but are held by another transaction)."""
    cursor.execute(_LOCK_REVISIONS, [entry_ids])
    locked = {row[0]: row[1:] for row in cursor.fetchall()}
    unlocked = [entry_id for entry_id in entry_ids if entry_id not in locked]
    if not unlocked:
        return locked, []
    cursor.execute("SELECT id FROM semantic_search_searchentry WHERE id = ANY(%s)", [unlocked])
    return locked, sorted(row[0] for row in cursor.fetchall())


def _tsvector_sql(document: Document, config: str, whole: bool = True) -> SQL:
    """Each field's first MAX_LEXICAL_CHARS with positions and weights, and (``whole``) its
    words up to MAX_LEXICAL_TEXT without them (see registry.py); text in scripts written without
    spaces as character bigrams (segmentation.py)."""
    pieces = []
    for part in document.parts:
        pieces.append(compose("setweight(to_tsvector({config}::regconfig, {text}), {weight})",
                              config=config, text=segment(part.text[:MAX_LEXICAL_CHARS]),
                              weight=part.weight))
        rest = part.text[MAX_LEXICAL_CHARS : registry.MAX_LEXICAL_TEXT] if whole else ""
        if rest:
            pieces.append(compose("strip(to_tsvector({config}::regconfig, {text}))",
                                  config=config, text=segment(rest)))
    return join(" || ", pieces) if pieces else SQL("''::tsvector")


_UPDATE_ENTRY = (
    "UPDATE semantic_search_searchentry SET search_vector = {tsvector}, language = {language},"
    " search_config = {config}, text_hash = {hash}, state = {state}, attempts = 0,"
    " last_error = '', indexed_at = {now}, lexical_truncated = {truncated} WHERE id = {entry}"
)


def _update_entry(cursor, plan: PlannedEntry, now, using: str) -> None:
    """Write the entry's full text vector and state; when the words of a huge text overflow
    Postgres's tsvector limit, only the positioned part (counted as truncated)."""
    config = search_config(plan.document.language)
    longest = max((len(part.text) for part in plan.document.parts), default=0)

    def update(whole: bool, truncated: bool) -> None:
        statement = compose(
            _UPDATE_ENTRY, tsvector=_tsvector_sql(plan.document, config, whole),
            language=plan.document.language or "", config=config, hash=plan.document_hash,
            state=IndexState.INDEXED.value, now=now, entry=plan.entry_id, truncated=truncated,
        )
        cursor.execute(statement.sql, statement.params)

    if longest > MAX_LEXICAL_CHARS:
        try:
            with transaction.atomic(using=using):
                update(whole=True, truncated=longest > registry.MAX_LEXICAL_TEXT)
            return
        except DatabaseError:
            logger.warning("semantic_search: the words of entry %s exceed a tsvector; only its "
                           "first %s characters per field are searchable by keyword",
                           plan.entry_id, MAX_LEXICAL_CHARS)
    update(whole=False, truncated=longest > MAX_LEXICAL_CHARS)


def _write(
    plans: list[PlannedEntry], vectors: dict[str, dict[str, np.ndarray]], using: str,
    kept: dict[str, set[str]],
) -> IndexReport:
    """Write results for the entries whose revision is unchanged and that nobody else holds."""
    report = IndexReport()
    if not plans:
        return report
    now = timezone.now()
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        locked, report.busy = _lock_entries(cursor, [p.entry_id for p in plans])
        owners = {entry_id: (row[1], row[2]) for entry_id, row in locked.items()}
        fresh = [p for p in plans if p.entry_id in locked and locked[p.entry_id][0] == p.revision]
        fresh_ids = [p.entry_id for p in fresh]
        lexical.forget(cursor, fresh_ids)
        for plan in fresh:
            _update_entry(cursor, plan, now, using)
        lexical.write_postings(cursor, fresh_ids)
        _replace_chunks(fresh, vectors, using, owners, kept)
    written: Counter[tuple[int, str]] = Counter()
    for plan in fresh:
        for name, chunks in plan.chunks.items():
            written[(owners[plan.entry_id][0], name)] += len(chunks)
    try:
        floor.vectors_written(written, using)
    except DatabaseError:  # the calibration is an optimisation: searches measure it if missing
        logger.warning("semantic_search: relevance floor calibration failed", exc_info=True)
    try:
        centring.documents_written(_documents_per_language(fresh, owners), using)
    except DatabaseError:  # stale or missing means shift less; the next batch retries
        logger.warning("semantic_search: language means not updated", exc_info=True)
    try:
        versions.after_batch({(owners[p.entry_id][0], name) for p in fresh for name in p.chunks},
                             using)
    except DatabaseError:  # the reindex command and later batches check again
        logger.warning("semantic_search: serving versions not checked", exc_info=True)
    report.indexed = len(fresh)
    report.superseded = len(plans) - len(fresh) - len(report.busy)
    return report


def _documents_per_language(
    plans: list[PlannedEntry], owners: dict[int, tuple[int, str]]
) -> Counter[tuple[int, str, str, str]]:
    """Documents (re-)embedded per (content type, multilingual embedder, version, language)."""
    counts: Counter[tuple[int, str, str, str]] = Counter()
    multilingual = {spec.name for spec in conf.embedder_specs() if spec.multilingual}
    for plan in plans:
        for name in set(plan.chunks) & multilingual:
            key = (owners[plan.entry_id][0], name, get_embedder(name).version,
                   plan.document.language or "")
            counts[key] += 1
    return counts


def _replace_chunks(
    plans: list[PlannedEntry],
    vectors: dict[str, dict[str, np.ndarray]],
    using: str,
    owners: dict[int, tuple[int, str]],
    kept: dict[str, set[str]],
) -> None:
    """Delete each entry's chunks of re-embedded or no-longer-applicable embedders (but not
    those of a serving version the index is moving away from: ``kept``), then insert the new
    ones."""
    rows = []
    for plan in plans:
        untouched = set(plan.embedders) - set(plan.chunks)
        keep = Q(embedder__in=untouched)
        for name in plan.chunks:
            for version in kept.get(name, set()) - {get_embedder(name).version}:
                keep |= Q(embedder=name, embedder_version=version)
        ChunkEmbedding.objects.using(using).filter(entry_id=plan.entry_id).exclude(keep).delete()
        for name, chunks in plan.chunks.items():
            version = get_embedder(name).version
            for chunk in chunks:
                vector = plan.reuse.get(name, {}).get(chunk.text_hash)
                if vector is None:
                    vector = vectors[name][chunk.text_hash]
                rows.append(
                    ChunkEmbedding(
                        entry_id=plan.entry_id, content_type_id=owners[plan.entry_id][0],
                        object_id=owners[plan.entry_id][1],
                        language=plan.document.language or "", embedder=name,
                        embedder_version=version,
                        chunk=chunk.index, text_hash=chunk.text_hash, start=chunk.start,
                        end=chunk.end, vector=vector,
                    )
                )
    ChunkEmbedding.objects.using(using).bulk_create(rows, batch_size=500)


def _delete_entries(entries: list[dict], using: str) -> IndexReport:
    """Delete the entries of objects that are gone (or of models no longer registered), unless
    they changed since they were read (the object came back) or another transaction holds them."""
    report = IndexReport()
    if not entries:
        return report
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        locked, report.busy = _lock_entries(cursor, sorted(e["id"] for e in entries))
        gone = [e["id"] for e in entries
                if e["id"] in locked and locked[e["id"]][0] == e["revision"]]
        report.superseded = len(locked) - len(gone)
        if gone:
            lexical.forget(cursor, gone)
            SearchEntry.objects.using(using).filter(id__in=gone).delete()
    report.orphaned = len(gone)
    return report


def mark_failed(entry_ids: list[int], error: str, using: str = "default") -> None:
    """Record a failure on the entries (they are retried by the sweep up to MAX_RETRIES)."""
    from django.db.models import F

    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        locked, _ = _lock_entries(cursor, sorted(entry_ids))  # a held entry is changing anyway
        SearchEntry.objects.using(using).filter(id__in=list(locked)).update(
            state=IndexState.FAILED, attempts=F("attempts") + 1, last_error=error[:2000]
        )
