"""The `aha` command: parses arguments and calls into the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from aha import __version__
from aha.errors import AhaError

# subcommand -> module under aha.commands (see aha/commands/__init__.py for the module contract)
COMMANDS = {
    "data": "data",
    "init-model": "init_model",
    "sft": "sft",
    "distill": "distill",
    "train": "train",
    "eval": "eval",
    "score": "score",
    "compare": "compare",
    "plot": "plot",
    "export": "export",
    "demo": "demo",
    "pipeline": "pipeline",
    "recipes": "recipes",
}

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aha",
        description="RL post-training of language models on verifiable reasoning tasks.",
    )
    parser.add_argument("--version", action="version", version=f"aha {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"aha.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# the commands that run on N processes under a launcher (WORLD_SIZE > 1); the others refuse
_MULTI_PROCESS = ("train", "sft")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1") and args.command not in _MULTI_PROCESS:
        print(f"aha {args.command}: error: runs in one process; under torchrun or accelerate launch only "
              f"{' and '.join(f'`aha {c}`' for c in _MULTI_PROCESS)} do (aha.train.distributed)", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except AhaError as exc:
        print(f"aha {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aha {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
