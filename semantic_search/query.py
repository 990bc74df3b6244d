"""The SQL of a search: lexical and vector candidates fused in one Postgres statement.

    WITH settings   -- hnsw.ef_search, iterative scans, max_scan_tuples: set_config(..., true)
         allowed, exact_gate, allowed_entries  -- filtered searches only (below)
         terms      -- the query's lexemes per configuration, with BM25 idf (DocumentFrequency)
         lexical    -- top-impact postings per lexeme, summed: BM25 (bounded cost)
         query_N    -- the query vector of each routed embedder
         vector_N   -- HNSW kNN per routed embedder, best chunk per object
         arms       -- every candidate with its rank and normalized score per arm
         fused      -- reciprocal rank fusion or a weighted combination
    SELECT ... FROM fused  -- minus the candidates below the relevance floor

The caller's queryset filters act before the candidate limit, in one of two ways chosen inside
the statement: ``allowed`` reads at most ``exact_threshold + 1`` of the queryset's primary keys;
if that is all there is and at most ``exact_share`` of the model's objects (a selective filter),
every arm ranks exactly those objects (exact distances over their chunks, BM25 over their
postings: no HNSW, no top-impact cut); otherwise each arm keeps its index scan with a correlated
``EXISTS`` on the candidate's object as a filter. Both are branches of a ``UNION ALL`` gated by
a one-time filter, so only one runs.

Settings are applied by ``set_config(..., is_local => true)`` in an InitPlan that the HNSW
scan's ORDER BY key depends on: they take effect before the scan starts, inside the statement's
own transaction, whether or not the caller opened one. Every piece carries its own parameters
(see sql.py); all user input is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .centring import FOREIGN_SCAN_SHARE, shift_cte
from .indexes import DEFAULT_RESCORE, HALF, nearest_chunks, query_vector, vector_expression
from .sql import EMPTY, SQL, compose, join


@dataclass(frozen=True)
class VectorArm:
    embedder: str
    version: str
    dimension: int
    vector: tuple[float, ...]
    weight: float
    languages: tuple[str, ...] | None = None  # documents it has vectors for (None: all)
    # The relevance floor (see floor.py): the contrast a query must reach in this arm for its
    # hits to be matches; None: every hit is a match.
    gate: float | None = None
    index: str = HALF  # the embedder's index kind, and a binary index's re-scoring factor
    rescore: int = DEFAULT_RESCORE

    @property
    def label(self) -> str:
        return f"vector:{self.embedder}"


@dataclass(frozen=True)
class LexicalArm:
    # Text search configurations to read the query's lexemes with; None: every configuration
    # the model's index holds (the query's language is unknown).
    configs: tuple[str, ...] | None
    text: str  # the query's plain words (OR semantics)
    weight: float
    phrases: str = ""  # "quoted phrases" the user wrote: lexical hits must contain them


@dataclass(frozen=True)
class SearchPlan:
    """Everything the statement needs, decided before SQL is built (see routing.py, which
    fills the settings-derived fields from ``conf``: their defaults live there alone)."""

    content_type_id: int
    lexical: LexicalArm | None
    vectors: tuple[VectorArm, ...]
    fusion: str  # "rrf" | "weighted"
    rrf_k: int
    candidates: int
    term_depth: int
    ef_search: int
    max_scan_tuples: int
    exact_threshold: int  # filtered searches over at most this many objects are exact
    exact_share: float  # ... and at most this share of the model's indexed objects
    language: str | None = None  # restrict to documents in this language ("same")
    exclude_object: str | None = None  # "more like this": leave the source out
    exclusions: str = ""  # -words the user wrote (websearch syntax): no result contains them
    relative_floor: float = 0.0  # share of the query's contrast a vector match must reach
    text: str = ""  # the query's plain words (the floor asks whether the index knows any)
    # The query's words cannot be looked up (Chinese, Japanese, Thai: no lexemes): the floor
    # treats them as known.
    unsegmented: bool = False
    # The query's language (the route's), and whether a multilingual arm moves documents in
    # other languages onto its scale (see centring.py; off: SAME_LANGUAGE_FIRST).
    query_language: str | None = None
    centring: bool = True


class ObjectFilter(Protocol):
    """The caller's queryset filters, as SQL (see queryset.py)."""

    def condition(self, object_id: str) -> SQL:
        """A subquery that returns a row when the object whose primary key (as text) is the
        column ``object_id`` passes the filters."""

    def objects(self) -> SQL:
        """A query of the primary keys of the objects that pass the filters."""


EXACT_GATE = "(SELECT small FROM exact_gate)"


def _filtered_ctes(plan: SearchPlan, object_filter: ObjectFilter) -> SQL:
    """``allowed_entries`` (the queryset's entries) and ``exact_gate``: are they few, in number
    and as a share of the model's indexed objects? (Reading each allowed entry's postings costs
    more than the top-impact walk once the filter keeps a large share.)"""
    return compose(
        "allowed AS MATERIALIZED (SELECT o.pk::text AS object_id"
        " FROM ({objects}) AS o(pk) LIMIT {limit}),"
        " exact_gate AS MATERIALIZED (SELECT count(*) <= {threshold}"
        "  AND count(*) <= {share} * (SELECT coalesce(sum(documents), 0)"
        "   FROM semantic_search_lexicalstats WHERE content_type_id = {content_type})"
        "  AS small FROM allowed),"
        " allowed_entries AS MATERIALIZED (SELECT e.id AS entry_id FROM allowed a"
        " JOIN semantic_search_searchentry e"
        "  ON e.content_type_id = {content_type} AND e.object_id = a.object_id)",
        objects=object_filter.objects(), limit=plan.exact_threshold + 1,
        threshold=plan.exact_threshold, share=plan.exact_share,
        content_type=plan.content_type_id,
    )


def _gated(approximate: SQL, exact: SQL) -> SQL:
    """Index-driven candidates unless the filter is selective, then the exact ranking."""
    return compose(
        "SELECT * FROM ({approximate}) approximate WHERE NOT {gate}"
        " UNION ALL SELECT * FROM ({exact}) exact WHERE {gate}",
        approximate=approximate, exact=exact, gate=SQL(EXACT_GATE),
    )


def _matches(entry: str, websearch: str) -> SQL:
    """The entry's text matches ``websearch`` syntax in its own configuration; a query of stop
    words only ("-the", '"of the"') has no lexemes and is ignored, as Postgres ignores them."""
    query = compose("websearch_to_tsquery({entry}.search_config::regconfig, {text})",
                    entry=SQL(entry), text=websearch)
    return compose("(numnode({query}) = 0 OR {entry}.search_vector @@ {query})",
                   query=query, entry=SQL(entry))


def _passes_filter(object_filter: ObjectFilter | None, object_id: str) -> SQL:
    if object_filter is None:
        return EMPTY
    condition = object_filter.condition(object_id)
    return compose(" AND EXISTS ({condition} OFFSET 0)", condition=condition)


def _settings_cte(plan: SearchPlan) -> SQL:
    return compose(
        "settings AS MATERIALIZED (SELECT"
        " set_config('hnsw.ef_search', {ef_search}, true) AS ef,"
        " set_config('hnsw.iterative_scan', 'relaxed_order', true) AS scan,"
        " set_config('hnsw.max_scan_tuples', {max_scan_tuples}, true) AS cap)",
        ef_search=str(max(plan.ef_search, plan.candidates)),
        max_scan_tuples=str(plan.max_scan_tuples),
    )


def indexed_configs(content_type_id: int) -> SQL:
    """The text search configurations the model's lexical index holds."""
    return compose(
        "ARRAY(SELECT search_config FROM semantic_search_lexicalstats"
        " WHERE content_type_id = {content_type} AND documents > 0)",
        content_type=content_type_id,
    )


def lexical_configs(plan: SearchPlan) -> SQL:
    """The lexical arm's configurations, as a text[] expression."""
    assert plan.lexical is not None
    if plan.lexical.configs is None:
        return indexed_configs(plan.content_type_id)
    return compose("{configs}::text[]", configs=list(plan.lexical.configs))


def _posting_conditions(plan: SearchPlan) -> SQL:
    """Conditions on a posting's entry ``pe`` (empty, or `` AND ...``)."""
    language = compose(" AND pe.language = {language}", language=plan.language)
    excluded = compose(" AND pe.object_id <> {source}", source=plan.exclude_object)
    return (language if plan.language else EMPTY) + (
        excluded if plan.exclude_object is not None else EMPTY
    )


def _postings(conditions: SQL, filtered: SQL) -> SQL:
    """The postings table ``p``, joined to its entry ``pe`` when conditions ask about the
    entry's object or language (postings hold neither)."""
    if not conditions and not filtered:
        return SQL("semantic_search_lexicalterm p")
    return SQL("semantic_search_lexicalterm p JOIN semantic_search_searchentry pe"
               " ON pe.id = p.entry_id")


def _lexical_ctes(plan: SearchPlan, object_filter: ObjectFilter | None) -> SQL:
    arm = plan.lexical
    assert arm is not None
    terms = compose(
        "terms AS MATERIALIZED ("
        " SELECT q.config, q.lexeme,"
        "  ln(1 + (st.documents - df.documents + 0.5) / (df.documents + 0.5)) AS idf"
        " FROM (SELECT DISTINCT c AS config, u.lexeme"
        "       FROM unnest({configs}) AS c, unnest(to_tsvector(c::regconfig, {text})) AS u"
        "       LIMIT 64) q"
        " JOIN semantic_search_lexicalstats st"
        "   ON st.content_type_id = {content_type} AND st.search_config = q.config"
        " JOIN semantic_search_documentfrequency df ON df.content_type_id = {content_type}"
        "   AND df.search_config = q.config AND df.lexeme = q.lexeme AND df.documents > 0)",
        configs=lexical_configs(plan), text=arm.text, content_type=plan.content_type_id,
    )
    phrases = EMPTY
    if arm.phrases:
        phrases = compose(
            " JOIN semantic_search_searchentry pe ON pe.id = p.entry_id AND {matches}",
            matches=_matches("pe", arm.phrases),
        )
    conditions = _posting_conditions(plan)
    filtered = _passes_filter(object_filter, "pe.object_id")
    top_impact = compose(
        "SELECT p.entry_id, sum(t.idf * p.impact) AS score"
        " FROM terms t CROSS JOIN LATERAL ("
        "  SELECT p.entry_id, p.impact FROM {postings}"
        "  WHERE p.content_type_id = {content_type} AND p.search_config = t.config"
        "  AND p.lexeme = t.lexeme{conditions}{filtered}"
        "  ORDER BY p.impact DESC LIMIT {depth}) p{phrases}"
        " GROUP BY p.entry_id ORDER BY score DESC, p.entry_id LIMIT {candidates}",
        postings=_postings(conditions, filtered), content_type=plan.content_type_id,
        conditions=conditions, filtered=filtered, depth=plan.term_depth,
        phrases=phrases, candidates=plan.candidates,
    )
    body = top_impact
    if object_filter is not None:
        # One index probe per (allowed entry, query lexeme) on (entry_id, lexeme): a common
        # term's whole posting list is never read.
        exact = compose(
            "SELECT p.entry_id, sum(t.idf * p.impact) AS score"
            " FROM allowed_entries a CROSS JOIN terms t CROSS JOIN LATERAL ("
            "  SELECT p.entry_id, p.impact FROM {postings}"
            "  WHERE p.entry_id = a.entry_id AND p.lexeme = t.lexeme"
            "  AND p.search_config = t.config{conditions} OFFSET 0) p{phrases}"
            " GROUP BY p.entry_id ORDER BY score DESC, p.entry_id LIMIT {candidates}",
            postings=_postings(conditions, EMPTY), conditions=conditions, phrases=phrases,
            candidates=plan.candidates,
        )
        body = _gated(top_impact, exact)
    return compose("{terms}, lexical AS MATERIALIZED ({body})", terms=terms, body=body)


# A chunk's place in the document text.
SPAN = SQL('int4range(c.start, c."end")')

# How many times the first scan's depth the extra scan of a crowded vector arm reads (it skips
# the entries the first scan saw; the chunks of further long documents count against it).
CROWDED_DEPTH = 5


def _nearest_per_entry(rows: SQL, candidates: int, shift: SQL | None) -> SQL:
    """The ``candidates`` entries nearest the query among ``rows`` (``entry_id, distance,
    span, language`` per chunk), each with its nearest chunk's distance and span; ``shift``
    (a CTE of centring.shift_cte) moves each chunk's distance by its language's shift."""
    return compose(
        "SELECT n.entry_id, min(n.distance) AS distance,"
        " (array_agg(n.span ORDER BY n.distance))[1] AS span, min(n.language) AS language"
        " FROM (SELECT r.entry_id, {distance} AS distance, r.span, r.language"
        " FROM ({rows}) r) n"
        " GROUP BY n.entry_id ORDER BY distance, n.entry_id LIMIT {candidates}",
        rows=rows, candidates=candidates, distance=_shifted_distance(shift),
    )


def _shifted_distance(shift: SQL | None) -> SQL:
    """The distance of a chunk row ``r`` (``distance, language``) minus its language's shift
    (``shift``: a CTE of centring.shift_cte; None: the raw distance)."""
    if shift is None:
        return SQL("r.distance")
    return compose(
        "r.distance - coalesce((SELECT s.shift FROM {shift} s WHERE s.language = r.language),"
        " (SELECT s.shift FROM {shift} s WHERE s.language IS NULL), 0)", shift=shift)


def _chunk_conditions(arm: VectorArm, plan: SearchPlan) -> SQL:
    """Conditions of a vector arm beyond its embedder and model (empty, or `` AND ...``)."""
    conditions = EMPTY
    if plan.language:
        conditions += compose(" AND c.language = {language}", language=plan.language)
    if plan.exclude_object is not None:
        conditions += compose(" AND c.object_id <> {source}", source=plan.exclude_object)
    return conditions


def _vector_cte(
    index: int, arm: VectorArm, plan: SearchPlan, object_filter: ObjectFilter | None
) -> SQL:
    """``query_N`` (the query vector), ``vector_N`` (the arm's candidates) and, with the
    relevance floor, ``reference_N`` (see :func:`_reference_cte`)."""
    query = SQL(f"query_{index}")
    distance = compose(
        "{expression} <=> (SELECT v FROM {query})",
        expression=SQL(vector_expression(arm.dimension)), query=query,
    )
    base = compose(
        "c.embedder = {name} AND c.embedder_version = {version}"
        " AND c.content_type_id = {content_type}",
        name=arm.embedder, version=arm.version, content_type=plan.content_type_id,
    )
    where = _chunk_conditions(arm, plan)
    filtered = _passes_filter(object_filter, "c.object_id")
    chunks, depth = plan.candidates * 2, plan.candidates * 2 * CROWDED_DEPTH
    columns = compose("c.entry_id, {distance} AS distance, {span} AS span, c.language",
                      distance=distance, span=SPAN)
    select = compose("SELECT {columns}", columns=columns)

    def index_scan(conditions: SQL, limit: int, selected: SQL = columns) -> SQL:
        """The ``limit`` chunks nearest the query among those passing ``conditions``, through
        the embedder's index."""
        return nearest_chunks(selected, conditions, SQL(f"(SELECT v FROM {query.sql})"),
                              arm.dimension, limit, arm.index, arm.rescore)

    scan = index_scan(base + where + filtered, chunks)
    shared = where.sql == "" and object_filter is None  # the arm's scan is the unfiltered one
    ctes = [compose(
        "{query} AS MATERIALIZED (SELECT {vector} AS v FROM settings)",
        query=query, vector=query_vector(arm.vector, arm.dimension),
    )]
    scan_name = SQL(f"scan_{index}" if shared else f"hits_{index}")
    ctes.append(compose("{name} AS MATERIALIZED ({scan})", name=scan_name, scan=scan))
    shift, foreign = None, EMPTY
    if plan.centring and arm.languages is None:
        shift = SQL(f"shift_{index}")
        ctes.append(shift_cte(shift, query, plan.content_type_id, arm.embedder, arm.version,
                              plan.query_language))
        if plan.query_language:
            # A query's own language can fill the scan: the nearest chunks in other languages
            # too, when the scan holds fewer than half of them and the index holds enough.
            foreign_wanted = compose(
                "(SELECT count(*) FILTER (WHERE language IS DISTINCT FROM {language})"
                "  < {half} FROM {name})"
                " AND (SELECT sum(documents) FILTER (WHERE language <> {language})"
                "  >= {share} * sum(documents) FROM {shift}) AND ",
                language=plan.query_language, half=chunks // 2, name=scan_name, shift=shift,
                share=FOREIGN_SCAN_SHARE,
            )
            other_language = compose(" AND c.language <> {language}",
                                     language=plan.query_language)
            ctes.append(compose(
                "foreign_{index} AS MATERIALIZED ({scan})", index=SQL(str(index)),
                scan=index_scan(foreign_wanted + base + where + filtered + other_language, chunks),
            ))
            foreign = compose(" UNION ALL SELECT * FROM foreign_{index}", index=SQL(str(index)))
    # Long documents can fill the scan with their own chunks: when it holds fewer distinct
    # entries than candidates (and was full), one more scan reads the nearest chunks of the
    # entries not seen yet, deep enough to look past more long documents. Never runs otherwise
    # (a one-time filter).
    crowded_name = SQL(f"crowded_{index}")
    was_crowded = compose(
        "(SELECT count(DISTINCT entry_id) < {candidates} AND count(*) = {chunks} FROM {name})",
        candidates=plan.candidates, chunks=chunks, name=scan_name,
    )
    unseen = compose(" AND c.entry_id <> ALL(ARRAY(SELECT DISTINCT entry_id FROM {name}))",
                     name=scan_name)
    crowded = index_scan(was_crowded + SQL(" AND ") + base + where + filtered + unseen, depth)
    ctes.append(compose("{name} AS MATERIALIZED ({crowded})", name=crowded_name,
                        crowded=crowded))
    # Near-identical chunks (a long document repeating itself) can cut the rest of the graph
    # off from the scan: when the extra scan ran dry before its depth and the candidates are
    # still short, the remaining entries are ranked exactly (without the index).
    seen = compose("(SELECT entry_id FROM {scan} UNION SELECT entry_id FROM {crowded})",
                   scan=scan_name, crowded=crowded_name)
    rest = _nearest_per_entry(compose(
        "{select} FROM semantic_search_chunkembedding c"
        "  WHERE {was_crowded} AND (SELECT count(*) < {depth} FROM {crowded})"
        "  AND (SELECT count(*) < {candidates} FROM {seen} s)"
        "  AND {base}{where}{filtered} AND c.entry_id <> ALL(ARRAY{seen})",
        select=select, was_crowded=was_crowded, depth=depth, crowded=crowded_name,
        candidates=plan.candidates, seen=seen, base=base, where=where, filtered=filtered,
    ), plan.candidates, None)
    nearest = _nearest_per_entry(compose(
        "SELECT * FROM {name} UNION ALL SELECT * FROM {crowded}{foreign}"
        " UNION ALL ({rest})",
        name=scan_name, crowded=crowded_name, foreign=foreign, rest=rest,
    ), plan.candidates, shift)
    body = nearest
    if object_filter is not None:
        exact = _nearest_per_entry(compose(
            "{select} FROM allowed_entries a"
            "  JOIN semantic_search_chunkembedding c ON c.entry_id = a.entry_id"
            "  WHERE {base}{where}",
            select=select, base=base, where=where,
        ), plan.candidates, shift)
        body = _gated(nearest, exact)
    ctes.append(compose("vector_{index} AS MATERIALIZED ({body})", index=SQL(str(index)),
                        body=body))
    if arm.gate is not None:
        ctes.append(_reference_cte(index, shared, object_filter, shift, index_scan(
            base, chunks, compose("{distance} AS distance, c.language", distance=distance))))
    return join(", ", ctes)


def _reference_cte(
    index: int, shared: bool, object_filter: ObjectFilter | None, shift: SQL | None,
    unfiltered_scan: SQL,
) -> SQL:
    """``reference_N``: the floor's levels for vector arm N. ``best`` and ``background`` (the
    gate: does the query stand out at all?) come from the model's vectors, unfiltered, as the
    gate was calibrated; ``reach_best`` and ``reach_background`` (the relative cut) from what
    the arm can return: its own scan under the queryset's filter and language restriction, or
    its exact ranking when the filter is selective. Otherwise documents the filter excludes
    would set the bar for the ones it keeps (an English question filtered to Chinese results
    lost its Chinese paragraph below the English ones)."""

    def levels(rows: SQL, shifted: SQL) -> SQL:
        return compose(
            "SELECT 1 - min(distance) AS best,"
            " 1 - percentile_cont(0.5) WITHIN GROUP (ORDER BY distance) AS background"
            " FROM (SELECT {shifted} AS distance FROM {rows} r) r",
            shifted=shifted, rows=rows,
        )

    shifted = _shifted_distance(shift)
    if shared:  # the arm returns from the unfiltered scan: one set of levels serves both
        return compose(
            "reference_{index} AS MATERIALIZED (SELECT g.best, g.background,"
            " g.best AS reach_best, g.background AS reach_background FROM ({gate}) g)",
            index=SQL(str(index)), gate=levels(SQL(f"scan_{index}"), shifted),
        )
    gate = levels(compose("({scan})", scan=unfiltered_scan), shifted)
    reach = levels(SQL(f"hits_{index}"), shifted)
    if object_filter is not None:  # vector_N holds the exact ranking's shifted distances
        reach = _gated(reach, levels(SQL(f"vector_{index}"), SQL("r.distance")))
    return compose(
        "reference_{index} AS MATERIALIZED (SELECT g.best, g.background,"
        " h.best AS reach_best, h.background AS reach_background"
        " FROM ({gate}) g CROSS JOIN ({reach}) h)",
        index=SQL(str(index)), gate=gate, reach=reach,
    )


def _arm_select(
    source: str, label: str, score: str, order: str, weight: float, floor: SQL, span: str
) -> SQL:
    """One arm's candidates: rank, raw score, score min-max normalized within the arm, whether
    the candidate clears the arm's relevance floor, and the span of its best chunk (vector
    arms)."""
    return compose(
        "SELECT entry_id, {label}::text AS arm, {weight}::float8 AS weight, {span} AS span,"
        " {score} AS score, row_number() OVER (ORDER BY {order}, entry_id) AS rank,"
        " ({score} - min({score}) OVER ())"
        " / nullif(max({score}) OVER () - min({score}) OVER (), 0) AS norm,"
        " {floor} AS match FROM {source}",
        label=label, weight=weight, score=SQL(score), order=SQL(order), floor=floor,
        source=SQL(source), span=SQL(span),
    )


def _fused_score(plan: SearchPlan) -> SQL:
    if plan.fusion == "weighted":
        return SQL("sum(weight * coalesce(norm, 1.0))")
    if plan.fusion == "rrf":
        return compose("sum(weight / ({k} + rank))", k=plan.rrf_k)
    raise ValueError(f"unknown fusion {plan.fusion!r}: use 'rrf' or 'weighted'")


def _visibility(plan: SearchPlan) -> list[tuple[str, float, SQL]]:
    """Per arm: its label, its weight, and whether it can see the document ``e``: the lexical
    arm reads only documents in its configurations, a monolingual embedder has vectors only for
    its languages."""
    arms = []
    if plan.lexical is not None:
        arms.append(("lexical", plan.lexical.weight,
                     compose("e.search_config = ANY({configs})", configs=lexical_configs(plan))))
    for arm in plan.vectors:
        sees = SQL("true") if arm.languages is None else compose(
            "e.language = ANY({languages})", languages=list(arm.languages))
        arms.append((arm.label, arm.weight, sees))
    return arms


def _applicable_weight(visibility: list[tuple[str, float, SQL]]) -> SQL:
    """Per document, the total weight of the arms that can see it. Fused scores are divided by
    it, so an arm that cannot see a document (another language, in a mixed-language corpus)
    does not count against it."""
    return compose("({terms})", terms=join(" + ", (
        compose("CASE WHEN {sees} THEN {weight}::float8 ELSE 0 END", sees=sees, weight=weight)
        for _, weight, sees in visibility
    )))


def _per_arm_columns(visibility: list[tuple[str, float, SQL]]) -> tuple[SQL, SQL]:
    """``raw_N`` (each arm's own score, in ``fused``) and ``sees_N`` (whether the arm can see
    the document, in ``scored``): what :func:`_dominated_cap` compares."""
    raw = join("", (
        compose(", max(score) FILTER (WHERE arm = {label}) AS raw_{i}", label=label,
                i=SQL(str(i)))
        for i, (label, _, _) in enumerate(visibility)
    ))
    sees = join("", (
        compose(", {sees} AS sees_{i}, f.raw_{i}", sees=condition, i=SQL(str(i)))
        for i, (_, _, condition) in enumerate(visibility)
    ))
    return raw, sees


# Rank a document that some arm cannot see below the documents that dominate it (see
# _dominated_cap). Always on; bench/bench_fusion.py turns it off to show the ranking before it.
CAP_DOMINATED = True


def _dominated_cap(count: int) -> SQL:
    """For a document that some arm cannot see (``s``, e.g. in another language), the lowest
    score of the documents that see every arm it sees and more, and score at least as high
    in each of its arms (``d``): it is ranked just below them (documents capped by the same
    ones keep their own order). So a document in the query's language is never ranked below
    a foreign one that is weaker on every arm that applies to both, whatever its own arms
    (e.g. no keyword match) took away from its score. ``count``: the number of arms."""
    covers = join(" AND ", (
        compose("(NOT s.sees_{i} OR (d.sees_{i} AND coalesce(d.raw_{i}, '-Infinity')"
                " >= coalesce(s.raw_{i}, '-Infinity')))", i=SQL(str(i)))
        for i in range(count)
    ))
    more = join(" OR ", (compose("(d.sees_{i} AND NOT s.sees_{i})", i=SQL(str(i)))
                         for i in range(count)))
    sees_all = join(" AND ", (SQL(f"s.sees_{i}") for i in range(count)))
    return compose(
        "CASE WHEN NOT ({sees_all}) THEN (SELECT min(d.score) FROM scored d"
        " WHERE ({more}) AND {covers}) - 1e-6 * (2 - s.score) END",
        sees_all=sees_all, more=more, covers=covers,
    )


def _known_words_cte(plan: SearchPlan) -> SQL:
    """``known``: does the model's index hold any of the query's lexemes, in any of its
    configurations? (Nonsense has none; see floor.py.)"""
    if plan.unsegmented:
        return SQL("known AS (SELECT true AS found)")
    return compose(
        "known AS MATERIALIZED (SELECT EXISTS ("
        " SELECT 1 FROM unnest({configs}) AS c(config),"
        "  unnest(to_tsvector(c.config::regconfig, {text})) AS u,"
        "  semantic_search_documentfrequency df"
        " WHERE df.content_type_id = {content_type} AND df.search_config = c.config"
        "  AND df.lexeme = u.lexeme AND df.documents > 0) AS found)",
        configs=indexed_configs(plan.content_type_id), text=plan.text,
        content_type=plan.content_type_id,
    )


def _vector_match(index: int, arm: VectorArm, plan: SearchPlan) -> SQL:
    """A vector hit is a match when the query means something here (the index knows one of its
    words, or it stands out in the arm: contrast >= gate) and the hit lies in the upper part of
    the query's contrast (see floor.py)."""
    if arm.gate is None:
        return SQL("true")
    return compose(
        "coalesce((SELECT ((SELECT found FROM known) OR best - background >= {gate})"
        " AND (1 - distance) >= reach_background + {share} * (reach_best - reach_background)"
        " FROM reference_{index}), false)",
        gate=float(arm.gate), share=float(plan.relative_floor), index=SQL(str(index)),
    )


def build_search_sql(plan: SearchPlan, object_filter: ObjectFilter | None) -> SQL:
    """One statement returning ``object_id, score, lexical_rank, lexical_score, vector_rank,
    vector_score, search_config, language, chunk_start, chunk_end, arms`` for the fused
    candidates (the chunk: the character span of the best-ranked vector arm's nearest chunk;
    arms: ``{label: {"rank": .., "score": ..}}`` for each arm that found the candidate)."""
    if plan.lexical is None and not plan.vectors:
        raise ValueError("a search needs at least one arm")
    ctes, arms = [_settings_cte(plan)], []
    if object_filter is not None:
        ctes.append(_filtered_ctes(plan, object_filter))
    if plan.lexical is not None:
        ctes.append(_lexical_ctes(plan, object_filter))
        # A keyword match is a match: BM25 only scores documents that contain a query lexeme.
        arms.append(_arm_select("lexical", "lexical", "score", "score DESC",
                                plan.lexical.weight, SQL("true"), "NULL::int4range"))
    if any(arm.gate is not None for arm in plan.vectors):
        ctes.append(_known_words_cte(plan))
    for index, arm in enumerate(plan.vectors):
        ctes.append(_vector_cte(index, arm, plan, object_filter))
        arms.append(_arm_select(f"vector_{index}", arm.label, "(1 - distance)", "distance",
                                arm.weight, _vector_match(index, arm, plan), "span"))
    required = EMPTY
    if plan.exclusions:
        required = compose(" AND {matches}", matches=_matches("e", plan.exclusions))
    visibility = _visibility(plan)
    raw_scores, per_arm, cap = EMPTY, EMPTY, SQL("NULL")
    if CAP_DOMINATED:
        raw_scores, per_arm = _per_arm_columns(visibility)
        cap = _dominated_cap(len(visibility))
    return compose(
        "WITH {ctes}, arms AS ({arms}),"
        " fused AS (SELECT entry_id, {fused} AS score,"
        "  min(rank) FILTER (WHERE arm = 'lexical') AS lexical_rank,"
        "  max(score) FILTER (WHERE arm = 'lexical') AS lexical_score,"
        "  min(rank) FILTER (WHERE arm <> 'lexical') AS vector_rank,"
        "  max(score) FILTER (WHERE arm <> 'lexical') AS vector_score,"
        "  (array_agg(span ORDER BY rank) FILTER (WHERE span IS NOT NULL))[1] AS span,"
        "  jsonb_object_agg(arm, jsonb_build_object('rank', rank, 'score', score)) AS arms"
        "{raw_scores}"
        "  FROM arms GROUP BY entry_id HAVING bool_or(match)),"
        " scored AS MATERIALIZED (SELECT e.object_id, f.score / nullif({applicable}, 0) AS score,"
        "  f.lexical_rank, f.lexical_score, f.vector_rank, f.vector_score, e.search_config,"
        "  e.language, f.span, f.arms{per_arm}"
        "  FROM fused f JOIN semantic_search_searchentry e ON e.id = f.entry_id"
        "  WHERE true{required})"
        " SELECT s.object_id, least(s.score, {cap}) AS score, s.lexical_rank, s.lexical_score,"
        "  s.vector_rank, s.vector_score, s.search_config, s.language,"
        "  lower(s.span) AS chunk_start, upper(s.span) AS chunk_end, s.arms FROM scored s",
        ctes=join(", ", ctes), arms=join(" UNION ALL ", arms), fused=_fused_score(plan),
        raw_scores=raw_scores, applicable=_applicable_weight(visibility), per_arm=per_arm,
        required=required, cap=cap,
    )
