"""The generation interface: token ids in, completions out; and the helpers every backend uses.

Backends (transformers `generate`, aha's own KV-cache engine, vLLM) implement `Generator.generate`.
The interface deals in token ids, not text, so the trainer controls templating and the backends
stay narrow. The shared helpers: request checks (`check_params`), EOS and padding ids
(`resolve_token_ids`), the incremental stop-string checker (`StopChecker`), completion assembly
(`build_completions`), the memory budget that splits a request into waves (`WaveBudget`,
`plan_waves`), `model_device` and `eval_mode`. Importing this module does not import torch (the
helpers that need it import it when called).
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
    index_offset: added to i in that seed (the engine): a request holding prompts first_index.. of a larger
        batch (one rank's share of a step, see aha.train.distributed) samples what the whole batch would.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    index_offset: int = 0


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


# ----------------------------------------------------------------------------- waves: a request within a memory budget

# bytes per row for the (B, V) float32 tensors of a decode step: the logits and the sampler's
# temporaries (scaled, shifted, exp, cumsum; top-p sorts and masks), with room to spare
_ROW_VOCAB_BYTES = 48


def plan_waves(prompt_lens: Sequence[int], n: int, max_new_tokens: int, max_rows: int | None = None,
               max_tokens: int | None = None, row_overhead: int = 0, pad_to: int = 0
               ) -> list[list[tuple[int, int]]]:
    """Split the rows (prompt_index, sample_index) of a request into consecutive waves within a budget.

    prompt_lens: each prompt's length in tokens; n: samples per prompt; rows are ordered by
        (prompt_index, sample_index) and the waves, concatenated, give them back in that order.
    max_rows: at most this many rows per wave (None or 0: no cap).
    max_tokens: at most this many KV-cache positions per wave, where a wave of r rows whose longest
        prompt has P tokens counts r x (P + max_new_tokens + row_overhead): the padded footprint
        of transformers `generate` and an upper bound for the engine (which stores a shared prompt
        once per group). None or 0: no cap.
    row_overhead: positions charged per row for what is not KV cache (the logits), in KV positions.
    pad_to: the backend pads every wave's prompts to at least this many tokens (the engine pads to
        the request's longest prompt), so a wave's longest prompt counts as at least this.

    A prompt's samples stay in one wave when they fit in one (the engine then prefills the prompt
    once); a group larger than the budget is split over several waves. A single row over the token
    budget still runs, alone.
    """
    max_rows = max_rows or None
    max_tokens = max_tokens or None

    def fits(rows: int, longest: int) -> bool:
        if max_rows is not None and rows > max_rows:
            return False
        return max_tokens is None or rows * (longest + max_new_tokens + row_overhead) <= max_tokens

    waves: list[list[tuple[int, int]]] = []
    wave: list[tuple[int, int]] = []
    longest = pad_to
    for i, plen in enumerate(prompt_lens):
        group = [(i, j) for j in range(n)]
        if fits(len(wave) + n, max(longest, plen)):
            wave += group
            longest = max(longest, plen)
            continue
        if wave and fits(n, plen):
            waves.append(wave)
            wave, longest = group, max(pad_to, plen)
            continue
        # the group does not fit in one wave: fill the current wave with its first rows, then more waves
        for row in group:
            if wave and not fits(len(wave) + 1, max(longest, plen)):
                waves.append(wave)
                wave, longest = [], pad_to
            wave.append(row)
            longest = max(longest, plen)
    if wave:
        waves.append(wave)
    return waves


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of keys and values one cached position takes over all layers, in the model's dtype."""
    config = models.hf_model(model).config
    config = getattr(config, "get_text_config", lambda: config)()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def free_device_memory(device: Any) -> int | None:
    """Bytes a new allocation can take on a CUDA device (the driver's free memory plus what PyTorch's
    caching allocator holds unused); None for other devices."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


@dataclass
class WaveBudget:
    """How many rows one generation batch ("wave") may hold; a backend runs a request as waves.

    max_rows: rows (prompts x samples) per wave; 0 = no cap.
    max_tokens: KV-cache positions per wave, counted as in `plan_waves`; 0 = automatic: on CUDA,
        `memory_fraction` of the device memory free when `generate` is called, divided by the bytes
        a position takes (`kv_bytes_per_token`), each row also charged its logits; elsewhere no cap.
    memory_fraction: the share of free CUDA memory the automatic budget may fill (0 = no automatic
        budget). The rest is headroom for the decode step's activations and the cache's growth
        (a buffer that doubles holds its old and new copies for a moment).

    The engine's completions do not depend on the waves (its samples are seeded per row); transformers
    `generate` draws from one stream for the whole batch, so its sampled completions do (greedy ones
    do not, up to float rounding).
    """

    max_rows: int = 0
    max_tokens: int = 0
    memory_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.max_rows = int(self.max_rows or 0)
        self.max_tokens = int(self.max_tokens or 0)
        if self.max_rows < 0 or self.max_tokens < 0:
            raise AhaError(f"max_batch_rows and max_batch_tokens must be >= 0, got {self.max_rows}, "
                           f"{self.max_tokens}")
        if not 0.0 <= self.memory_fraction <= 1.0:
            raise AhaError(f"memory_fraction must be in [0, 1], got {self.memory_fraction}")

    def token_budget(self, model: Any) -> tuple[int | None, int]:
        """(KV positions per wave or None for no cap, positions charged per row for its logits)."""
        if self.max_tokens:
            return self.max_tokens, 0
        if self.memory_fraction <= 0:
            return None, 0
        free = free_device_memory(model_device(model))
        if free is None:
            return None, 0
        per_token = kv_bytes_per_token(model)
        vocab = int(getattr(models.hf_model(model).config, "vocab_size", 0) or 0)
        overhead = -(-_ROW_VOCAB_BYTES * vocab // per_token)  # ceil
        return max(1, int(self.memory_fraction * free) // per_token), overhead

    def waves(self, model: Any, prompts: Sequence[Sequence[int]], params: SamplingParams, pad_to: int = 0
              ) -> list[list[tuple[int, int]]]:
        """The waves of a request (see `plan_waves`)."""
        tokens, overhead = self.token_budget(model)
        return plan_waves([len(p) for p in prompts], params.n, params.max_new_tokens, self.max_rows or None,
                          tokens, overhead, pad_to)
