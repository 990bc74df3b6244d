"""Change capture: saves and deletes of registered models, recorded in the same transaction.

A save upserts the object's :class:`~semantic_search.models.SearchEntry` (state ``pending``,
revision + 1) inside the saving transaction, so a crash or a broker outage loses nothing; the
entry ids are enqueued once the transaction commits. A delete removes the entry (and its
vectors) in the deleting transaction.
"""

from __future__ import annotations

from django.db import models
from django.db.models.signals import post_delete, post_save

from . import changes


def _on_save(sender, instance, raw=False, using="default", **kwargs) -> None:
    if raw:  # loaddata: index later with semantic_search_reindex
        return
    changes.record_saved(type(instance), [instance.pk], using=using)


def _on_delete(sender, instance, using="default", **kwargs) -> None:
    changes.record_deleted(type(instance), [instance.pk], using=using)


def _uid(kind: str, model: type[models.Model]) -> str:
    return f"semantic_search:{kind}:{model._meta.label}"


def connect_model(model: type[models.Model]) -> None:
    post_save.connect(_on_save, sender=model, dispatch_uid=_uid("save", model))
    post_delete.connect(_on_delete, sender=model, dispatch_uid=_uid("delete", model))


def disconnect_model(model: type[models.Model]) -> None:
    post_save.disconnect(sender=model, dispatch_uid=_uid("save", model))
    post_delete.disconnect(sender=model, dispatch_uid=_uid("delete", model))
