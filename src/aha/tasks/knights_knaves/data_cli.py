"""`aha data knights-knaves`: generate puzzles, or convert a public K&K / Logic-RL file to aha's records.

    aha data knights-knaves --people 2-8 --count 1000 --seed 0 --out kk_train.jsonl --traces reflective
    aha data knights-knaves --people 3 --count 100 --split test --out kk3_test.parquet
    aha data knights-knaves --from people3_num1000.jsonl --out kk3.jsonl --traces direct

Records are the public K&K fields plus aha's (`id`, `n_people`, `n_solutions`, `depth`, `width`,
`split`, `seed`, and `trace`/`trace_style` with --traces); the format follows the extension of --out.
"""

from __future__ import annotations

import argparse
import sys

from aha.errors import AhaError

HELP = "generate Knights-and-Knaves puzzles (unique solutions, teacher traces) or convert public files"


def add_arguments(p: argparse.ArgumentParser, name: str = "knights-knaves") -> None:
    p.add_argument("--out", required=True, help="output file, .jsonl or .parquet")
    p.add_argument("--from", dest="source", nargs="+", default=None, metavar="FILE",
                   help="convert these public K&K / Logic-RL files instead of generating")
    p.add_argument("--people", default="2-8", help="sizes to generate: '3', '2-8', '2,4,6' (default 2-8)")
    p.add_argument("--count", type=int, default=100, help="puzzles per size (default 100)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--split", default="train",
                   help="train (excludes the test split's puzzles) or test (default train)")
    p.add_argument("--test-count", type=int, default=100,
                   help="test puzzles per size that a train split excludes (default 100, as the task)")
    p.add_argument("--depth", type=int, default=2,
                   help="statement depth; 2 = one operator over leaves (default)")
    p.add_argument("--width", type=int, default=2, help="most operands of and/or (default 2)")
    p.add_argument("--mix", default=None,
                   help="statement-type weights, e.g. 'leaf=1,not=1,and=1,or=1,imp=1,iff=1' "
                        "(default uniform)")
    p.add_argument("--traces", choices=["reflective", "direct"], default=None,
                   help="add the solver's teacher trace in this style")
    p.add_argument("--think-preopened", action="store_true",
                   help="traces start after a pre-opened <think> (the prompt holds the tag)")


def run(args: argparse.Namespace) -> int:
    from aha.tasks.knights_knaves.generator import generate_split
    from aha.tasks.knights_knaves.loader import file_kind, load_puzzles, write_records
    from aha.tasks.knights_knaves.traces import make_trace

    file_kind(args.out)  # fail on a bad extension before any work
    if args.source:
        puzzles = load_puzzles(args.source)
    else:
        if args.count < 1:
            raise AhaError(f"--count must be >= 1, got {args.count}")
        puzzles, made = generate_split(args.people, args.count, args.seed, args.split, args.depth, args.width,
                                       args.mix, test_count=args.test_count)
        for n, k in made.items():
            if k < args.count:
                print(f"note: only {k} distinct {n}-person puzzles exist with depth {args.depth}, width "
                      f"{args.width} (asked for {args.count}); raise --depth or --width for more",
                      file=sys.stderr)
    records = []
    for p in puzzles:
        trace = None
        if args.traces and p.n_solutions == 1:
            trace = make_trace(p.names, p.statements, args.traces, args.think_preopened)
        records.append(p.to_record(trace, args.traces if trace is not None else None))
    write_records(args.out, records)
    sizes: dict[int, int] = {}
    for p in puzzles:
        sizes[p.n] = sizes.get(p.n, 0) + 1
    print(f"wrote {len(records)} puzzles to {args.out} ("
          + ", ".join(f"{n}ppl: {k}" for n, k in sorted(sizes.items())) + ")")
    return 0
