"""Chunking of a response's reasoning, as REA-RL splits it (`generation/utils.py::split_text_with_numbers`).

1. The input is the reasoning (the text before the first `</think>`), right-stripped.
2. It is split into paragraphs on runs of two or more newlines; whitespace-only pieces are dropped.
3. Paragraphs accumulate into a chunk, with `count_tokens(paragraph)` tokens each. For each paragraph:
   - if the running count plus its tokens reaches `min_tokens` (32) and the paragraph, stripped,
     ends in one of `enders` ("!.;?"), it joins the chunk and the chunk closes;
   - otherwise, if the count plus its tokens would reach `max_tokens` (128), the chunk closes
     without it and it starts the next chunk (an empty chunk takes it as a chunk of its own);
   - otherwise it joins the chunk.
   Whatever is left at the end is the last chunk.
4. A paragraph is never split, so a chunk can exceed `max_tokens`. A chunk's text is its paragraphs
   joined by "\\n\\n".

Each `Chunk` also keeps the character spans of its paragraphs in the input, so a cut after chunk i
can be mapped back to the response's own tokens (`aha.overthinking.revision`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_TOKENS = 32
MAX_TOKENS = 128
ENDERS = "!.;?"

_SEPARATOR = re.compile(r"\n{2,}")


@dataclass(frozen=True)
class Chunk:
    """One chunk: its text, token count and the (start, end) character spans of its paragraphs."""

    text: str
    tokens: int
    spans: tuple[tuple[int, int], ...]

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the non-blank paragraphs of `text` (right-stripped first), split on
    runs of two or more newlines."""
    if not isinstance(text, str):
        return []
    text = text.rstrip()
    spans, pos = [], 0
    for sep in _SEPARATOR.finditer(text):
        spans.append((pos, sep.start()))
        pos = sep.end()
    spans.append((pos, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def split_chunks(text: str, count_tokens: Callable[[str], int], min_tokens: int = MIN_TOKENS,
                 max_tokens: int = MAX_TOKENS, enders: str = ENDERS) -> list[Chunk]:
    """The chunks of the reasoning `text` (rules in the module docstring).

    count_tokens: the policy tokenizer's token count of a piece of text.
    min_tokens: a chunk may close at a sentence end once it has this many tokens.
    max_tokens: a paragraph that would bring a chunk to this many tokens starts a new chunk.
    enders: the characters that end a sentence.
    """
    if min_tokens < 1 or max_tokens < 1:
        raise ValueError(f"min_tokens and max_tokens must be >= 1, got {min_tokens} and {max_tokens}")
    chunks: list[Chunk] = []
    current: list[tuple[int, int]] = []
    count = 0

    def close() -> None:
        nonlocal current, count
        if current:
            chunks.append(Chunk("\n\n".join(text[a:b] for a, b in current), count, tuple(current)))
        current, count = [], 0

    for a, b in paragraphs(text):
        part = text[a:b]
        n = int(count_tokens(part))
        stripped = part.strip()
        if count + n >= min_tokens and stripped and stripped[-1] in enders:
            current.append((a, b))
            count += n
            close()
        elif count + n >= max_tokens:
            if current:
                close()
                current, count = [(a, b)], n
            else:
                current, count = [(a, b)], n
                close()
        else:
            current.append((a, b))
            count += n
    close()
    return chunks


def windows(chunks: Sequence[Chunk], max_tokens: int) -> list[list[int]]:
    """Consecutive chunks grouped greedily into labelling windows of at most `max_tokens` tokens
    (REA-RL's teacher sees a long response in windows of <= 1024 tokens): each window is a list of
    chunk indices, in order; a chunk longer than `max_tokens` is a window alone. max_tokens <= 0:
    one window of every chunk."""
    if max_tokens <= 0:
        return [list(range(len(chunks)))] if chunks else []
    out: list[list[int]] = []
    count = 0
    for i, chunk in enumerate(chunks):
        if out and count + chunk.tokens <= max_tokens:
            out[-1].append(i)
            count += chunk.tokens
        else:
            out.append([i])
            count = chunk.tokens
    return out


def tokenizer_counter(tokenizer) -> Callable[[str], int]:  # noqa: ANN001 - any HF tokenizer
    """count_tokens for `split_chunks` from a tokenizer (no special tokens added)."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return count
