"""The app's own tables: one search entry per registered object, one row per embedded chunk.

Registering a model never changes its table: everything lives here, keyed by content type
and primary key (as text, so integer, UUID and string keys all work).
"""

from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from pgvector.django import HalfVectorField, VectorField


class IndexState(models.TextChoices):
    PENDING = "pending", "pending"
    INDEXED = "indexed", "indexed"
    FAILED = "failed", "failed"


class SearchEntry(models.Model):
    """The durable record of one registered object's search data and indexing state.

    ``revision`` grows on every recorded change; a worker writes its results only if the
    revision it read is still current, so an older text never overwrites a newer one.
    """

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.CharField(max_length=255)
    revision = models.PositiveBigIntegerField(default=1)
    state = models.CharField(
        max_length=16, choices=IndexState.choices, default=IndexState.PENDING, db_index=True
    )
    language = models.CharField(max_length=16, blank=True, default="")
    search_config = models.CharField(max_length=64, default="simple")
    search_vector = SearchVectorField(null=True)
    text_hash = models.CharField(max_length=64, blank=True, default="")
    lexical_length = models.FloatField(db_default=0.0)  # weighted lexeme count, for BM25
    lexical_truncated = models.BooleanField(db_default=False)  # text beyond the lexical limit
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    changed_at = models.DateTimeField(auto_now_add=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "search entries"
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id"], name="semantic_search_entry_unique"
            )
        ]
        # No GIN index on search_vector: searches read the postings (LexicalTerm) and match
        # phrases/exclusions on the candidate entries only, so it would cost its bytes (a
        # tenth of the app's at 100k objects) and every write for nothing.

    def __str__(self) -> str:
        return f"{self.content_type.model}:{self.object_id} ({self.state})"


class ChunkEmbedding(models.Model):
    """One chunk of an entry's text embedded by one embedder.

    ``vector`` (16-bit floats) has no fixed dimension so embedders of different sizes share
    the table; each embedder gets its own partial HNSW index on ``vector::halfvec(<dim>)`` (or
    on its signs, see indexes.py).
    """

    entry = models.ForeignKey(SearchEntry, on_delete=models.CASCADE, related_name="chunks")
    # Copies of the entry's, so filtered HNSW scans need no join.
    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, db_index=False, related_name="+"
    )
    object_id = models.CharField(max_length=255)
    language = models.CharField(max_length=16, blank=True, default="")
    embedder = models.CharField(max_length=64)
    embedder_version = models.CharField(max_length=255)
    chunk = models.PositiveIntegerField()
    text_hash = models.CharField(max_length=64)
    start = models.PositiveIntegerField(default=0)
    end = models.PositiveIntegerField(default=0)
    vector = HalfVectorField()

    class Meta:
        constraints = [
            # An entry holds two versions of an embedder while the index moves (versions.py).
            models.UniqueConstraint(
                fields=["entry", "embedder", "embedder_version", "chunk"],
                name="semantic_search_chunk_version_unique",
            )
        ]
        indexes = [models.Index(fields=["embedder", "embedder_version"])]

    def __str__(self) -> str:
        return f"{self.entry_id}/{self.embedder}#{self.chunk}"


class RealField(models.FloatField):
    """A 4-byte float (``real``): BM25 frequencies and impacts need no more than 7 digits."""

    def db_type(self, connection) -> str:
        return "real"


class LexicalTerm(models.Model):
    """A posting: one lexeme of one entry, with its precomputed BM25 term impact.

    Queries read the highest-impact postings of each query lexeme through the index on
    (content type, configuration, lexeme, impact), so the lexical arm's cost is bounded by the
    number of query terms, not by how many rows match them. The key (entry, lexeme) serves
    exact BM25 over a filtered set of objects and an entry's rewrite. Postings are most of the
    app's bytes, so they hold nothing an entry already says (its object, its language).
    """

    pk = models.CompositePrimaryKey("entry", "lexeme")
    entry = models.ForeignKey(
        SearchEntry, on_delete=models.CASCADE, db_index=False, related_name="terms"
    )
    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, db_index=False, related_name="+"
    )
    search_config = models.CharField(max_length=64)
    lexeme = models.TextField()
    frequency = RealField()  # field-weighted term frequency
    impact = RealField()  # BM25 tf part: f(k1+1) / (f + k1(1 - b + b dl/avgdl))

    class Meta:
        indexes = [
            # Covering (entry_id included): the top-impact read is an index-only scan.
            models.Index(
                fields=["content_type", "search_config", "lexeme", "-impact"],
                include=["entry"],
                name="semantic_search_term_cover",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.lexeme} in {self.entry_id}"


class LexicalStats(models.Model):
    """Documents and total weighted length per (content type, configuration), for BM25."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    search_config = models.CharField(max_length=64)
    documents = models.BigIntegerField(default=0)
    total_length = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "search_config"], name="semantic_search_stats_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.search_config}: {self.documents} documents"


class DocumentFrequency(models.Model):
    """How many entries of a content type contain a lexeme, per configuration (BM25's idf).

    Kept by the indexer in the transactions that write and forget postings, after the
    :class:`LexicalStats` row of the same (content type, configuration) is locked, so concurrent
    writers never take these rows in conflicting orders.
    """

    content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, db_index=False, related_name="+"
    )
    search_config = models.CharField(max_length=64)
    lexeme = models.TextField()
    documents = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "search_config", "lexeme"],
                name="semantic_search_document_frequency_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.lexeme}: {self.documents} documents"


class FloorCalibration(models.Model):
    """A vector arm's relevance-floor gate for one model's vectors (see floor.py).

    Computed by the first search that needs it and stored, so processes share it; the indexer
    counts the vectors it writes in ``changed`` after its own transaction, and a search
    recalibrates once they exceed a share of ``vectors``.
    """

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    embedder = models.CharField(max_length=64)
    embedder_version = models.CharField(max_length=255)
    depth = models.PositiveIntegerField()
    gate = models.FloatField(null=True)
    vectors = models.BigIntegerField(default=0)
    changed = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "embedder", "embedder_version", "depth"],
                name="semantic_search_floor_calibration_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.embedder}@{self.depth}: {self.gate}"


class LanguageCentroid(models.Model):
    """The mean vector of one language's documents in one embedder's space, for one model (see
    centring.py): what a multilingual model puts into every text of that language, whatever it
    says. Recomputed by the indexer once the vectors written since exceed a share of
    ``documents``."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    embedder = models.CharField(max_length=64)
    embedder_version = models.CharField(max_length=255)
    language = models.CharField(max_length=16, blank=True, default="")
    centroid = VectorField()
    documents = models.BigIntegerField(default=0)
    changed = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "embedder", "embedder_version", "language"],
                name="semantic_search_language_centroid_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.embedder} {self.language or '?'}: {self.documents} documents"


class ServingVersion(models.Model):
    """The embedder version a model's searches read (see versions.py): the configured one once
    its vectors are complete, an earlier one while the index moves to it."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    embedder = models.CharField(max_length=64)
    version = models.CharField(max_length=255)
    switched_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["content_type", "embedder"],
                                    name="semantic_search_serving_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.embedder}: {self.version}"
