"""Demo models: an ordinary Django app whose text the search indexes."""

from django.db import models

from semantic_search.queryset import SemanticSearchManager


class Topic(models.Model):
    name = models.CharField(max_length=200, unique=True)

    def __str__(self) -> str:
        return self.name


class Article(models.Model):
    """A paragraph of a multilingual encyclopedia (XQuAD), in one language."""

    title = models.CharField(max_length=300)
    body = models.TextField()
    language = models.CharField(max_length=8, db_index=True)
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.SET_NULL)
    published = models.BooleanField(default=True)
    external_id = models.CharField(max_length=64, blank=True, default="")

    objects = SemanticSearchManager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title
