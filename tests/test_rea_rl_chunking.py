"""REA-RL chunking (aha.overthinking.chunking) and the cut rules (aha.algo.overthinking), on hand-made
texts and planted probability series."""

from __future__ import annotations

import math

import pytest
import torch

from aha.algo.overthinking import (
    cut_cap,
    cut_points,
    label_positions,
    result_probability,
    zero_unsolved_groups,
)
from aha.overthinking.chunking import Chunk, paragraphs, split_chunks, windows


def words(text: str) -> int:
    """A token counter for hand-made texts: one token per whitespace-separated word."""
    return len(text.split())


def para(n: int, end: str = ".") -> str:
    """A paragraph of n words whose last character is `end` ("" for none)."""
    return " ".join(["w"] * (n - 1) + ["w" + end])


def sizes(chunks) -> list[int]:
    return [c.tokens for c in chunks]


# ----------------------------------------------------------------------------- chunking


def test_paragraphs_split_on_two_or_more_newlines_only():
    text = "a b\nc d\n\n\ne f\n\n   \n\ng h  \n\n"
    spans = paragraphs(text)
    # "a b\nc d" stays whole (one newline is no separator); the blank piece is dropped; trailing
    # whitespace is stripped before splitting
    assert [text[a:b] for a, b in spans] == ["a b\nc d", "e f", "g h"]


@pytest.mark.parametrize("parts, expected", [
    # 20 + 12 = 32 reaches min_tokens at a sentence end: the chunk closes with the part in it
    ([para(20), para(12)], [32]),
    # 20 + 11 = 31 < 32: no close at the period, both parts stay in one (last) chunk
    ([para(20), para(11)], [31]),
    # the part reaching 32 does not end in an ender: no close; the next one does (32 + 5 >= 32)
    ([para(20), para(12, ","), para(5)], [37]),
    # "?" and "!" and ";" are enders too
    ([para(32, "?"), para(32, "!"), para(32, ";")], [32, 32, 32]),
    # an ender followed by spaces still counts (the part is stripped before the check)
    ([para(32) + "   ", para(3)], [32, 3]),
    # no sentence end: 100 + 27 = 127 < 128 joins; + 1 more would reach 128 -> new chunk starts with it
    ([para(100, ""), para(27, ""), para(1, "")], [127, 1]),
    # a part that alone reaches 128 into an empty chunk becomes a chunk of its own, never split
    ([para(200, "")], [200]),
    # the sentence-end rule is checked first: a part ending in "." joins even past 128 (140)
    ([para(10, ""), para(130)], [140]),
    # a long part that starts a chunk is followed by more text: the chunk closes when the next part
    # pushes it to 128 again
    ([para(10, ""), para(130, ""), para(5, "")], [10, 130, 5]),
])
def test_split_chunks_boundaries(parts, expected):
    chunks = split_chunks("\n\n".join(parts), words)
    assert sizes(chunks) == expected


def test_chunk_text_and_spans_point_into_the_source():
    text = para(20) + "\n\n\n" + para(12) + "\n\n" + para(3, "")
    chunks = split_chunks(text, words)
    assert len(chunks) == 2
    # member paragraphs joined by exactly two newlines, whatever the separator was
    assert chunks[0].text == para(20) + "\n\n" + para(12)
    assert [text[a:b] for a, b in chunks[0].spans] == [para(20), para(12)]
    assert text[chunks[1].start:chunks[1].end] == para(3, "")
    assert chunks[1].end == len(text)


def test_split_chunks_options_and_empty_input():
    assert split_chunks("", words) == []
    assert split_chunks("\n\n  \n\n", words) == []
    # smaller budgets: close at 3 tokens on a sentence end, start a new chunk from 5
    text = "\n\n".join([para(2), para(2), para(4, ""), para(2, "")])
    assert sizes(split_chunks(text, words, min_tokens=3, max_tokens=5)) == [4, 4, 2]
    # only "," ends a sentence now
    assert sizes(split_chunks("\n\n".join([para(40, ","), para(3)]), words, enders=",")) == [40, 3]
    with pytest.raises(ValueError):
        split_chunks("x", words, min_tokens=0)


# ----------------------------------------------------------------------------- cut rules


@pytest.mark.parametrize("n, cap", [
    (1, 0),    # 0 - min(int(0.55), 5) = 0
    (10, 8),   # 9 - int(1.0) = 8
    (30, 27),  # 29 - int(2.0) = 27
    (100, 94),  # 99 - min(int(5.5), 5) = 94
    (200, 194),  # the subtraction is capped at 5
])
def test_cut_cap(n, cap):
    assert cut_cap(n) == cap


@pytest.mark.parametrize("probs, strong, normal, weak", [
    # 10 chunks (cap 8, N/2 = 5). Result from chunk 6 to 7, then again at 9 (beyond the cap)
    ([0, 0, 0, 0, 0, 0, .9, .8, 0, .7], 6, 6, 8),
    # a P >= 0.25 bump before N/2 is the strong cut (highest up to normal, earliest of ties)
    ([0, .3, .6, .6, 0, 0, .9, 0, .8, 0], 6, 6, 8),
    ([0, .3, .95, .95, 0, 0, .9, 0, .8, 0], 2, 6, 8),
    # the second run starts at 7, weak is its start
    ([0, 0, 0, 0, 0, .6, 0, .7, .7, 0], 5, 5, 7),
    # one run to the end: weak is the run's last index, capped at 8
    ([0, 0, 0, 0, 0, .6, .6, .6, .6, .6], 5, 5, 8),
    # no P >= 0.5 at or after N/2: normal (and weak) fall back to the cap; strong is the best
    # P >= 0.25 up to the cap
    ([0, .4, .9, 0, 0, 0, 0, 0, 0, 0], 2, 8, 8),
    # nothing at all: every cut is the cap
    ([0] * 10, 8, 8, 8),
    # odd N: indices >= 4.5 count for normal, so 4 (P 0.9) does not; cap of 9 chunks is 7
    ([0, 0, 0, 0, .9, .6, 0, 0, 0], 4, 5, 5),
    # one chunk: the cap is 0
    ([1.0], 0, 0, 0),
])
def test_cut_points_planted(probs, strong, normal, weak):
    cuts = cut_points(probs)
    assert (cuts.strong, cuts.normal, cuts.weak) == (strong, normal, weak)
    assert cuts.strong <= cuts.normal <= cuts.weak <= cuts.cap == max(cut_cap(len(probs)), 0)


def test_cut_points_order_holds_on_random_series():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 40, (1,), generator=g))
        probs = torch.rand(n, generator=g).tolist()
        c = cut_points(probs)
        assert 0 <= c.strong <= c.normal <= c.weak <= c.cap < n
    # NaN never passes a threshold
    assert cut_points([math.nan] * 4).normal == cut_cap(4)


def test_result_probability_from_top5():
    top = [(" Think", math.log(0.6)), (" Result", math.log(0.3)), ("result", math.log(0.05)),
           ("ThinkResult", math.log(0.03)), ("[", math.log(0.02))]
    # result mass 0.35; think mass 0.6 + 0.03 (a token with both words counts as think)
    assert result_probability(top) == pytest.approx(0.35 / (0.35 + 0.63))
    assert result_probability([("x", 0.0)]) is None
    assert label_positions(["[", "1", "].", " Think", "\n\n", " Result", "think"]) == [3, 5]


def test_zero_unsolved_groups():
    adv = torch.tensor([[1.0, -1.0, 0.5], [2.0, -2.0, 0.0]])
    correct = torch.tensor([[False, False, False], [True, False, False]])
    out = zero_unsolved_groups(adv, correct)
    assert out.tolist() == [[0.0, 0.0, 0.0], [2.0, -2.0, 0.0]]
    # a correct entry outside the valid mask does not count
    valid = torch.tensor([[True, True, True], [False, True, True]])
    assert zero_unsolved_groups(adv, correct, valid).tolist() == [[0.0] * 3, [0.0] * 3]


def _sized(*tokens):
    return [Chunk(f"c{i}", n, ((i, i + 1),)) for i, n in enumerate(tokens)]


@pytest.mark.parametrize("tokens,max_tokens,expected", [
    ((400, 400, 400), 1024, [[0, 1], [2]]),        # 800 fits, a third would make 1200
    ((400, 624, 10), 1024, [[0, 1], [2]]),         # exactly 1024 still fits
    ((2000, 10, 10), 1024, [[0], [1, 2]]),         # an oversized chunk is a window alone
    ((10, 2000, 10), 1024, [[0], [1], [2]]),       # ... also in the middle
    ((400, 400, 400), 0, [[0, 1, 2]]),             # 0: the whole response in one window
    ((), 1024, []),                                # no chunks, no windows
])
def test_windows_group_consecutive_chunks_up_to_the_budget(tokens, max_tokens, expected):
    assert windows(_sized(*tokens), max_tokens) == expected
