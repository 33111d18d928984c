"""Seconds one ProRL LoRA hard reset takes: the adapter merged into the base in fp32, a fresh adapter
attached and a fresh AdamW built (what `aha.train.resets.hard_reset` does with LoRA), for random-weight
Qwen2 models of the `aha init-model` sizes. No model is written to or read from disk.

    python3 benchmarks/reset_cost.py [--sizes nano,small] [--repeats 3] [--rank 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="nano,small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from aha.config import LoraConfig
    from aha.models import build_model, count_parameters, train_tokenizer
    from aha.train.common import attach_lora, make_optimizer
    from aha.train.resets import merge_adapter_fp32

    torch.set_num_threads(args.threads)
    tokenizer = train_tokenizer([" ".join(str(i * j) for j in range(30)) for i in range(300)], vocab_size=2000)
    lora = LoraConfig(enabled=True, r=args.rank, alpha=2 * args.rank, dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    for size in args.sizes.split(","):
        model = attach_lora(build_model(tokenizer, size=size, seed=0), lora)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)  # a trained adapter: a non-zero delta to merge
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model = attach_lora(merge_adapter_fp32(model), lora)
            make_optimizer(model, 2e-6, 0.0, (0.9, 0.999), "constant", 0, 100)
            seconds.append(time.perf_counter() - t0)
        print(f"{size}: {count_parameters(model.get_base_model()) / 1e6:.1f}M parameters, LoRA rank {args.rank} on "
              f"all 7 projections: reset median {statistics.median(seconds):.3f} s "
              f"(min {min(seconds):.3f}, {args.repeats} repeats, {args.threads} threads)")


if __name__ == "__main__":
    main()
