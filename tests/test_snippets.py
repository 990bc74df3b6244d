"""Snippets: sentence splitting, word evidence, windows and rendering (pure functions)."""

import pickle

from semantic_search.snippets import (
    LazyHighlight,
    _Batch,
    choose_window,
    lexical_evidence,
    query_terms,
    render,
    split_sentences,
)

TEXT = ("The Rhine rises in the Alps. It flows north through Germany! Does it reach the sea? "
        "It ends in the North Sea near Rotterdam.\nA new paragraph starts here.")


def texts(text, sentences):
    return [text[s.start : s.end] for s in sentences]


def test_sentences_split_on_latin_cjk_and_line_breaks():
    assert texts(TEXT, split_sentences(TEXT)) == [
        "The Rhine rises in the Alps.", "It flows north through Germany!",
        "Does it reach the sea?", "It ends in the North Sea near Rotterdam.",
        "A new paragraph starts here.",
    ]
    chinese = "莱茵河发源于阿尔卑斯山。它向北流经德国！最后注入北海"
    assert texts(chinese, split_sentences(chinese)) == [
        "莱茵河发源于阿尔卑斯山。", "它向北流经德国！", "最后注入北海"]


def test_sentences_of_a_span_stay_inside_it():
    start = TEXT.index("It flows")
    end = TEXT.index("It ends")
    assert texts(TEXT, split_sentences(TEXT, start, end)) == [
        "It flows north through Germany!", "Does it reach the sea?"]


def test_query_terms_drop_short_words_and_keep_numbers_and_cjk_bigrams():
    assert query_terms("Where does the Rhine end in 1815?") == ["where", "does", "rhine", "1815"]
    assert query_terms("北海在哪里") == ["北海", "海在", "在哪", "哪里"]


def test_word_evidence_matches_shared_stems():
    terms = query_terms("flowing Rhine")
    assert lexical_evidence("It flows through the Rhine valley", terms) == 0.5  # flows != flowing
    assert lexical_evidence("The rhine's flowing waters", terms) == 1.0
    assert lexical_evidence("Nothing here", terms) == 0.0


def test_window_grows_around_the_best_sentence_within_the_budget():
    sentences = split_sentences(TEXT)
    start, end = choose_window(TEXT, sentences, [0, 0, 0, 1, 0], max_chars=70)
    assert TEXT[start:end] == (
        "It ends in the North Sea near Rotterdam.\nA new paragraph starts here.")
    start, end = choose_window(TEXT, sentences, [0, 0, 0, 1, 0], max_chars=10)
    assert TEXT[start:end] == "It ends in the North Sea near Rotterdam."


def test_render_escapes_marks_and_shows_where_the_text_goes_on():
    text = "Intro. The <script> tag & the Rhine river. Outro."
    start, end = text.index("The"), text.index(" Outro")
    html = render(text, start, end, query_terms("rhine script"), max_chars=300)
    assert html == "… The &lt;<b>script</b>&gt; tag &amp; the <b>Rhine</b> river. …"


def test_render_cuts_a_long_sentence_around_its_first_match():
    text = " ".join(["filler"] * 100) + " Rhine " + " ".join(["after"] * 100)
    html = render(text, 0, len(text), ["rhine"], max_chars=80)
    assert "<b>Rhine</b>" in html and html.startswith("… ") and html.endswith(" …")
    assert len(html) < 120


def test_the_lazy_highlight_behaves_as_its_string_and_pickles_as_one():
    class Batch(_Batch):
        computed = 0

        def __init__(self):
            super().__init__([], "", None)

        def value(self, index):
            Batch.computed += 1
            return ["<b>a</b> b", "c"][index]

    batch = Batch()
    first, second = LazyHighlight(batch, 0), LazyHighlight(batch, 1)
    assert Batch.computed == 0
    assert "<b>" in first and first == "<b>a</b> b" and str(second) == "c"
    assert first.startswith("<b>") and len(second) == 1
    assert pickle.loads(pickle.dumps(first)) == "<b>a</b> b"
    assert type(pickle.loads(pickle.dumps(first))) is str


def test_meaning_is_spent_on_the_first_results_within_the_budget(monkeypatch):
    from semantic_search import snippets

    monkeypatch.setattr(snippets, "MAX_MEANING_SENTENCES", 5)
    work = [("t", [None] * n, [0.0] * n, [True] * n) for n in (3, 3, 2)]
    kept = snippets._within_budget(work)
    assert [sum(encode) for _, _, _, encode in kept] == [3, 0, 2]
