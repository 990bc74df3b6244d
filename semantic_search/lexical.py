"""BM25 over Postgres lexemes: postings written at index time, bounded top-impact reads at query
time. Plain SQL on standard Postgres (no extension that managed services lack).

Index side: from each entry's ``tsvector`` (built with the entry's language configuration and
field weights A-D), one posting per lexeme with its field-weighted frequency and its BM25
tf-component (the *impact*). Query side (see query.py): for each query lexeme, the postings with
the highest impact, scored ``sum(idf * impact)``.
"""

from __future__ import annotations

from django.db import connections

from . import conf

K1 = 1.2
B = 0.75


def field_weights() -> dict[str, float]:
    """Field weight label (A-D) -> multiplier of a term occurrence."""
    return {label: float(value) for label, value in conf.get_dict("FIELD_WEIGHTS").items()}


# Every writer of a content type's postings locks all its statistics rows first, in key order:
# two transactions then never hold one configuration's row while waiting for another's (an
# entry moving from German to English in one task and the reverse in another would deadlock).
_LOCK_STATS = """
SELECT 1 FROM semantic_search_lexicalstats
WHERE content_type_id IN (SELECT content_type_id FROM semantic_search_searchentry
                          WHERE id = ANY(%(ids)s))
ORDER BY content_type_id, search_config
FOR UPDATE
"""

_SUBTRACT_STATS = """
UPDATE semantic_search_lexicalstats s
SET documents = s.documents - old.n, total_length = s.total_length - old.len
FROM (
    SELECT content_type_id, search_config, count(*) AS n, sum(lexical_length) AS len
    FROM semantic_search_searchentry
    WHERE id = ANY(%(ids)s) AND lexical_length > 0
    GROUP BY content_type_id, search_config
) old
WHERE s.content_type_id = old.content_type_id AND s.search_config = old.search_config
"""

# Field-weighted frequency of every lexeme of the given entries.
_TERM_FREQUENCIES = """
SELECT e.id AS entry_id, e.content_type_id, e.search_config, u.lexeme,
       coalesce((SELECT sum(CASE w WHEN 'A' THEN %(a)s WHEN 'B' THEN %(b)s
                                   WHEN 'C' THEN %(c)s ELSE %(d)s END)
                 FROM unnest(u.weights) AS w), %(d)s) AS frequency
FROM semantic_search_searchentry e, unnest(e.search_vector) AS u
WHERE e.id = ANY(%(ids)s)
"""

_SET_LENGTHS = f"""
UPDATE semantic_search_searchentry e SET lexical_length = tf.length
FROM (SELECT entry_id, sum(frequency) AS length FROM ({_TERM_FREQUENCIES}) f GROUP BY entry_id) tf
WHERE e.id = tf.entry_id
"""

_ADD_STATS = """
INSERT INTO semantic_search_lexicalstats (content_type_id, search_config, documents, total_length)
SELECT content_type_id, search_config, count(*), sum(lexical_length)
FROM semantic_search_searchentry
WHERE id = ANY(%(ids)s) AND lexical_length > 0
GROUP BY content_type_id, search_config
ORDER BY content_type_id, search_config
ON CONFLICT (content_type_id, search_config) DO UPDATE
SET documents = semantic_search_lexicalstats.documents + EXCLUDED.documents,
    total_length = semantic_search_lexicalstats.total_length + EXCLUDED.total_length
"""

_INSERT_POSTINGS = f"""
WITH t AS ({_TERM_FREQUENCIES})
INSERT INTO semantic_search_lexicalterm
    (entry_id, content_type_id, search_config, lexeme, frequency, impact)
SELECT t.entry_id, t.content_type_id, t.search_config, t.lexeme, t.frequency,
       t.frequency * (%(k1)s + 1) / (t.frequency + %(k1)s * (1 - %(bm25_b)s + %(bm25_b)s
           * e.lexical_length / greatest(s.total_length / greatest(s.documents, 1), 1e-9)))
FROM t
JOIN semantic_search_searchentry e ON e.id = t.entry_id
JOIN semantic_search_lexicalstats s
  ON s.content_type_id = t.content_type_id AND s.search_config = t.search_config
"""


# Add (+1) or take away (-1) the given entries' postings from the document frequencies. Rows
# are upserted in key order; callers have already locked the LexicalStats rows of the same
# (content type, configuration), which serializes writers of a corpus before these rows.
_CHANGE_DOCUMENT_FREQUENCIES = """
INSERT INTO semantic_search_documentfrequency (content_type_id, search_config, lexeme, documents)
SELECT content_type_id, search_config, lexeme, %(sign)s * count(*)
FROM semantic_search_lexicalterm
WHERE entry_id = ANY(%(ids)s)
GROUP BY content_type_id, search_config, lexeme
ORDER BY content_type_id, search_config, lexeme
ON CONFLICT (content_type_id, search_config, lexeme) DO UPDATE
SET documents = semantic_search_documentfrequency.documents + EXCLUDED.documents
"""

def forget(cursor, entry_ids: list[int]) -> None:
    """Take entries out of the corpus statistics and drop their postings (before a rewrite or
    a delete; the caller holds the transaction, which keeps the statistics locked until it
    ends)."""
    cursor.execute(_LOCK_STATS, {"ids": entry_ids})
    cursor.execute(_SUBTRACT_STATS, {"ids": entry_ids})
    cursor.execute(_CHANGE_DOCUMENT_FREQUENCIES, {"ids": entry_ids, "sign": -1})
    cursor.execute(
        "DELETE FROM semantic_search_lexicalterm WHERE entry_id = ANY(%(ids)s)", {"ids": entry_ids}
    )
    cursor.execute(
        "UPDATE semantic_search_searchentry SET lexical_length = 0 WHERE id = ANY(%(ids)s)",
        {"ids": entry_ids},
    )


def write_postings(cursor, entry_ids: list[int]) -> None:
    """Postings and statistics from the entries' (already updated) tsvectors."""
    weights = field_weights()
    params = {
        "ids": entry_ids, "a": weights["A"], "b": weights["B"], "c": weights["C"],
        "d": weights["D"],
    }
    cursor.execute(_SET_LENGTHS, params)
    cursor.execute(_ADD_STATS, params)
    cursor.execute(_INSERT_POSTINGS, {**params, "k1": K1, "bm25_b": B})
    cursor.execute(_CHANGE_DOCUMENT_FREQUENCIES, {"ids": entry_ids, "sign": 1})


_REFRESH_IMPACTS = """
UPDATE semantic_search_lexicalterm t
SET impact = t.frequency * (%(k1)s + 1) / (t.frequency + %(k1)s * (1 - %(bm25_b)s + %(bm25_b)s
    * e.lexical_length / greatest(s.total_length / greatest(s.documents, 1), 1e-9)))
FROM semantic_search_searchentry e, semantic_search_lexicalstats s
WHERE e.id = t.entry_id AND s.content_type_id = t.content_type_id
  AND s.search_config = t.search_config
  AND (%(content_type)s::int IS NULL OR t.content_type_id = %(content_type)s::int)
"""

_REBUILD_DOCUMENT_FREQUENCIES = """
WITH counted AS (
    SELECT content_type_id, search_config, lexeme, count(*) AS documents
    FROM semantic_search_lexicalterm
    WHERE %(content_type)s::int IS NULL OR content_type_id = %(content_type)s::int
    GROUP BY content_type_id, search_config, lexeme
), gone AS (
    DELETE FROM semantic_search_documentfrequency d
    WHERE (%(content_type)s::int IS NULL OR d.content_type_id = %(content_type)s::int)
      AND NOT EXISTS (SELECT 1 FROM counted c WHERE c.content_type_id = d.content_type_id
                      AND c.search_config = d.search_config AND c.lexeme = d.lexeme)
)
INSERT INTO semantic_search_documentfrequency (content_type_id, search_config, lexeme, documents)
SELECT * FROM counted ORDER BY content_type_id, search_config, lexeme
ON CONFLICT (content_type_id, search_config, lexeme) DO UPDATE
SET documents = EXCLUDED.documents
WHERE semantic_search_documentfrequency.documents <> EXCLUDED.documents
"""


def refresh_impacts(using: str = "default", content_type_id: int | None = None) -> None:
    """Recompute postings' impacts with the current average document length, and document
    frequencies from the postings, for one content type or all. Impacts written early in a
    backfill used the average length of a smaller corpus; the reindex command runs this after
    large runs."""
    params = {"k1": K1, "bm25_b": B, "content_type": content_type_id}
    with connections[using].cursor() as cursor:
        cursor.execute(_REFRESH_IMPACTS, params)
        cursor.execute(_REBUILD_DOCUMENT_FREQUENCIES, params)
