"""Knights-and-Knaves throughput: puzzle generation with exact uniqueness checks, and verification.

Targets (from the task issue): generate and uniquely solve 10,000 eight-person puzzles in under 30 s;
verify 100,000 completions in under 10 s. Pure Python, one thread.

Measured on the development machine (2 CPU cores shared with other jobs), `python3
benchmarks/kk_generate_verify.py`, two runs:

    generate 10000 x 8ppl unique puzzles: 1.0-1.2 s (31,421 candidates solved; 32% uniquely solvable)
    reflective traces for them:           0.74 s (mean 939 characters)
    verify 100000 completions:            1.9-2.2 s (about 46,000-54,000 per second; a quarter each
                                          right traces, one role flipped, no <think>, random junk)

Options: --people N --count N --verify N --seed S.
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--verify", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from aha.tasks.knights_knaves import generator
    from aha.tasks.knights_knaves.logic import count_solutions
    from aha.tasks.knights_knaves.traces import make_trace
    from aha.tasks.knights_knaves.verifier import verify_answer

    # count candidates by wrapping the solver call the generator makes
    tried = 0
    real_mask = generator.solutions_mask

    def counting_mask(statements):
        nonlocal tried
        tried += 1
        return real_mask(statements)

    generator.solutions_mask = counting_mask
    start = time.perf_counter()
    puzzles = generator.generate_puzzles(args.people, args.count, seed=args.seed)
    gen_s = time.perf_counter() - start
    generator.solutions_mask = real_mask
    assert len(puzzles) == args.count and all(count_solutions(p.statements) == 1 for p in puzzles)
    print(f"generate {len(puzzles)} x {args.people}ppl unique puzzles: {gen_s:.2f} s "
          f"(candidates solved: {tried}; {len(puzzles) / max(tried, 1):.0%} uniquely solvable)")

    start = time.perf_counter()
    traces = [make_trace(p.names, p.statements, "reflective") for p in puzzles]
    trace_s = time.perf_counter() - start
    mean_chars = sum(map(len, traces)) / len(traces)
    print(f"reflective traces for them: {trace_s:.2f} s (mean {mean_chars:.0f} characters)")

    # completions: a mix of right traces, one role flipped, missing tags and junk
    rng = random.Random(args.seed)
    items = []
    for i in range(args.verify):
        p = puzzles[i % len(puzzles)]
        trace = traces[i % len(traces)]
        kind = i % 4
        if kind == 1:
            first = f"(1) {p.names[0]} is a {'knight' if p.solution[0] else 'knave'}"
            trace = trace.replace(first, f"(1) {p.names[0]} is a {'knave' if p.solution[0] else 'knight'}")
        elif kind == 2:
            trace = trace.replace("<think>", "")
        elif kind == 3:
            trace = "".join(rng.choice("ab <>/answer knight\n") for _ in range(200))
        items.append((trace, p))
    start = time.perf_counter()
    correct = sum(verify_answer(text, p.names, p.solution).correct for text, p in items)
    verify_s = time.perf_counter() - start
    print(f"verify {len(items)} completions: {verify_s:.2f} s ({len(items) / verify_s:,.0f} per second; "
          f"{correct} correct)")


if __name__ == "__main__":
    main()
