"""`aha export SOURCE --out DIR`: a standalone Hugging Face model folder from any aha output."""

from __future__ import annotations

import argparse
from pathlib import Path

from aha.errors import AhaError

HELP = "merge a LoRA adapter into its base and write a standalone model folder (safetensors + tokenizer)"
DESCRIPTION = """Write a model folder that plain transformers loads (AutoModelForCausalLM.from_pretrained).

SOURCE may be a run directory (its model/ folder, else its newest checkpoint), a checkpoint folder
(RUN_DIR/checkpoints/step_000100), a LoRA adapter folder (merged into its base) or a model folder.

examples:
  aha export runs/train-20261122-101500 --out models/kk-grpo
  aha export runs/train-20261122-101500/checkpoints/step_000050 --out models/kk-step50 --dtype bfloat16"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run directory, checkpoint folder, adapter folder or model folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the written weights (default float32)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


def resolve_model_folder(source: str | Path) -> Path:
    """The folder holding weights (or an adapter) inside whatever the user pointed at."""
    src = Path(source)
    if not src.exists():
        raise AhaError(f"{src} does not exist")
    for candidate in (src, src / "model"):
        if (candidate / "config.json").is_file() or (candidate / "adapter_config.json").is_file():
            return candidate
    from aha.train.checkpoint import list_checkpoints

    found = list_checkpoints(src)
    if found:
        return found[-1] / "model"
    raise AhaError(f"{src} is not a model folder, an adapter folder, a checkpoint or a run directory with one")


def export_model(source: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    from aha.models import load_model, load_tokenizer, quiet_transformers, resolve_dtype
    from aha.train.common import merge_lora

    folder = resolve_model_folder(source)
    model = merge_lora(load_model(folder, device="cpu", dtype="float32"))
    model = model.to(resolve_dtype(dtype, "cpu"))
    tokenizer = load_tokenizer(folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_transformers()
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise AhaError(f"{out} is not empty; pass --force to overwrite it")
    path = export_model(args.source, out, args.dtype)
    print(f"wrote {path}")
    return 0
