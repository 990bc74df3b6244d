"""Finding work (pending, failed, stale, missing, orphaned) for the sweep, reindex and status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.contenttypes.models import ContentType
from django.db.models import Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from . import conf, versions
from .changes import dispatch, record_saved
from .embedders import get_embedder
from .indexes import BINARY, index_kind, rescore_factor
from .models import ChunkEmbedding, IndexState, SearchEntry
from .registry import Registration, registrations

SWEEP_GRACE = timedelta(minutes=2)
SWEEP_ENQUEUE_TIMEOUT = 30.0  # the sweep runs in a worker: it may wait for the broker


def _content_type(registration: Registration, using: str) -> ContentType:
    return ContentType.objects.db_manager(using).get_for_model(registration.model)


def entries(registration: Registration, using: str) -> QuerySet[SearchEntry]:
    return SearchEntry.objects.using(using).filter(
        content_type=_content_type(registration, using)
    )


def missing_pks(registration: Registration, using: str) -> QuerySet:
    """Primary keys of objects that have no entry (saved with no signal, or lost in a crash)."""
    content_type = _content_type(registration, using)
    has_entry = SearchEntry.objects.using(using).filter(
        content_type=content_type, object_id=OuterRef("pk_text")
    )
    return (
        registration.model._base_manager.using(using)
        .annotate(pk_text=Cast("pk", TextField()))
        .filter(~Exists(has_entry))
        .values_list("pk", flat=True)
    )


def orphaned(registration: Registration, using: str) -> QuerySet[SearchEntry]:
    """Entries whose object is gone (deleted by raw SQL or with signals disconnected)."""
    objects = (
        registration.model._base_manager.using(using)
        .annotate(pk_text=Cast("pk", TextField()))
        .filter(pk_text=OuterRef("object_id"))
    )
    return entries(registration, using).filter(~Exists(objects))


def _current_versions() -> dict[str, str]:
    return {spec.name: get_embedder(spec.name).version for spec in conf.embedder_specs()}


def stale(registration: Registration, using: str) -> QuerySet[SearchEntry]:
    """Indexed entries whose vectors come from another model version (other than the serving
    one the index is moving away from, see versions.py), or from an embedder that is no longer
    configured, or that lack the configured version of an embedder that applies to them."""
    current = _current_versions()
    content_type_id = _content_type(registration, using).id
    kept = Q()
    for name, version in current.items():
        kept |= Q(embedder=name, embedder_version=version)
        serving = versions.stored_serving_version(content_type_id, name, using)
        if serving is not None:
            kept |= Q(embedder=name, embedder_version=serving)
    outdated = ChunkEmbedding.objects.using(using).filter(entry=OuterRef("pk")).exclude(kept)
    lacking = Q()
    for spec in conf.embedder_specs():
        if registration.embedders is not None and spec.name not in registration.embedders:
            continue
        has_chunks = ChunkEmbedding.objects.using(using).filter(
            entry=OuterRef("pk"), embedder=spec.name, embedder_version=current[spec.name]
        )
        served = Q() if spec.languages is None else Q(language__in=sorted(spec.languages))
        lacking |= served & ~Exists(has_chunks)
    non_empty = ~Q(search_vector=None) & ~Q(search_vector="")
    return entries(registration, using).filter(state=IndexState.INDEXED).filter(
        Exists(outdated) | (non_empty & lacking)
    )


def work_ids(
    registration: Registration, using: str, force: bool = False, record_missing: bool = True
) -> list[int]:
    """Entry ids the reindex command should process (recording missing objects first)."""
    if record_missing:
        pks = list(missing_pks(registration, using).iterator(chunk_size=2000))
        for batch in _batched(pks, 2000):
            record_saved(registration.model, batch, using=using, enqueue=False)
    if force:
        return list(entries(registration, using).order_by("id").values_list("id", flat=True))
    todo = entries(registration, using).filter(
        Q(state__in=[IndexState.PENDING, IndexState.FAILED]) | Q(pk__in=stale(registration, using))
    )
    return list(todo.order_by("id").values_list("id", flat=True))


def sweep(using: str = "default", grace: timedelta = SWEEP_GRACE) -> int:
    """Enqueue entries recorded but not indexed (older than ``grace``), failed entries
    that still have attempts left, and objects that never got an entry."""
    cutoff = timezone.now() - grace
    ids: list[int] = []
    for registration in registrations():
        for pks in _batched(list(missing_pks(registration, using)), 2000):
            record_saved(registration.model, pks, using=using)
        ids += entries(registration, using).filter(
            Q(state=IndexState.PENDING, changed_at__lt=cutoff)
            | Q(state=IndexState.FAILED, attempts__lt=int(conf.get("MAX_RETRIES")))
        ).values_list("id", flat=True)
    dispatch(sorted(ids), using, timeout=SWEEP_ENQUEUE_TIMEOUT)
    return len(ids)


def _batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class StatusRow:
    model: str
    embedder: str
    objects: int
    indexed: int
    stale: int
    pending: int
    failed: int
    missing: int
    orphaned: int
    lexical_truncated: int  # entries with text beyond the lexical limit (registry.py)
    version: str = ""  # the configured embedder version
    serving: str = ""  # the version searches read (another while the index moves: versions.py)
    index: str = ""  # the embedder's vector index: "halfvec", or "binary xN" (N: RESCORE)


def _index_label(embedder: str) -> str:
    kind = index_kind(embedder)
    return f"{kind} x{rescore_factor(embedder)}" if kind == BINARY else kind


def status(using: str = "default") -> list[StatusRow]:
    """Per registered model and embedder: how many objects are indexed, stale, pending, ..."""
    rows = []
    versions_by_name = _current_versions()
    for registration in registrations():
        all_entries = entries(registration, using)
        objects = registration.model._base_manager.using(using).count()
        pending = all_entries.filter(state=IndexState.PENDING).count()
        failed = all_entries.filter(state=IndexState.FAILED).count()
        stale_count = stale(registration, using).count()
        missing = missing_pks(registration, using).count()
        orphan_count = orphaned(registration, using).count()
        truncated = all_entries.filter(lexical_truncated=True).count()
        for spec in conf.embedder_specs():
            if registration.embedders is not None and spec.name not in registration.embedders:
                continue
            indexed = (
                all_entries.filter(state=IndexState.INDEXED)
                .filter(
                    chunks__embedder=spec.name,
                    chunks__embedder_version=versions_by_name[spec.name],
                )
                .distinct()
                .count()
            )
            serving = versions.stored_serving_version(
                _content_type(registration, using).id, spec.name, using
            )
            rows.append(
                StatusRow(
                    registration.label, spec.name, objects, indexed, stale_count, pending,
                    failed, missing, orphan_count, truncated, versions_by_name[spec.name],
                    serving or versions_by_name[spec.name], _index_label(spec.name),
                )
            )
    return rows
