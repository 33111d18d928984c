"""Seconds per GRPO step on 2 processes x 1 thread against 1 process x 2 threads, same global batch.

The workload is `grpo_step.py`'s (a random Qwen2 of ~3.4M parameters, hidden 256, 4 layers; 8 prompts x 8
samples of 4-5-person Knights-and-Knaves puzzles; up to 128 new tokens; KL 0.04 against a reference copy;
fp32). Each setting runs the real `aha train` for 1 warm-up + N measured steps:

    1 x 2:  OMP_NUM_THREADS=2 python -m aha.cli train ...
    2 x 1:  OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m aha.cli train ...   (gloo)

and the script prints the median seconds per step, of generation and of the update (rank 0's clock), plus
the cost of the collectives alone: a gloo all-reduce of the model's 3.4M fp32 gradients (what each
optimizer step sums) timed in a 2-process run of this script (`--allreduce`).

    python benchmarks/data_parallel_step.py [--steps 4] [--order 1x2,2x1] [--strategy ddp|fsdp] [--json out.json]

`--strategy fsdp` runs the multi-process settings with `parallel=fsdp` (FSDP2 full shard, aha.train.fsdp):
per-block all-gathers and reduce-scatters in every update forward and backward, and one gather of the full
weights for generation and for the log-prob passes, instead of one gradient all-reduce per optimizer step.

On a 2-core machine the two settings use the same cores, so the expectation is about equal times: the point
is that the collectives cost little. The machine is shared: run `uptime` beside it and quote the load.
Figures are recorded in the README ("Multi-process training").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(model: Path, out: Path, steps: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    from grpo_step import TASK_OPTIONS

    return ["train", f"model.path={model}", "model.device=cpu", "task.name=knights-knaves",
            f"task.options={json.dumps(TASK_OPTIONS)}", "rewards=[{name: logic_rl, weight: 1.0}]",
            "rollout.temperature=1.0", "rollout.max_new_tokens=128", "rollout.stop=[]", "algo.kl_coef=0.04",
            "batch.prompts_per_step=8", "batch.samples_per_prompt=8", "batch.micro_batch_size=16",
            "optim.lr=1e-6", f"steps={steps}", f"run.out_dir={out}", "run.progress=false", "save_rollouts=true"]


def run_setting(setting: str, model: Path, out: Path, steps: int, strategy: str = "ddp") -> dict[str, float]:
    procs, threads = (int(x) for x in setting.split("x"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "aha.cli", *train_args(model, out, steps + 1), f"parallel={strategy}"]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
               str(_free_port()), *cmd[1:]]
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.time() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]  # no warm-up
    return {"seconds_per_step": statistics.median(r["time/step"] for r in rows),
            "generation_s": statistics.median(r["time/generation"] for r in rows),
            "update_s": statistics.median(r["time/update"] for r in rows), "wall_s": wall, "steps": len(rows)}


def allreduce_main(numel: int, repeats: int) -> None:
    """Inside torchrun: time all-reduces of `numel` fp32 values (one optimizer step's gradient sum)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    buf = torch.randn(numel)
    dist.all_reduce(buf)  # warm-up
    times = []
    for _ in range(repeats):
        dist.barrier()
        t = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - t)
    if dist.get_rank() == 0:
        print(json.dumps({"allreduce_s": statistics.median(times), "numel": numel}))
    dist.destroy_process_group()


def time_allreduce(numel: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), __file__, "--allreduce", str(numel)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["allreduce_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4, help="measured steps after one warm-up step")
    p.add_argument("--order", default="1x2,2x1", help="settings PROCSxTHREADS, run in this order")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"], help="multi-process strategy (parallel=)")
    p.add_argument("--allreduce", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.allreduce:
        allreduce_main(args.allreduce, 20)
        return 0

    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(HERE))
    from grpo_step import build_workload

    work, _, _, model = build_workload()
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    results: dict[str, dict[str, float]] = {}
    for setting in args.order.split(","):
        results[setting] = run_setting(setting, work / "model", work / f"run_{setting}_{args.strategy}", args.steps,
                                       args.strategy)
        print(f"{setting}: {json.dumps(results[setting])}", flush=True)
    allreduce = time_allreduce(numel)
    print(f"gloo all-reduce of {numel} fp32 gradients, 2 processes: {allreduce * 1000:.1f} ms "
          f"(once per optimizer step)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": results, "allreduce_s": allreduce, "numel": numel,
                                               "strategy": args.strategy}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
