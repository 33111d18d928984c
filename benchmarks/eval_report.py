"""Scoring and tabulating many samples: `aha score`'s path (verify + report) on 100,000 completions.

Builds 2,000 Knights-and-Knaves puzzles (2-8 people) with 50 completions each (the teacher trace,
a flipped answer, or a malformed reply), verifies all of them with the task's verifier and builds
the full report (pass@k up to k = 32 with bootstrap intervals, per-bucket tables, reflection
statistics) as `aha score --report` does.

    python3 benchmarks/eval_report.py [--problems 2000] [--samples 50]
"""

from __future__ import annotations

import argparse
import random
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=2000)
    p.add_argument("--samples", type=int, default=50)
    args = p.parse_args(argv)

    from aha.eval.runner import build_results, results_markdown
    from aha.eval.scoring import Sample, score_samples
    from aha.rewards.reflection import count_report_reflections
    from aha.tasks import get_task

    task = get_task("knights-knaves", people="2-8", count=1, test_count=args.problems // 7 + 1, seed=0)
    examples = list(task.examples("test"))[: args.problems]
    rng = random.Random(0)
    samples = []
    for ex in examples:
        trace = ex.meta["trace"]
        for _ in range(args.samples):
            r = rng.random()
            text = trace if r < 0.4 else trace.replace("knight</answer>", "knave</answer>") if r < 0.8 else "no idea"
            samples.append(Sample(ex.id, text))
    t0 = time.time()
    records, _ = score_samples(task, examples, samples)
    t1 = time.time()
    for rec, s in zip(records, samples):
        rec["completion"] = s.text
        rec["reflections"] = count_report_reflections(s.text)
    results = build_results(records, {"n": args.samples})
    results_markdown(results)
    t2 = time.time()
    print(f"{len(records)} completions of {len(examples)} problems: verify {t1 - t0:.2f} s, "
          f"report (reflections, pass@k with bootstrap, tables) {t2 - t1:.2f} s, total {t2 - t0:.2f} s; "
          f"accuracy {results['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
