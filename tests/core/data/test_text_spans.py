"""Random word spans: contiguous, 30-90% of the words, reproducible, short texts skipped."""

from edgeopt.core.data.text_spans import word_spans

TEXTS = ["one two three four five six seven eight nine ten", "too short", "a b c d"]


def test_spans_are_contiguous_pieces_of_their_text():
    spans = word_spans(TEXTS, 5, seed=1)
    assert len(spans) == 10  # 5 each of the two texts with 4+ words
    long = TEXTS[0].split()
    for s in spans[0::2]:
        w = s.split()
        assert 3 <= len(w) <= 9 and " ".join(w) in TEXTS[0]
        assert long.index(w[0]) + len(w) <= len(long)
    assert all(s in TEXTS[2] and len(s.split()) >= 2 for s in spans[1::2])
    assert len(set(spans[0::2])) > 2  # they differ


def test_spans_are_reproducible_and_zero_is_none():
    assert word_spans(TEXTS, 3, seed=7) == word_spans(TEXTS, 3, seed=7)
    assert word_spans(TEXTS, 3, seed=7) != word_spans(TEXTS, 3, seed=8)
    assert word_spans(TEXTS, 0) == []
