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
    if recipe is None and resume_key:
        # `aha train resume=RUN_DIR` alone continues with the run's own config
        for item in overrides:
            key, _, value = item.partition("=")
            if key == resume_key and value:
                saved = Path(value) / "config.yaml"
                if saved.is_file():
                    recipe = str(saved)
    return load_config(cls, recipe, overrides)
