"""Sentence splitting of a streamed LLM reply."""

from services.stages.llm.sentences import clean, sentences


def _pieces(text: str, size: int = 3):
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_splits_on_sentence_ends_as_they_arrive():
    text = "Hello there. I am Ada! How can I help? "
    out = list(sentences(_pieces(text), max_sentences=5))
    assert [c.text for c in out] == ["Hello there.", "I am Ada!", "How can I help?"]
    assert [c.index for c in out] == [0, 1, 2]


def test_stops_consuming_after_max_sentences():
    consumed = []

    def gen():
        for p in _pieces("One. Two. Three. Four. Five. ", 1):
            consumed.append(p)
            yield p

    out = list(sentences(gen(), max_sentences=2))
    assert [c.text for c in out] == ["One.", "Two."]
    assert out[-1].is_last
    assert "".join(consumed).startswith("One. Two.") and "Four" not in "".join(consumed)


def test_abbreviations_and_decimals_do_not_split():
    out = list(sentences(_pieces("Dr. Smith paid 3.5 dollars. Done."), max_sentences=5))
    assert [c.text for c in out] == ["Dr. Smith paid 3.5 dollars.", "Done."]


def test_first_chunk_may_end_at_a_clause():
    text = "Well, when we started the company in a small garage, we had no money at all. Yes."
    out = list(sentences(_pieces(text), max_sentences=5, first_clause_chars=40))
    assert out[0].text == "Well, when we started the company in a small garage,"
    assert out[1].text == "we had no money at all."


def test_trailing_text_without_end_mark_is_kept():
    out = list(sentences(_pieces("No full stop here"), max_sentences=3))
    assert [c.text for c in out] == ["No full stop here"]
    assert out[0].is_last


def test_clean_drops_markdown_and_collapses_space():
    assert clean("  **Bold**   and `code`\n") == "Bold and code"
