"""What a memory budget costs the engine: generation in waves (`rollout.max_batch_rows`) vs one batch.

Workload: the RL step's (a random `tiny` Qwen2, 8 prompts x 8 samples, prompts of ~118 tokens, 128
new tokens, temperature 1). For each row cap the completions are checked to be identical (tokens and
log-probs) to the one-batch run, and the seconds per call are printed (median of `--repeats`, the
caps taking turns within each repeat), with `uptime`.

    python3 benchmarks/waves.py [--threads 2] [--repeats 3] [--rows 0,32,16,8]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", default="0,32,16,8", help="row caps to compare; 0 = one batch")
    p.add_argument("--size", default="tiny")
    args = p.parse_args(argv)

    import torch

    from aha.models import build_model, train_tokenizer
    from aha.rollout import SamplingParams, get_generator
    from aha.tasks import get_task

    torch.set_num_threads(args.threads)
    task = get_task("knights-knaves", people="2-3", count=200, test_count=10, seed=0)
    tokenizer = train_tokenizer(task.corpus(1000, 0), vocab_size=1000)
    model = build_model(tokenizer, args.size, seed=0).eval()
    rng = random.Random(0)
    prompts = [[rng.randrange(3, len(tokenizer)) for _ in range(rng.randint(100, 136))] for _ in range(8)]
    params = SamplingParams(temperature=1.0, max_new_tokens=128, n=8, seed=0)
    caps = [int(x) for x in args.rows.split(",")]
    gens = {cap: get_generator("engine", model, tokenizer, max_batch_rows=cap) for cap in caps}
    reference = gens[caps[0]].generate(prompts, params)
    for cap, gen in gens.items():
        out = gen.generate(prompts, params)  # warm-up and the equality check
        same = [c.token_ids for c in out] == [c.token_ids for c in reference] and \
            [c.logprobs for c in out] == [c.logprobs for c in reference]
        print(f"max_batch_rows={cap}: {len(gen.budget.waves(model, prompts, params))} waves, "
              f"completions identical to max_batch_rows={caps[0]}: {same}")
    times: dict[int, list[float]] = {cap: [] for cap in caps}
    for _ in range(args.repeats):
        for cap, gen in gens.items():
            t = time.perf_counter()
            gen.generate(prompts, params)
            times[cap].append(time.perf_counter() - t)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    for cap in caps:
        print(f"max_batch_rows={cap:3d}: {statistics.median(times[cap]):.3f} s/call median "
              f"(runs {', '.join(f'{x:.3f}' for x in times[cap])})")
    print(f"{args.threads} threads | {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
