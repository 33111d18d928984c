"""Seconds per GRPO step of TRL's GRPOTrainer on `grpo_step.py`'s workload, for a same-run comparison.

The same tiny Qwen2 (random weights, built by `grpo_step.build_workload`), the same tokenizer, the
same Knights-and-Knaves prompts and the same Logic-RL reward (aha's task verifier and reward
function, called from a TRL reward function); 8 prompts x 8 samples per step, up to 128 new tokens,
temperature 1.0, fp32 on the CPU, one update per step, beta (KL coefficient) 0.04 or 0.

TRL is not a dependency of aha: `pip install --constraint constraints.txt trl` first (the
constraint keeps the CPU build of torch). TRL's GRPOConfig turns gradient checkpointing on by
default, which only costs time on a model this small, so it is switched off here (`--gradient-
checkpointing` restores TRL's default): the comparison is against TRL's faster setting.

    python3 benchmarks/trl_grpo_step.py --kl 0.04 [--steps 5] [--json out.json]

It prints the median seconds per step over the measured steps (one warm-up step dropped; the
time of a step is from TRL's `on_step_begin` to `on_step_end` callbacks, which spans generation,
reward, the reference forward and the update).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kl", type=float, default=0.04, help="KL coefficient, TRL's beta (0.04 or 0)")
    p.add_argument("--steps", type=int, default=5, help="measured steps after one warm-up step")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="keep TRL's default (on)")
    p.add_argument("--json", default=None, help="write seconds_per_step and peak_rss_mib")
    args = p.parse_args(argv)
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        print("TRL is not installed: pip install --constraint constraints.txt trl", file=sys.stderr)
        return 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    from grpo_step import build_workload

    from aha.rewards import REWARDS, RewardBatch

    work, task, tokenizer, model = build_workload()
    examples = {ex.id: ex for ex in task.examples("train")}
    rows = [{"prompt": ex.prompt, "example_id": ex.id} for ex in examples.values()]
    reward = REWARDS.get("logic_rl")

    def logic_rl_reward(prompts, completions, example_id, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        exs = [examples[i] for i in example_id]
        batch = RewardBatch(completions=texts, examples=exs, verdicts=[task.verify(t, e) for t, e in zip(texts, exs)],
                            num_tokens=[0] * len(texts), group_ids=list(range(len(texts))))
        return [s if s is not None else 0.0 for s in reward(batch).scores]

    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter() - self.t0)

    config = GRPOConfig(
        output_dir=str(work / "trl"), use_cpu=True, bf16=False, per_device_train_batch_size=64,
        num_generations=8, gradient_accumulation_steps=1, max_completion_length=128, temperature=1.0,
        beta=args.kl, learning_rate=1e-6, max_steps=args.steps + 1, logging_steps=1, save_strategy="no",
        report_to="none", gradient_checkpointing=args.gradient_checkpointing, seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=str(work / "model"), reward_funcs=logic_rl_reward, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          callbacks=[StepTimer()])
    trainer.train()
    measured = step_times[1:]
    result = {"seconds_per_step": statistics.median(measured), "steps": len(measured), "kl": args.kl,
              "trl_version": trl.__version__, "threads": torch.get_num_threads(),
              "gradient_checkpointing": args.gradient_checkpointing,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
