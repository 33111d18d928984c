"""Resumable checkpoints, written atomically and read without unpickling anything.

    RUN_DIR/checkpoints/step_000010/
      model/           save_pretrained output (full model, or the LoRA adapter alone)
      tokenizer files  (inside model/)
      optimizer.pt     AdamW state (tensors and plain values)
      scheduler.pt     LR scheduler state (plain values)
      rng.pt           the torch (and CUDA) RNG states, as tensors
      rng.json         the python and numpy RNG states
      state.json       {"step": 10, "data_position": ..., ...}
      base/            the LoRA base weights (model.safetensors + config.json), only after a ProRL
                       reset merged an adapter into them: the base is then no longer model.path, so
                       model/adapter_config.json names this folder (by absolute path) as its base,
                       and `aha export` or `load_model` of the checkpoint get every merged phase
      reference.safetensors  the frozen reference copy (full fine-tuning), only after a ProRL reset
                       made it a later policy than model.path

A checkpoint is written into `step_000010.tmp` and renamed when complete, so a run killed while
saving never leaves a half checkpoint that resume would pick up. A run folder is untrusted input:
every `.pt` file is read with `torch.load(weights_only=True)`, which refuses pickled objects, so a
planted file cannot run code on `resume=`.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aha.errors import AhaError

# what a complete checkpoint holds besides the model folder
_FILES = ("optimizer.pt", "rng.pt", "rng.json", "state.json")


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors for rng.pt, JSON-able values for rng.json) of every RNG a run draws from."""
    tensors: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    values = {"python": [version, list(internal), gauss],
              "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, values


def set_rng_state(tensors: dict[str, Any], values: dict[str, Any]) -> None:
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


def save_checkpoint(run_path: Path, step: int, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep: int = 2,
                    weights: dict[str, dict[str, torch.Tensor]] | None = None,
                    model_state: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `step` (atomically) and keep the newest `keep`; `weights` maps "base" (a
    LoRA model's merged base, written as the folder base/) or "reference" (reference.safetensors)
    to plain parameter names -> tensors. `model_state` and `optimizer_state`: the full states gathered
    from a sharded model and optimizer (aha.train.fsdp), written in the same format as the live
    model's and optimizer's own. A failed write (a full disk,
    a read-only folder) removes its partial files, leaves the previous checkpoints as they were and
    raises AhaError saying where and what."""
    root = Path(run_path) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        model.save_pretrained(str(tmp / "model"), **({"state_dict": model_state} if model_state is not None else {}))
        tokenizer.save_pretrained(str(tmp / "model"))
        torch.save(optimizer_state if optimizer_state is not None else optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        tensors, values = rng_state()
        torch.save(tensors, tmp / "rng.pt")
        (tmp / "rng.json").write_text(json.dumps(values))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
        for stem, tensors in (weights or {}).items():
            if stem == "base":
                _save_base_folder(model, tensors, tmp / "base", final / "base", tmp / "model")
            else:
                _save_tensors(tensors, tmp / f"{stem}.safetensors")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(run_path)
        kept = f"the newest complete checkpoint is still {previous[-1]}" if previous else "no checkpoint was kept"
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise AhaError(f"could not write the step {step} checkpoint under {root}: {reason}; {kept}. Free "
                       "space or fix the folder's permissions, then resume") from None
    for old in list_checkpoints(run_path)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def update_state(ckpt: Path, entries: dict[str, Any]) -> None:
    """Replace `entries` of a complete checkpoint's state.json, atomically (write, then rename): for
    what the run learns after the checkpoint was written in the same step, that changes no tensor."""
    path = ckpt / "state.json"
    state = json.loads(path.read_text())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**state, **entries}, indent=2))
    tmp.replace(path)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _save_base_folder(model: Any, tensors: dict[str, torch.Tensor], folder: Path, final: Path,
                      adapter_folder: Path) -> None:
    """Write a LoRA model's merged base as a loadable model folder and point the checkpoint's
    adapter at it (`final`: where the folder will be once the checkpoint is renamed into place)."""
    folder.mkdir()
    _save_tensors(tensors, folder / "model.safetensors")
    hf = model.get_base_model()
    hf.config.save_pretrained(str(folder))
    if getattr(hf, "generation_config", None) is not None:
        hf.generation_config.save_pretrained(str(folder))
    config_path = adapter_folder / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = str(final.resolve())
    config_path.write_text(json.dumps(adapter_config, indent=2))


def list_checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a `.tmp` folder is a write that never finished)."""
    root = Path(run_path) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
            and (p / "state.json").is_file() and p.name.split("_")[1].isdigit()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_path: str | Path) -> Path:
    found = list_checkpoints(Path(run_path))
    if not found:
        raise AhaError(f"{run_path} has no complete checkpoint to resume from")
    return found[-1]


def remove_partial_checkpoints(run_path: str | Path) -> list[Path]:
    """Delete `.tmp` folders that an interrupted checkpoint write left; returns what was removed."""
    root = Path(run_path) / "checkpoints"
    stale = sorted(root.glob("step_*.tmp")) if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


class UnsafeCheckpoint(AhaError):
    """A checkpoint file that would need unpickling arbitrary objects (refused, never a fallback)."""


def load_tensors(path: Path) -> Any:
    """`torch.load` that never unpickles an object: tensors, numbers, strings and containers only.
    A file holding anything else is refused with AhaError (it could run code when unpickled)."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it asks for {found.group(1)})" if found else ""
        raise UnsafeCheckpoint(f"{path} holds pickled objects besides tensors and plain values{what}; aha does "
                               "not load it, because unpickling a file from a run folder can run code from it. "
                               "Resume from a checkpoint aha wrote, or start the run again") from None


def load_training_state(ckpt: Path, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG; returns state.json (the model is loaded by the caller)."""
    missing = [name for name in _FILES if not (ckpt / name).is_file()]
    if scheduler is not None and not (ckpt / "scheduler.pt").is_file():
        missing.append("scheduler.pt")
    if missing:
        raise AhaError(f"checkpoint {ckpt} lacks {', '.join(missing)}")
    optimizer.load_state_dict(load_tensors(ckpt / "optimizer.pt"))
    if scheduler is not None:
        scheduler.load_state_dict(load_tensors(ckpt / "scheduler.pt"))
    set_rng_state(load_tensors(ckpt / "rng.pt"), json.loads((ckpt / "rng.json").read_text()))
    return json.loads((ckpt / "state.json").read_text())


def restore_latest(run_path: str | Path, model: Any, optimizer: Any, scheduler: Any,
                   warn: Any = print, reference: Any = None) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest checkpoint that loads whole into the live model, optimizer, scheduler and RNGs.

    A damaged one (a truncated or unreadable file) is reported through `warn` and the previous one
    is tried; a file that would need unpickling is refused outright (UnsafeCheckpoint). A LoRA
    model's base and a `reference` copy load from base/reference.safetensors when the checkpoint
    has them (after ProRL resets; without, they stay as built from model.path). Returns
    (checkpoint folder, its state.json), or None when the run has no complete checkpoint."""
    found = list_checkpoints(Path(run_path))
    for ckpt in reversed(found):
        try:
            if (ckpt / "base" / "model.safetensors").is_file():
                load_base_weights(model, ckpt / "base" / "model.safetensors")
            if reference is not None and (ckpt / "reference.safetensors").is_file():
                load_plain_weights(reference, ckpt / "reference.safetensors")
            load_weights(model, ckpt / "model")
            return ckpt, load_training_state(ckpt, optimizer, scheduler)
        except UnsafeCheckpoint:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any reader
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            warn(f"checkpoint {ckpt} cannot be loaded ({reason}); trying the one before it")
    if found:
        raise AhaError(f"no checkpoint of {run_path} loads ({len(found)} tried, see the log); "
                       "start the run again in a new folder")
    return None


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


def newest_state(run_path: str | Path) -> dict[str, Any]:
    """state.json of the newest complete checkpoint ({} when there is none or it is unreadable), read
    before the model is built: a ProRL run must attach the adapter of the checkpoint's phase first."""
    found = list_checkpoints(Path(run_path))
    if not found:
        return {}
    try:
        return json.loads((found[-1] / "state.json").read_text())
    except (OSError, ValueError):
        return {}  # restore_latest reports the damage and falls back


def base_weights(model: Any) -> dict[str, torch.Tensor]:
    """The base weights under a peft LoRA model (or a plain model's weights), by their plain
    (adapter-free) parameter names."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out, seen = {}, set()
    for k, v in base.state_dict().items():
        if "lora_" in k or v.data_ptr() in seen:
            continue  # adapter tensors, and the second name of a tied weight (lm_head = embeddings)
        seen.add(v.data_ptr())
        out[k.replace(".base_layer.", ".")] = v
    return out


def load_plain_weights(model: Any, path: Path) -> None:
    """Load a file `base_weights` wrote into a plain (adapter-free) model."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    live = model.state_dict()
    covered = {live[k].data_ptr() for k in saved if k in live}
    missing = [k for k in live if k not in saved and live[k].data_ptr() not in covered]
    unexpected = [k for k in saved if k not in live]
    if missing or unexpected:
        raise AhaError(f"{path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(saved, strict=False)


def load_base_weights(model: Any, path: Path) -> None:
    """Load a checkpoint's base/model.safetensors (see `base_weights`) under the live peft LoRA
    model's adapter."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    base = model.get_base_model()
    live = base.state_dict()
    targets = {k.replace(".base_layer.", "."): k for k in live if "lora_" not in k}
    covered = {live[targets[k]].data_ptr() for k in saved if k in targets}
    missing = [k for k in targets if k not in saved and live[targets[k]].data_ptr() not in covered]
    unexpected = [k for k in saved if k not in targets]
    if missing or unexpected:
        raise AhaError(f"{path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    state = {targets[k]: v for k, v in saved.items()}
    base.load_state_dict(state, strict=False)
