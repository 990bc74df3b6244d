"""Loading the demo corpus (``data/xquad_slice.jsonl``) into Article and Topic, idempotently."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

import semantic_search

from .models import Article, Topic

SLICE_PATH = Path(__file__).resolve().parent / "data" / "xquad_slice.jsonl"
QUESTIONS_PATH = SLICE_PATH.with_name("xquad_questions.jsonl")
# The fields a row of the slice sets on its Article (besides external_id).
ARTICLE_FIELDS = ("title", "body", "language", "topic_id")


@dataclass
class LoadReport:
    created: list[int] = field(default_factory=list)  # primary keys of the new articles
    updated: int = 0
    unchanged: int = 0


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def ensure_topics(names: set[str]) -> dict[str, int]:
    """Topic name -> primary key, creating the missing topics."""
    existing = dict(Topic.objects.filter(name__in=names).values_list("name", "pk"))
    missing = [Topic(name=name) for name in sorted(names - set(existing))]
    Topic.objects.bulk_create(missing)
    return existing | {topic.name: topic.pk for topic in missing}


def _article(row: dict, topics: dict[str, int]) -> Article:
    return Article(
        external_id=row["external_id"], title=row["title"], body=row["body"],
        language=row["language"], topic_id=topics[row["topic"]],
    )


def _update(current: Article, wanted: Article) -> bool:
    """Save the fields that differ (the save re-indexes the article); False if none does."""
    changed = [
        name for name in ARTICLE_FIELDS if getattr(current, name) != getattr(wanted, name)
    ]
    for name in changed:
        setattr(current, name, getattr(wanted, name))
    if changed:
        current.save(update_fields=changed)
    return bool(changed)


@transaction.atomic
def load_slice(path: Path = SLICE_PATH) -> LoadReport:
    """Upsert the slice's rows by ``external_id``: create new articles in bulk, save only
    those that changed, leave the others untouched (every save re-indexes an article)."""
    rows = read_jsonl(path)
    topics = ensure_topics({row["topic"] for row in rows})
    wanted = {row["external_id"]: _article(row, topics) for row in rows}
    current = {a.external_id: a for a in Article.objects.filter(external_id__in=wanted)}
    report = LoadReport()
    for external_id, article in current.items():
        if _update(article, wanted[external_id]):
            report.updated += 1
        else:
            report.unchanged += 1
    new = [article for key, article in wanted.items() if key not in current]
    Article.objects.bulk_create(new, batch_size=500)
    report.created = [article.pk for article in new]
    if new:
        # bulk_create sends no signals: record the new articles; they are sent after commit.
        semantic_search.index_objects(Article.objects.filter(pk__in=report.created))
    return report
