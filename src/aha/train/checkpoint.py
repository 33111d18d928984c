"""Resumable checkpoints, written atomically.

    RUN_DIR/checkpoints/step_000010/
      model/           save_pretrained output (full model, or the LoRA adapter alone)
      tokenizer files  (inside model/)
      optimizer.pt     AdamW state
      scheduler.pt     LR scheduler state
      rng.pt           python, numpy and torch RNG states
      state.json       {"step": 10, "data_position": ..., ...}

A checkpoint is written into `step_000010.tmp` and renamed when complete, so a run killed while
saving never leaves a half checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aha.errors import AhaError


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_path: Path, step: int, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep: int = 2) -> Path:
    root = run_path / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(str(tmp / "model"))
    tokenizer.save_pretrained(str(tmp / "model"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(run_path)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_path) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
            and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_path: str | Path) -> Path:
    found = list_checkpoints(Path(run_path))
    if not found:
        raise AhaError(f"{run_path} has no complete checkpoint to resume from")
    return found[-1]


def load_training_state(ckpt: Path, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG; returns state.json (the model is loaded by the caller)."""
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
    return json.loads((ckpt / "state.json").read_text())


def load_weights(model: Any, folder: Path) -> None:
    """Load checkpoint weights into the live model (full weights, or the LoRA adapter)."""
    from safetensors.torch import load_file

    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(adapter)))
        return
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise AhaError(f"checkpoint {folder} holds no weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise AhaError(f"checkpoint {folder} does not match the model (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
