"""Generation throughput by model size: aha's engine, vLLM (its CPU build) and transformers `generate`.

Models (random weights, fp32, Qwen2 architecture):
- "tiny": the RL-step benchmark's model (hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 688,
  vocabulary 2,000, tied; ~3.4M parameters);
- "small": `aha init-model --size small`'s shape (hidden 512, 8 layers, 8 heads, 4 KV heads,
  intermediate 1,376, vocabulary 2,000, tied; ~25M);
- "qwen2.5-0.5b": Qwen2.5-0.5B's configuration (hidden 896, 24 layers, 14 heads, 2 KV heads,
  intermediate 4,864, vocabulary 151,936, tied, rope theta 1e6; ~494M), built from the config with
  random weights (nothing is downloaded).

Workload: the RL-step benchmark's prompts (Knights-and-Knaves puzzles, ~120 tokens, chat template) as
token ids, P prompts x S samples, up to T new tokens, temperature 1.0, no stop strings; random weights
almost never emit EOS, so nearly every completion runs to the cap. Throughput: generated tokens per
second of one call, median over the repeats; the three backends run interleaved in one process, so
load from other processes hits them alike. Each backend's warm-up call (vLLM's includes its first
weight push and self-check) is not timed.

Run from the vLLM environment (`make test-vllm` builds it; VENV is the path `.ci/vllm_venv.sh` prints):

    $VENV/bin/python benchmarks/backend_sizes.py --threads 2 [--sizes tiny,small,qwen2.5-0.5b]
        [--backends engine,vllm,hf] [--repeats 2] [--vllm-eager] [--json out.json]

Sizes take their own default workload (tiny, small: 8 x 8 x 128; qwen2.5-0.5b: 4 x 4 x 32, which
the 2-core machine runs in about a minute per backend); --prompts/--samples/--max-new override all.
Figures are in the README ("vLLM backend").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

WORKLOADS = {"tiny": (8, 8, 128), "small": (8, 8, 128), "qwen2.5-0.5b": (4, 4, 32)}

# Qwen2.5-0.5B's config.json (the values that shape the compute)
QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)


def build(size: str, tokenizer):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from aha.models import build_model

    if size in ("tiny", "small"):
        return build_model(tokenizer, size, seed=0).eval()
    if size == "qwen2.5-0.5b":
        config = Qwen2Config(**QWEN25_05B, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return Qwen2ForCausalLM(config).eval()
    raise SystemExit(f"unknown size {size!r}: use {', '.join(WORKLOADS)}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="tiny,small,qwen2.5-0.5b")
    ap.add_argument("--backends", default="engine,vllm,hf")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=0)
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--max-new", type=int, default=0)
    ap.add_argument("--vllm-eager", action="store_true", help="vllm: enforce_eager (no torch.compile)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from aha.rollout import SamplingParams, get_generator

    sys.path.insert(0, str(Path(__file__).parent))
    from engine_profile import build_workload

    torch.set_num_threads(args.threads)
    _, tokenizer, all_prompts = build_workload(max(8, args.prompts))
    eos = [int(tokenizer.eos_token_id)]
    backends = args.backends.split(",")
    results: dict = {}
    for size in args.sizes.split(","):
        P, S, T = WORKLOADS[size]
        P, S, T = args.prompts or P, args.samples or S, args.max_new or T
        model = build(size, tokenizer)
        n_params = sum(p.numel() for p in model.parameters())
        prompts = all_prompts[:P]
        gens = {}
        for b in backends:
            options = {"enforce_eager": args.vllm_eager, "kv_cache_gb": 1.0, "max_model_len": 1024} if b == "vllm" else {}
            gens[b] = get_generator(b, model, eos, **options)  # token ids only: no tokenizer work in the timing
            t0 = time.perf_counter()
            gens[b].generate(prompts[:2], SamplingParams(temperature=1.0, max_new_tokens=8, n=2))  # warm-up
            print(f"{size}: {b} ready (warm-up {time.perf_counter() - t0:.1f} s)", flush=True)
        rates: dict[str, list[float]] = {b: [] for b in backends}
        for r in range(args.repeats):
            for b in backends:
                params = SamplingParams(temperature=1.0, max_new_tokens=T, n=S, seed=r)
                t0 = time.perf_counter()
                out = gens[b].generate(prompts, params)
                dt = time.perf_counter() - t0
                rates[b].append(sum(len(c.token_ids) for c in out) / dt)
                print(f"{size} repeat {r}: {b} {dt:.2f} s, {rates[b][-1]:.0f} tok/s", flush=True)
        results[size] = {"params": n_params, "workload": f"{P}x{S}x{T}",
                         **{b: statistics.median(v) for b, v in rates.items()}}
        del gens, model
    print(f"\n{'model':14s} {'params':>8s} {'workload':>10s} " + " ".join(f"{b + ' tok/s':>12s}" for b in backends))
    for size, row in results.items():
        print(f"{size:14s} {row['params'] / 1e6:7.1f}M {row['workload']:>10s} "
              + " ".join(f"{row[b]:12.1f}" for b in backends))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
