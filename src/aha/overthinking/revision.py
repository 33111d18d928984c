"""Building a revision from a sampled response: where to cut its own token ids, and what to append.

A revision is (REA-RL's online sequential revision, with aha's token handling):

    revision ids = original completion ids[: t]  +  template ids  +  the policy's continuation

where t is the first token count whose decoded text covers the kept reasoning (chunks[: cut + 1];
when the cut is the last chunk, its last paragraph is left out too, as the released code does, so
a revision is always shorter than its original). The prefix is the original's own ids, never
re-tokenized text, so its log-probs are those of the tokens the policy sampled; the template ids
are marked (`template_span`) because the policy did not sample them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aha.overthinking.chunking import Chunk, split_chunks
from aha.overthinking.options import R1_ANSWER_PREFIX, TAGGED_ANSWER_PREFIX
from aha.tasks.formatting import THINK_CLOSE, THINK_OPEN


def reasoning_span(text: str, think_preopened: bool = False) -> tuple[int, int]:
    """(start, end) characters of the reasoning in a completion: after its `<think>` (unless the
    prompt opened it), up to the first `</think>` (or the end)."""
    start = 0
    if not think_preopened:
        i = text.find(THINK_OPEN)
        if i >= 0:
            start = i + len(THINK_OPEN)
    end = text.find(THINK_CLOSE, start)
    return start, (len(text) if end < 0 else end)


def kept_end(chunks: Sequence[Chunk], cut: int) -> int:
    """End character (in the chunked text) of the reasoning kept with a cut after chunk `cut`: the end
    of that chunk, or, when it is the last chunk, the end of the paragraph before its last one (0
    when there is none)."""
    if not 0 <= cut < len(chunks):
        raise ValueError(f"cut {cut} outside 0..{len(chunks) - 1}")
    if cut < len(chunks) - 1:
        return chunks[cut].end
    spans = [s for c in chunks for s in c.spans]
    return spans[-2][1] if len(spans) >= 2 else 0


def token_cut(ids: Sequence[int], decode: Callable[[list[int]], str], char_end: int) -> int:
    """The fewest leading tokens of `ids` whose decoded text is at least `char_end` characters long
    (len(ids) when even all of them are shorter); binary search, O(log n) decodes."""
    if char_end <= 0:
        return 0
    lo, hi = 1, len(ids)
    if len(decode(list(ids))) < char_end:
        return len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(list(ids[:mid]))) >= char_end:
            hi = mid
        else:
            lo = mid + 1
    return lo


def default_answer_prefix(task: Any) -> str:
    """The closing template for a task: tagged tasks close the think block and open the answer."""
    from aha.tasks.knights_knaves.task import KnightsKnavesTask
    from aha.tasks.math.arithmetic import ArithmeticTask

    if isinstance(task, (KnightsKnavesTask, ArithmeticTask)):
        return TAGGED_ANSWER_PREFIX
    extract = getattr(task, "extract", None)
    if extract and list(extract)[0] == "answer_tag":
        return TAGGED_ANSWER_PREFIX
    return R1_ANSWER_PREFIX


def response_chunks(text: str, count_tokens: Callable[[str], int], think_preopened: bool = False,
                    min_tokens: int = 32, max_tokens: int = 128, enders: str = "!.;?") -> tuple[int, list[Chunk]]:
    """(offset of the reasoning in `text`, the chunks of the reasoning)."""
    start, end = reasoning_span(text, think_preopened)
    return start, split_chunks(text[start:end], count_tokens, min_tokens, max_tokens, enders)


def revision_ids(original: Sequence[int], cut_tokens: int, template: Sequence[int],
                 continuation: Sequence[int]) -> tuple[list[int], tuple[int, int]]:
    """(the revision's completion ids, the (start, end) positions of its template tokens)."""
    prefix = list(original[:cut_tokens])
    return prefix + list(template) + list(continuation), (len(prefix), len(prefix) + len(template))
