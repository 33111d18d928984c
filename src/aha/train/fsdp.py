"""FSDP (fully sharded data parallel) for the RL and SFT trainers, on torch's FSDP2 (`fully_shard`).

Selected by `accelerate launch --config_file recipes/accelerate/fsdp.yaml ...` (accelerate sets
ACCELERATE_USE_FSDP and FSDP_SHARDING_STRATEGY) or, under torchrun, by the config field `parallel=fsdp`
(`fsdp_shard_grad_op` for SHARD_GRAD_OP); `resolve_strategy` reads both. One process has nothing to
shard: it runs plain whatever the setting, so an FSDP run's recipe and checkpoints work in one process.

What is sharded: every transformer block (the classes in the model's `_no_split_modules`, accelerate's
TRANSFORMER_BASED_WRAP) and the root (embeddings, final norm, head) are `fully_shard`ed, so each rank
holds 1/N of the parameters, of their gradients and of the AdamW state, as DTensors. FULL_SHARD frees
a block's gathered weights after its forward; SHARD_GRAD_OP keeps them until its backward. Gradients
are reduce-scattered as SUMS (`set_gradient_divide_factor(1)` with sum-only collectives): aha's loss
divisors are already the global ones, as in the DDP-style scheme of `aha.train.distributed`.

The rules that keep N ranks equal to one process (see also `aha.train.distributed`):

- Forwards with gradients are collectives (each block all-gathers its weights, each backward
  reduce-scatters): every rank must run the same number of them, with the same structure.
  `lockstep` keeps the one-process micro-batch plan and `World.part` and deals it out in slots of N;
  a rank with no micro-batch in the last slot runs a copy of the slot's first one with its loss times
  0 (a zero gradient). Whether a micro-batch shares its prompts' cache (two forwards instead of one,
  see `aha.train.logprobs.completion_logprobs`) is decided per slot for all ranks together: sharing
  when every micro-batch of the slot would share, rows whole otherwise. Every backward reduces (a
  sum of sums; no `set_requires_gradient_sync(False)`, which would keep whole unsharded gradients).
- Forwards without gradients (generation, the old and reference log-probs, validation) run on the
  gathered weights (`gathered`): every block is unsharded once (one all-gather per block) with
  resharding after forward turned off, so those forwards do no collectives and each rank runs its own
  share however many forwards that is. The generation engine (any mode; its native step reads the
  modules' weights) and the hf backend see plain full tensors; LoRA's disabled-adapter reference and
  the prompt-sharing cache work unchanged. Chosen over a second plain replica for generation: the
  gathered weights exist only during those stages (one full copy of the policy at a time; the
  reference copy is gathered after the policy is resharded), where a replica would hold a full copy
  for the whole run, next to the shards.
- The separate reference copy (full fine-tuning with a KL term) is sharded too: it is as large as the
  policy and only needed, gathered, in the log-prob stage.
- Checkpoints and the final model: every rank takes part in gathering the full model and optimizer
  state (`torch.distributed.checkpoint.state_dict`, full state dict offloaded to the CPU of rank 0),
  and rank 0 writes them in the one-process format (save_pretrained; optimizer.pt keyed by parameter
  index, `plain_optimizer_state`). A run resumes by loading the checkpoint into the plain model and
  optimizer first, exactly as one process does, and sharding afterwards (`shard_training`), so any
  checkpoint resumes under any strategy and process count that divides its batch.
- bf16/fp16 weights with fp32 master copies (`optim.master_weights`, one process's MasterWeightAdamW): the
  model is cast to fp32 with the masters as its trainable weights before sharding, and FSDP2's
  MixedPrecisionPolicy gathers the shards and reduces the gradients in the model's dtype, so forwards,
  gradients and Adam see what one process sees; checkpoints hold the weights in the model's dtype and the
  masters under "master_weights", as MasterWeightAdamW writes them (`checkpoint_state`, `writing`).

Refused with the fix, at start: CPU offload, accelerate's FSDP activation checkpointing (transformers'
`model.gradient_checkpointing` works), NO_SHARD and hybrid sharding, the vLLM backend, ProRL resets with
LoRA (the adapter merge would replace sharded modules; full fine-tuning resets work: the sharded reference
loads the sharded policy), and REA-RL revision (one process only in any case).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from aha.errors import AhaError

# accelerate's FSDP_SHARDING_STRATEGY values (names, or FSDP1's enum numbers) -> reshard after forward
_STRATEGIES = {"FULL_SHARD": True, "1": True, "SHARD_GRAD_OP": False, "2": False}


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How the trainers distribute the model: "ddp" (a full replica per rank, `aha.train.distributed`)
    or "fsdp" (sharded, this module); `reshard_after_forward` False is SHARD_GRAD_OP."""

    name: str = "ddp"
    reshard_after_forward: bool = True

    @property
    def sharded(self) -> bool:
        return self.name == "fsdp"

    def describe(self) -> str:
        if not self.sharded:
            return "DDP-style (a full replica per process)"
        return f"FSDP2 {'FULL_SHARD' if self.reshard_after_forward else 'SHARD_GRAD_OP'}"


PLAIN = Strategy()


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _env_true(name: str) -> bool:
    return _env(name).lower() in ("1", "true", "yes")


def resolve_strategy(parallel: str, world_size: int) -> Strategy:
    """The strategy of this run: accelerate's FSDP config (ACCELERATE_USE_FSDP and its FSDP_* variables)
    or the config's `parallel`. One process: plain (nothing to shard)."""
    from_accelerate = _env_true("ACCELERATE_USE_FSDP")
    if not from_accelerate and parallel == "ddp":
        return PLAIN
    reshard = parallel != "fsdp_shard_grad_op"
    if from_accelerate:
        fix = "edit recipes/accelerate/fsdp.yaml"
        if _env_true("FSDP_OFFLOAD_PARAMS"):
            raise AhaError(f"FSDP CPU offload (fsdp_offload_params: true) is not supported by aha's trainers; {fix} "
                           "to fsdp_offload_params: false")
        if _env_true("FSDP_ACTIVATION_CHECKPOINTING"):
            raise AhaError("accelerate's fsdp_activation_checkpointing is not supported by aha's trainers; set "
                           f"fsdp_activation_checkpointing: false ({fix}) and model.gradient_checkpointing=true")
        if _env("FSDP_VERSION") == "2":
            reshard = _env("FSDP_RESHARD_AFTER_FORWARD").lower() not in ("false", "0")
        else:
            raw = _env("FSDP_SHARDING_STRATEGY").upper() or "FULL_SHARD"
            if raw not in _STRATEGIES:
                raise AhaError(f"FSDP sharding strategy {raw} is not supported by aha's trainers (FULL_SHARD and "
                               f"SHARD_GRAD_OP are); {fix} to fsdp_sharding_strategy: FULL_SHARD, or use "
                               "recipes/accelerate/ddp.yaml for a full replica per process")
            reshard = _STRATEGIES[raw]
    if world_size <= 1:
        return PLAIN
    return Strategy("fsdp", reshard)


def check_supported(cfg: Any, strategy: Strategy) -> None:
    """Refuse, before the run folder is written, what this FSDP support does not cover."""
    if not strategy.sharded:
        return
    rollout = getattr(cfg, "rollout", None)
    if rollout is not None and rollout.backend == "vllm":
        raise AhaError("the vllm backend is not supported under FSDP (it needs the full weights pushed every "
                       "step); use rollout.backend=engine, or launch with recipes/accelerate/ddp.yaml")
    reset = getattr(cfg, "reset", None)
    if reset is not None and reset.enabled and cfg.lora.enabled:
        raise AhaError("ProRL resets with LoRA are not supported under FSDP yet (the adapter merge would replace "
                       "sharded modules); drop reset.every, reset.at_steps and reset.on_plateau, train the full "
                       "weights (lora.enabled=false), or launch with recipes/accelerate/ddp.yaml (or parallel=ddp)")


# ----------------------------------------------------------------------------- sharding


# each sharded module's reshard_after_forward, restored after `gathered`
_RESHARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fsdp_modules(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)] if model is not None else []


def shard(model: Any, strategy: Strategy, compute_dtype: torch.dtype | None = None) -> Any:
    """`fully_shard` every transformer block of `model` and then its root, in place; gradients are
    reduced as sums. `compute_dtype`: the shards stay as they are (fp32 masters) and are gathered, and
    the gradients reduced, in this dtype (FSDP2's MixedPrecisionPolicy). Returns `model` (its class
    becomes an FSDP subclass of its own)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from aha.models import hf_model

    blocks = set(getattr(hf_model(model), "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in blocks]
    if not layers:
        raise AhaError(f"cannot find the transformer blocks of {type(hf_model(model)).__name__} to shard (it names "
                       "none in _no_split_modules); launch with recipes/accelerate/ddp.yaml (or parallel=ddp)")
    mp = {"mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype)} if compute_dtype is not None else {}
    for layer in layers:
        fully_shard(layer, reshard_after_forward=strategy.reshard_after_forward, **mp)
        _RESHARD[layer] = strategy.reshard_after_forward
    # the root (embeddings, head) stays gathered from its forward to its backward, FSDP's own default for a
    # root, given explicitly so `gathered` restores exactly it
    fully_shard(model, reshard_after_forward=False, **mp)
    _RESHARD[model] = False
    for m in _fsdp_modules(model):
        m.set_gradient_divide_factor(1.0)  # sums: the loss divisors are the global ones
        m.set_force_sum_reduction_for_comms(True)  # plain SUM collectives (gloo has no PREMUL_SUM)
    return model


def is_sharded(model: Any) -> bool:
    return bool(_fsdp_modules(model))


@contextlib.contextmanager
def gathered(*models: Any) -> Iterator[None]:
    """Every rank holds the full weights of `models` inside the block (one all-gather per block,
    collective: every rank enters it), so forwards without gradients run locally, as many as each rank
    needs; resharded on exit. Plain models: nothing happens."""
    modules = [m for model in models for m in _fsdp_modules(model)]
    flags = [_RESHARD.get(m, True) for m in modules]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.reshard()
            m.set_reshard_after_forward(flag, recurse=False)




# ----------------------------------------------------------------------------- micro-batches in lockstep


@dataclasses.dataclass
class Slot:
    """One micro-batch this rank runs: `items` (its rows), `padding` (a copy of another rank's micro-batch
    whose loss counts 0, so the ranks run as many forwards), and whether it may share prompts."""

    items: list[Any]
    padding: bool
    share_prompts: bool


def lockstep(world: Any, chunks: list[list[Any]], prompts: Any) -> list[Slot]:
    """This rank's micro-batches of `chunks` (the one-process plan, dealt round robin like `World.part`),
    padded so every rank runs ceil(len(chunks) / N) of them. `prompts(row)` gives a row's prompt ids:
    a micro-batch shares its prompts' cache only when every micro-batch of its slot would."""
    n = world.size
    out = []
    for start in range(0, len(chunks), n):
        members = chunks[start:start + n]
        repeats = [len({tuple(prompts(r)) for r in c}) < len(c) for c in members]
        mine = world.rank < len(members)
        out.append(Slot(members[world.rank] if mine else members[0], not mine, all(repeats)))
    return out


# ----------------------------------------------------------------------------- full states for checkpoints


# models trained through fp32 master shards (bf16/fp16 weights with optim.master_weights): their dtype
_MASTERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def full_model_state(model: Any, masters: bool = False) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state dict on rank 0's CPU ({} on the other ranks); collective. A model
    trained through fp32 master shards comes back in its own dtype (bf16/fp16), as one process saves it,
    unless `masters`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    dtype = _MASTERED.get(model)
    if dtype is not None and not masters:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        # a tied weight (lm_head = embeddings) comes back as two copies: make them one tensor again, so
        # save_pretrained drops the tied name exactly as it does for the live model
        if id(p) in first and name in state and first[id(p)] in state:
            state[name] = state[first[id(p)]]
        first.setdefault(id(p), name)
    return state


def plain_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A gathered state dict without the second names of tied weights (`checkpoint.base_weights` of a
    plain model): what ProRL's reference.safetensors holds."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        if id(v) not in seen:
            seen.add(id(v))
            out[k] = v
    return out


def checkpoint_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """`save_checkpoint`'s model_state and optimizer_state for a sharded model (collective; rank 0 gets
    them, the others {}), in the one-process format: the optimizer keyed by parameter index, and for a
    bf16/fp16 model its weights in that dtype and the fp32 masters under "master_weights", as
    `aha.train.precision.MasterWeightAdamW` saves them."""
    if model not in _MASTERED:
        return {"model_state": full_model_state(model), "optimizer_state": plain_optimizer_state(model, optimizer)}
    masters = full_model_state(model, masters=True)
    optimizer_state = plain_optimizer_state(model, optimizer)
    dtype = _MASTERED[model]
    if optimizer_state:
        optimizer_state["master_weights"] = [masters[n] for n in _trainable_names(model)]
    return {"model_state": {k: v.to(dtype) if v.is_floating_point() else v for k, v in masters.items()},
            "optimizer_state": optimizer_state}


def writing(model: Any) -> Any:
    """The context rank 0 writes a checkpoint or model folder of `model` in (every rank enters it): a model
    trained through fp32 master shards is gathered in its own dtype, since save_pretrained records the
    live parameters' dtype in config.json; otherwise nothing."""
    return gathered(model) if model in _MASTERED else contextlib.nullcontext()


def _trainable_names(model: Any) -> list[str]:
    """The optimizer's parameters by name, in its order (make_optimizer: trainable ones, model order)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def plain_optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The full optimizer state in the one-process format (`optimizer.state_dict()`: parameters by
    index) on rank 0 ({} on the others); collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                 cpu_offload=True))
    if not full:
        return {}
    index = {n: i for i, n in enumerate(_trainable_names(model))}
    return {"state": {index[n]: st for n, st in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]}


def load_plain_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Load a one-process optimizer state (every rank holds it whole) into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _trainable_names(model)
    named = {"state": {names[i]: st for i, st in state["state"].items()},
             "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, optim_state_dict=named,
                             options=StateDictOptions(full_state_dict=True))


def shard_training(world: Any, model: Any, optimizer: Any, scheduler: Any, build: Any, strategy: Strategy,
                   frozen: tuple[Any, ...] = ()) -> tuple[Any, Any]:
    """Shard `model` (and the `frozen` models) and return a new (optimizer, scheduler) from `build(model)`
    holding what the plain `optimizer` and `scheduler` held (a resumed checkpoint's state, or a fresh
    start's): the run goes on as one process would from there. Each rank keeps its part of its own full
    copy, so the copies must be equal: checked first (a loader that leaves the weights of ranks > 0 to a
    broadcast, as accelerate's cpu_ram_efficient_loading may, would otherwise train a mixture)."""
    sums = [float(sum(p.detach().double().sum() for p in m.parameters())) for m in (model, *frozen) if m is not None]
    if any(part != sums for part in world.gather(sums)):
        raise AhaError("the processes loaded different weights, so FSDP cannot shard them; set "
                       "fsdp_cpu_ram_efficient_loading: false in the accelerate config (aha loads the full model on "
                       "every process), or launch with recipes/accelerate/ddp.yaml")
    state = optimizer.state_dict()
    schedule = scheduler.state_dict() if scheduler is not None else None
    masters = state.pop("master_weights", None)  # MasterWeightAdamW: bf16/fp16 weights, fp32 masters
    compute_dtype = None
    if masters is not None:
        mastered = [p for p in model.parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)]
        compute_dtype = mastered[0].dtype
        model.float()  # in place: the shards are fp32, the trainable ones the masters; gathered in compute_dtype
        with torch.no_grad():
            for p, master in zip(mastered, masters):
                p.copy_(master)
        _MASTERED[model] = compute_dtype
    shard(model, strategy, compute_dtype)
    for other in frozen:
        if other is not None:
            shard(other, strategy)
    new_optimizer, new_scheduler = build(model)
    if state["state"]:
        load_plain_optimizer_state(model, new_optimizer, state)
    else:  # a fresh start: only the groups' values (lr, initial_lr) matter
        for group, saved in zip(new_optimizer.param_groups, state["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})
    if schedule is not None:
        new_scheduler.load_state_dict(schedule)
    return new_optimizer, new_scheduler


def save_pretrained(model: Any, folder: Any, state: dict[str, torch.Tensor]) -> None:
    """Rank 0: write `model` as its save_pretrained folder from the gathered full `state` (a LoRA model
    writes its adapter, as in one process)."""
    model.save_pretrained(str(folder), state_dict=state)
