"""Language detection (deterministic langdetect + script evidence) and text search configurations.

Documents and queries are detected the same way: restricted to the site's languages, with the
script of the text as evidence, and an unsure answer returned as ``None`` so callers fall back to
the multilingual model and the ``simple`` configuration.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

# ISO 639-1 -> PostgreSQL text search configuration (those shipped with PostgreSQL).
SEARCH_CONFIGS: dict[str, str] = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "da": "danish",
    "nl": "dutch", "en": "english", "et": "estonian", "fi": "finnish", "fr": "french",
    "de": "german", "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian",
    "ga": "irish", "it": "italian", "lt": "lithuanian", "ne": "nepali", "no": "norwegian",
    "nb": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian",
    "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}
FALLBACK_CONFIG = "simple"

# Languages whose words Postgres does not segment: the lexical arm cannot serve them.
UNSEGMENTED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my"})

# Scripts written without spaces between words (Postgres cannot split them into lexemes).
UNSEGMENTED_SCRIPTS = frozenset({"CJK", "HIRAGANA", "KATAKANA", "THAI"})

# Unicode scripts that point at a small set of languages.
SCRIPT_LANGUAGES: dict[str, frozenset[str]] = {
    "CYRILLIC": frozenset({"ru", "uk", "bg", "sr", "mk", "be", "kk"}),
    "GREEK": frozenset({"el"}),
    "ARABIC": frozenset({"ar", "fa", "ur"}),
    "HEBREW": frozenset({"he", "yi"}),
    "DEVANAGARI": frozenset({"hi", "mr", "ne"}),
    "THAI": frozenset({"th"}),
    "HANGUL": frozenset({"ko"}),
    "HIRAGANA": frozenset({"ja"}),
    "KATAKANA": frozenset({"ja"}),
    "CJK": frozenset({"zh", "ja"}),
    "ARMENIAN": frozenset({"hy"}),
    "TAMIL": frozenset({"ta"}),
}


# Below this many words, only the script can decide a language.
MIN_WORDS = 3


def search_config(language: str | None) -> str:
    """The PostgreSQL text search configuration for an ISO 639-1 code (``simple`` if none)."""
    return SEARCH_CONFIGS.get(normalize_code(language) or "", FALLBACK_CONFIG)


def config_language(config: str) -> str | None:
    """The language code of a text search configuration (``"greek"`` -> ``"el"``)."""
    return _CONFIG_LANGUAGES.get(config)


_CONFIG_LANGUAGES = {config: code for code, config in reversed(SEARCH_CONFIGS.items())}
_CODE = re.compile(r"[a-z]{2,3}")


@functools.cache
def _language_names() -> dict[str, str]:
    """Language names in English and in the language itself -> code, from Django's LANG_INFO
    (``"german"``, ``"deutsch"`` -> ``"de"``; ``"simplified chinese"`` -> ``"zh"``)."""
    from django.conf.locale import LANG_INFO

    names = {config: code for code, config in SEARCH_CONFIGS.items()}
    for key, info in LANG_INFO.items():
        code = key.split("-")[0]
        for name in (info.get("name"), info.get("name_local")):
            if name:
                names.setdefault(name.lower(), code)
                names.setdefault(name.lower().split(" (")[0], code)
    return names


def normalize_code(language: object) -> str | None:
    """An ISO 639 code from a language tag or name, or None for blank or unrecognizable input.

    ``"de-DE"`` / ``"de_DE"`` / ``"DE"`` -> ``"de"``; ``"zh-Hans"`` -> ``"zh"``; ``"German"`` /
    ``"Deutsch"`` -> ``"de"``; ``"klingon"`` or ``"\x00"`` -> None.
    """
    if language is None:
        return None
    text = str(language).strip().lower()
    if not text:
        return None
    named = _language_names().get(text)
    if named:
        return named
    code = text.replace("_", "-").split("-")[0]
    return code if _CODE.fullmatch(code) else None


def _script_of(char: str) -> str | None:
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    if name.startswith("CJK"):
        return "CJK"
    head = name.split(" ", 1)[0]
    if head in SCRIPT_LANGUAGES:
        return head
    if head == "LATIN":
        return "LATIN"
    return None


def dominant_script(text: str) -> tuple[str | None, float]:
    """The most frequent script among the text's letters and its share of them."""
    counts = Counter(s for s in map(_script_of, text) if s is not None)
    if not counts:
        return None, 0.0
    script, count = counts.most_common(1)[0]
    if script in {"HIRAGANA", "KATAKANA"} or (
        script == "CJK" and (counts["HIRAGANA"] + counts["KATAKANA"]) > 0
    ):
        script = "HIRAGANA"  # any kana means Japanese
    return script, count / sum(counts.values())


def unsegmented(text: str, language: str | None = None) -> bool:
    """Does the text hold words Postgres cannot split out (a language or at least two
    characters of a script written without spaces: "NASUWT是什么？" counts)?"""
    if language in UNSEGMENTED_LANGUAGES:
        return True
    return sum(_script_of(char) in UNSEGMENTED_SCRIPTS for char in text) >= 2


@dataclass(frozen=True)
class Detection:
    """A detected language (``None`` when unsure), its confidence and how it was decided."""

    language: str | None
    confidence: float
    method: str


_factory_lock = threading.Lock()
_factory = None


def _langdetect_factory():
    """langdetect's profiles, loaded once, with a fixed seed (deterministic answers)."""
    global _factory
    with _factory_lock:
        if _factory is None:
            from langdetect import detector_factory

            factory = detector_factory.DetectorFactory()
            factory.load_profile(detector_factory.PROFILES_DIRECTORY)
            factory.seed = 0
            _factory = factory
        return _factory


def _langdetect_probabilities(text: str, allowed: frozenset[str] | None) -> dict[str, float]:
    from langdetect.lang_detect_exception import LangDetectException

    factory = _langdetect_factory()
    detector = factory.create()
    if allowed:
        known = set(factory.get_lang_list())
        prior = {code: (1.0 if normalize_code(code) in allowed else 0.0) for code in known}
        if any(prior.values()):
            detector.set_prior_map(prior)
    detector.append(text)
    try:
        ranked = detector.get_probabilities()
    except LangDetectException:
        return {}
    probabilities: dict[str, float] = {}
    for item in ranked:
        code = normalize_code(item.lang)
        probabilities[code] = probabilities.get(code, 0.0) + item.prob
    return probabilities


_lingua_lock = threading.Lock()
_lingua_detectors: dict[frozenset[str], Any] = {}


def lingua_installed() -> bool:
    """Is the optional lingua detector importable?"""
    return importlib.util.find_spec("lingua") is not None


# Codes lingua knows under another name (Norwegian: Bokmål).
_LINGUA_CODES = {"no": "nb"}


def _lingua_probabilities(text: str, allowed: frozenset[str]) -> dict[str, float]:
    """lingua's confidence per ``allowed`` language it knows (one detector per set of
    languages, built once; it loads a language's models on first use)."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    ours: dict[str, str] = {}  # lingua's code -> ours ("nb" stays "nb" if both are allowed)
    for code in sorted(allowed):
        ours.setdefault(_LINGUA_CODES.get(code, code), code)
    with _lingua_lock:
        detector = _lingua_detectors.get(allowed)
        if detector is None:
            known = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
                     for code in ours if hasattr(IsoCode639_1, code.upper())]
            if len(known) < 2:
                return {}
            detector = LanguageDetectorBuilder.from_languages(*known).build()
            _lingua_detectors[allowed] = detector
    return {ours[value.language.iso_code_639_1.name.lower()]: value.value
            for value in detector.compute_language_confidence_values(text)}


def short_text_detector(name: str) -> str:
    """The detector a ``SHORT_QUERY_DETECTOR`` value means: "auto" is lingua when installed."""
    if name == "auto":
        return "lingua" if lingua_installed() else "langdetect"
    return name


def second_opinion(text: str, allowed: frozenset[str], detector: str) -> dict[str, float]:
    """``detector``'s ("lingua" or "langdetect") probabilities of the ``allowed`` languages."""
    if detector == "lingua":
        return _lingua_probabilities(text, allowed)
    return _langdetect_probabilities(text, allowed)


def script_candidates(text: str, allowed: list[str] | frozenset[str]) -> frozenset[str]:
    """The ``allowed`` languages written in the text's dominant script."""
    allowed_set = frozenset(filter(None, map(normalize_code, allowed)))
    script, _ = dominant_script(text)
    if script is None:
        return frozenset()
    if script == "LATIN":
        return frozenset(
            c for c in allowed_set if not any(c in v for v in SCRIPT_LANGUAGES.values()))
    return SCRIPT_LANGUAGES.get(script, frozenset()) & allowed_set


def detect_language(
    text: str,
    allowed: list[str] | frozenset[str] | None = None,
    threshold: float = 0.8,
) -> Detection:
    """Detect ``text``'s language among ``allowed`` (ISO 639-1 codes; None: any).

    Script evidence decides when a script maps to exactly one allowed language (Greek, Thai,
    Cyrillic on a site whose only Cyrillic language is Russian, ...). Otherwise langdetect
    decides if its probability reaches ``threshold``; below it the answer is ``None``.
    """
    allowed_set = frozenset(filter(None, map(normalize_code, allowed))) if allowed else None
    if not text or not any(ch.isalpha() for ch in text):
        return Detection(None, 0.0, "no-letters")
    script, share = dominant_script(text)
    if script and script != "LATIN" and share >= 0.5:
        candidates = SCRIPT_LANGUAGES[script]
        if allowed_set is not None:
            candidates = candidates & allowed_set
        if len(candidates) == 1:
            return Detection(next(iter(candidates)), share, "script")
        if not candidates:
            return Detection(None, 0.0, "script-not-allowed")
    elif script == "LATIN" and allowed_set is not None:
        latin = {c for c in allowed_set if not any(c in v for v in SCRIPT_LANGUAGES.values())}
        if len(latin) == 1:
            return Detection(next(iter(latin)), share, "script")
        if not latin:
            return Detection(None, 0.0, "script-not-allowed")
    if len(text.split()) < MIN_WORDS:
        # langdetect on one or two words is wrong about half the time, and overconfident.
        return Detection(None, 0.0, "too-short")
    probabilities = _langdetect_probabilities(text, allowed_set)
    if not probabilities:
        return Detection(None, 0.0, "undetectable")
    language, probability = max(probabilities.items(), key=lambda item: item[1])
    if allowed_set is not None and language not in allowed_set:
        return Detection(None, probability, "not-allowed")
    if probability < threshold:
        return Detection(None, probability, "unsure")
    return Detection(language, probability, "langdetect")
