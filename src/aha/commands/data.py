"""`aha data TASK ...`: generate a dataset, or convert a public file into aha's format.

Each task that supports it provides a module with `HELP`, `add_arguments(parser)` and `run(args)`;
this command only dispatches to them.
"""

from __future__ import annotations

import argparse
import importlib

HELP = ("generate or convert datasets (knights-knaves, arithmetic, gsm8k, math, aime, amc, multiple-choice), "
        "or label a policy's responses for REA-RL's reflection model (reflection-labels)")

# `aha data <name>` -> module providing HELP / add_arguments / run
DATA_COMMANDS = {
    "knights-knaves": "aha.tasks.knights_knaves.data_cli",
    "arithmetic": "aha.tasks.arithmetic_data_cli",
    "gsm8k": "aha.tasks.math_data_cli",
    "math": "aha.tasks.math_data_cli",
    "aime": "aha.tasks.math_data_cli",
    "amc": "aha.tasks.math_data_cli",
    "multiple-choice": "aha.tasks.math_data_cli",
    "reflection-labels": "aha.commands.reflection_labels",  # REA-RL's reflection-model data
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_task", metavar="TASK", required=True)
    for name, module_name in DATA_COMMANDS.items():
        module = importlib.import_module(module_name)
        helps = getattr(module, "_HELPS", {})
        p = sub.add_parser(name, help=helps.get(name, module.HELP), description=module.HELP)
        module.add_arguments(p, name)
        p.set_defaults(_data_run=module.run)


def run(args: argparse.Namespace) -> int:
    return args._data_run(args)
