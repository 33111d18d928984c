"""The `aha` command: parses arguments and calls into the library."""

from __future__ import annotations

import argparse
import importlib
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
}

# What an unfinished subcommand says instead of pretending to work.
PLANNED = {
    "sft": "supervised fine-tuning on chat data or solver traces",
    "distill": "teacher sampling with rejection filtering into an SFT dataset",
    "train": "RL training (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++)",
    "eval": "sampling n completions per problem, pass@k and per-bucket tables",
    "score": "scoring completions produced elsewhere",
    "compare": "side-by-side evaluations and new-ability analysis",
    "plot": "training-dynamics plots from a run directory",
    "export": "merging a LoRA adapter into a standalone model folder",
    "demo": "the offline Knights-and-Knaves SFT -> GRPO demo",
}


def _load(module: str):
    try:
        return importlib.import_module(f"aha.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"aha.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aha",
        description="RL post-training of language models on verifiable reasoning tasks.",
    )
    parser.add_argument("--version", action="version", version=f"aha {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            p = sub.add_parser(name, help=f"(not available yet) {PLANNED.get(name, '')}")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_run=_not_available(name))
            continue
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _not_available(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"aha {name}: not available yet in aha {__version__} ({PLANNED.get(name, '')}).",
              file=sys.stderr)
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
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
