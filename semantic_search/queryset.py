"""The ORM face: ``Model.objects.filter(...).semantic_search("query")``.

The search joins the user's table to the fused results of one statement (query.py) through an
entry of the query's ``alias_map`` (the extension point Django documents on ``Join``), so the
result is an ordinary queryset of the user's model: it chains with ``filter()``, slicing,
pagination, ``values()``, ``only()``, ``select_related()`` and ``using()``. Filters given before
or after ``semantic_search()`` are applied inside the search statement, before its candidate
limit.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.db.models.sql.constants import INNER

from . import conf, reranking, snippets
from .evidence import short_query_language
from .languages import config_language, short_text_detector
from .query import SearchPlan, VectorArm, build_search_sql
from .registry import get_registration
from .routing import (
    Route,
    checked_candidates,
    checked_fusion,
    make_plan,
    normalize_query,
    plan_settings,
    route,
)
from .sql import SQL, compose
from .vector_params import register_vector_dumpers

SEARCH_ALIAS = "semantic_search_results"
SEARCH_ANNOTATIONS = (
    "search_score", "search_lexical_rank", "search_lexical_score", "search_vector_rank",
    "search_vector_score", "search_language", "search_route", "search_highlight",
    "search_chunk_start", "search_chunk_end", "search_document_language", "search_arms",
    "search_rerank_score",
)


class Reranking:
    """A search's second stage (reranking.py): the cross-encoder's scores of its first
    ``top_n`` results, computed once, when the search is first compiled."""

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n
        self.scores: dict[str, float] | None = None
        self._lock = threading.Lock()

    def scores_for(self, state: SearchState, search: SQL, connection, using: str
                   ) -> dict[str, float]:
        """The scores, computed on first call from ``search`` (the fused statement)."""
        with self._lock:
            if self.scores is None:
                self.scores = _rerank(state, search, self.top_n, connection, using)
            return self.scores


def _rerank(state: SearchState, search: SQL, top_n: int, connection, using: str
            ) -> dict[str, float]:
    """The order key of each of the fused statement's first ``top_n`` objects: the
    cross-encoder's score blended with the fused one (reranking.blend; empty when there is no
    reranker to use)."""
    first = compose(
        "SELECT object_id, score FROM ({search}) s ORDER BY score DESC, object_id"
        " LIMIT {top_n}",
        search=search, top_n=top_n,
    )
    with connection.cursor() as cursor:
        cursor.execute(first.sql, first.params)
        fused = dict(cursor.fetchall())
    ids = list(fused)
    model = state.base.model
    pk = model._meta.pk
    objects = model._base_manager.using(using).in_bulk([pk.to_python(i) for i in ids])
    by_text = {str(key): obj for key, obj in objects.items()}
    kept = [i for i in ids if i in by_text]
    registration = get_registration(model)
    settings = reranking.options()
    weight = reranking.blend_weight(settings)
    if weight == 0:  # the reranker has no say: no need to run it
        scores = [0.0] * len(kept)
    else:
        scores = reranking.scores(state.query, [registration.document(by_text[i]).text
                                                for i in kept], settings)
    if scores is None:
        return {}
    blended = reranking.blend([fused[i] for i in kept], scores, weight)
    return dict(zip(kept, blended, strict=True))


@dataclass(frozen=True)
class SearchState:
    """A search attached to a queryset: its plan, route and the filters it runs under."""

    query: str
    plan: SearchPlan
    route: Route | None
    base: models.QuerySet
    rerank: Reranking | None = None

    def object_filter(self, connection) -> QuerysetFilter | None:
        """The base queryset's filters, or None when it has none."""
        if not self.base.query.has_filters() and not self.base.query.distinct:
            return None
        return QuerysetFilter(self.base, connection)


class QuerysetFilter:
    """A queryset's filters as SQL for the search statement (see query.ObjectFilter).

    Each condition is the queryset itself compiled by Django with ``pk = <column>``, so its
    lookups, joins and parameters are exactly Django's own.
    """

    def __init__(self, queryset: models.QuerySet, connection) -> None:
        self.queryset = queryset.order_by()
        self.connection = connection

    def _compile(self, queryset: models.QuerySet) -> SQL:
        sql, params = queryset.query.get_compiler(connection=self.connection).as_sql()
        return SQL(sql, tuple(params))

    def condition(self, object_id: str) -> SQL:
        pk_type = self.queryset.model._meta.pk.cast_db_type(self.connection)
        correlated = RawSQL(f"({object_id})::{pk_type}", ())  # object_id: a column of ours
        return self._compile(self.queryset.filter(pk=correlated).values("pk"))

    def objects(self) -> SQL:
        return self._compile(self.queryset.values("pk"))


class SearchJoin:
    """``INNER JOIN (<search statement>) semantic_search_results ON pk = object_id``."""

    join_type = INNER
    nullable = False
    filtered_relation = None
    table_name = SEARCH_ALIAS
    table_alias = SEARCH_ALIAS

    def __init__(self, parent_alias: str, state: SearchState) -> None:
        self.parent_alias = parent_alias
        self.state = state

    def as_sql(self, compiler, connection) -> tuple[str, list]:
        register_vector_dumpers(connection)  # the query vectors are Vector parameters
        search = build_search_sql(self.state.plan, self.state.object_filter(connection))
        if self.state.rerank is not None:
            scores = self.state.rerank.scores_for(self.state, search, connection,
                                                  compiler.using)
            search = compose(
                "SELECT s.*, r.rerank FROM ({search}) s LEFT JOIN (SELECT"
                " unnest({ids}::text[]) AS object_id, unnest({scores}::float8[]) AS rerank) r"
                " ON r.object_id = s.object_id",
                search=search, ids=list(scores), scores=list(scores.values()),
            )
        pk = self.state.base.model._meta.pk
        parent = compiler.quote_name_unless_alias(self.parent_alias)
        on = (
            f"{parent}.{connection.ops.quote_name(pk.column)} = "
            f"({SEARCH_ALIAS}.object_id)::{pk.cast_db_type(connection)}"
        )
        return f"INNER JOIN ({search.sql}) {SEARCH_ALIAS} ON ({on})", list(search.params)

    def relabeled_clone(self, change_map: dict[str, str]) -> SearchJoin:
        return SearchJoin(change_map.get(self.parent_alias, self.parent_alias), self.state)

    def demote(self) -> SearchJoin:
        return self

    def promote(self) -> SearchJoin:
        return self

    @property
    def identity(self) -> tuple:
        return (self.__class__, self.parent_alias, id(self.state))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchJoin):
            return NotImplemented
        return self.identity == other.identity

    def __hash__(self) -> int:
        return hash(self.identity)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Fetched results whose snippets are computed together (one batch of sentence vectors).
HIGHLIGHT_BATCH = 100


class HighlightedIterable(models.query.ModelIterable):
    """Model instances of a search, with ``search_highlight`` set per batch of fetched rows
    (a lazy string: computed for the batch when first read; snippets.py)."""

    def __iter__(self):
        state = self.queryset._search_state
        rows = super().__iter__()
        while batch := list(itertools.islice(rows, HIGHLIGHT_BATCH)):
            if state is not None:
                snippets.highlight(batch, state.query, state.plan,
                                   state.route.language if state.route else None)
            yield from batch


def _mentions_search(args: tuple, kwargs: dict) -> bool:
    def names(node: Any):
        if isinstance(node, Q):
            for child in node.children:
                yield from names(child)
        elif isinstance(node, tuple):
            yield node[0]

    keys = list(kwargs) + [name for arg in args for name in names(arg)]
    return any(str(key).split("__")[0] in SEARCH_ANNOTATIONS for key in keys)


INDEXED_LANGUAGES_TTL = 60.0  # seconds a process trusts its list of a model's indexed languages
_indexed_languages: dict[tuple[str, int], tuple[float, frozenset[str]]] = {}


def indexed_languages(content_type_id: int, using: str) -> frozenset[str]:
    """The languages whose text search configurations a model's lexical index holds (from the
    small BM25 statistics table; cached for ``INDEXED_LANGUAGES_TTL`` seconds)."""
    from .models import LexicalStats

    key = (using, content_type_id)
    cached = _indexed_languages.get(key)
    if cached is not None and time.monotonic() - cached[0] < INDEXED_LANGUAGES_TTL:
        return cached[1]
    configs = LexicalStats.objects.using(using).filter(
        content_type_id=content_type_id, documents__gt=0
    ).values_list("search_config", flat=True)
    languages = frozenset(filter(None, map(config_language, configs)))
    _indexed_languages[key] = (time.monotonic(), languages)
    return languages


def _index_evidence(content_type_id: int, using: str):
    """The short-query language decision on this model's index (None when switched off by
    ``SHORT_QUERY_EVIDENCE``; see evidence.py)."""
    threshold = conf.get("SHORT_QUERY_EVIDENCE")
    if not threshold:
        return None
    detector = short_text_detector(conf.get("SHORT_QUERY_DETECTOR"))
    threshold = None if threshold == "auto" else float(threshold)

    def decide(text: str, candidates: tuple[str, ...]):
        return short_query_language(text, candidates, content_type_id, using, threshold,
                                    detector)

    return decide


class SemanticSearchQuerySet(models.QuerySet):
    """A QuerySet with ``semantic_search()`` and ``more_like_this()``."""

    _search_state: SearchState | None = None

    def semantic_search(
        self,
        query: str,
        *,
        mode: str = "hybrid",
        languages: str | None = None,
        language: str | None = None,
        fusion: str | None = None,
        candidates: int | None = None,
        floor: bool | None = None,
        rerank: bool = False,
    ) -> SemanticSearchQuerySet:
        """Rank this queryset's objects by relevance to ``query``, best first.

        ``mode``: "hybrid" (default), "vector" or "lexical". ``languages``: "auto", "same" or
        "all" (see routing.py); ``language`` overrides detection. ``fusion``: "rrf" or
        "weighted". ``floor``: drop candidates that are no match (default: the ``FLOOR``
        setting, on; see floor.py). Results are annotated with ``search_score``,
        ``search_lexical_rank``, ``search_lexical_score``, ``search_vector_rank``,
        ``search_vector_score``, ``search_language``, ``search_route``,
        ``search_chunk_start``/``search_chunk_end`` (the best-matching chunk's place in the
        indexed text), ``search_document_language`` (the language it was indexed in),
        ``search_arms`` (each arm that found it: ``{"lexical": {"rank": 3, "score": 7.2},
        "vector:multilingual": {...}}``; vector scores are language-centred, see centring.py) and
        ``search_highlight`` (HTML: the best sentences of that chunk, query words in ``<b>``;
        see snippets.py). ``rerank=True``: the ``RERANKER`` cross-encoder reorders the first
        ``TOP_N`` results (``search_rerank_score``; see reranking.py). An empty query gives an
        empty queryset.
        """
        self._check_searchable()
        checked_candidates(candidates)
        checked_fusion(fusion)
        if floor is not None and not isinstance(floor, bool):
            raise ValueError(f"floor must be True, False or None, got {floor!r}")
        if not isinstance(rerank, bool):
            raise ValueError(f"rerank must be True or False, got {rerank!r}")
        second_stage = Reranking(reranking.options()["TOP_N"]) if rerank else None
        text = normalize_query(query or "")
        if not text:
            return self.none()
        content_type = ContentType.objects.db_manager(self.db).get_for_model(self.model)
        chosen = route(
            text, languages=languages or conf.get("LANGUAGE_MODE"), language=language, mode=mode,
            indexed_languages=indexed_languages(content_type.id, self.db),
            evidence=_index_evidence(content_type.id, self.db),
        )
        if chosen.lexical_configs == () and not chosen.embedders:
            return self.none()
        plan = make_plan(
            content_type.id, text, chosen, fusion=fusion, candidates=candidates, floor=floor,
            using=self.db,
        )
        return self._with_search(
            SearchState(text, plan, chosen, self._base_for_search(), second_stage)
        )

    def more_like_this(
        self, instance: models.Model, *, embedder: str | None = None, candidates: int | None = None
    ) -> SemanticSearchQuerySet:
        """Objects nearest to ``instance`` by its stored vectors (itself excluded)."""
        from .models import ChunkEmbedding

        self._check_searchable()
        checked_candidates(candidates)
        content_type = ContentType.objects.db_manager(self.db).get_for_model(self.model)
        name = embedder or conf.embedder_specs()[0].name
        from .embedders import get_embedder
        from .indexes import index_kind, rescore_factor
        from .versions import serving_version

        model_embedder = get_embedder(name, serving_version(content_type.id, name, self.db))
        vectors = list(
            ChunkEmbedding.objects.using(self.db)
            .filter(
                content_type=content_type, object_id=str(instance.pk), embedder=name,
                embedder_version=model_embedder.version,
            )
            .values_list("vector", flat=True)
        )
        if not vectors:
            return self.none()
        import numpy as np

        mean = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        arm = VectorArm(
            name, model_embedder.version, int(model_embedder.dimension), tuple(mean), weight=1.0,
            index=index_kind(name), rescore=rescore_factor(name),
        )
        plan = SearchPlan(
            content_type_id=content_type.id, lexical=None, vectors=(arm,),
            **plan_settings(candidates), exclude_object=str(instance.pk),
        )
        return self._with_search(SearchState("", plan, None, self._base_for_search()))

    @property
    def search_route(self) -> Route | None:
        """How the query was routed (language, detection, arms), or None."""
        return self._search_state.route if self._search_state else None

    # --- internals --------------------------------------------------------------------------

    def _check_searchable(self) -> None:
        get_registration(self.model)  # raises NotRegistered with instructions
        if self.query.is_sliced:
            raise TypeError("semantic_search() must come before slicing.")
        if self._search_state is not None:
            raise TypeError("this queryset is already a search; start from the manager.")
        if self.query.combinator:
            raise TypeError("semantic_search() does not support union/intersection/difference.")

    def _base_for_search(self) -> models.QuerySet:
        return models.QuerySet(self.model, query=self.query.chain(), using=self._db)

    def _with_search(self, state: SearchState) -> SemanticSearchQuerySet:
        clone = self._chain()
        clone._attach(state)
        route_label = state.route.label if state.route else "vector:more-like-this"
        language = state.route.language if state.route else None
        annotations: dict[str, Any] = {
            "search_score": RawSQL(f"{SEARCH_ALIAS}.score", (), output_field=models.FloatField()),
            "search_lexical_rank": RawSQL(
                f"{SEARCH_ALIAS}.lexical_rank", (), output_field=models.IntegerField()
            ),
            "search_lexical_score": RawSQL(
                f"{SEARCH_ALIAS}.lexical_score", (), output_field=models.FloatField()
            ),
            "search_vector_rank": RawSQL(
                f"{SEARCH_ALIAS}.vector_rank", (), output_field=models.IntegerField()
            ),
            "search_vector_score": RawSQL(
                f"{SEARCH_ALIAS}.vector_score", (), output_field=models.FloatField()
            ),
            "search_language": models.Value(language, output_field=models.CharField()),
            "search_route": models.Value(route_label, output_field=models.CharField()),
        }
        for name in ("chunk_start", "chunk_end"):
            annotations[f"search_{name}"] = RawSQL(
                f"{SEARCH_ALIAS}.{name}", (), output_field=models.IntegerField()
            )
        annotations["search_document_language"] = RawSQL(
            f"{SEARCH_ALIAS}.language", (), output_field=models.CharField()
        )
        annotations["search_arms"] = RawSQL(
            f"{SEARCH_ALIAS}.arms", (), output_field=models.JSONField()
        )
        order: list[Any] = ["-search_score", "pk"]
        if state.rerank is not None:
            annotations["search_rerank_score"] = RawSQL(
                f"{SEARCH_ALIAS}.rerank", (), output_field=models.FloatField()
            )
            order.insert(0, models.F("search_rerank_score").desc(nulls_last=True))
        searched = clone.annotate(**annotations).order_by(*order)
        searched._iterable_class = HighlightedIterable
        return searched

    def _attach(self, state: SearchState) -> None:
        self._search_state = state
        base_alias = self.query.get_initial_alias()
        self.query.alias_map[SEARCH_ALIAS] = SearchJoin(base_alias, state)
        self.query.alias_refcount[SEARCH_ALIAS] = 1

    def _clone(self):
        clone = super()._clone()
        clone._search_state = self._search_state
        return clone

    def _filter_or_exclude(self, negate, args, kwargs):
        clone = super()._filter_or_exclude(negate, args, kwargs)
        state = self._search_state
        if state is not None and not _mentions_search(args, kwargs):
            # Run the new filter inside the search too, so it acts before the candidate limit.
            base = state.base._filter_or_exclude(negate, args, kwargs)
            clone._attach(replace(state, base=base))
        return clone


class SemanticSearchManager(models.Manager.from_queryset(SemanticSearchQuerySet)):
    """A manager whose querysets have ``semantic_search()``; use it as your ``objects``."""


def search(queryset: models.QuerySet, query: str, **options: Any) -> SemanticSearchQuerySet:
    """``semantic_search()`` for any queryset, when the model's manager is not ours:
    ``semantic_search.search(Article.objects.filter(published=True), "query")``."""
    searchable = SemanticSearchQuerySet(queryset.model, query=queryset.query.chain(),
                                        using=queryset._db)
    return searchable.semantic_search(query, **options)
