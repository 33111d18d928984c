"""Generation backends behind one interface (see `base.py`).

- "engine": aha's KV-cache sampler (`engine.EngineGenerator`): prefill once per group, finished rows
  leave the batch, batch-independent seeded sampling, log-probs included. The default.
- "hf": transformers `model.generate` (`hf.HFGenerator`): the reference implementation.
- "vllm": a colocated `vllm.LLM` fed the trainer's weights (`vllm_backend.VLLMGenerator`); needs vLLM
  installed (imported only when chosen).

`get_generator(name, model, tokenizer)` builds one. The backends import torch and transformers, so
they are loaded on first use: importing `aha.rollout.base` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aha.errors import AhaError
from aha.registry import closest
from aha.rollout.base import Completion, Generator, SamplingParams

if TYPE_CHECKING:
    from aha.rollout.engine import EngineGenerator
    from aha.rollout.hf import HFGenerator

BACKENDS = ("engine", "hf", "vllm")
# the memory-budget options every backend takes (see base.WaveBudget)
WAVE_OPTIONS = ("max_batch_rows", "max_batch_tokens", "memory_fraction")
# the vLLM backend's own options (config fields rollout.vllm_<name>; see vllm_backend.VLLMGenerator)
VLLM_OPTIONS = ("gpu_memory_utilization", "kv_cache_gb", "max_model_len", "sleep_level", "enforce_eager",
                "check_every")

__all__ = ["BACKENDS", "WAVE_OPTIONS", "Completion", "EngineGenerator", "Generator", "HFGenerator",
           "SamplingParams", "VLLM_OPTIONS", "get_generator", "wave_options"]


def get_generator(name: str, model: Any, tokenizer_or_eos_ids: Any = None, *,
                  eos_token_ids: Sequence[int] | None = None, pad_token_id: int | None = None,
                  **options: Any) -> Generator:
    """Build the generation backend `name` ("engine", "hf" or "vllm") for `model`.

    model: a transformers causal LM (optionally PEFT-wrapped); generation runs on its device and dtype.
    tokenizer_or_eos_ids: a tokenizer (decodes text, checks stop strings, gives EOS/pad ids), or a list
        of EOS token ids (then completions carry token ids only, text is "" and stop strings are refused).
    eos_token_ids: EOS ids overriding the tokenizer's (default: end-of-turn token + tokenizer EOS +
        the model's generation_config EOS).
    pad_token_id: left-padding id (default: the tokenizer's pad token, else the first EOS id).
    options: keyword options of the backend. All take the memory budget `max_batch_rows`,
        `max_batch_tokens` and `memory_fraction` (`base.WaveBudget`: a request runs in waves that fit
        it); the engine also compact_fraction, mode, initial_capacity, max_prefill_tokens; vllm also
        `VLLM_OPTIONS` (it sizes its own KV cache, so memory_fraction does not apply to it).
    """
    tokenizer = tokenizer_or_eos_ids
    if isinstance(tokenizer_or_eos_ids, (list, tuple)):
        tokenizer, eos_token_ids = None, eos_token_ids or list(tokenizer_or_eos_ids)
    if name == "engine":
        from aha.rollout.engine import EngineGenerator

        return EngineGenerator(model, tokenizer, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, **options)
    if name == "hf":
        from aha.rollout.hf import HFGenerator

        unknown = sorted(set(options) - set(WAVE_OPTIONS))
        if unknown:
            raise AhaError(f"the hf backend takes no options but {', '.join(WAVE_OPTIONS)}, got {unknown}")
        return HFGenerator(model, tokenizer, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, **options)
    if name == "vllm":
        from aha.rollout.vllm_backend import VLLMGenerator

        unknown = sorted(set(options) - set(WAVE_OPTIONS) - set(VLLM_OPTIONS))
        if unknown:
            raise AhaError(f"the vllm backend takes the options {', '.join(WAVE_OPTIONS + VLLM_OPTIONS)}, got {unknown}")
        return VLLMGenerator(model, tokenizer, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, **options)
    hint = closest(name, list(BACKENDS))
    raise AhaError(f"unknown generation backend {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                   + f"; valid names: {', '.join(BACKENDS)}")


def wave_options(rollout_cfg: Any) -> dict[str, Any]:
    """The memory-budget options (`WAVE_OPTIONS`) of a config section that has them as fields (the
    trainer's `rollout`), for `get_generator(..., **wave_options(cfg.rollout))`; with backend "vllm"
    also its `vllm_<name>` fields as the vLLM options (`VLLM_OPTIONS`)."""
    out = {k: getattr(rollout_cfg, k) for k in WAVE_OPTIONS if hasattr(rollout_cfg, k)}
    if getattr(rollout_cfg, "backend", None) == "vllm":
        out.update({k: getattr(rollout_cfg, f"vllm_{k}") for k in VLLM_OPTIONS if hasattr(rollout_cfg, f"vllm_{k}")})
    return out


def __getattr__(name: str) -> Any:
    # lazy exports: the backends pull in torch and transformers
    if name == "EngineGenerator":
        from aha.rollout.engine import EngineGenerator

        return EngineGenerator
    if name == "HFGenerator":
        from aha.rollout.hf import HFGenerator

        return HFGenerator
    raise AttributeError(f"module 'aha.rollout' has no attribute {name!r}")
