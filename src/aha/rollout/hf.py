"""The transformers `generate` backend: the reference the engine is checked against.

Each prompt is repeated n times, left-padded into one batch and handed to `model.generate`; stop
strings are checked by a StoppingCriteria built on `base.StopChecker` so rows stop early
(generate's own `stop_strings` needs a tokenizer whose vocabulary round-trips through
`convert_ids_to_tokens`, which not every tokenizer does), and every row is trimmed after its first EOS
or stop string afterwards (generate pads finished rows until the longest one ends).

Seeding: `torch.manual_seed(seed)` inside a forked RNG state (the caller's global RNG is untouched).
Generate draws from one global stream for the whole batch, so a completion depends on the batch it
was sampled in: the same prompts with the same seed give the same completions, but sampling a prompt
alone or with other prompts does not. Use the engine backend when that matters.

Memory budget: a request runs as successive `generate` calls ("waves", `base.WaveBudget`: at most
`max_batch_rows` rows and `max_batch_tokens` padded positions each; on CUDA an automatic token budget
from free memory). The RNG is seeded once and continues from wave to wave, so a request is still
reproducible for a given budget; greedy completions do not depend on the waves, sampled ones do
(see above).

Log-probabilities are not returned (Completion.logprobs is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

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


class _StopStrings:
    """StoppingCriteria: a row is done once its generated text contains a stop string.

    stop: the checker; prompt_len: columns of input_ids that are the (padded) prompt;
    vocab_size: the model's vocabulary size (ids are below it).
    """

    def __init__(self, stop: StopChecker, prompt_len: int, vocab_size: int):
        self.stop, self.prompt_len, self.vocab_size = stop, prompt_len, vocab_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        generated = input_ids[:, self.prompt_len:]  # (R, t)
        table = self.stop.candidates(self.vocab_size, generated.device)  # (V,)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (R,)
        if generated.shape[1] == 0:
            return done
        for r in table[generated[:, -1]].nonzero().flatten().tolist():
            done[r] = self.stop.hit(generated[r, -self.stop.window:].tolist())
        return done


class HFGenerator:
    """`Generator` over transformers' `model.generate`.

    model: a transformers causal LM (optionally PEFT-wrapped), on any device and dtype.
    tokenizer: decodes completions and serves generate's stop-string criterion; may be None, then text
        is "" and stop strings are refused.
    eos_token_ids: ids that end a completion; default: see `aha.models.eos_token_ids`.
    pad_token_id: left-padding id; default: the tokenizer's pad token, else the first EOS id.
    max_batch_rows, max_batch_tokens, memory_fraction: the memory budget (`base.WaveBudget`; 0/None:
        no cap, except on CUDA where the token cap defaults to what `memory_fraction` of free memory
        holds).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, eos_token_ids: Sequence[int] | None = None,
                 pad_token_id: int | None = None, max_batch_rows: int | None = None,
                 max_batch_tokens: int | None = None, memory_fraction: float = 0.5):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids, self.pad_id = resolve_token_ids(tokenizer, model, eos_token_ids, pad_token_id)
        self.budget = WaveBudget(max_batch_rows or 0, max_batch_tokens or 0, memory_fraction)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """Sample `params.n` completions per prompt; ordered by (prompt_index, sample_index).

        prompts: token ids per prompt (no padding, non-empty).
        params: temperature (0 = greedy), top_p, top_k (0 = off), max_new_tokens, n, stop, seed.
        """
        from transformers import GenerationConfig, StoppingCriteriaList

        check_params(params, self.tokenizer, prompts)
        if not prompts:
            return []
        device = model_device(self.model)
        sampling = params.temperature > 0
        # explicit values: unset (None) fields are filled from the model's generation_config, which
        # often sets top_k=50 or a repetition penalty that would silently change the sampler
        knobs = dict(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k) if sampling else {}
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=sampling, num_beams=1, repetition_penalty=1.0,
            eos_token_id=list(self.eos_ids), pad_token_id=self.pad_id, **knobs)
        stop = StopChecker(self.tokenizer, params.stop) if params.stop else None
        vocab = 0
        if stop is not None:
            vocab = max(len(self.tokenizer), int(getattr(self.model.config, "vocab_size", 0) or 0))
        waves = self.budget.waves(self.model, prompts, params)
        rows = [row for wave in waves for row in wave]  # (prompt_index, sample_index) order
        generated: list[list[int]] = []
        devices = [device] if device.type == "cuda" else []
        with eval_mode(self.model), torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(params.seed & 0xFFFF_FFFF_FFFF_FFFF)  # once: the stream runs on over the waves
            for wave in waves:
                P = max(len(prompts[i]) for i, _ in wave)
                ids = torch.full((len(wave), P), self.pad_id, dtype=torch.long)  # (R, P)
                attn = torch.zeros((len(wave), P), dtype=torch.long)  # (R, P)
                for r, (i, _) in enumerate(wave):
                    ids[r, P - len(prompts[i]):] = torch.tensor(prompts[i], dtype=torch.long)
                    attn[r, P - len(prompts[i]):] = 1
                extra = {}
                if stop is not None:
                    extra["stopping_criteria"] = StoppingCriteriaList([_StopStrings(stop, P, vocab)])
                out = self.model.generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                                          generation_config=config, **extra)
                generated += out[:, P:].tolist()  # (R, <= max_new_tokens)
        eos = set(self.eos_ids)
        tokens, reasons = [], []
        for seq in generated:
            end, reason = len(seq), "length"
            for t, tok in enumerate(seq):
                if tok in eos:
                    end, reason = t + 1, "eos"
                    break
            if stop is not None:
                hit = stop.first_stop(seq[:end])
                if hit is not None:
                    end, reason = hit + 1, "stop"
            tokens.append(seq[:end])
            reasons.append(reason)
        return build_completions(self.tokenizer, stop, rows, tokens, None, reasons)
