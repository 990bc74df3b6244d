"""Character bigrams for scripts written without spaces (pure functions)."""

from semantic_search.segmentation import bigrams, has_unsegmented, segment, segment_websearch


def test_bigrams_of_a_run():
    assert bigrams("北京大学") == ["北京", "京大", "大学"]
    assert bigrams("猫") == ["猫"]
    assert bigrams("") == []


def test_segment_rewrites_only_the_unsegmented_runs():
    assert segment("Latin words stay") == "Latin words stay"
    assert segment("NASUWT是什么？").split() == ["NASUWT", "是什", "什么", "?"]
    words = ["我在", "在北", "北京", "京大", "大学", "。", "你呢"]
    assert segment("我在北京大学。你呢").split() == words


def test_japanese_mixes_kanji_and_kana_and_half_width_forms_are_normalised():
    assert segment("東京タワー").split() == ["東京", "京タ", "タワ", "ワー"]
    assert segment("ﾀﾜｰ") == segment("タワー")


def test_thai_keeps_its_vowel_and_tone_marks_inside_bigrams():
    words = segment("ภาษาไทย").split()
    assert words[0] == "ภา" and len(words) == len("ภาษาไทย") - 1


def test_websearch_phrases_stay_phrases_and_exclusions_exclude_the_whole_word():
    assert segment_websearch('"北京大学"') == '" 北京 京大 大学 "'
    assert segment_websearch("-北京大学") == '-"北京 京大 大学"'
    assert segment_websearch("-猫") == "-猫"
    assert segment_websearch('-"plain words"') == '-"plain words"'


def test_has_unsegmented():
    assert has_unsegmented("résumé 東京")
    assert not has_unsegmented("Ελληνικά и русский")
