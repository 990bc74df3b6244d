"""Showing search results in a terminal: column widths and HTML highlights as plain lines."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable

_BOLD_TAG = re.compile(r"(</?b>)", re.IGNORECASE)


def display_width(text: str) -> int:
    """Terminal columns of ``text``: wide (e.g. CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, ending in "…" when cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 1  # the ellipsis takes one column
    for ch in text:
        used += display_width(ch)
        if used > width:
            break
        kept.append(ch)
    return "".join(kept) + "…"


def pad(text: str, width: int) -> str:
    """``text`` cut or padded with spaces to exactly ``width`` columns."""
    text = truncate(text, width)
    return text + " " * (width - display_width(text))


def render_highlight(snippet_html: str, bold: Callable[[str], str], width: int) -> str:
    """An HTML highlight as one line of at most ``width`` columns: ``<b>`` marks through
    ``bold`` (terminal bold, or ``str`` to drop them), other tags dropped, entities decoded,
    whitespace collapsed."""
    pieces, used, in_bold = [], 0, False
    for part in _BOLD_TAG.split(snippet_html):
        if _BOLD_TAG.fullmatch(part):
            in_bold = not part.startswith("</")
            continue
        text = truncate(re.sub(r"\s+", " ", html.unescape(strip_tags(part))), width - used)
        used += display_width(text)
        pieces.append(bold(text) if in_bold and text.strip() else text)
        if used >= width:
            break
    return "".join(pieces).strip()


def strip_tags(text: str) -> str:
    return re.sub(r"<[^>]*>", "", text)
