"""Words for scripts written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese).

Postgres's parser cannot split such text into words: a whole run of Chinese characters comes out
as one lexeme (or none, depending on the database's locale), so a query matches nothing. The
documents and the queries are therefore rewritten the same way before ``to_tsvector`` and
``websearch_to_tsquery`` see them: each run of those scripts becomes its overlapping character
bigrams, separated by spaces ("北京大学" -> "北京 京大 大学"), a one-character run stays itself,
and every other character is left as it is. Bigrams at consecutive positions keep phrases
working ('"北京大学"' -> 北京 <-> 京大 <-> 大学). Needs no extension and no dictionary.
"""

from __future__ import annotations

import re
import unicodedata

# Han (with extensions and compatibility ideographs), kana (with the prolonged sound mark and
# half-width forms), Thai, Lao, Khmer and Myanmar: letters, marks and digits of those scripts.
_RUN = re.compile(
    "["
    "\u3005\u3007"  # 々 〇
    "\u3040-\u30ff\u31f0-\u31ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # Han
    "\uff66-\uff9f"  # half-width katakana
    "\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f"  # Thai, Lao, Khmer, Myanmar
    "]+"
)
# Inside a run: characters that are punctuation or symbols end a word (e.g. 、。・ are outside
# the ranges already; Thai ฯ and ๏ are signs).
_NOT_WORD = re.compile(r"[\u0e2f\u0e46\u0e4f\u0e5a\u0e5b\u30fb\u30a0]")
_QUOTED = re.compile(r'"[^"]*"')


def has_unsegmented(text: str) -> bool:
    """Does the text hold a character of a script written without spaces?"""
    return _RUN.search(text) is not None


def bigrams(run: str) -> list[str]:
    """The overlapping character bigrams of a run ("北京大学" -> 北京, 京大, 大学)."""
    if len(run) < 2:
        return [run] if run else []
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _runs(text: str) -> list[tuple[int, int, list[str]]]:
    """(start, end, bigrams) of each run of unsegmented script in ``text``."""
    found = []
    for match in _RUN.finditer(text):
        for word in _NOT_WORD.split(match.group()):
            if word:
                found.append(word)
    spans, position = [], 0
    for word in found:
        start = text.index(word, position)
        position = start + len(word)
        spans.append((start, position, bigrams(word)))
    return spans


def segment(text: str) -> str:
    """The text with each run of an unsegmented script replaced by its bigrams (space-separated,
    set off by spaces); unchanged when it has none."""
    text = unicodedata.normalize("NFKC", text) if has_unsegmented(text) else text
    spans = _runs(text)
    if not spans:
        return text
    pieces, position = [], 0
    for start, end, words in spans:
        pieces += [text[position:start], " ", " ".join(words), " "]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def segment_websearch(query: str) -> str:
    """``segment`` for websearch syntax: bigrams inside quotes stay a phrase, and a word outside
    quotes that becomes several bigrams is quoted, so ``-北京大学`` excludes the phrase
    北京 <-> 京大 <-> 大学 (not only its first bigram)."""
    if not has_unsegmented(query):
        return query
    pieces, position = [], 0
    for match in _QUOTED.finditer(query):
        pieces += [_quote_runs(query[position : match.start()]), segment(match.group())]
        position = match.end()
    pieces.append(_quote_runs(query[position:]))
    return "".join(pieces)


def _quote_runs(text: str) -> str:
    """Unquoted text: each whitespace-separated word that segments into several bigrams becomes a
    quoted phrase (its leading ``-`` kept outside the quotes)."""
    words = []
    for word in text.split(" "):
        sign = "-" if word.startswith("-") else ""
        body = segment(word[len(sign):]).split()
        words.append(f'{sign}"{" ".join(body)}"' if len(body) > 1 else word)
    return " ".join(words)
