"""Index what is pending, failed, stale or missing (or everything with --force), in batches."""

from __future__ import annotations

import time

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from semantic_search import conf, lexical, versions
from semantic_search.changes import dispatch
from semantic_search.embedders import get_embedder
from semantic_search.indexes import ensure_vector_indexes
from semantic_search.indexing import IndexReport, index_entries
from semantic_search.maintenance import entries, work_ids
from semantic_search.models import IndexState
from semantic_search.registry import get_registration, registrations

# Seconds the command waits for the broker to take a batch (it holds up no user's request).
COMMAND_TIMEOUT = 30.0
# Reindexing at least this share of a model's entries recomputes its BM25 impacts afterwards.
REFRESH_SHARE = 0.1


class Command(BaseCommand):
    help = (
        "Index registered models: by default only pending, failed, stale and missing objects "
        "(so a second run after a crash resumes where the first stopped); --force re-embeds all."
    )

    def add_arguments(self, parser):
        parser.add_argument("models", nargs="*", help="app_label.Model (default: all registered)")
        parser.add_argument("--force", action="store_true", help="re-index every object")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument(
            "--async", dest="use_workers", action="store_true",
            help="send batches to the Celery workers instead of indexing in this process",
        )
        parser.add_argument(
            "--wait", action="store_true", help="with --async: show progress until done"
        )
        parser.add_argument("--database", default="default")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *labels, force, batch_size, use_workers, wait, database, no_progress, **_):
        targets = self._registrations(labels)
        ensure_vector_indexes(using=database)
        for registration in targets:
            ids = work_ids(registration, database, force=force)
            label = registration.label
            if not ids:
                self.stdout.write(f"{label}: nothing to do")
                self._switch_versions(registration, database)
                continue
            if use_workers:
                self._enqueue(registration, ids, batch_size, database, force, wait, no_progress)
                if wait:
                    self._refresh(registration, len(ids), database)
            else:
                report = self._index_here(ids, batch_size, database, force, label, no_progress)
                self.stdout.write(
                    f"{label}: {report.indexed} indexed, {report.skipped_unchanged} unchanged, "
                    f"{report.superseded} superseded, {report.orphaned} orphans removed, "
                    f"{report.chunks_embedded} chunks embedded"
                )
                self._refresh(registration, len(ids), database)
            if wait or not use_workers:
                self._switch_versions(registration, database)

    def _switch_versions(self, registration, database: str) -> None:
        """Serve the configured embedder versions whose vectors are now complete."""
        content_type = ContentType.objects.db_manager(database).get_for_model(registration.model)
        for spec in conf.embedder_specs():
            if registration.embedders is not None and spec.name not in registration.embedders:
                continue
            before = versions.stored_serving_version(content_type.id, spec.name, database)
            versions.forget()
            if not versions.switch_if_complete(content_type.id, spec.name, database):
                self.stdout.write(f"{registration.label}: {spec.name} still serves {before} "
                                  "(the new version's vectors are not complete)")
                continue
            if before not in (None, get_embedder(spec.name).version):
                self.stdout.write(f"{registration.label}: {spec.name} now serves "
                                  f"{get_embedder(spec.name).version} (was {before})")
            while (wait := versions.retire(content_type.id, spec.name, database)) is not None:
                self.stdout.write(f"{registration.label}: removing {spec.name}'s old vectors "
                                  f"in {wait:.0f} s (once every process serves the new ones)")
                time.sleep(wait + 0.1)

    def _refresh(self, registration, changed: int, database: str) -> None:
        """After a large run, BM25 impacts with the final average document length."""
        total = entries(registration, database).count()
        if total and changed >= REFRESH_SHARE * total:
            content_type = ContentType.objects.db_manager(database).get_for_model(
                registration.model
            )
            lexical.refresh_impacts(database, content_type.id)
            self.stdout.write(f"{registration.label}: BM25 impacts recomputed")

    def _registrations(self, labels):
        if not labels:
            return registrations()
        try:
            return [get_registration(apps.get_model(label)) for label in labels]
        except (LookupError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

    def _index_here(self, ids, batch_size, database, force, label, no_progress) -> IndexReport:
        total = IndexReport()
        with tqdm(total=len(ids), desc=label, unit="obj", disable=no_progress) as bar:
            for start in range(0, len(ids), batch_size):
                batch = ids[start : start + batch_size]
                total.add(index_entries(batch, using=database, force=force))
                bar.update(len(batch))
        return total

    def _enqueue(self, registration, ids, batch_size, database, force, wait, no_progress):
        if conf.get("SYNC"):
            raise CommandError("--async needs a broker, but SEMANTIC_SEARCH['SYNC'] is on.")
        if force_states := entries(registration, database).filter(id__in=ids).exclude(
            state=IndexState.PENDING
        ):
            force_states.update(state=IndexState.PENDING)
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            if not dispatch(batch, database, force=force, timeout=COMMAND_TIMEOUT):
                raise CommandError(
                    "The broker did not take the tasks (see the warning above); nothing is "
                    "lost: the objects are pending. Fix the broker, or index in this process "
                    "(without --async)."
                )
        self.stdout.write(f"{registration.label}: {len(ids)} objects sent to the workers")
        if wait:
            wait_for_workers(registration, ids, database, disable=no_progress)


def wait_for_workers(registration, ids, database, disable=False, poll=0.5) -> None:
    """A progress bar over the given entries until none is pending."""
    pending_qs = entries(registration, database).filter(id__in=ids, state=IndexState.PENDING)
    with tqdm(total=len(ids), desc=registration.label, unit="obj", disable=disable) as bar:
        while True:
            done = len(ids) - pending_qs.count()
            bar.update(done - bar.n)
            if done >= len(ids):
                return
            time.sleep(poll)
