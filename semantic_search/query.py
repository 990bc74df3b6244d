"""The SQL of a search: lexical and vector candidates fused in one Postgres statement.

    WITH settings   -- hnsw.ef_search, iterative scans, max_scan_tuples: set_config(..., true)
         allowed, exact_gate, allowed_entries  -- filtered searches only (below)
         terms      -- the query's lexemes per configuration, with BM25 idf (DocumentFrequency)
         lexical    -- top-impact postings per lexeme, summed: BM25 (bounded cost)
         query_N    -- the query vector of each routed embedder
         vector_N   -- HNSW kNN per routed embedder, best chunk per object
         arms       -- every candidate with its rank and normalized score per arm
         fused      -- reciprocal rank fusion or a weighted combination
    SELECT ... FROM fused

The caller's queryset filters act before the candidate limit, in one of two ways chosen inside
the statement: ``allowed`` reads at most ``exact_threshold + 1`` of the queryset's primary keys;
if that is all there is and at most ``exact_share`` of the model's objects (a selective filter),
every arm ranks exactly those objects (exact distances over their chunks, BM25 over their
postings: no HNSW, no top-impact cut); otherwise each arm keeps its index scan with a correlated
``EXISTS`` on the candidate's object as a filter. Both are branches of a ``UNION ALL`` gated by
a one-time filter, so only one runs.

Settings are applied by ``set_config(..., is_local => true)`` in an InitPlan that the HNSW
scan's ORDER BY key depends on: they take effect before the scan starts, inside the statement's
own transaction, whether or not the caller opened one. All user input is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .indexes import vector_expression


@dataclass(frozen=True)
class VectorArm:
    embedder: str
    version: str
    dimension: int
    vector: tuple[float, ...]
    weight: float = 1.0
    languages: tuple[str, ...] | None = None  # documents it has vectors for (None: all)

    @property
    def label(self) -> str:
        return f"vector:{self.embedder}"


@dataclass(frozen=True)
class LexicalArm:
    configs: tuple[str, ...]  # text search configurations to read the query's lexemes with
    text: str  # the query's plain words (OR semantics)
    phrases: str = ""  # "quoted phrases" the user wrote: lexical hits must contain them
    weight: float = 1.0
    label: str = "lexical"


@dataclass(frozen=True)
class SearchPlan:
    """Everything the statement needs, decided before SQL is built (see routing.py)."""

    content_type_id: int
    lexical: LexicalArm | None
    vectors: tuple[VectorArm, ...]
    fusion: str = "rrf"  # "rrf" | "weighted"
    rrf_k: int = 60
    candidates: int = 100
    term_depth: int = 300
    ef_search: int = 100
    max_scan_tuples: int = 20_000
    exact_threshold: int = 2_000  # filtered searches over at most this many objects are exact
    exact_share: float = 0.1  # ... and at most this share of the model's indexed objects
    language: str | None = None  # restrict to documents in this language ("same")
    exclude_object: str | None = None  # "more like this": leave the source out
    exclusions: str = ""  # -words the user wrote (websearch syntax): no result contains them
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ObjectFilter:
    """The caller's queryset filters, twice: ``sql`` is a correlated condition on a candidate's
    object (``{object_id}`` to format), ``objects_sql`` selects the primary keys it keeps."""

    sql: str
    params: tuple
    objects_sql: str
    objects_params: tuple


EXACT_GATE = "(SELECT small FROM exact_gate)"


def _filtered_ctes(plan: SearchPlan, object_filter: ObjectFilter) -> tuple[str, list]:
    """``allowed_entries`` (the queryset's entries) and ``exact_gate``: are they few, in number
    and as a share of the model's indexed objects? (Reading each allowed entry's postings costs
    more than the top-impact walk once the filter keeps a large share.)"""
    sql = (
        "allowed AS MATERIALIZED (SELECT o.pk::text AS object_id"
        f" FROM ({object_filter.objects_sql}) AS o(pk) LIMIT %s),"
        " exact_gate AS MATERIALIZED (SELECT count(*) <= %s AND count(*) <= %s * ("
        "  SELECT coalesce(sum(documents), 0) FROM semantic_search_lexicalstats"
        "  WHERE content_type_id = %s) AS small FROM allowed),"
        " allowed_entries AS MATERIALIZED (SELECT e.id AS entry_id FROM allowed a"
        " JOIN semantic_search_searchentry e"
        "  ON e.content_type_id = %s AND e.object_id = a.object_id)"
    )
    params = [
        *object_filter.objects_params, plan.exact_threshold + 1, plan.exact_threshold,
        plan.exact_share, plan.content_type_id, plan.content_type_id,
    ]
    return sql, params


def _gated(approximate: tuple[str, list], exact: tuple[str, list]) -> tuple[str, list]:
    """Index-driven candidates unless the filter is selective, then the exact ranking."""
    return (
        f"SELECT * FROM ({approximate[0]}) approximate WHERE NOT {EXACT_GATE}"
        f" UNION ALL SELECT * FROM ({exact[0]}) exact WHERE {EXACT_GATE}",
        approximate[1] + exact[1],
    )


def _exists(object_filter: ObjectFilter | None, column: str) -> tuple[str, list]:
    if object_filter is None:
        return "", []
    return f" AND EXISTS ({object_filter.sql.format(object_id=column)} OFFSET 0)", list(
        object_filter.params
    )


def _settings_cte(plan: SearchPlan) -> tuple[str, list]:
    sql = (
        "settings AS MATERIALIZED (SELECT "
        "set_config('hnsw.ef_search', %s, true) AS ef, "
        "set_config('hnsw.iterative_scan', 'relaxed_order', true) AS scan, "
        "set_config('hnsw.max_scan_tuples', %s, true) AS cap)"
    )
    return sql, [str(max(plan.ef_search, plan.candidates)), str(plan.max_scan_tuples)]


def _lexical_ctes(plan: SearchPlan, object_filter: ObjectFilter | None) -> tuple[str, list]:
    arm = plan.lexical
    assert arm is not None
    language_sql, language_params = ("", [])
    if plan.language:
        language_sql, language_params = " AND p.language = %s", [plan.language]
    exists_sql, exists_params = _exists(object_filter, "p.object_id")
    exclude_sql, exclude_params = ("", [])
    if plan.exclude_object is not None:
        exclude_sql, exclude_params = " AND p.object_id <> %s", [plan.exclude_object]
    terms = (
        "terms AS MATERIALIZED ("
        " SELECT q.config, q.lexeme,"
        "  ln(1 + (st.documents - df.documents + 0.5) / (df.documents + 0.5)) AS idf"
        " FROM (SELECT DISTINCT c AS config, u.lexeme"
        "       FROM unnest(%s::text[]) AS c, unnest(to_tsvector(c::regconfig, %s)) AS u"
        "       LIMIT 64) q"
        " JOIN semantic_search_lexicalstats st"
        "   ON st.content_type_id = %s AND st.search_config = q.config"
        " JOIN semantic_search_documentfrequency df ON df.content_type_id = %s"
        "   AND df.search_config = q.config AND df.lexeme = q.lexeme AND df.documents > 0)"
    )
    terms_params = [list(arm.configs), arm.text, plan.content_type_id, plan.content_type_id]
    phrase_sql, phrase_params = "", []
    if arm.phrases:
        phrase_sql = (
            " JOIN semantic_search_searchentry pe ON pe.id = p.entry_id"
            " AND pe.search_vector @@ websearch_to_tsquery(pe.search_config::regconfig, %s)"
        )
        phrase_params = [arm.phrases]
    top_impact = (
        "SELECT p.entry_id, sum(t.idf * p.impact) AS score"
        " FROM terms t CROSS JOIN LATERAL ("
        "  SELECT p.entry_id, p.impact FROM semantic_search_lexicalterm p"
        "  WHERE p.content_type_id = %s AND p.search_config = t.config AND p.lexeme = t.lexeme"
        f"{language_sql}{exclude_sql}{exists_sql}"
        f"  ORDER BY p.impact DESC LIMIT %s) p{phrase_sql}"
        " GROUP BY p.entry_id ORDER BY score DESC, p.entry_id LIMIT %s",
        [plan.content_type_id, *language_params, *exclude_params, *exists_params,
         plan.term_depth, *phrase_params, plan.candidates],
    )
    body = top_impact
    if object_filter is not None:
        # One index probe per (allowed entry, query lexeme) on (entry_id, lexeme): a common
        # term's whole posting list is never read.
        exact = (
            "SELECT p.entry_id, sum(t.idf * p.impact) AS score"
            " FROM allowed_entries a CROSS JOIN terms t CROSS JOIN LATERAL ("
            "  SELECT p.entry_id, p.impact FROM semantic_search_lexicalterm p"
            "  WHERE p.entry_id = a.entry_id AND p.lexeme = t.lexeme"
            f"  AND p.search_config = t.config{language_sql}{exclude_sql} OFFSET 0) p{phrase_sql}"
            " GROUP BY p.entry_id ORDER BY score DESC, p.entry_id LIMIT %s",
            [*language_params, *exclude_params, *phrase_params, plan.candidates],
        )
        body = _gated(top_impact, exact)
    return f"{terms}, lexical AS MATERIALIZED ({body[0]})", terms_params + body[1]


def _vector_cte(
    index: int, arm: VectorArm, plan: SearchPlan, object_filter: ObjectFilter | None
) -> tuple[str, list]:
    expression = vector_expression(arm.dimension)
    conditions = ["c.embedder = %s", "c.embedder_version = %s"]
    params: list = [arm.embedder, arm.version]
    if plan.language:
        conditions.append("c.language = %s")
        params.append(plan.language)
    if plan.exclude_object is not None:
        conditions.append("c.object_id <> %s")
        params.append(plan.exclude_object)
    where = " AND ".join(conditions)
    distance = f"{expression} <=> (SELECT v FROM query_{index})"
    exists_sql, exists_params = _exists(object_filter, "c.object_id")
    nearest = (
        "SELECT n.entry_id, min(n.distance) AS distance FROM ("
        f"  SELECT c.entry_id, {distance} AS distance"
        "  FROM semantic_search_chunkembedding c"
        f"  WHERE {where} AND c.content_type_id = %s{exists_sql}"
        "  ORDER BY distance LIMIT %s) n"
        " GROUP BY n.entry_id ORDER BY distance, n.entry_id LIMIT %s",
        [*params, plan.content_type_id, *exists_params, plan.candidates * 2, plan.candidates],
    )
    body = nearest
    if object_filter is not None:
        exact = (
            f"SELECT c.entry_id, min({distance}) AS distance FROM allowed_entries a"
            f" JOIN semantic_search_chunkembedding c ON c.entry_id = a.entry_id WHERE {where}"
            " GROUP BY c.entry_id ORDER BY distance, c.entry_id LIMIT %s",
            [*params, plan.candidates],
        )
        body = _gated(nearest, exact)
    vector_literal = "[" + ",".join(repr(float(x)) for x in arm.vector) + "]"
    sql = (
        f"query_{index} AS MATERIALIZED"
        f" (SELECT %s::vector({arm.dimension}) AS v FROM settings),"
        f" vector_{index} AS MATERIALIZED ({body[0]})"
    )
    return sql, [vector_literal, *body[1]]


def _arm_select(name: str, label: str, score: str, order: str, weight: float) -> str:
    return (
        f"SELECT entry_id, '{label}'::text AS arm, {weight!r}::float8 AS weight,"
        f" {score} AS score, row_number() OVER (ORDER BY {order}, entry_id) AS rank,"
        f" ({score} - min({score}) OVER ())"
        f" / nullif(max({score}) OVER () - min({score}) OVER (), 0) AS norm FROM {name}"
    )


def _fused_score(plan: SearchPlan) -> tuple[str, list]:
    if plan.fusion == "weighted":
        return "sum(weight * coalesce(norm, 1.0))", []
    if plan.fusion == "rrf":
        return "sum(weight / (%s + rank))", [plan.rrf_k]
    raise ValueError(f"unknown fusion {plan.fusion!r}: use 'rrf' or 'weighted'")


def _applicable_weight(plan: SearchPlan) -> tuple[str, list]:
    """Per document, the total weight of the arms that can see it: the lexical arm reads only
    documents in its configurations, a monolingual embedder has vectors only for its languages.
    Fused scores are divided by it, so an arm that cannot see a document (another language, in a
    mixed-language corpus) does not count against it."""
    terms, params = [], []
    if plan.lexical is not None:
        terms.append(f"CASE WHEN e.search_config = ANY(%s) THEN {plan.lexical.weight!r} ELSE 0 END")
        params.append(list(plan.lexical.configs))
    for arm in plan.vectors:
        if arm.languages is None:
            terms.append(repr(arm.weight))
        else:
            terms.append(f"CASE WHEN e.language = ANY(%s) THEN {arm.weight!r} ELSE 0 END")
            params.append(list(arm.languages))
    return f"({' + '.join(terms)})", params


def build_search_sql(plan: SearchPlan, object_filter: ObjectFilter | None) -> tuple[str, list]:
    """One statement returning ``object_id, score, lexical_rank, lexical_score, vector_rank,
    vector_score, search_config, language`` for the fused candidates, best first."""
    if plan.lexical is None and not plan.vectors:
        raise ValueError("a search needs at least one arm")
    ctes, params, arms = [], [], []
    sql, cte_params = _settings_cte(plan)
    ctes.append(sql)
    params += cte_params
    if object_filter is not None:
        sql, cte_params = _filtered_ctes(plan, object_filter)
        ctes.append(sql)
        params += cte_params
    if plan.lexical is not None:
        sql, cte_params = _lexical_ctes(plan, object_filter)
        ctes.append(sql)
        params += cte_params
        arms.append(_arm_select("lexical", "lexical", "score", "score DESC", plan.lexical.weight))
    for index, arm in enumerate(plan.vectors):
        sql, cte_params = _vector_cte(index, arm, plan, object_filter)
        ctes.append(sql)
        params += cte_params
        arms.append(
            _arm_select(f"vector_{index}", arm.label, "(1 - distance)", "distance", arm.weight)
        )
    fused_score, fused_params = _fused_score(plan)
    applicable, applicable_params = _applicable_weight(plan)
    required_sql, required_params = "", []
    if plan.exclusions:
        required_sql = (
            " WHERE e.search_vector @@ websearch_to_tsquery(e.search_config::regconfig, %s)"
        )
        required_params = [plan.exclusions]
    statement = (
        f"WITH {', '.join(ctes)}, arms AS ({' UNION ALL '.join(arms)}),"
        f" fused AS (SELECT entry_id, {fused_score} AS score,"
        "  min(rank) FILTER (WHERE arm = 'lexical') AS lexical_rank,"
        "  max(score) FILTER (WHERE arm = 'lexical') AS lexical_score,"
        "  min(rank) FILTER (WHERE arm <> 'lexical') AS vector_rank,"
        "  max(score) FILTER (WHERE arm <> 'lexical') AS vector_score"
        "  FROM arms GROUP BY entry_id)"
        f" SELECT e.object_id, f.score / nullif({applicable}, 0) AS score, f.lexical_rank,"
        "  f.lexical_score, f.vector_rank,"
        "  f.vector_score, e.search_config, e.language"
        " FROM fused f JOIN semantic_search_searchentry e ON e.id = f.entry_id"
        f"{required_sql}"
    )
    return statement, params + fused_params + applicable_params + required_params
