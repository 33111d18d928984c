"""`aha data arithmetic`: write generated arithmetic problems (with worked traces) as jsonl.

    aha data arithmetic --levels 1-5 --count 5000 --seed 0 --out data/arith_train.jsonl
    aha data arithmetic --levels 4,5 --count 500 --split test --self-check 0.3 --out data/arith_test.jsonl

Each line holds `id`, `question`, `answer`, `level`, `steps` and `trace`
(`<think>...</think><answer>N</answer>`), readable by `aha sft` and by the `math` task.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

HELP = "generate arithmetic problems (levels 1-5) with step-by-step traces"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--levels", default="1-5", help="levels to draw, e.g. 1-5 or 2,4 (default 1-5)")
    parser.add_argument("--count", type=int, default=1000, help="number of problems (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--split", default="train", choices=["train", "test"],
                        help="which side of the fixed train/test partition to draw from (default train)")
    parser.add_argument("--self-check", type=float, default=0.0,
                        help="chance that a step is followed by an inverse-operation check (default 0)")
    parser.add_argument("--out", required=True, help="output .jsonl file")


def run(args: argparse.Namespace) -> int:
    from aha.errors import AhaError
    from aha.tasks.math.arithmetic import ArithmeticTask

    if args.count < 1:
        raise AhaError("--count must be at least 1")
    task = ArithmeticTask(levels=args.levels, seed=args.seed, self_check=args.self_check)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    levels: Counter[int] = Counter()
    with out.open("w", encoding="utf-8") as f:
        for i, problem in enumerate(task.problems(args.split, args.count)):
            ex = task.make_example(problem, i)
            levels[problem.level] += 1
            row = {"id": ex.id, "question": ex.prompt[-1]["content"], "answer": ex.answer, "level": problem.level,
                   "steps": problem.steps, "trace": problem.trace}
            f.write(json.dumps(row) + "\n")
    print(f"wrote {args.count} arithmetic problems to {out} ("
          + ", ".join(f"level {k}: {v}" for k, v in sorted(levels.items())) + ")")
    return 0
