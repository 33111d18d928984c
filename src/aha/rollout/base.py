"""The generation interface: token ids in, completions out.

Backends (transformers `generate`, aha's own KV-cache engine, vLLM) implement `Generator.generate`.
The interface deals in token ids, not text, so the trainer controls templating and the backends
stay narrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class SamplingParams:
    """How to sample.

    temperature: 0 means greedy.
    top_p: nucleus sampling threshold (1.0 = off).
    top_k: keep the k most likely tokens (0 = off).
    max_new_tokens: cap on generated tokens per completion.
    n: completions per prompt.
    stop: strings that end a completion (the stop string is kept in the output).
    seed: base seed; completion j of prompt i is reproducible from (seed, i, j) on CPU.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class Completion:
    """One sampled completion.

    prompt_index: index of its prompt in the request.
    sample_index: j in 0..n-1 within that prompt's group.
    token_ids: generated token ids (including the EOS or stop tokens that ended it).
    text: decoded text of token_ids with special tokens removed.
    finish_reason: "eos", "stop" (a stop string) or "length" (hit max_new_tokens).
    logprobs: log-probabilities of token_ids under the sampling distribution, when the backend
        provides them for free (else None).
    """

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[float] | None = None


class Generator(Protocol):
    """A generation backend."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """Sample `params.n` completions for each prompt (token ids, no padding).

        Returns len(prompts) * n completions ordered by (prompt_index, sample_index).
        """
        ...
