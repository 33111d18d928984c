"""`aha recipes`: the shipped recipes and pipelines, one line each (seed, what it reproduces, hardware)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aha.errors import AhaError

HELP = "list the shipped recipes and pipelines: which seed, what each reproduces, what hardware it needs"
DESCRIPTION = """List every YAML file under the recipes folder (default: the source checkout's recipes/,
else ./recipes) with its kind (pipeline, train, sft, distill), seed, what it reproduces and the
hardware it needs.

A pipeline states these as top-level keys (seed, reproduces, hardware); a single-command recipe as
leading comment lines `# seed: 000`, `# reproduces: ...`, `# hardware: ...` (without them its first
comment line is shown). Run a pipeline with `aha pipeline FILE`, a recipe with `aha KIND FILE`.

examples:
  aha recipes
  aha recipes --dir my_recipes"""

_META = ("seed", "reproduces", "hardware")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="recipes folder (default: the checkout's recipes/, else ./recipes)")


def default_dir() -> Path:
    import aha

    shipped = Path(aha.__file__).resolve().parents[2] / "recipes"
    return shipped if shipped.is_dir() else Path("recipes")


def recipe_kind(data: Any) -> str:
    if not isinstance(data, dict):
        return "?"
    if "stages" in data:
        return "pipeline"
    if "teacher" in data:
        return "distill"
    if "data" in data and "task" not in data and "rewards" not in data:
        return "sft"
    return "train"


def describe(path: Path) -> dict[str, str]:
    """{kind, seed, reproduces, hardware} of one recipe file (missing ones empty)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    info = {"kind": recipe_kind(data), "seed": "", "reproduces": "", "hardware": ""}
    if info["kind"] == "pipeline":
        for key in _META:
            info[key] = " ".join(str(data.get(key, "")).split())
        return info
    first = ""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        body = line.lstrip("#").strip()
        key, sep, value = body.partition(":")
        if sep and key.strip() in _META:
            info[key.strip()] = value.strip()
        elif body and not first:
            first = body
    if not info["reproduces"]:
        info["reproduces"] = first
    if not info["seed"]:
        import re

        found = re.search(r"\b[Ss]eed (\d{3})\b", text)
        info["seed"] = found.group(1) if found else ""
    return info


def list_recipes(folder: Path) -> list[tuple[str, dict[str, str]]]:
    if not folder.is_dir():
        raise AhaError(f"recipes folder {str(folder)!r} does not exist; pass --dir")
    files = sorted(folder.rglob("*.yaml"), key=lambda f: (len(f.relative_to(folder).parts), str(f)))
    return [(f.relative_to(folder).as_posix(), describe(f)) for f in files]


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir) if args.dir else default_dir()
    rows = list_recipes(folder)
    width = max((len(name) for name, _ in rows), default=10)
    print(f"recipes in {folder}  (run: aha pipeline FILE  |  aha train|sft|distill FILE)")
    for name, info in rows:
        seed = f"seed {info['seed']}" if info["seed"] else "-"
        hardware = f"  [{info['hardware']}]" if info["hardware"] else ""
        print(f"{name:<{width}}  {info['kind']:<8}  {seed:<9} {info['reproduces']}{hardware}")
    return 0
