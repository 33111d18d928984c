"""ProRL hard resets and phases, on the trainer's side (the rules of when are in aha.algo.resets).

A hard reset makes the reference policy the current policy:

  LoRA         the adapter is merged into the base weights in fp32 (one rounding to the model's
               dtype, not two) and a fresh adapter attached (the new phase's rank and targets). The
               reference under LoRA is the base with the adapter off, so it now IS the policy, and
               there is still no second copy of the model. A fresh optimizer always follows: the new
               adapter's parameters are new tensors.
  full weights the frozen reference copy loads the policy's weights; the optimizer is rebuilt
               (`reset.optimizer=reset`, ProRL v1) or kept (`keep`, ProRL v2). A rebuilt optimizer
               keeps the fp32 master copies of bf16 weights (they are the weights, not state).

The schedule then restarts over the remaining steps or continues; the phase whose `after_reset` is
reached takes effect (`aha.train.config.phase_config`: the session's `cfg` is replaced by a copy
with the phase's overrides, the recipe and its config.yaml stay as they were). Reference log-probs
are computed per step and never cached across steps, so none survives a reset.

A reset happens after a step's `record` (it needs the step's validation); when that step wrote a
checkpoint it is written again, so resuming from it continues after the reset. After a LoRA reset
the base is no longer `model.path`: checkpoints then hold the merged base too (a base/ folder that
their adapter names), and the final RUN_DIR/model is the whole merged model (base + every merged
phase + the live adapter). Full fine-tuning checkpoints then hold the reference copy.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from aha.algo.resets import periodic_reset_due, plateau_reached, scheduled_reset_due
from aha.errors import AhaError
from aha.train.checkpoint import list_checkpoints, newest_state, update_state
from aha.train.common import attach_lora, make_optimizer, make_scheduler
from aha.train.config import TrainConfig, phase_at, phase_config


@dataclasses.dataclass
class ResetState:
    """What a run remembers about its resets (saved in each checkpoint's state.json under "reset").

    count: resets so far; last_step: the step of the last one (0: none yet); phase: the phase in
    force (see `phase_at`); watched: the plateau metric at each validation since the last reset
    (the one at the reset included); schedule_total: the optimizer steps the current learning-rate
    schedule spans (0: the recipe's whole run); history: one entry per reset.
    """

    count: int = 0
    last_step: int = 0
    phase: int = 0
    watched: list[float] = dataclasses.field(default_factory=list)
    schedule_total: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResetState:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def enabled(cfg: TrainConfig) -> bool:
    return cfg.reset.enabled


def reset_metrics(s: Any) -> dict[str, float]:
    """reset/count, reset/step and phase for the metrics line (nothing when resets are off, so runs
    without them log exactly what they did before)."""
    if not enabled(s.recipe):
        return {}
    return {"reset/count": s.resets.count, "reset/step": s.resets.last_step, "phase": s.resets.phase}


def checkpoint_extras(s: Any, reference_weights: dict[str, torch.Tensor] | None = None
                      ) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(state.json entries, weight files) a checkpoint of session `s` needs for its resets: after
    one, the LoRA base or the reference copy is no longer what model.path holds (`reference_weights`:
    the reference's, gathered from a sharded copy; aha.train.fsdp)."""
    if not enabled(s.recipe):
        return {}, {}
    from aha.train.checkpoint import base_weights

    files = {}
    if s.resets.count > 0 and s.recipe.lora.enabled:
        files["base"] = base_weights(s.model)
    elif s.resets.count > 0 and s.reference is not None:
        files["reference"] = reference_weights if reference_weights is not None else base_weights(s.reference)
    return {"reset": s.resets.state_dict()}, files


# ----------------------------------------------------------------------------- the step hook


def maybe_reset(s: Any, step: int, metrics: dict[str, Any], data_position: int) -> None:
    """After step `step`'s record: note the watched metric, and hard-reset when a trigger fires
    (never after the final step: nothing would train on the new phase)."""
    cfg, st = s.recipe, s.resets
    if not enabled(cfg):
        return
    plateau = cfg.reset.on_plateau
    newest = list_checkpoints(s.run.path)
    this_step = newest[-1] if newest and newest[-1].name == f"step_{step:06d}" else None
    if plateau.metric and any(k.startswith("val/") for k in metrics):
        if plateau.metric not in metrics:
            known = ", ".join(sorted(k for k in metrics if k.startswith("val/")))
            raise AhaError(f"reset.on_plateau.metric={plateau.metric!r} is not a validation metric of this "
                           f"task; use one of: {known}")
        st.watched.append(float(metrics[plateau.metric]))
        if this_step is not None and s.world.main:  # written before this value existed: a resume must see it
            update_state(this_step, {"reset": st.state_dict()})
    if step >= cfg.steps or (cfg.reset.max_resets and st.count >= cfg.reset.max_resets):
        return
    trigger = None
    if scheduled_reset_due(step, cfg.reset.at_steps):
        trigger = "at_step"
    elif periodic_reset_due(step, cfg.reset.every, st.last_step):
        trigger = "every"
    elif plateau.metric and plateau_reached(st.watched, plateau.patience, plateau.min_delta, plateau.mode):
        trigger = "plateau"
    if trigger is None:
        return
    seconds = hard_reset(s, step)
    st.history.append({"step": step, "trigger": trigger, "phase": st.phase, "seconds": round(seconds, 3)})
    st.watched = st.watched[-1:]  # the policy did not change: its last score is the new phase's baseline
    s.run.log.info(f"hard reset {st.count} after step {step} ({trigger}) in {seconds:.2f}s; phase {st.phase}")
    if this_step is not None:
        s.save(step, data_position)  # that checkpoint predates the reset: a resume must land after it


def hard_reset(s: Any, step: int) -> float:
    """Reset the reference to the policy, rebuild the optimizer and schedule as configured and enter
    the phase the new reset count reaches. Returns the seconds it took."""
    t0 = time.time()
    cfg, st = s.recipe, s.resets
    st.count += 1
    st.last_step = step
    phase = phase_at(cfg, st.count)
    new_cfg = phase_config(cfg, phase)
    old_optimizer, old_scheduler = s.optimizer, s.scheduler
    if cfg.lora.enabled:
        was_training = s.model.training
        s.model = attach_lora(merge_adapter_fp32(s.model), new_cfg.lora).train(was_training)
    elif s.reference is not None:
        s.reference.load_state_dict(s.model.state_dict())
    restart = cfg.reset.scheduler == "restart"
    if restart:
        st.schedule_total = (cfg.steps - step) * updates_per_step(new_cfg)
    if cfg.lora.enabled or cfg.reset.optimizer == "reset":
        s.optimizer, s.scheduler = build_optimizer(s.model, new_cfg, cfg, st.schedule_total)
        _carry_master_weights(old_optimizer, s.optimizer)
        if not restart:  # the same learning rate sequence, on the new optimizer
            s.scheduler.load_state_dict(old_scheduler.state_dict())
            for group, lr in zip(s.optimizer.param_groups, old_scheduler.get_last_lr()):
                group["lr"] = lr
    elif restart:  # optimizer kept: only its schedule starts again
        s.scheduler = make_scheduler(s.optimizer, cfg.optim.schedule, cfg.optim.warmup_steps, st.schedule_total,
                                     cfg.optim.min_lr_ratio)
    enter_phase(s, phase, new_cfg)
    return time.time() - t0


def enter_phase(s: Any, phase: int, new_cfg: TrainConfig) -> None:
    """Make `new_cfg` the session's config: the log-prob plan, the reward composer (when the phase
    replaces the rewards; stateful components keep their state) and the generator (when the model
    object changed) follow it."""
    from aha.rewards.compose import RewardComposer
    from aha.rollout import get_generator, wave_options

    if new_cfg.rewards != s.cfg.rewards:
        composer = RewardComposer(new_cfg.rewards, policy_path=s.recipe.model.path)
        composer.load_state_dict(s.composer.state_dict())
        s.composer = composer
    s.cfg = new_cfg
    s.plan = type(s.plan).from_config(new_cfg)
    if s.recipe.lora.enabled:  # a new peft model object: the generator must sample from it
        s.generator = get_generator(new_cfg.rollout.backend, s.model, s.tokenizer, **wave_options(new_cfg.rollout))
    s.resets.phase = phase


def updates_per_step(cfg: TrainConfig) -> int:
    return cfg.algo.num_iterations * cfg.batch.mini_batches


def build_optimizer(model: Any, cfg: TrainConfig, recipe: TrainConfig, schedule_total: int) -> tuple[Any, Any]:
    """A fresh AdamW and schedule as the recipe configures them, the schedule spanning
    `schedule_total` optimizer steps (0: the recipe's whole run)."""
    o = recipe.optim
    total = schedule_total or recipe.steps * updates_per_step(recipe)
    return make_optimizer(model, o.lr, o.weight_decay, (o.beta1, o.beta2), o.schedule, o.warmup_steps, total,
                          o.min_lr_ratio, o.master_weights)


def _carry_master_weights(old: Any, new: Any) -> None:
    """Give a rebuilt optimizer the fp32 master copies of the one it replaces (full fine-tuning of a
    bf16 model): they hold the updates the bf16 weights rounded away, and are weights, not state."""
    old_pairs, new_pairs = getattr(old, "pairs", None), getattr(new, "pairs", None)
    if not old_pairs or not new_pairs or len(old_pairs) != len(new_pairs) or any(
            a is not b for (a, _), (b, _) in zip(old_pairs, new_pairs)):
        return  # LoRA: new parameters; or no master copies at all
    with torch.no_grad():
        for (_, master), (_, fresh) in zip(old_pairs, new_pairs):
            fresh.copy_(master)


# ----------------------------------------------------------------------------- LoRA merge


def merge_adapter_fp32(model: Any) -> Any:
    """Fold every active LoRA adapter of a peft model into its base weights, W <- W + (alpha/r) B A
    computed in fp32 and rounded once to W's dtype, and return the plain transformers model.

    peft's own merge rounds the delta to a bf16 weight's dtype before adding it (two roundings); on
    an fp32 model the two agree."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            if type(module) is not LoraLinear or getattr(module, "lora_variant", {}) or any(
                    getattr(module, "lora_bias", {}).values()):
                raise AhaError(f"cannot merge the adapter of {name} ({type(module).__name__}): a ProRL reset "
                               "merges plain LoRA on linear layers only; check lora.target_modules")
            base = module.get_base_layer()
            for adapter in module.active_adapters:
                if adapter not in module.lora_A:
                    continue
                a = module.lora_A[adapter].weight.float()  # (r, in)
                b = module.lora_B[adapter].weight.float()  # (out, r)
                delta = b @ a  # (out, in)
                if module.fan_in_fan_out:
                    delta = delta.T
                delta.mul_(module.scaling[adapter])
                if base.weight.dtype == torch.float32:
                    base.weight.data.add_(delta)  # (out, in): already fp32, in place
                else:
                    base.weight.data.copy_(base.weight.float() + delta)  # (out, in): one rounding
    return model.unload()


def model_to_save(s: Any) -> Any:
    """The model for RUN_DIR/model: after LoRA resets the whole merged model (an adapter folder
    would name `model.path` as its base and silently drop every merged phase), else the live one."""
    if s.recipe.lora.enabled and s.resets.count > 0:
        return merge_adapter_fp32(s.model)
    return s.model


def save_final_model(s: Any, folder: Path) -> None:
    """Write `model_to_save(s)` to `folder`. A resumed run may find the adapter an earlier part of
    it wrote there: that is removed, or loaders would take the folder for an adapter of model.path."""
    model = model_to_save(s)
    if model is not s.model or not s.recipe.lora.enabled:
        for stale in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
            (folder / stale).unlink(missing_ok=True)
    model.save_pretrained(str(folder))


# ----------------------------------------------------------------------------- resuming


def resume_phase(s: Any, run_dir: Path) -> None:
    """Before `restore_latest`: bring a fresh session to the phase of `run_dir`'s newest checkpoint
    (its adapter's rank and targets, its optimizer and schedule), so the checkpoint's tensors fit."""
    if not enabled(s.recipe):
        return
    saved = newest_state(run_dir).get("reset")
    if not saved:
        return
    st = ResetState.from_dict(saved)
    s.resets = st
    if st.count == 0:
        return
    new_cfg = phase_config(s.recipe, st.phase)
    if s.recipe.lora.enabled:
        s.model = attach_lora(s.model.unload(), new_cfg.lora).train()
    if s.recipe.lora.enabled or st.schedule_total:
        s.optimizer, s.scheduler = build_optimizer(s.model, new_cfg, s.recipe, st.schedule_total)
    enter_phase(s, st.phase, new_cfg)
