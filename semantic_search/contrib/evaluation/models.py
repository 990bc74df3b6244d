from django.db import models

from semantic_search.queryset import SemanticSearchManager


class EvaluationDocument(models.Model):
    """A document of a retrieval test collection (``manage.py semantic_search_evaluate``).

    ``corpus`` is the fingerprint of the corpus file, so a collection is loaded and embedded
    once and reused by every later evaluation of the same file.
    """

    corpus = models.CharField(max_length=64, db_index=True)
    doc_id = models.CharField(max_length=255)
    title = models.TextField(blank=True, default="")
    text = models.TextField()
    language = models.CharField(max_length=16, blank=True, default="")

    objects = SemanticSearchManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["corpus", "doc_id"], name="semantic_search_evaluation_doc_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.corpus}:{self.doc_id}"
