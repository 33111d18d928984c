"""Seconds per GRPO step of aha's trainer on the reference workload.

Workload (the one TRL 1.16's GRPOTrainer was measured on): a Qwen2 model with random weights,
hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 688, vocabulary 2,000, tied embeddings
(~3.4M parameters); 8 prompts x 8 samples per step; prompts of about 120 tokens (4- and 5-person
Knights-and-Knaves puzzles); up to 128 new tokens; temperature 1.0; fp32; one update per step;
KL coefficient 0.04 (reference model forward included) or 0.

It runs the real `aha train` loop (generation, verification, rewards, advantages, update,
metrics, rollouts written to disk) for 1 warm-up + N measured steps and prints the median seconds
per step, generation tokens per second, and peak resident memory.

    python3 benchmarks/grpo_step.py --kl 0.04 [--backend engine|hf] [--steps 5] [--json out.json] [--trl]
    $VENV/bin/python benchmarks/grpo_step.py --kl 0.04 --backend vllm [--vllm-eager]

`--backend vllm` runs from the vLLM environment (`make test-vllm` builds it; VENV is the path
`.ci/vllm_venv.sh` prints); its steps include the weight push after every optimizer step.

`--trl` then runs TRL's GRPOTrainer on the same workload in a fresh process (`trl_grpo_step.py`;
needs `pip install --constraint constraints.txt trl`) and prints aha's time as a fraction of TRL's.

Measured figures are recorded in the README ("Performance").
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

TASK_OPTIONS = {"people": "4-5", "count": 200, "test_count": 10, "seed": 0, "trace_style": "none",
                "system_prompt": ""}


def build_workload():
    """(work dir, task, tokenizer, model) of the reference workload; the model is also saved in work/model."""
    from aha.models import build_model, train_tokenizer
    from aha.tasks import get_task

    work = Path(tempfile.mkdtemp(prefix="aha-bench-"))
    task = get_task("knights-knaves", **TASK_OPTIONS)
    tokenizer = train_tokenizer(task.corpus(2000, 0), vocab_size=2000)
    # pad the vocabulary to exactly 2,000 entries, as the reference model has
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(2000 - len(tokenizer))])
    model = build_model(tokenizer, "tiny", seed=0)
    model.save_pretrained(str(work / "model"))
    tokenizer.save_pretrained(str(work / "model"))
    return work, task, tokenizer, model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kl", type=float, default=0.04, help="KL coefficient (0.04 or 0)")
    p.add_argument("--backend", default="engine", choices=["engine", "hf", "vllm"])
    p.add_argument("--vllm-eager", action="store_true", help="vllm: enforce_eager (no torch.compile)")
    p.add_argument("--steps", type=int, default=5, help="measured steps after one warm-up step")
    p.add_argument("--micro-batch", type=int, default=16, help="rollouts per forward/backward (default 16)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", default=None, help="write seconds_per_step, generation_tokens_per_s, peak_rss_mib")
    p.add_argument("--trl", action="store_true", help="also time TRL's GRPOTrainer in this run and print the ratio")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from aha.config import load_config
    from aha.runs import read_jsonl
    from aha.train.config import TrainConfig
    from aha.train.grpo import train

    work, task, tokenizer, model = build_workload()
    cfg = load_config(TrainConfig, None, [
        f"model.path={work / 'model'}", "model.device=cpu", "task.name=knights-knaves",
        f"task.options={json.dumps(TASK_OPTIONS)}", "rewards=[{name: logic_rl, weight: 1.0}]",
        f"rollout.backend={args.backend}", f"rollout.vllm_enforce_eager={str(args.vllm_eager).lower()}",
        "rollout.vllm_kv_cache_gb=1.0", "rollout.temperature=1.0", "rollout.max_new_tokens=128",
        "rollout.stop=[]", f"algo.kl_coef={args.kl}", "batch.prompts_per_step=8", "batch.samples_per_prompt=8",
        f"batch.micro_batch_size={args.micro_batch}", "optim.lr=1e-6", f"steps={args.steps + 1}", f"run.out_dir={work / 'run'}",
        "run.progress=false"])
    train(cfg)
    rows = read_jsonl(work / "run" / "metrics.jsonl")[1:]  # drop the warm-up step
    step_seconds = statistics.median(r["time/step"] for r in rows)
    gen_tps = statistics.median(r["tokens_per_s"] for r in rows)
    gen_seconds = statistics.median(r["time/generation"] for r in rows)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from aha.prompts import render_prompt

    prompt_len = statistics.mean(len(render_prompt(tokenizer, ex.prompt)) for ex in list(task.examples("train"))[:64])
    result = {"seconds_per_step": step_seconds, "generation_seconds": gen_seconds,
              "generation_tokens_per_s": gen_tps, "peak_rss_mib": peak_mib, "kl": args.kl,
              "backend": args.backend, "micro_batch": args.micro_batch, "threads": torch.get_num_threads(), "mean_prompt_tokens": prompt_len,
              "params": sum(p.numel() for p in model.parameters())}
    if args.trl:
        import subprocess

        cmd = [sys.executable, str(Path(__file__).parent / "trl_grpo_step.py"), "--kl", str(args.kl),
               "--steps", str(args.steps), "--threads", str(torch.get_num_threads()), "--json", str(work / "trl.json")]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            print(f"the TRL run failed (exit {done.returncode}): {' '.join(cmd)}", file=sys.stderr)
            return done.returncode
        trl_result = json.loads((work / "trl.json").read_text())
        result["trl_seconds_per_step"] = trl_result["seconds_per_step"]
        result["trl_version"] = trl_result["trl_version"]
        result["fraction_of_trl"] = step_seconds / trl_result["seconds_per_step"]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
