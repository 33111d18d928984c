"""Does bf16 speed up training on this CPU? Seconds per SFT step and per RL update, three precisions:

  fp32        float32 weights, plain AdamW (the CPU default);
  autocast    float32 weights, forward and backward under `torch.autocast("cpu", torch.bfloat16)`
              (matmuls in bf16 via oneDNN / AVX512-BF16 / AMX where the CPU has them);
  bf16+master bfloat16 weights, AdamW stepping fp32 master copies (`aha.train.precision`; what
              `model.dtype=bfloat16` runs).

Workloads (random weights; the cost does not depend on them), each a full optimizer step
(forward, backward, clip, AdamW):
  sft: one batch of `--sft-rows` x `--sft-len` tokens through the SFT loss (`aha.train.sft.response_loss`);
  rl:  the GRPO update over 64 rollouts (8 prompts x 8 samples; prompts 40-70 tokens, completions
       25-200, mean ~83, like the demo's), in micro-batches of 32 with shared prompts
       (`aha.train.logprobs.completion_logprobs`, with entropy), as `aha train` runs it.
Each figure is the median (and min) of `--repeats` timed runs after one warm-up, the modes taking
turns within each repeat; `uptime` is printed with every line because the machine may be shared.

    python3 benchmarks/bf16_cpu.py [--sizes nano,tiny,small] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="nano,tiny,small")
    p.add_argument("--modes", default="fp32,autocast,bf16+master")
    p.add_argument("--workloads", default="sft,rl")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sft-rows", type=int, default=16)
    p.add_argument("--sft-len", type=int, default=256)
    args = p.parse_args(argv)

    import torch

    from aha.models import build_model, train_tokenizer
    from aha.tasks import get_task
    from aha.train.common import make_optimizer
    from aha.train.logprobs import completion_logprobs
    from aha.train.sft import response_loss

    torch.set_num_threads(args.threads)
    print(f"command: python3 {' '.join(['benchmarks/bf16_cpu.py'] + (argv if argv is not None else sys.argv[1:]))}")
    try:
        bf16_ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16_ok = "unknown"
    print(f"torch {torch.__version__}, {args.threads} threads, oneDNN bf16 supported: {bf16_ok}")
    task = get_task("knights-knaves", people="2-3", count=200, test_count=10, seed=0)
    tokenizer = train_tokenizer(task.corpus(1000, 0), vocab_size=1000)
    vocab = len(tokenizer)
    rng = random.Random(0)
    # the RL workload: 8 groups of 8
    distinct = [[rng.randrange(vocab) for _ in range(rng.randint(40, 70))] for _ in range(8)]
    prompts = [distinct[i // 8] for i in range(64)]
    typical = [rng.gauss(83, 17) for _ in range(8)]
    completions = [[rng.randrange(vocab) for _ in range(int(min(200, max(25, rng.gauss(typical[i // 8], 13.6)))))]
                   for i in range(64)]
    order = sorted(range(64), key=lambda i: (len(completions[i]), len(prompts[i])))
    # the SFT workload: the second half of each row is the response
    ids = torch.randint(0, vocab, (args.sft_rows, args.sft_len))
    attn = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : args.sft_len // 2] = -100

    def session(size: str, mode: str) -> dict:
        model = build_model(tokenizer, size, seed=0).train()
        if mode == "bf16+master":
            model = model.to(torch.bfloat16)
        opt, _ = make_optimizer(model, 1e-5, 0.0, (0.9, 0.999), "constant", 0, 100)
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext

        def sft_step() -> None:
            opt.zero_grad(set_to_none=True)
            with ctx():
                loss, _ = response_loss(model, ids, attn, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        def rl_step() -> None:
            opt.zero_grad(set_to_none=True)
            for start in range(0, 64, 32):
                idx = order[start:start + 32]
                with ctx():
                    lp, _, mask = completion_logprobs(model, [prompts[i] for i in idx],
                                                      [completions[i] for i in idx], tokenizer.pad_token_id,
                                                      1.0, with_entropy=True)
                (-(lp * mask).sum() / 1000).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return {"sft": sft_step, "rl": rl_step, "params": sum(x.numel() for x in model.parameters())}

    # the modes take turns within every repeat, so a change in the machine's load hits them alike
    results = []
    modes = args.modes.split(",")
    for size in args.sizes.split(","):
        sessions = {mode: session(size, mode) for mode in modes}
        for workload in args.workloads.split(","):
            times: dict[str, list[float]] = {mode: [] for mode in modes}
            for mode in modes:
                sessions[mode][workload]()  # warm-up
            for _ in range(args.repeats):
                for mode in modes:
                    t = time.perf_counter()
                    sessions[mode][workload]()
                    times[mode].append(time.perf_counter() - t)
            for mode in modes:
                med = statistics.median(times[mode])
                results.append((size, workload, mode, med))
                print(f"{size:6s} ({sessions[mode]['params'] / 1e6:5.1f}M) {workload:3s} {mode:12s} {med:7.3f} s/step "
                      f"median, min {min(times[mode]):.3f} (runs {', '.join(f'{x:.3f}' for x in times[mode])})  "
                      f"| {uptime()}", flush=True)
        del sessions
    print("\nspeed-up over fp32 (fp32 seconds / mode seconds):")
    base = {(s, w): t for s, w, m, t in results if m == "fp32"}
    for s, w, m, t in results:
        if m != "fp32" and (s, w) in base:
            print(f"  {s:6s} {w:3s} {m:12s} x{base[(s, w)] / t:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
