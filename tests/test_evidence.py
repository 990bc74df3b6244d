"""A short query's language from the index's document frequencies (pure decision)."""

from semantic_search.evidence import OPINIONS, decide, query_words

DOCUMENTS = {"en": 100, "de": 100, "es": 100}


def test_a_word_common_in_one_language_and_rare_elsewhere_decides_it():
    detection = decide(DOCUMENTS, {"en": [0, 1], "de": [30, 20], "es": [0, 0]}, 0.95)
    assert (detection.language, detection.method) == ("de", "index")
    assert detection.confidence > 0.99


def test_words_found_everywhere_alike_stay_unsure():
    detection = decide(DOCUMENTS, {"en": [5], "de": [6], "es": [5]}, 0.95)
    assert detection.language is None and detection.method == "index-unsure"


def test_words_no_document_holds_carry_no_evidence_whatever_langdetect_says():
    assert decide(DOCUMENTS, {"en": [0], "de": [0], "es": [0]}, 0.95, {"de": 0.99999}) is None


def test_langdetect_is_a_weak_second_opinion():
    frequencies = {"en": [40], "de": [3], "es": [0]}
    alone = decide(DOCUMENTS, frequencies, 0.95)
    assert alone.language is None
    assert decide(DOCUMENTS, frequencies, 0.95, {"en": 0.9, "de": 0.1}).language == "en"
    # ... but cannot overturn clear index evidence
    assert decide(DOCUMENTS, {"en": [0], "de": [40], "es": [0]}, 0.95,
                  {"en": 1.0}).language == "de"


def test_a_stop_word_of_a_language_is_evidence_for_it():
    detection = decide(DOCUMENTS, {"en": [0, 3], "de": [None, 3], "es": [0, 3]}, 0.95)
    assert detection.language == "de"


def test_languages_without_documents_are_not_candidates():
    detection = decide({"en": 100, "de": 0}, {"en": [3], "de": [0]}, 0.95)
    assert detection.language == "en"
    assert decide({"en": 0}, {"en": [0]}, 0.95) is None


def test_query_words_are_letters_only():
    assert query_words("Photosynthese 2024 -x Zellen!") == ["Photosynthese", "Zellen"]


def test_lingua_may_decide_alone_when_no_word_carries_evidence_langdetect_never():
    lingua = OPINIONS["lingua"]
    nothing = {"en": [0], "de": [0], "es": [0]}
    sure = decide(DOCUMENTS, nothing, None, {"de": 0.95, "en": 0.05}, lingua)
    assert (sure.language, sure.method) == ("de", "lingua")
    assert decide(DOCUMENTS, nothing, None, {"de": 0.6, "en": 0.4}, lingua) is None
    assert decide(DOCUMENTS, nothing, None, {"de": 0.95}, OPINIONS["langdetect"]) is None


def test_each_detector_brings_its_own_weight_and_threshold():
    frequencies = {"en": [20], "de": [5], "es": [0]}  # English evidence, not decisive alone
    for opinion in OPINIONS.values():
        assert decide(DOCUMENTS, frequencies, None, {}, opinion).language is None
    # The same lingua confidence tips it (weight 0.5, threshold 0.9), not langdetect's weaker
    # weight at its stricter threshold.
    leaning = {"en": 0.9, "de": 0.1}
    assert decide(DOCUMENTS, frequencies, None, leaning, OPINIONS["lingua"]).language == "en"
    assert decide(DOCUMENTS, frequencies, None, leaning, OPINIONS["langdetect"]).language is None


def test_lingua_probabilities_cover_the_allowed_languages_it_knows():
    from semantic_search.languages import second_opinion

    probabilities = second_opinion("Siegermächte Besatzungszonen", frozenset({"en", "de", "xx"}),
                                   "lingua")
    assert set(probabilities) == {"en", "de"} and probabilities["de"] > 0.9
    assert second_opinion("rideau", frozenset({"fr"}), "lingua") == {}  # one language: no say
    norwegian = second_opinion("Hvor mange innbyggere har byen", frozenset({"no", "da", "sv"}),
                               "lingua")  # lingua calls Norwegian "nb"
    assert set(norwegian) == {"no", "da", "sv"} and max(norwegian, key=norwegian.get) == "no"
