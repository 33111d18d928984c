"""aha's rollout engine: a decode loop with a KV cache over a Hugging Face causal LM (the scheduler).

Why not `model.generate`: in RL sampling most of its work is wasted. Finished rows stay in the batch
until the longest one ends, every sample of a group prefills the same prompt again, and on small
models the per-step work outside the model's arithmetic is a large share of the time.
`EngineGenerator`:

- prefills each distinct prompt once (one forward of the model); its n samples then share that
  prompt cache: in the default modes the prompt keys/values stay stored once per prompt and a
  "cascade" attention reads them once for all the group's rows, so the per-row cache holds
  generated tokens only;
- drops finished rows (EOS, stop string) from the working batch by copying the live rows of the
  cache, once finished rows are `compact_fraction` of the batch;
- writes keys/values into preallocated per-layer buffers (no concatenation per step), doubled when
  full so a long cap does not reserve memory that early-finishing rows never use;
- samples with one counter-based uniform per row and step, so completion j of prompt i depends
  only on (seed, i, j) and the logits, never on which other rows shared the batch;
- returns the log-probability of each sampled token (see `sample_tokens` for which distribution);
- checks stop strings by decoding a short tail of a row, only after tokens that can end one.

Decode steps (EngineGenerator `mode`), the first one the model supports by default:
- "native": Llama/Mistral/Qwen2/Qwen3 models, plain or with plain LoRA adapters: a lean prefill and
  decode step over the model's own weights (`NativeDecoder`);
- "cascade": any full-attention model whose attention goes through transformers' AttentionInterface,
  PEFT-wrapped ones the native step refuses (DoRA, large models) included: the model's forward with
  `cascade_attention` plugged in;
- "slab": other full-attention models: the model's forward and attention, prompt cache copied per row;
- "dynamic": anything else (sliding-window or hybrid layers): transformers' DynamicCache, 2D masks.
The prefill is the model's own forward in the other modes.

The engine's parts, one module each in `aha.rollout`:
- `sampling`: the seeded sampler (counter-based uniforms, `sample_tokens`);
- `kv_cache`: the preallocated KV buffers (`SlabCache`);
- `cascade`: the shared-prompt attention (`SharedPrefix`, `cascade_core`, `cascade_attention`);
- `native`: the native prefill and decode step (`NativeDecoder`, oneDNN linears);
- `cpu_kernels`: the compiled CPU attention and RMSNorm the native step uses;
- `base`: the helpers both backends share (stop strings, EOS/padding ids, completion assembly).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache

from aha.errors import AhaError
from aha.models import cache_keyword, full_attention_only, hf_model
from aha.rollout.base import (
    Completion,
    SamplingParams,
    StopChecker,
    WaveBudget,
    build_completions,
    check_params,
    eval_mode,
    model_device,
    resolve_token_ids,
)
from aha.rollout.cascade import CASCADE_ATTENTION, SharedPrefix, register_cascade
from aha.rollout.kv_cache import SlabCache
from aha.rollout.native import NativeDecoder
from aha.rollout.sampling import row_keys, sample_tokens, uniform_table

_UNIFORM_BLOCK = 256  # decode steps whose uniforms are drawn at once


@dataclass(eq=False, slots=True)
class _Row:
    """The Python-side state of one completion being decoded. Its tokens and log-probs are written
    into the batch's (R, max_new_tokens) tensors at every step and copied into the row at the end.

    index: its row in those tensors. group: its distinct prompt, as an index into the prefill (and
    into the shared prefix, renumbered when prompts without live rows leave it).
    length: generated tokens kept (the cap, or up to the EOS / stop token). reason: the finish reason.
    """

    index: int
    prompt_index: int
    sample_index: int
    group: int
    length: int
    reason: str = "length"
    finished: bool = False
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class EngineGenerator:
    """aha's KV-cache sampler behind the `Generator` interface (see the module docstring).

    model: a transformers causal LM (optionally PEFT-wrapped), on any device and dtype.
    tokenizer: decodes completions (skip special tokens) and checks stop strings; may be None, then
        text is "" and stop strings are refused.
    eos_token_ids: ids that end a completion; default: see `aha.models.eos_token_ids`.
    pad_token_id: left-padding id (masked, so its value is irrelevant); default: the tokenizer's pad.
    max_batch_rows, max_batch_tokens, memory_fraction: the memory budget (`base.WaveBudget`): a
        request is decoded in successive waves of at most max_batch_rows rows (prompts x n) and
        max_batch_tokens KV positions (each row counts the longest prompt plus max_new_tokens); a prompt's
        samples share a wave when they fit. None/0: no row cap; no token cap, except on CUDA where
        it defaults to what `memory_fraction` of the free device memory holds. The completions do
        not depend on the waves: every row samples from its own counter-based seed, and every wave
        pads its prompts to the request's longest, so in "native" mode a row's computation is the
        same bit for bit (tokens and log-probs); the other modes run the model's own forward, whose
        matmuls round differently for other batch sizes, so their log-probs may differ in the last
        bits (the tokens, in practice, do not).
    compact_fraction: finished rows are removed from the batch once they are at least this fraction of
        it (their compute is wasted until then, but each removal copies the live cache rows).
    mode: how decode steps run:
        "native": cascade attention (below) inside a lean decode step over the model's weights
            (`NativeDecoder`): Llama/Mistral/Qwen2/Qwen3 models, plain or with plain LoRA adapters.
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
                 max_batch_tokens: int | None = None, memory_fraction: float = 0.5,
                 compact_fraction: float = 0.125, mode: str = "auto", initial_capacity: int = 128,
                 max_prefill_tokens: int = 32768):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids, self.pad_id = resolve_token_ids(tokenizer, model, eos_token_ids, pad_token_id)
        self.budget = WaveBudget(max_batch_rows or 0, max_batch_tokens or 0, memory_fraction)
        self.compact_fraction = compact_fraction
        self.initial_capacity = max(1, initial_capacity)
        self.max_prefill_tokens = max(1, max_prefill_tokens)
        hf = hf_model(model)
        self.config = hf.config
        full = full_attention_only(self.config)
        can_cascade = full and bool(getattr(hf, "_can_set_attn_implementation", lambda: False)())
        supported = {"native": can_cascade and NativeDecoder.supports(model), "cascade": can_cascade,
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
        self._native = NativeDecoder(model) if mode == "native" else None
        if mode == "cascade":
            register_cascade()

    # ------------------------------------------------------------------ public API

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """Sample `params.n` completions per prompt; ordered by (prompt_index, sample_index).

        prompts: token ids per prompt (no padding, non-empty).
        params: temperature, top_p, top_k, max_new_tokens, n, stop strings, seed (see SamplingParams).
        """
        check_params(params, self.tokenizer, prompts)
        if not prompts:
            return []
        stop = self._stop_checker(params.stop)
        pad_to = max(len(p) for p in prompts)  # every wave pads to the same width (see max_batch_rows)
        waves = self.budget.waves(self.model, prompts, params, pad_to=pad_to)
        rows = [row for wave in waves for row in wave]  # (prompt_index, sample_index) order
        done: list[_Row] = []
        with eval_mode(self.model), torch.inference_mode():
            if self._native is not None:
                self._native.refresh()
            for wave in waves:
                done += self._generate_rows(prompts, wave, params, stop, pad_to)
        return build_completions(self.tokenizer, stop, rows, [r.token_ids for r in done],
                                 [r.logprobs for r in done], [r.reason for r in done])

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
                       stop: StopChecker | None, pad_to: int = 0) -> list[_Row]:
        """Decode the given (prompt_index, sample_index) rows together; returns them finished, in order.
        The prompts are left-padded to at least `pad_to` tokens."""
        device = model_device(self.model)
        max_new = params.max_new_tokens
        mode = self.mode
        # ---- prefill each distinct prompt once
        unique: dict[tuple[int, ...], int] = {}
        state = [_Row(r, pi, si, unique.setdefault(tuple(prompts[pi]), len(unique)), max_new)
                 for r, (pi, si) in enumerate(rows)]
        uprompts = list(unique)
        U, P, R = len(uprompts), max(pad_to, max(len(p) for p in uprompts)), len(rows)
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
        ru = torch.tensor([row.group for row in state], device=device)  # (R,)
        gen_cap = min(max_new, self.initial_capacity)
        prefix = None
        valid = None  # (B, K) key validity, when a mask must be built at every step
        if mode in ("native", "cascade"):
            bias = None
            if padded:
                bias = torch.zeros((U, 1, 1, P), device=device).masked_fill_(~valid_u[:, None, None, :], float("-inf"))
            kernel = self._native is not None and self._native.kernels is not None
            prefix = SharedPrefix(pkeys, pvalues, bias, transposed_keys=kernel)
            pkeys = pvalues = None  # the prefix holds what decoding needs (transposed keys for the kernel)
            prefix.assign([row.group for row in state], device)
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
        keys = row_keys(params.seed, torch.tensor([row.prompt_index + params.index_offset for row in state],
                                                device=device),
                        torch.tensor([row.sample_index for row in state], device=device))  # (R,)
        # the uniforms of a block of steps at once: row b reads column t % block at step t (greedy
        # reads none); blocks bound the table's memory for long generations of many rows
        block = min(max_new, _UNIFORM_BLOCK) if params.temperature > 0 else 1
        uniforms = uniform_table(keys, block)  # (R, block)
        eos = torch.tensor(self.eos_ids, device=device)
        stop_table = stop.candidates(logits.shape[-1], device) if stop is not None else None

        out_tok = torch.zeros((R, max_new), dtype=torch.long, device=device)  # (R, T)
        out_lp = torch.zeros((R, max_new), dtype=torch.float32, device=device)  # (R, T)
        live = list(state)  # batch slot -> row
        slot_idx = torch.arange(R, device=device)  # (B,) each slot's row index, on device
        n_dead = 0  # finished rows still in the batch
        T = 0  # generated tokens fed to the model so far
        impl = self.config._attn_implementation
        try:
            if mode == "cascade":
                self.config._attn_implementation_internal = CASCADE_ATTENTION
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
                    if not f or live[slot].finished:
                        continue
                    row = live[slot]
                    if f & 1:
                        reason = "eos"
                    elif stop is not None and stop.hit(
                            out_tok[row.index, max(0, t + 1 - stop.window): t + 1].tolist()):
                        reason = "stop"
                    else:
                        continue
                    row.finished, row.length, row.reason = True, t + 1, reason
                    n_dead += 1
                if t + 1 == max_new or n_dead == len(live):
                    break
                # ---- drop finished rows, grow the buffer
                grow = (T if prefix is not None else P + T) + 1 > capacity
                keep = None
                if n_dead and (grow or n_dead >= self.compact_fraction * len(live)):
                    keep_slots = [s for s, row in enumerate(live) if not row.finished]
                    keep = torch.tensor(keep_slots, device=device)
                    live = [live[s] for s in keep_slots]
                    n_dead = 0
                    slot_idx, keys, uniforms, pos, tok = (x.index_select(0, keep)
                                                                for x in (slot_idx, keys, uniforms, pos, tok))
                    if valid is not None:
                        valid = valid.index_select(0, keep)
                    if prefix is not None:
                        groups = sorted({row.group for row in live})
                        if len(groups) < prefix.values[0].shape[0]:  # some prompts have no live row left
                            remap = {g: i for i, g in enumerate(groups)}
                            prefix.select(torch.tensor(groups, device=device))
                            for row in live:
                                row.group = remap[row.group]
                        prefix.assign([row.group for row in live], device)
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
        for row in state:
            row.token_ids, row.logprobs = toks[row.index][:row.length], lps[row.index][:row.length]
        return state
