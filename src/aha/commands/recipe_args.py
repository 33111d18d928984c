"""Shared argument handling for commands that take `RECIPE [key=value ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aha.errors import AhaError


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="*", metavar="RECIPE|key=value",
                   help="a YAML recipe (optional) followed by dotted overrides such as rollout.temperature=0.7")
    p.add_argument("--help-config", action="store_true", help="list every config key with its type, default and "
                   "meaning, then exit")


def resolve(args: argparse.Namespace, cls: type, resume_key: str | None = "resume") -> Any | None:
    """Build the config from the positional items; prints the key listing for --help-config."""
    from aha.config import format_help, load_config

    if args.help_config:
        print(format_help(cls))
        return None
    recipe = None
    overrides = []
    for item in args.items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None:
            recipe = item
        else:
            raise AhaError(f"two recipes given ({recipe!r} and {item!r}); overrides look like key=value")
    from_run = False
    if recipe is None and resume_key:
        # `aha train resume=RUN_DIR` alone continues with the run's own config
        for item in overrides:
            key, _, value = item.partition("=")
            if key == resume_key and value:
                saved = Path(value) / "config.yaml"
                if saved.is_file():
                    recipe, from_run = str(saved), True
    try:
        return load_config(cls, recipe, overrides)
    except AhaError as exc:
        if not from_run:
            raise
        command = getattr(args, "command", None) or "this command"
        raise AhaError(f"{recipe} does not hold an aha {command} config, so its folder is not an aha {command} "
                       f"run to resume ({exc})") from None


def check_output_path(path: str | Path, flag: str, folder: bool) -> Path:
    """Refuse an output path that cannot be written as asked, before any work is done: one under a
    file (`--out results.json/x`), a folder where a file goes, or a file where a folder goes."""
    path = Path(path)
    if folder and path.is_file():
        raise AhaError(f"{flag} {str(path)!r} is a file, not a folder; choose another {flag}")
    if not folder and path.is_dir():
        raise AhaError(f"{flag} {str(path)!r} is a folder; give a file name, e.g. {str(path / 'scores.json')!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AhaError(f"{flag} {str(path)!r} lies under {str(parent)!r}, which is a file, not a folder; "
                               f"choose another {flag}")
            break
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` as UTF-8 through a temporary file and `os.replace`: a failure leaves no partial file."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AhaError(f"cannot write {str(path)!r}: {exc.strerror or exc}; check the folder and free space") from None
