"""Seconds for one GRPO policy update (forward + backward over every rollout) in three layouts:
micro-batches of rollouts in random order; sorted by prompt + completion length, each row run whole;
and what the trainer does: sorted by completion length, each micro-batch running every distinct
prompt in it once and reusing its key/value cache for the rows that share it.

Workload: the demo's GRPO stage. A `nano` Qwen2 (hidden 128, 4 layers, vocabulary 1,000, ~1.0M
parameters, random weights: the update's cost does not depend on the weights) and 256 rollouts
(32 prompts x 8 samples) with lengths like the demo's: prompts of 40-70 tokens; completions of
25-200 tokens, mean about 83, spread about 22 overall and 13.6 within a group (a puzzle's samples
have similar lengths). Each variant runs `--repeats` times; the median is printed.

    python3 benchmarks/grpo_update.py [--threads 2] [--repeats 3] [--micro 32,64]

Measured figures are recorded in the README ("Performance").
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--micro", default="32,64", help="micro-batch sizes to try, comma-separated")
    args = p.parse_args(argv)

    import torch

    from aha.models import build_model, train_tokenizer
    from aha.tasks import get_task
    from aha.train.logprobs import completion_logprobs

    torch.set_num_threads(args.threads)
    task = get_task("knights-knaves", people="2-3", count=200, test_count=10, seed=0)
    tokenizer = train_tokenizer(task.corpus(1000, 0), vocab_size=1000)
    model = build_model(tokenizer, "nano", seed=0).train()
    rng = random.Random(0)
    vocab = len(tokenizer)
    distinct = [[rng.randrange(vocab) for _ in range(rng.randint(40, 70))] for _ in range(32)]
    prompts = [distinct[i // 8] for i in range(256)]  # groups of 8 samples
    typical = [rng.gauss(83, 17) for _ in range(32)]  # a group's typical completion length
    completions = [[rng.randrange(vocab) for _ in range(int(min(200, max(25, rng.gauss(typical[i // 8], 13.6)))))]
                   for i in range(256)]
    shuffled = list(range(256))
    rng.shuffle(shuffled)
    by_length = sorted(range(256), key=lambda i: len(prompts[i]) + len(completions[i]))
    by_completion = sorted(range(256), key=lambda i: (len(completions[i]), len(prompts[i])))

    def update(order: list[int], micro: int, share: bool) -> float:
        t = time.perf_counter()
        for start in range(0, len(order), micro):
            idx = order[start:start + micro]
            lp, _, mask = completion_logprobs(model, [prompts[i] for i in idx], [completions[i] for i in idx],
                                              tokenizer.pad_token_id, 1.0, with_entropy=True, share_prompts=share)
            (-(lp * mask).sum() / 1000).backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    update(by_length, 32, False)  # warm-up, both paths
    update(by_completion, 32, True)
    mean_c = statistics.mean(len(c) for c in completions)
    print(f"threads {args.threads}, 256 rollouts, mean completion {mean_c:.0f} tokens")
    for micro in (int(m) for m in args.micro.split(",")):
        times = {name: statistics.median(update(order, micro, share) for _ in range(args.repeats))
                 for name, order, share in (("random order", shuffled, False), ("sorted by length", by_length, False),
                                            ("shared prompts", by_completion, True))}
        base = times["random order"]
        print(f"micro-batch {micro:3d}: " + "  ".join(f"{k} {v:.2f} s ({1 - v / base:.0%} less)"
                                                       for k, v in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
