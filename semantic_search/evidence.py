"""A short query's language from the index: which languages' documents hold its words.

langdetect is right about one or two words only half the time, and overconfident when wrong
("Schrodinger cat zebra" is German at 0.99999). The model's own index knows better: for each
candidate language, how many of its documents contain each query word (read with that
language's text search configuration, so "Photosynthese" is looked up as German and English
lexemes), and whether the word is one of the language's stop words. The word's probability in
a language is its smoothed document frequency there; the languages' likelihoods, with a
detector's probabilities as a floored second opinion, give a posterior, and a language is
chosen only when it reaches the threshold (SHORT_QUERY_EVIDENCE).

The second opinion (SHORT_QUERY_DETECTOR) is lingua when installed (the ``lingua`` extra; a
detector built for short text), else langdetect. Each has its own weight and threshold,
measured on bench/bench_short_queries.py's development set (tuned on half of its items, checked
on the other half). Words no indexed document contains, in any language, carry no evidence (a
name, a typo): the query then stays unsure unless lingua alone is sure (``alone``); langdetect
alone is never enough.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connections

from .languages import SEARCH_CONFIGS, Detection, second_opinion

# The probability of a language's stop word in one of its documents (stop words are not
# indexed, and most documents hold the common ones).
STOP_WORD_SHARE = 0.5
# Additive smoothing of document frequencies (a word seen in no document of a language).
SMOOTHING = 0.1


@dataclass(frozen=True)
class Opinion:
    """How a detector's probabilities count: with exponent ``weight``, floored at ``floor``; the
    posterior a language needs (``threshold``, SHORT_QUERY_EVIDENCE "auto"); and the
    probability at which the detector decides alone when no word carries evidence (None:
    never)."""

    detector: str
    weight: float
    floor: float
    threshold: float
    alone: float | None


OPINIONS = {
    # langdetect is overconfident on a word or two: a weak opinion, never alone.
    "langdetect": Opinion("langdetect", weight=0.3, floor=0.01, threshold=0.95, alone=None),
    "lingua": Opinion("lingua", weight=0.5, floor=0.01, threshold=0.9, alone=0.8),
}
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)

_FREQUENCIES = """
SELECT c.language, w.position, st.documents,
       (SELECT coalesce(sum(df.documents), 0)
        FROM unnest(tsvector_to_array(v.lexemes)) AS l(lexeme)
        JOIN semantic_search_documentfrequency df ON df.content_type_id = %(content_type)s
         AND df.search_config = c.config AND df.lexeme = l.lexeme) AS documents_with_word,
       v.lexemes = ''::tsvector AS stop_word
FROM unnest(%(languages)s::text[], %(configs)s::text[]) AS c(language, config)
JOIN semantic_search_lexicalstats st
  ON st.content_type_id = %(content_type)s AND st.search_config = c.config AND st.documents > 0
CROSS JOIN unnest(%(words)s::text[]) WITH ORDINALITY AS w(word, position)
CROSS JOIN LATERAL (SELECT to_tsvector(c.config::regconfig, w.word) AS lexemes) v
"""


def query_words(text: str, limit: int = 4) -> list[str]:
    """The query's words (letters only, two or more), at most ``limit``."""
    return _WORD.findall(text)[:limit]


def decide(
    documents: dict[str, int],
    frequencies: dict[str, Sequence[int | None]],
    threshold: float | None = None,
    probabilities: dict[str, float] | None = None,
    opinion: Opinion = OPINIONS["langdetect"],
) -> Detection | None:
    """The language whose documents best explain the words, if its posterior reaches
    ``threshold`` (None: the opinion's). ``documents``: indexed documents per language;
    ``frequencies``: per language, the number of its documents holding each word (None: a stop
    word of the language); ``probabilities``: the second opinion's, counted as ``opinion``
    says. None: no evidence (no language indexed, or no word any document holds, and the
    detector is not sure enough alone)."""
    threshold = opinion.threshold if threshold is None else threshold
    languages = sorted(language for language, count in documents.items() if count > 0)
    if not languages:
        return None
    count = len(next(iter(frequencies.values()), ()))
    scores = dict.fromkeys(languages, 0.0)
    informative = 0
    for position in range(count):
        seen = [frequencies[language][position] for language in languages]
        if all(frequency == 0 for frequency in seen):
            continue  # no document in any language holds it: no evidence
        informative += 1
        for language, frequency in zip(languages, seen, strict=True):
            probability = STOP_WORD_SHARE if frequency is None else (
                (frequency + SMOOTHING) / (documents[language] + 2 * SMOOTHING))
            scores[language] += math.log(probability)
    if not informative:
        return _alone(probabilities, languages, opinion)
    if len(languages) == 1:
        return Detection(languages[0], 1.0, "index")
    if probabilities:
        for language in languages:
            scores[language] += opinion.weight * math.log(
                max(probabilities.get(language, 0.0), opinion.floor))
    top = max(scores.values())
    weights = {language: math.exp(score - top) for language, score in scores.items()}
    language = max(weights, key=weights.__getitem__)
    posterior = weights[language] / sum(weights.values())
    if posterior < threshold:
        return Detection(None, posterior, "index-unsure")
    return Detection(language, posterior, "index")


def _alone(probabilities: dict[str, float] | None, languages: Sequence[str], opinion: Opinion
           ) -> Detection | None:
    """The detector's own answer among ``languages`` when it may decide alone and is sure."""
    if opinion.alone is None or not probabilities:
        return None
    language, probability = max(((code, probabilities.get(code, 0.0)) for code in languages),
                                key=lambda item: item[1])
    return Detection(language, probability, opinion.detector) if (
        probability >= opinion.alone) else None


def short_query_language(
    text: str, candidates: Sequence[str], content_type_id: int, using: str,
    threshold: float | None = None, detector: str = "langdetect",
) -> Detection | None:
    """:func:`decide` on the model's index for ``text``'s first words among ``candidates`` (the
    languages with a text search configuration that the index holds), with ``detector``'s
    second opinion; None: no evidence."""
    words = query_words(text)
    languages = [code for code in candidates if code in SEARCH_CONFIGS]
    if not words or len(languages) < 2:
        return None
    documents, frequencies = index_frequencies(words, languages, content_type_id, using)
    return decide(documents, frequencies, threshold,
                  second_opinion(text, frozenset(languages), detector), OPINIONS[detector])


def index_frequencies(
    words: Sequence[str], languages: Sequence[str], content_type_id: int, using: str
) -> tuple[dict[str, int], dict[str, list[int | None]]]:
    """:func:`decide`'s ``documents`` and ``frequencies`` for ``words`` from the model's index,
    each word read with each language's configuration."""
    with connections[using].cursor() as cursor:
        cursor.execute(_FREQUENCIES, {
            "content_type": content_type_id, "languages": list(languages),
            "configs": [SEARCH_CONFIGS[code] for code in languages], "words": list(words),
        })
        rows = cursor.fetchall()
    documents: dict[str, int] = {}
    frequencies: dict[str, list[int | None]] = {}
    for language, position, indexed, holding, stop_word in rows:
        documents[language] = int(indexed)
        frequencies.setdefault(language, [0] * len(words))
        frequencies[language][position - 1] = None if stop_word else int(holding)
    return documents, frequencies
