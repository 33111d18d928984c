"""The generation interface: token ids in, completions out; and the helpers every backend uses.

Backends (transformers `generate`, aha's own KV-cache engine, vLLM) implement `Generator.generate`.
The interface deals in token ids, not text, so the trainer controls templating and the backends
stay narrow. The shared helpers: request checks (`check_params`), EOS and padding ids
(`resolve_token_ids`), the incremental stop-string checker (`StopChecker`), completion assembly
(`build_completions`), `model_device` and `eval_mode`. Importing this module does not import torch
(the helpers that need it import it when called).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aha import models
from aha.errors import AhaError

if TYPE_CHECKING:
    import torch


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


# ----------------------------------------------------------------------------- helpers of the backends


def model_device(model: Any) -> torch.device:
    """The device of the model's input embeddings (where token ids must go)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def resolve_token_ids(tokenizer: Any, model: Any, eos_token_ids: Sequence[int] | None = None,
                      pad_token_id: int | None = None) -> tuple[list[int], int]:
    """A backend's (EOS ids, left-padding id).

    eos_token_ids: when given (non-empty), exactly these; else `aha.models.eos_token_ids` (chat
        end-of-turn tokens, the tokenizer's EOS, the model's generation_config EOS).
    pad_token_id: when given; else the tokenizer's pad token, else the first EOS id (its value never
        matters: padded positions are masked out).
    """
    eos_ids = models.eos_token_ids(tokenizer, model, eos_token_ids)
    if pad_token_id is not None:
        return eos_ids, int(pad_token_id)
    if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is not None:
        return eos_ids, int(tokenizer.pad_token_id)
    return eos_ids, int(eos_ids[0])


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """The model in eval mode (dropout off) inside the block, its training flag restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def check_params(params: SamplingParams, tokenizer: Any, prompts: Sequence[Sequence[int]] = ()) -> None:
    """Raise AhaError for sampling settings no backend can honour, or an empty prompt among `prompts`."""
    if params.n < 1:
        raise AhaError(f"n must be >= 1, got {params.n}")
    if params.max_new_tokens < 1:
        raise AhaError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if params.temperature < 0:
        raise AhaError(f"temperature must be >= 0, got {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        raise AhaError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise AhaError(f"top_k must be >= 0, got {params.top_k}")
    if params.stop and tokenizer is None:
        raise AhaError("stop strings need a tokenizer: construct the generator with one")
    if any(not s for s in params.stop):
        raise AhaError("stop strings must be non-empty")
    if any(len(p) == 0 for p in prompts):
        raise AhaError("empty prompt: every prompt needs at least one token")


class StopChecker:
    """Finds the token at which a completion's decoded text first contains a stop string.

    Decoding the whole completion at every step would cost O(length) per row and step, so only a tail
    window of the row's tokens is decoded, and only after tokens that can end a stop string: a token
    is a candidate when its own decoded text contains the last character of some stop string (or, for
    stop strings ending in a non-ASCII character, when it decodes to a partial UTF-8 byte). Stop
    strings ending in a space disable the filter, since some decoders drop a token's leading space.

    tokenizer: decodes ids (skip_special_tokens=True).
    stops: the stop strings (non-empty strings).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = list(dict.fromkeys(stops))
        longest = max(len(s) for s in self.stops)
        # a character is at most 4 byte-level tokens; a few more absorb tokens that decode to nothing
        self.window = 4 * longest + 8
        self._candidates: dict[tuple[int, str], torch.Tensor] = {}

    def candidates(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        """(vocab_size,) bool: tokens after which the tail must be decoded (ids the tokenizer does not
        know are always candidates)."""
        key = (vocab_size, str(device))
        if key not in self._candidates:
            self._candidates[key] = self._build_candidates(vocab_size).to(device)
        return self._candidates[key]

    def _build_candidates(self, vocab_size: int) -> torch.Tensor:
        import torch

        lasts = {s[-1] for s in self.stops}
        if " " in lasts:
            return torch.ones(vocab_size, dtype=torch.bool)
        known = min(vocab_size, len(self.tokenizer))
        pieces = self.tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True)
        partial_ok = any(ord(c) > 127 for c in lasts)
        flags = [any(c in piece for c in lasts) or (partial_ok and "\ufffd" in piece) for piece in pieces]
        return torch.tensor(flags + [True] * (vocab_size - known), dtype=torch.bool)  # (V,)

    def hit(self, tail_ids: list[int]) -> bool:
        """True when the decoded tail window (the row's last `window` tokens) contains a stop string."""
        text = self.tokenizer.decode(tail_ids, skip_special_tokens=True)
        return any(s in text for s in self.stops)

    def first_stop(self, token_ids: list[int]) -> int | None:
        """Index of the token whose addition first makes the text contain a stop string, or None."""
        import torch

        table = self.candidates(len(self.tokenizer), torch.device("cpu")).tolist()
        for t, tok in enumerate(token_ids):
            if (tok >= len(table) or table[tok]) and self.hit(token_ids[max(0, t + 1 - self.window): t + 1]):
                return t
        return None

    def truncate(self, text: str) -> str:
        """The text up to and including the earliest-ending stop string (unchanged if none occurs)."""
        ends = [text.find(s) + len(s) for s in self.stops if s in text]
        return text[: min(ends)] if ends else text


def build_completions(tokenizer: Any, stop: StopChecker | None, rows: list[tuple[int, int]],
                      tokens: list[list[int]], logprobs: list[list[float]] | None,
                      reasons: list[str]) -> list[Completion]:
    """Assemble Completions (decoded text, stop-truncated) for rows given as (prompt_index, sample_index).

    tokens[r]: the generated ids of row r, already cut after its EOS / stop token.
    logprobs[r]: matching per-token log-probabilities, or None for backends without them.
    reasons[r]: "eos", "stop" or "length".
    """
    texts = (tokenizer.batch_decode(tokens, skip_special_tokens=True) if tokenizer is not None
             else [""] * len(tokens))
    out = []
    for r, (pi, si) in enumerate(rows):
        text = texts[r]
        if reasons[r] == "stop" and stop is not None:
            text = stop.truncate(text)
        out.append(Completion(prompt_index=pi, sample_index=si, token_ids=tokens[r], text=text,
                              finish_reason=reasons[r], logprobs=None if logprobs is None else logprobs[r]))
    return out
