"""aha's rollout engine: a decode loop with a KV cache over a Hugging Face causal LM.

Why not `model.generate`: in RL sampling most of its work is wasted. Finished rows stay in the batch
until the longest one ends, every sample of a group prefills the same prompt again, and on small
models the per-step work outside the model's arithmetic is a large share of the time. This engine:

- prefills each distinct prompt once (one forward of the model); its n samples then share that
  prompt cache: in the default modes the prompt keys/values stay stored once per prompt and a
  "cascade" attention reads them once for all the group's rows (`cascade_core`), so the per-row
  cache holds generated tokens only;
- drops finished rows (EOS, stop string) from the working batch by copying the live rows of the
  cache, once finished rows are `compact_fraction` of the batch;
- writes keys/values into preallocated per-layer buffers (no concatenation per step), doubled when
  full so a long cap does not reserve memory that early-finishing rows never use;
- samples with one counter-based uniform per row and step (a hash of seed, prompt index, sample
  index and step), so completion j of prompt i depends only on those and the logits, never on which
  other rows shared the batch, the batch size or the device;
- returns the log-probability of each sampled token (see `sample_tokens` for which distribution);
- checks stop strings by decoding a short tail of a row, only after tokens that can end one.

Decode steps (EngineGenerator `mode`), the first one the model supports by default:
- "native": Llama/Mistral/Qwen2/Qwen3 models, plain or with plain LoRA adapters (merged into the
  step's weight copies at each call, see `_linear_parts`): a lean prefill and decode step over the model's
  own weights (`_NativeDecoder`), which skips transformers' per-module overhead (most of a small
  model's step) and, for float32 on CPU, runs the linear layers through oneDNN (see `_lin`) and the
  attention through a small compiled kernel when the machine can build it (`aha.rollout.cpu_kernels`);
- "cascade": any full-attention model whose attention goes through transformers' AttentionInterface,
  PEFT-wrapped ones the native step refuses (DoRA, large models) included: the model's forward with
  `cascade_attention` plugged in;
- "slab": other full-attention models: the model's forward and attention, prompt cache copied per row;
- "dynamic": anything else (sliding-window or hybrid layers): transformers' DynamicCache, 2D masks.
The prefill is the model's own forward in the other modes.

Shared helpers used by both backends live here too: EOS resolution, the incremental stop-string
checker and completion assembly.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache

from aha.errors import AhaError
from aha.models import cache_keyword, full_attention_only, hf_model
from aha.rollout.base import Completion, SamplingParams
from aha.rollout.cpu_kernels import CascadeKernels, cascade_kernels

# End-of-turn tokens of common chat templates (ChatML, Llama 3, Gemma, Phi-3). A chat model stops
# its reply with these, which are often not the tokenizer's `eos_token`.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


# ----------------------------------------------------------------------------- shared helpers


def model_device(model: Any) -> torch.device:
    """The device of the model's input embeddings (where token ids must go)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def resolve_eos_ids(tokenizer: Any = None, model: Any = None, explicit: Sequence[int] | None = None) -> list[int]:
    """The token ids that end a completion.

    explicit: when given (non-empty), exactly these ids.
    Otherwise: the chat end-of-turn tokens the tokenizer knows (END_OF_TURN_TOKENS), the tokenizer's
    `eos_token_id`, and the model's `generation_config.eos_token_id` (int or list).
    Raises AhaError when nothing is found: a generator that can never stop early is a configuration bug.
    """
    if explicit:
        return sorted({int(i) for i in explicit})
    ids: set[int] = set()
    if tokenizer is not None:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        for token in END_OF_TURN_TOKENS:
            if token in vocab:
                ids.add(int(vocab[token]))
        if getattr(tokenizer, "eos_token_id", None) is not None:
            ids.add(int(tokenizer.eos_token_id))
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(int(i) for i in cfg_eos)
    if not ids:
        raise AhaError("no end-of-sequence token found: give the tokenizer an eos_token or pass eos_token_ids")
    return sorted(ids)


def resolve_pad_id(tokenizer: Any, eos_ids: Sequence[int], explicit: int | None = None) -> int:
    """The id used for left padding (its value never matters: padded positions are masked out)."""
    if explicit is not None:
        return int(explicit)
    if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is not None:
        return int(tokenizer.pad_token_id)
    return int(eos_ids[0]) if eos_ids else 0


def check_params(params: SamplingParams, tokenizer: Any) -> None:
    """Raise AhaError for sampling settings no backend can honour."""
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


# ----------------------------------------------------------------------------- counter-based uniforms

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) without int64 overflow: multiply by c's 16-bit halves."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xor-shift-multiply, constants of Wellons' "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    """`_mix32` on a Python int (for per-step constants: one tensor op chain fewer per step)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def _combine(h: torch.Tensor, x: torch.Tensor | int) -> torch.Tensor:
    """Hash of the pair (h, x); x is mixed first so that consecutive small integers spread."""
    if isinstance(x, int):
        return _mix32(h ^ _mix32_int((x + 0x9E3779B9) & _MASK32))
    return _mix32(h ^ _mix32((x.to(torch.int64) + 0x9E3779B9) & _MASK32))


def row_keys(seed: int, prompt_index: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
    """(B,) int64 per-row random keys in [0, 2^32) from (seed, prompt_index, sample_index)."""
    h = _mix32(torch.tensor(seed & _MASK32, dtype=torch.int64, device=prompt_index.device))
    h = _combine(h, (seed >> 32) & _MASK32)
    return _combine(_combine(h.expand_as(prompt_index), prompt_index), sample_index)


def step_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """(B,) float32 uniforms in [0, 1 - 2^-24] for generation step `step` (0-based) of each row key.

    24 bits: a float32 holds them exactly, which is as fine as a float32 cumulative sum can resolve.
    """
    return (_combine(keys, step) >> 8).to(torch.float32) * (1.0 / (1 << 24))


_UNIFORM_BLOCK = 256  # decode steps whose uniforms are drawn at once


def uniform_table(keys: torch.Tensor, steps: int, start: int = 0) -> torch.Tensor:
    """(B, steps) float32: column j equals `step_uniforms(keys, start + j)`, computed in one batch of
    ops (the decode loop reads a column per step instead of hashing anew, a block of steps at a time)."""
    t = torch.arange(start, start + steps, device=keys.device)[None, :]  # (1, T)
    return (_combine(keys[:, None], t) >> 8).to(torch.float32) * (1.0 / (1 << 24))


# ----------------------------------------------------------------------------- sampling


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float = 1.0,
                  top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row by inverse-CDF with the given uniforms.

    logits: (B, V) float32 next-token logits.
    uniforms: (B,) in [0, 1): row b takes the first token (in vocabulary order) whose cumulative
        filtered probability exceeds uniforms[b] * (1 - 2^-20) * total.
    temperature: 0 = greedy (argmax; uniforms unused).
    top_k: keep tokens whose scaled logit is >= the k-th largest (ties at the boundary are kept); 0 = off.
    top_p: then keep the smallest set of most likely tokens (renormalised after top-k) whose mass
        reaches top_p: a token is kept when the mass of the tokens ranked above it is < top_p.

    Returns (tokens (B,) int64, logprobs (B,) float32). The log-probability is that of the token under
    the temperature-scaled distribution BEFORE top-k/top-p filtering (log_softmax(logits / T); plain
    log_softmax(logits) when greedy). It is a sampling diagnostic; trainers recompute their own.

    Cost: the unfiltered path makes four passes over (B, V) (max, subtract, exp, cumsum); the
    probabilities stay unnormalised (the target scales with their total), and the log-probability
    is formed for the sampled tokens only.
    """
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)  # (B,)
        lse = torch.logsumexp(logits, dim=-1)  # (B,)
        return tokens, logits.gather(1, tokens[:, None]).squeeze(1) - lse
    scaled = logits / temperature if temperature != 1.0 else logits  # (B, V)
    z = scaled - scaled.amax(dim=-1, keepdim=True)  # (B, V), max 0
    probs = z.exp()  # (B, V) unnormalised, max 1
    V = probs.shape[-1]
    filtered = False
    total = None  # (B, 1) unfiltered mass, when filtering changes the cdf's last entry
    if 0 < top_k < V:
        total = probs.sum(-1, keepdim=True)
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]  # (B, 1)
        probs = probs.masked_fill(z < kth, 0.0)
        filtered = True
    if top_p < 1.0:
        if total is None:
            total = probs.sum(-1, keepdim=True)
        # rank by descending probability (stable: ties keep vocabulary order)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (B, V)
        sorted_p = sorted_p / sorted_p.sum(-1, keepdim=True)
        mass_above = sorted_p.cumsum(-1) - sorted_p  # (B, V)
        drop_sorted = mass_above >= top_p
        drop_sorted[:, 0] = False
        probs = probs.masked_fill(torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted), 0.0)
        filtered = True
    cdf = probs.cumsum(dim=-1)  # (B, V)
    # the factor keeps the target strictly below the total despite float rounding, so the token found
    # always has a positive probability (cdf[i] > target >= cdf[i-1] means p_i > 0)
    target = (uniforms * (1.0 - 2.0 ** -20) * cdf[:, -1]).unsqueeze(1)  # (B, 1)
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=V - 1)  # (B,) clamp: NaN logits
    log_total = (total if filtered else cdf[:, -1:]).log().squeeze(1)  # (B,)
    return tokens, z.gather(1, tokens[:, None]).squeeze(1) - log_total


# ----------------------------------------------------------------------------- caches


class _SlabLayer(CacheLayerMixin):
    """One layer's keys/values in a preallocated (B, H_kv, capacity, D) buffer.

    `update` writes the new positions in place and returns views of the filled part, so a step costs
    no concatenation. `offset` counts positions held elsewhere (the shared prompt prefix in cascade
    mode), so that `get_seq_length` reports the true sequence length. With `keys_transposed` the keys
    buffer is (B, H_kv, D, capacity) (the compiled CPU attention reads keys column-wise) and `update`
    returns the keys in that layout.
    """

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, capacity: int, offset: int = 0, keys_transposed: bool = False):
        super().__init__()
        self.capacity = capacity
        self.offset = offset
        self.length = 0
        self.keys_transposed = keys_transposed

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        shape = (B, H, D, self.capacity) if self.keys_transposed else (B, H, self.capacity, D)
        self.keys = key_states.new_empty(shape)  # (B, H, C, D) or (B, H, D, C)
        self.values = value_states.new_empty((B, H, self.capacity, value_states.shape[-1]))  # (B, H, C, Dv)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer overflow: {end} > capacity {self.capacity}")
        if self.keys_transposed:
            self.keys[..., self.length:end] = key_states.transpose(-1, -2)
        else:
            self.keys[:, :, self.length:end] = key_states
        self.values[:, :, self.length:end] = value_states
        self.length = end
        keys = self.keys[..., :end] if self.keys_transposed else self.keys[:, :, :end]
        return keys, self.values[:, :, :end]

    def append_values(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Like `update` for one position, but stores only the values: the caller writes the keys
        (the compiled CPU attention does, into the transposed buffer). key_states give the shape."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.length + 1 > self.capacity:
            raise RuntimeError(f"KV buffer overflow: {self.length + 1} > capacity {self.capacity}")
        self.values[:, :, self.length] = value_states[:, :, 0]
        self.length += 1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.offset + self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.offset + self.length

    def get_max_length(self) -> int:
        return self.offset + self.capacity

    def resize(self, rows: torch.Tensor | None, capacity: int) -> None:
        """Keep batch rows `rows` (in that order, repeats allowed; None = all) in a buffer of `capacity`."""
        if not self.is_initialized:
            self.capacity = capacity
            return
        L = self.length
        for name in ("keys", "values"):
            old = getattr(self, name)
            time_dim = 3 if name == "keys" and self.keys_transposed else 2
            shape = list(old.shape)
            shape[0] = old.shape[0] if rows is None else rows.shape[0]
            shape[time_dim] = capacity
            new = old.new_empty(shape)
            filled = old.narrow(time_dim, 0, L)
            new.narrow(time_dim, 0, L).copy_(filled if rows is None else filled.index_select(0, rows))
            setattr(self, name, new)
        self.capacity = capacity


class SlabCache(Cache):
    """A transformers Cache made of `_SlabLayer`s (one per decoder layer)."""

    def __init__(self, num_layers: int, capacity: int, offset: int = 0, keys_transposed: bool = False):
        super().__init__(layers=[_SlabLayer(capacity, offset, keys_transposed) for _ in range(num_layers)])

    def resize(self, rows: torch.Tensor | None, capacity: int) -> None:
        for layer in self.layers:
            layer.resize(rows, capacity)

    @classmethod
    def from_prefix(cls, keys: list[torch.Tensor], values: list[torch.Tensor], rows: torch.Tensor,
                    capacity: int) -> SlabCache:
        """A cache whose row b starts with prompt rows[b] of the per-layer (U, H, P, D) keys/values."""
        P = keys[0].shape[2]
        cache = cls(len(keys), capacity)
        for layer, k, v in zip(cache.layers, keys, values):
            layer.lazy_initialization(k[:1].expand(rows.shape[0], -1, -1, -1), v[:1].expand(rows.shape[0], -1, -1, -1))
            layer.keys[:, :, :P] = k.index_select(0, rows)
            layer.values[:, :, :P] = v.index_select(0, rows)
            layer.length = P
        return cache


# ----------------------------------------------------------------------------- cascade attention


class _Prefix:
    """The shared prompt prefix that cascade attention reads, one copy per distinct prompt.

    keys/values: per layer (U, H_kv, P, D), the prefilled prompt cache.
    bias: (U, 1, 1, P) additive mask (0 or -inf) for left padding, or None when no prompt is padded.
    slot: (B,) position of each batch row in the (U * group) query grid: u * group + rank in group.
    group: the largest number of live rows sharing one prompt.
    dense: True when the rows fill the grid in order (slot == arange(U * group)): every prompt has
        `group` live rows, consecutive in the batch; then rows and grid differ by a reshape only.
    row_prompt: (B,) int64 prompt index of each batch row.
    keys_t: with `transposed_keys`, per layer (U, H_kv, D, P) contiguous (the compiled kernel's
        layout; `keys` is then unused and empty); bias2d: then the bias as (U, P) float32, or None.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], bias: torch.Tensor | None,
                 transposed_keys: bool = False):
        self.values, self.bias = values, bias
        self.keys_t = [k.transpose(-1, -2).contiguous() for k in keys] if transposed_keys else []
        self.keys = [] if transposed_keys else keys
        self.bias2d = bias.reshape(bias.shape[0], bias.shape[-1]).float().contiguous() \
            if bias is not None and transposed_keys else None
        self.slot = torch.zeros(0, dtype=torch.long)
        self.row_prompt = torch.zeros(0, dtype=torch.long)
        self.group = 1
        self.dense = False

    def assign(self, row_unique: list[int], device: torch.device) -> None:
        """Lay out the live rows (their prompt index in 0..U-1, in batch order) on the query grid."""
        rank: dict[int, int] = {}
        ranks = []
        for u in row_unique:
            ranks.append(rank.get(u, 0))
            rank[u] = ranks[-1] + 1
        self.group = max(rank.values())
        slots = [u * self.group + r for u, r in zip(row_unique, ranks)]
        self.slot = torch.tensor(slots, device=device)
        self.row_prompt = torch.tensor(row_unique, dtype=torch.long, device=device)
        U = self.values[0].shape[0]
        self.dense = len(slots) == U * self.group and slots == list(range(len(slots)))

    def select(self, groups: torch.Tensor) -> None:
        """Keep only prompts `groups` (U',) (the others have no live rows left)."""
        self.keys = [k.index_select(0, groups) for k in self.keys]
        self.keys_t = [k.index_select(0, groups) for k in self.keys_t]
        self.values = [v.index_select(0, groups) for v in self.values]
        if self.bias is not None:
            self.bias = self.bias.index_select(0, groups)
        if self.bias2d is not None:
            self.bias2d = self.bias2d.index_select(0, groups)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Hk, G, c) per-row tensor -> (U, Hk, S*G, c) on the query grid (zeros where no row)."""
        B, Hk, G, c = x.shape
        U, S = self.values[0].shape[0], self.group
        if not self.dense:
            x = x.new_zeros((U * S, Hk, G, c)).index_copy_(0, self.slot, x)  # (U*S, Hk, G, c)
        return x.view(U, S, Hk, G, c).transpose(1, 2).reshape(U, Hk, S * G, c)

    def to_rows(self, y: torch.Tensor, G: int) -> torch.Tensor:
        """(U, Hk, S*G, c) on the grid -> (B, Hk, G, c) per row."""
        U, Hk, SG, c = y.shape
        S = SG // G
        y = y.view(U, Hk, S, G, c).transpose(1, 2).reshape(U * S, Hk, G, c)
        return y if self.dense else y.index_select(0, self.slot)


def cascade_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                      aha_prefix: _Prefix | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Decode-step attention over a shared prefix and per-row suffixes (transformers' interface).

    query: (B, Hq, 1, D). key/value: (B, H_kv, T, D), the generated part (T >= 1: the current token).
    aha_prefix: the shared prefix; without it (or for several query positions) this is plain SDPA.
    Returns ((B, 1, Hq, D), None) like transformers' attention functions.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if aha_prefix is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    B, Hq, _, D = query.shape
    scale = scaling if scaling is not None else D ** -0.5
    out = cascade_core(query.reshape(B, key.shape[1], -1, D) * scale, key, value, aha_prefix, module.layer_idx)
    return out.reshape(B, 1, Hq, D), None


def cascade_core(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, prefix: _Prefix,
                 layer: int) -> torch.Tensor:
    """Attention of one new query per row over its prompt (shared) and its generated keys.

    The n samples of a prompt attend to the same prompt keys, so those are read once per prompt for
    all its rows: the queries are laid out on a (prompt, row of the prompt) grid and one batched
    matmul over all prompts and KV heads gives every row's prompt scores; each row's own generated
    keys are scored by one batched matmul over rows. The two score blocks are concatenated per row
    and go through one softmax (so the result is plain attention over [prompt ; generated], exact up
    to float rounding); the weights are split again for the two value matmuls, whose outputs add.

    q: (B, H_kv, G, D) queries, already scaled; head h = kv_head * G + g reads KV head h // G.
    key/value: (B, H_kv, T, D) the rows' generated keys/values, the current token included.
    prefix: the prompts' keys/values and the rows' places on the query grid.
    Returns (B, H_kv, G, D) in the values' dtype.
    """
    G = q.shape[2]
    pk, pv = prefix.keys[layer], prefix.values[layer]  # (U, Hk, P, D)
    P = pk.shape[2]
    sp = torch.matmul(prefix.to_grid(q), pk.transpose(-1, -2))  # (U, Hk, S*G, P)
    if prefix.bias is not None:
        sp = sp + prefix.bias
    ss = torch.matmul(q, key.transpose(-1, -2))  # (B, Hk, G, T)
    scores = torch.cat([prefix.to_rows(sp, G), ss], dim=-1)  # (B, Hk, G, P + T)
    if scores.dtype == value.dtype == torch.float32:
        w = torch.softmax(scores, dim=-1)  # (B, Hk, G, P + T)
    else:  # low-precision models: softmax in float32, weights back in the values' dtype
        w = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    op = prefix.to_rows(torch.matmul(prefix.to_grid(w[..., :P]), pv), G)  # (B, Hk, G, D)
    return op + torch.matmul(w[..., P:], value)  # (B, Hk, G, D)


_CASCADE = "aha_cascade"


def _register_cascade() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_CASCADE, cascade_attention)


# ----------------------------------------------------------------------------- native decode step

# architectures whose decoder layer is exactly: RMSNorm -> q/k/v (optional per-head q/k RMSNorm) ->
# rotary -> attention -> o_proj -> residual -> RMSNorm -> down(silu(gate) * up) -> residual
_NATIVE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# fusing q/k/v and gate/up into one matmul each saves calls but copies the weights at every
# generate call; worth it only while the copies are small
_FUSE_MAX_PARAMS = 50_000_000


class _NativeDecoder:
    """The decode step of Llama-family models written directly over the model's weights.

    For small models most of a transformers forward is Python and tiny kernels (module calls,
    RMSNorm in 8 ops, mask plumbing); this step does the same arithmetic with fewer, larger calls,
    reading the model's current parameters, so training updates are always seen. Only plain
    (non-PEFT, non-quantised) models of `_NATIVE_TYPES` qualify, checked module by module.
    `prefill` runs the prompts (SDPA attention), `step` one token per row (cascade attention).
    """

    def __init__(self, model: Any):
        model = hf_model(model)  # LoRA layers stay inside it; `_linear_parts` merges them
        self.model = model
        base = model.model
        self.layers = list(base.layers)
        self.rotary = base.rotary_emb
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.fuse = sum(p.numel() for p in model.parameters()) <= _FUSE_MAX_PARAMS
        self._weights: list[dict[str, Any]] | None = None
        self.kernels: CascadeKernels | None = None

    @staticmethod
    def supports(model: Any) -> bool:
        """True when `model` is a Llama-family causal LM this step reproduces: plain, or with plain LoRA
        adapters on its attention/MLP projections (merged into the step's weight copies), when small
        enough for those copies."""
        wrapped, model = model, hf_model(model)
        cfg = getattr(model, "config", None)
        if getattr(cfg, "model_type", None) not in _NATIVE_TYPES:
            return False
        if wrapped is not model and sum(p.numel() for p in model.parameters()) > _FUSE_MAX_PARAMS:
            return False  # merged copies of every adapted weight at each call: only for small models
        base = getattr(model, "model", None)
        if base is None or not isinstance(getattr(model, "lm_head", None), torch.nn.Linear) \
                or not hasattr(base, "rotary_emb") or type(base.embed_tokens) is not torch.nn.Embedding:
            return False
        if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "attn_logit_softcapping", None):
            return False
        norms = [base.norm]
        for layer in base.layers:
            attn, mlp = layer.self_attn, getattr(layer, "mlp", None)
            linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
                [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
            if any(_linear_parts(x) is None for x in linears):
                return False
            if type(getattr(mlp, "act_fn", None)).__name__ not in ("SiLU", "SiLUActivation"):
                return False
            if abs(getattr(attn, "scaling", 0.0) - attn.head_dim ** -0.5) > 1e-12:
                return False
            norms += [layer.input_layernorm, layer.post_attention_layernorm]
            norms += [getattr(attn, n) for n in ("q_norm", "k_norm") if hasattr(attn, n)]
            extra = {n for n, _ in attn.named_children()} - {"q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"}
            if extra:
                return False
        return all(type(n).__name__.endswith("RMSNorm") and hasattr(n, "variance_epsilon") for n in norms)

    def refresh(self) -> None:
        """Take the model's current weights (fused copies are rebuilt: training changes them)."""
        weights = []
        pack = self.fuse and _onednn_usable(self.model.lm_head.weight)
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            w: dict[str, Any] = {
                "ln1": (layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                "ln2": (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                "o": _lin_spec(*_linear_parts(a.o_proj), pack),
                "down": _lin_spec(*_linear_parts(m.down_proj), pack),
                "q_norm": (a.q_norm.weight, a.q_norm.variance_epsilon) if hasattr(a, "q_norm") else None,
                "k_norm": (a.k_norm.weight, a.k_norm.variance_epsilon) if hasattr(a, "k_norm") else None,
                "head_dim": a.head_dim,
            }
            qkv = [_linear_parts(x) for x in (a.q_proj, a.k_proj, a.v_proj)]
            gu = [_linear_parts(x) for x in (m.gate_proj, m.up_proj)]
            if self.fuse:
                w["qkv"] = [_lin_spec(torch.cat([wt for wt, _ in qkv]), _cat_bias(qkv), pack)]
                w["gu"] = [_lin_spec(torch.cat([wt for wt, _ in gu]), _cat_bias(gu), pack)]
            else:
                w["qkv"] = [_lin_spec(wt, b, False) for wt, b in qkv]
                w["gu"] = [_lin_spec(wt, b, False) for wt, b in gu]
            weights.append(w)
        self._weights = weights
        self._head = _lin_spec(self.model.lm_head.weight, self.model.lm_head.bias, pack)
        self.packed = pack
        # the compiled kernels read raw float32 CPU buffers: every parameter must be one
        cpu_f32 = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.model.parameters())
        self.kernels = cascade_kernels() if cpu_f32 else None

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """RMSNorm of (N, H) rows: one compiled pass where the CPU kernels are in use, else `_rms`."""
        if self.kernels is not None:
            return self.kernels.rms_norm(x, weight, eps)
        return _rms(x, weight, eps)

    def prefill(self, ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor | None
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The prompts' forward: last-position logits (U, V) float32 and per-layer keys/values.

        ids, positions: (U, P) left-padded prompt ids and their position ids.
        allowed: (U, 1, P, P) bool attention mask (causal and padding), or None: plain causal.
        Returns logits (U, V) and per layer keys, values (U, H_kv, P, D) (contiguous).
        """
        assert self._weights is not None
        F = torch.nn.functional
        model = self.model
        Hq, Hk = self.heads, self.kv_heads
        U, P = ids.shape
        x = F.embedding(ids, model.model.embed_tokens.weight)  # (U, P, H)
        cos, sin = self.rotary(x, positions)  # (U, P, D) each
        D = cos.shape[-1]
        sin = torch.cat([-sin[..., : D // 2], sin[..., D // 2:]], -1)[:, :, None, :]  # (U, P, 1, D)
        cos = cos[:, :, None, :]
        x = x.reshape(U * P, -1)  # (U*P, H)
        keys, values = [], []
        for w in self._weights:
            h = self._norm(x, *w["ln1"])
            if len(w["qkv"]) == 1:
                qkv = _lin(h, w["qkv"][0]).view(U, P, Hq + 2 * Hk, D)
                q, k, v = qkv[:, :, :Hq], qkv[:, :, Hq:Hq + Hk], qkv[:, :, Hq + Hk:]
            else:
                q, k, v = (_lin(h, spec).view(U, P, -1, D) for spec in w["qkv"])
            if w["q_norm"] is not None:
                q, k = _rms(q, *w["q_norm"]), _rms(k, *w["k_norm"])
            q = q * cos + q.unflatten(-1, (2, D // 2)).flip(-2).flatten(-2) * sin  # (U, P, Hq, D)
            k = k * cos + k.unflatten(-1, (2, D // 2)).flip(-2).flatten(-2) * sin  # (U, P, Hk, D)
            k = k.transpose(1, 2).contiguous()  # (U, Hk, P, D)
            v = v.transpose(1, 2).contiguous()  # (U, Hk, P, D)
            keys.append(k)
            values.append(v)
            attn = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=allowed,
                                                  is_causal=allowed is None, enable_gqa=Hq != Hk)  # (U, Hq, P, D)
            x = x + _lin(attn.transpose(1, 2).reshape(U * P, Hq * D), w["o"])
            x = x + _mlp(self._norm(x, *w["ln2"]), w)
        x = self._norm(x.view(U, P, -1)[:, -1], model.model.norm.weight, model.model.norm.variance_epsilon)  # (U, H)
        return _lin(x, self._head).float(), keys, values

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlabCache,
             prefix: _Prefix) -> torch.Tensor:
        """Logits (B, V) float32 for one new token per row.

        tokens, positions: (B,) the tokens to feed and their positions.
        cache: per-row generated keys/values (the new ones are written into it).
        prefix: the shared prompt keys/values (cascade attention).
        """
        assert self._weights is not None
        F = torch.nn.functional
        model = self.model
        Hq, Hk = self.heads, self.kv_heads
        x = F.embedding(tokens, model.model.embed_tokens.weight)  # (B, H)
        B = x.shape[0]
        cos, sin = self.rotary(x[:, None, :], positions[:, None])  # (B, 1, D) each
        D = cos.shape[-1]
        # rotary for q and k heads in one pass: x * cos + swap_halves(x) * sin_signed, where
        # swap_halves(x) * sin_signed == rotate_half(x) * sin; the q rows also carry the attention
        # scale (exact when it is a power of two, as for D = 64 or 256)
        scale = D ** -0.5
        sin = torch.cat([-sin[..., : D // 2], sin[..., D // 2:]], -1)  # (B, 1, D)
        cos_qk = torch.cat([(cos * scale).expand(B, Hq, D), cos.expand(B, Hk, D)], 1)  # (B, Hq+Hk, D)
        sin_qk = torch.cat([(sin * scale).expand(B, Hq, D), sin.expand(B, Hk, D)], 1)  # (B, Hq+Hk, D)
        for i, w in enumerate(self._weights):
            if w["head_dim"] != D:
                raise AhaError(f"native step: layer {i} has head_dim {w['head_dim']}, rotary gives {D}")
            h = self._norm(x, *w["ln1"])
            if len(w["qkv"]) == 1:
                qkv = _lin(h, w["qkv"][0])  # (B, (Hq + 2 Hk) D)
                v = qkv[:, (Hq + Hk) * D:].view(B, Hk, D)
                if w["q_norm"] is None:
                    qk = qkv[:, :(Hq + Hk) * D].view(B, Hq + Hk, D)
                else:
                    qk = torch.cat([_rms(qkv[:, :Hq * D].view(B, Hq, D), *w["q_norm"]),
                                    _rms(qkv[:, Hq * D:(Hq + Hk) * D].view(B, Hk, D), *w["k_norm"])], 1)
            else:
                q, k, v = (_lin(h, spec) for spec in w["qkv"])
                q, k, v = q.view(B, Hq, D), k.view(B, Hk, D), v.view(B, Hk, D)
                if w["q_norm"] is not None:
                    q, k = _rms(q, *w["q_norm"]), _rms(k, *w["k_norm"])
                qk = torch.cat([q, k], 1)  # (B, Hq + Hk, D)
            qk = qk * cos_qk + qk.view(B, Hq + Hk, 2, D // 2).flip(2).view(B, Hq + Hk, D) * sin_qk
            layer = cache.layers[i]
            q = qk[:, :Hq].view(B, Hk, Hq // Hk, D)  # (B, Hk, G, D)
            if self.kernels is not None:  # the kernel stores this step's keys itself
                layer.append_values(qk[:, Hq:, None, :], v[:, :, None, :])
                attn = self.kernels.attention(q, prefix.keys_t[i], prefix.values[i], prefix.bias2d, prefix.row_prompt,
                                              layer.keys, layer.values, layer.length,
                                              new_keys=qk[:, Hq:])  # (B, Hk, G, D)
            else:
                keys, values = layer.update(qk[:, Hq:, None, :], v[:, :, None, :])
                attn = cascade_core(q, keys, values, prefix, i)  # (B, Hk, G, D)
            x = x + _lin(attn.reshape(B, Hq * D), w["o"])
            x = x + _mlp(self._norm(x, *w["ln2"]), w)
        x = self._norm(x, model.model.norm.weight, model.model.norm.variance_epsilon)
        return _lin(x, self._head).float()  # (B, V)


# ----------------------------------------------------------------------------- linear layers via oneDNN
#
# On CPU, PyTorch runs F.linear through MKL, which on some CPUs (AMD ones among them) takes a code path
# well below the oneDNN kernels PyTorch also ships (the ones torch.compile's CPU backend uses): about
# 2x on a decode step's (64 x 256) @ (256 x 1376) shapes. The native step therefore packs its (small)
# weight copies for oneDNN once per generate call and calls them through `mkldnn._linear_pointwise`,
# after checking once per process that the op exists and agrees with F.linear.

_ONEDNN_STATE: dict[str, bool] = {}


def _onednn_usable(weight: torch.Tensor) -> bool:
    """True when float32 CPU linears can go through oneDNN's packed-weight op (checked once)."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    if "ok" not in _ONEDNN_STATE:
        _ONEDNN_STATE["ok"] = _onednn_self_check()
    return _ONEDNN_STATE["ok"]


def _onednn_self_check() -> bool:
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        w = torch.randn(24, 16, generator=g)
        b = torch.randn(24, generator=g)
        x = torch.randn(5, 16, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        y0 = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        ref = torch.nn.functional.linear(x, w, b)
        return bool(torch.allclose(y, ref, rtol=1e-4, atol=1e-4)
                    and torch.allclose(y0 + b, ref, rtol=1e-4, atol=1e-4))
    except Exception:  # noqa: BLE001 - any failure (op missing, build without oneDNN) means: use F.linear
        return False


def _lin_spec(weight: torch.Tensor, bias: torch.Tensor | None, pack: bool) -> tuple:
    """A linear layer for `_lin`: (weight, bias, None), or (None, bias, packed weight) for oneDNN."""
    if pack:
        return None, bias, torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    return weight, bias, None


def _lin(x: torch.Tensor, spec: tuple) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN when the spec holds a packed weight."""
    weight, bias, packed = spec
    if packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def _cat_bias(parts: list[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor | None:
    """The biases of (weight, bias) pairs concatenated (zeros where one has none), or None if none has."""
    if all(b is None for _, b in parts):
        return None
    return torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])


def _linear_parts(module: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of the linear map `module` computes in eval mode, or None if it is not one the
    native step can reproduce.

    A plain nn.Linear gives its own parameters. A peft LoRA layer over an nn.Linear gives its base
    weight plus, for each active unmerged adapter, the adapter's delta (B @ A * scaling, peft's own
    get_delta_weight): the same function as base(x) + B(A(x)) * scaling up to float rounding, since
    dropout is off in eval mode. Adapter variants (DoRA and the like) and adapters with a bias are
    refused (None).
    """
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
    if type(base) is not torch.nn.Linear or lora_a is None or lora_b is None or not hasattr(module, "get_delta_weight"):
        return None
    if module.disable_adapters or module.merged:
        return base.weight, base.bias
    weight = base.weight
    for name in module.active_adapters:
        if name not in lora_a:
            continue
        if name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name) \
                or lora_b[name].bias is not None:
            return None
        weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight, base.bias


def _mlp(h: torch.Tensor, w: dict[str, Any]) -> torch.Tensor:
    """The gated MLP of one layer (weights as `_NativeDecoder.refresh` lays them out) on normed input h."""
    if len(w["gu"]) == 1:
        gate, up = _lin(h, w["gu"][0]).chunk(2, -1)
    else:
        gate, up = (_lin(h, spec) for spec in w["gu"])
    return _lin(torch.nn.functional.silu(gate) * up, w["down"])


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it: statistics in float32, scaled in the input dtype."""
    if x.dtype == torch.float32:  # the same arithmetic without the two no-op casts
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


# ----------------------------------------------------------------------------- the engine


class EngineGenerator:
    """aha's KV-cache sampler behind the `Generator` interface (see the module docstring).

    model: a transformers causal LM (optionally PEFT-wrapped), on any device and dtype.
    tokenizer: decodes completions (skip special tokens) and checks stop strings; may be None, then
        text is "" and stop strings are refused.
    eos_token_ids: ids that end a completion; default: see `resolve_eos_ids`.
    pad_token_id: left-padding id (masked, so its value is irrelevant); default: the tokenizer's pad.
    max_batch_rows: at most this many rows (prompts x n) decode together; more are run group by group
        in successive batches (bounds memory). None = all at once.
    compact_fraction: finished rows are removed from the batch once they are at least this fraction of
        it (their compute is wasted until then, but each removal copies the live cache rows).
    mode: how decode steps run:
        "native": cascade attention (below) inside a lean decode step over the model's weights
            (`_NativeDecoder`): Llama/Mistral/Qwen2/Qwen3 models, plain or with plain LoRA adapters.
        "cascade": the prompt's keys/values are kept once per distinct prompt and read by all its rows
            (`cascade_attention`); only generated keys/values are per row. Needs full attention and
            a model that dispatches attention through transformers' AttentionInterface (PEFT is fine).
        "slab": the prompt cache is copied to every row of its group; the model's own attention.
        "dynamic": transformers' DynamicCache and 2D masks (any architecture, e.g. sliding window).
        "auto" (default): the first of these the model supports.
    initial_capacity: generated positions reserved at first; the buffer doubles when full.
    max_prefill_tokens: prompts are prefilled in chunks of at most this many (padded) tokens, which
        bounds the prefill's activation memory (not used in "dynamic" mode).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, eos_token_ids: Sequence[int] | None = None,
                 pad_token_id: int | None = None, max_batch_rows: int | None = None,
                 compact_fraction: float = 0.125, mode: str = "auto", initial_capacity: int = 128,
                 max_prefill_tokens: int = 32768):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = resolve_eos_ids(tokenizer, model, eos_token_ids)
        self.pad_id = resolve_pad_id(tokenizer, self.eos_ids, pad_token_id)
        self.max_batch_rows = max_batch_rows
        self.compact_fraction = compact_fraction
        self.initial_capacity = max(1, initial_capacity)
        self.max_prefill_tokens = max(1, max_prefill_tokens)
        hf = hf_model(model)
        self.config = hf.config
        full = full_attention_only(self.config)
        can_cascade = full and bool(getattr(hf, "_can_set_attn_implementation", lambda: False)())
        supported = {"native": can_cascade and _NativeDecoder.supports(model), "cascade": can_cascade,
                     "slab": full, "dynamic": True}
        if mode == "auto":
            mode = next(m for m, ok in supported.items() if ok)
        elif mode not in supported:
            raise AhaError(f"unknown engine mode {mode!r}; valid: auto, native, cascade, slab, dynamic")
        elif not supported[mode]:
            raise AhaError(f"engine mode {mode!r} is not supported by this model "
                           f"({type(hf).__name__}); use mode='auto'")
        self.mode = mode
        attn = getattr(self.config, "_attn_implementation", None) or "eager"
        # ready-made 4D masks skip transformers' mask construction at every step; other attention
        # kernels (flash, flex) want the 2D padding mask
        self.mask_kind = ("bool4d" if attn == "sdpa" else "float4d" if attn == "eager" else "2d") \
            if mode != "dynamic" else "2d"
        self.num_layers = self.config.num_hidden_layers
        params = inspect.signature(hf.forward).parameters
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._cache_keyword = cache_keyword(model)
        self._stop_cache: dict[tuple[str, ...], StopChecker] = {}
        self._native = _NativeDecoder(model) if mode == "native" else None
        if mode == "cascade":
            _register_cascade()

    # ------------------------------------------------------------------ public API

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """Sample `params.n` completions per prompt; ordered by (prompt_index, sample_index).

        prompts: token ids per prompt (no padding, non-empty).
        params: temperature, top_p, top_k, max_new_tokens, n, stop strings, seed (see SamplingParams).
        """
        check_params(params, self.tokenizer)
        if any(len(p) == 0 for p in prompts):
            raise AhaError("empty prompt: every prompt needs at least one token")
        if not prompts:
            return []
        stop = self._stop_checker(params.stop)
        n = params.n
        rows = [(i, j) for i in range(len(prompts)) for j in range(n)]
        per_batch = len(rows) if not self.max_batch_rows else max(n, self.max_batch_rows // n * n)
        tokens: list[list[int]] = []
        logprobs: list[list[float]] = []
        reasons: list[str] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                if self._native is not None:
                    self._native.refresh()
                for start in range(0, len(rows), per_batch):
                    t, lp, r = self._generate_rows(prompts, rows[start:start + per_batch], params, stop)
                    tokens += t
                    logprobs += lp
                    reasons += r
        finally:
            self.model.train(was_training)
        return build_completions(self.tokenizer, stop, rows, tokens, logprobs, reasons)

    # ------------------------------------------------------------------ internals

    def _stop_checker(self, stops: list[str]) -> StopChecker | None:
        if not stops:
            return None
        key = tuple(stops)
        if key not in self._stop_cache:
            self._stop_cache[key] = StopChecker(self.tokenizer, stops)
        return self._stop_cache[key]

    def _forward(self, ids: torch.Tensor, mask: Any, pos: torch.Tensor, cache: Cache, **extra: Any) -> torch.Tensor:
        """Next-token logits (B, V) float32 of the last position."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self._cache_keyword: cache}, **self._keep_last, **extra)
        return out.logits[:, -1, :].float()

    def _mask(self, valid: torch.Tensor, q_len: int) -> Any:
        """Attention mask for queries that are the last `q_len` of the keys described by valid (B, K)."""
        if self.mask_kind == "2d":
            return valid.to(torch.long)  # (B, K)
        allowed = self._allowed(valid, q_len)
        if self.mask_kind == "bool4d":
            return allowed
        dtype = next(self.model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min)

    @staticmethod
    def _allowed(valid: torch.Tensor, q_len: int) -> torch.Tensor:
        """(B, 1, q_len, K) bool: which keys (validity valid (B, K)) the last q_len positions attend to."""
        K = valid.shape[1]
        if q_len == 1:
            return valid[:, None, None, :]  # (B, 1, 1, K)
        qpos = torch.arange(K - q_len, K, device=valid.device)[:, None]  # (q, 1)
        kpos = torch.arange(K, device=valid.device)[None, :]  # (1, K)
        # padded queries attend to themselves so no softmax row is empty (NaNs would reach the cache)
        allowed = (kpos <= qpos)[None] & (valid[:, None, :] | (kpos == qpos)[None])  # (B, q, K)
        return allowed[:, None]  # (B, 1, q, K)

    def _prefill(self, ids: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor, padded: bool
                 ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run the prompts through the model in chunks of at most `max_prefill_tokens` tokens.

        ids, valid, pos: (U, P) left-padded prompt ids, key validity and position ids.
        Returns the last-position logits (U, V) and per-layer keys and values (U, H_kv, P, D).
        """
        U, P = ids.shape
        step = max(1, self.max_prefill_tokens // P)
        logits, keys, values = [], [], []
        for a in range(0, U, step):
            if self._native is not None:
                allowed = self._allowed(valid[a:a + step], P) if padded else None
                lg, k, v = self._native.prefill(ids[a:a + step], pos[a:a + step], allowed)
                logits.append(lg)
                keys.append(k)
                values.append(v)
                continue
            cache = SlabCache(self.num_layers, P)
            mask = self._mask(valid[a:a + step], P) if padded or self.mask_kind == "2d" else None
            logits.append(self._forward(ids[a:a + step], mask, pos[a:a + step], cache))
            keys.append([layer.keys for layer in cache.layers])
            values.append([layer.values for layer in cache.layers])
        if len(logits) == 1:
            return logits[0], keys[0], values[0]
        return (torch.cat(logits), [torch.cat(k) for k in zip(*keys)], [torch.cat(v) for v in zip(*values)])

    def _generate_rows(self, prompts: list[list[int]], rows: list[tuple[int, int]], params: SamplingParams,
                       stop: StopChecker | None) -> tuple[list[list[int]], list[list[float]], list[str]]:
        """Decode the given rows together; returns per-row tokens, log-probs and finish reasons."""
        device = model_device(self.model)
        max_new = params.max_new_tokens
        mode = self.mode
        # ---- prefill each distinct prompt once
        unique: dict[tuple[int, ...], int] = {}
        row_unique = [unique.setdefault(tuple(prompts[pi]), len(unique)) for pi, _ in rows]
        uprompts = list(unique)
        U, P, R = len(uprompts), max(len(p) for p in uprompts), len(rows)
        ids = torch.full((U, P), self.pad_id, dtype=torch.long)
        for u, p in enumerate(uprompts):
            ids[u, P - len(p):] = torch.tensor(p, dtype=torch.long)
        ids = ids.to(device)  # (U, P)
        plen = torch.tensor([len(p) for p in uprompts], device=device)  # (U,)
        pads = P - plen  # (U,)
        valid_u = torch.arange(P, device=device)[None, :] >= pads[:, None]  # (U, P)
        padded = bool((pads > 0).any())
        pos_u = (torch.arange(P, device=device)[None, :] - pads[:, None]).clamp_(min=0)  # (U, P)
        if mode == "dynamic":
            cache: Cache = DynamicCache(config=self.config)
            logits = self._forward(ids, valid_u.to(torch.long), pos_u, cache)  # (U, V)
        else:
            logits, pkeys, pvalues = self._prefill(ids, valid_u, pos_u, padded)

        # ---- the decode batch: one row per (prompt, sample)
        ru = torch.tensor(row_unique, device=device)  # (R,)
        gen_cap = min(max_new, self.initial_capacity)
        prefix = None
        valid = None  # (B, K) key validity, when a mask must be built at every step
        if mode in ("native", "cascade"):
            bias = None
            if padded:
                bias = torch.zeros((U, 1, 1, P), device=device).masked_fill_(~valid_u[:, None, None, :], float("-inf"))
            kernel = self._native is not None and self._native.kernels is not None
            prefix = _Prefix(pkeys, pvalues, bias, transposed_keys=kernel)
            pkeys = pvalues = None  # the prefix holds what decoding needs (transposed keys for the kernel)
            prefix.assign(row_unique, device)
            cache = SlabCache(self.num_layers, gen_cap, offset=P, keys_transposed=kernel)
            capacity = gen_cap
        else:
            capacity = P + gen_cap
            if mode == "slab":
                cache = SlabCache.from_prefix(pkeys, pvalues, ru, capacity)
            else:
                cache.batch_select_indices(ru)
            if padded or self.mask_kind == "2d":
                valid = torch.ones((R, capacity), dtype=torch.bool, device=device)  # (R, C)
                valid[:, :P] = valid_u.index_select(0, ru)
        logits = logits.index_select(0, ru)  # (R, V)
        pos = plen.index_select(0, ru)  # (R,) position of the next token
        keys = row_keys(params.seed, torch.tensor([pi for pi, _ in rows], device=device),
                        torch.tensor([si for _, si in rows], device=device))  # (R,)
        # the uniforms of a block of steps at once: row b reads column t % block at step t (greedy
        # reads none); blocks bound the table's memory for long generations of many rows
        block = min(max_new, _UNIFORM_BLOCK) if params.temperature > 0 else 1
        uniforms = uniform_table(keys, block)  # (R, block)
        eos = torch.tensor(self.eos_ids, device=device)
        stop_table = stop.candidates(logits.shape[-1], device) if stop is not None else None

        out_tok = torch.zeros((R, max_new), dtype=torch.long, device=device)  # (R, T)
        out_lp = torch.zeros((R, max_new), dtype=torch.float32, device=device)  # (R, T)
        lengths = [max_new] * R
        reasons = ["length"] * R
        slot_rows = list(range(R))  # batch slot -> row
        slot_idx = torch.arange(R, device=device)  # (B,) the same, on device
        alive = [True] * R  # per batch slot
        n_dead = 0
        T = 0  # generated tokens fed to the model so far
        impl = self.config._attn_implementation
        try:
            if mode == "cascade":
                self.config._attn_implementation_internal = _CASCADE
            for t in range(max_new):
                if block > 1 and t and t % block == 0:
                    uniforms = uniform_table(keys, block, start=t)  # (B, block)
                tok, lp = sample_tokens(logits, uniforms[:, t % block], params.temperature,
                                        params.top_p, params.top_k)  # (B,), (B,)
                out_tok[slot_idx, t] = tok
                out_lp[slot_idx, t] = lp
                flags = torch.isin(tok, eos).to(torch.int8)  # (B,) 1 = EOS
                if stop_table is not None:
                    flags = flags | (stop_table[tok].to(torch.int8) << 1)  # 2 = may complete a stop string
                for slot, f in enumerate(flags.tolist()):
                    if not f or not alive[slot]:
                        continue
                    row = slot_rows[slot]
                    if f & 1:
                        finished = "eos"
                    elif stop is not None and stop.hit(out_tok[row, max(0, t + 1 - stop.window): t + 1].tolist()):
                        finished = "stop"
                    else:
                        continue
                    alive[slot] = False
                    n_dead += 1
                    lengths[row], reasons[row] = t + 1, finished
                if t + 1 == max_new or n_dead == len(slot_rows):
                    break
                # ---- drop finished rows, grow the buffer
                grow = (T if prefix is not None else P + T) + 1 > capacity
                keep = None
                if n_dead and (grow or n_dead >= self.compact_fraction * len(slot_rows)):
                    keep_slots = [s for s, a in enumerate(alive) if a]
                    keep = torch.tensor(keep_slots, device=device)
                    slot_rows = [slot_rows[s] for s in keep_slots]
                    alive = [True] * len(slot_rows)
                    n_dead = 0
                    slot_idx, keys, uniforms, pos, tok = (x.index_select(0, keep)
                                                                for x in (slot_idx, keys, uniforms, pos, tok))
                    if valid is not None:
                        valid = valid.index_select(0, keep)
                    if prefix is not None:
                        live_u = [row_unique[r] for r in slot_rows]
                        groups = sorted(set(live_u))
                        if len(groups) < prefix.values[0].shape[0]:
                            remap = {g: i for i, g in enumerate(groups)}
                            prefix.select(torch.tensor(groups, device=device))
                            row_unique = [remap.get(u, -1) for u in row_unique]
                            live_u = [remap[u] for u in live_u]
                        prefix.assign(live_u, device)
                if grow:
                    gen_cap = min(max_new, 2 * gen_cap)
                    capacity = gen_cap if prefix is not None else P + gen_cap
                    if valid is not None:
                        valid = torch.cat([valid, valid.new_ones((valid.shape[0], capacity - valid.shape[1]))], 1)
                if mode == "dynamic":
                    if keep is not None:
                        cache.batch_select_indices(keep)
                elif grow or keep is not None:
                    cache.resize(keep, capacity)
                # ---- next step
                if self._native is not None:
                    logits = self._native.step(tok, pos, cache, prefix)
                elif mode == "cascade":
                    logits = self._forward(tok[:, None], None, pos[:, None], cache, aha_prefix=prefix)
                else:
                    mask = self._mask(valid[:, :P + T + 1], 1) if valid is not None else None
                    logits = self._forward(tok[:, None], mask, pos[:, None], cache)  # (B, V)
                pos = pos + 1
                T += 1
        finally:
            self.config._attn_implementation_internal = impl
        toks = out_tok.tolist()
        lps = out_lp.tolist()
        return ([toks[r][:lengths[r]] for r in range(R)], [lps[r][:lengths[r]] for r in range(R)], reasons)
