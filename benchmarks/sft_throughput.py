"""SFT training throughput on a tiny model, as a share of the machine's fp32 matmul throughput.

Trains `aha sft` for a fixed number of steps on reflective Knights-and-Knaves traces and reports
tokens per second (all tokens in the batch, prompt and response, padding excluded) and model FLOP
utilisation: 6 x parameters x tokens per second over the measured fp32 matmul rate of this machine
(a 1024 x 1024 x 1024 matmul loop with the same threads).

    python3 benchmarks/sft_throughput.py [--size tiny|nano] [--steps 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def matmul_gflops(seconds: float = 3.0) -> float:
    import torch

    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, start = 0, time.time()
    while time.time() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.time() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="tiny", help="nano | tiny | small (default tiny)")
    p.add_argument("--steps", type=int, default=30, help="measured optimizer steps")
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    from aha.config import load_config
    from aha.models import count_parameters, init_model
    from aha.runs import read_jsonl
    from aha.tasks import get_task
    from aha.train.sft import SftConfig, sft

    work = Path(tempfile.mkdtemp(prefix="aha-sft-bench-"))
    options = {"people": "3", "count": 5000, "test_count": 10, "seed": 0, "system_prompt": ""}
    task = get_task("knights-knaves", **options)
    model, _ = init_model(work / "model", size=args.size, corpus=task.corpus(2000, 0), vocab_size=2000)
    params = count_parameters(model)
    cfg = load_config(SftConfig, None, [
        f"model.path={work / 'model'}", "model.device=cpu", "data.task=knights-knaves",
        f"data.task_options={json.dumps(options)}", f"steps={args.steps + 5}", f"batch_tokens={args.batch_tokens}",
        "val_every=0", "run.log_every=1", f"run.out_dir={work / 'run'}", "run.progress=false"])
    sft(cfg)
    rows = read_jsonl(work / "run" / "metrics.jsonl")[5:]  # drop warm-up steps
    seconds = rows[-1]["time"] - read_jsonl(work / "run" / "metrics.jsonl")[4]["time"]
    # tokens actually computed (prompt + response, no padding) are what tokens_per_s counts
    tokens = sum(r["tokens_per_s"] for r in rows) / len(rows) * seconds
    tps = tokens / seconds
    peak = matmul_gflops()
    mfu = 6 * params * tps / (peak * 1e9)
    result = {"size": args.size, "params": params, "threads": torch.get_num_threads(), "tokens_per_s": tps,
              "matmul_gflops": peak, "model_flops_utilisation": mfu}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
