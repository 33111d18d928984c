"""Rollout throughput: transformers `generate` ("hf") against aha's engine ("engine").

The workload is one RL sampling step: 8 prompts x 8 samples, prompts of 110-130 tokens, up to 128 new
tokens, temperature 1.0, fp32, on randomly initialised Qwen2 models. Random weights give a near-uniform
next-token distribution, so the EOS logit gets a bias (lm_head bias, same model for both backends)
that makes completion lengths roughly geometric (mean about 60 tokens, a fifth hitting the cap), as in
RL where lengths spread widely and some samples run long. Throughput counts useful tokens only: each completion's
tokens up to and including its EOS.

Models:
- "base": hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 688, vocab 2000, tied (~3.4M params)
- "small": hidden 128, 4 layers, intermediate 344 (~0.9M params)

Run:  python3 benchmarks/generation.py --threads 1 [--json out.json] [--device cuda --dtype bf16]

Measured on the 2-core build machine (torch 2.13 CPU, transformers 5.23, fp32, 1 thread, load
average 2-3 from other jobs sharing the 2 cores, so absolute figures are noisy; the backends run
interleaved so load hits both alike). Useful tokens per second:

    python3 benchmarks/generation.py --threads 1 --repeats 5            (8 x 8, cap 128, EOS bias 3.5)
    model          hf tok/s   engine tok/s   speedup   mean len   capped
    base  (3.4M)        916          3462      3.78x        56       17%
    small (0.9M)       2201          7838      3.56x        60       20%

    --eos-bias 3.0 --repeats 3                                (longer completions, a third capped)
    base  (3.4M)       1412          3704      2.62x        78       34%
    small (0.9M)       2756          7731      2.81x        78       33%

    --models small --prompts 16 --max-new 200 --eos-bias 4.0 --repeats 2   (16 x 8, long cap, few capped)
    small (0.9M)        955          7210      7.55x        41        1%

The gain grows with the spread of completion lengths: generate pays for every row until the
longest one ends, the engine only for live rows. The engine ran in its default "native" mode.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

MODELS = {
    "base": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=688),
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=344),
}
VOCAB = 2000
EOS = 1
PAD = 0


def build_model(name: str, eos_bias: float, device: str, dtype: torch.dtype):
    """A seeded random Qwen2 model whose EOS logit carries `eos_bias` (lm_head bias)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, tie_word_embeddings=True, eos_token_id=EOS, pad_token_id=PAD,
                      **MODELS[name])
    model = Qwen2ForCausalLM(cfg)
    bias = torch.zeros(VOCAB)
    bias[EOS] = eos_bias
    model.lm_head.bias = torch.nn.Parameter(bias)
    return model.to(device=device, dtype=dtype).eval()


def make_prompts(n: int, seed: int = 0) -> list[list[int]]:
    """n random prompts of 110-130 tokens that avoid the special ids."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(110, 131, (n,), generator=g).tolist()
    return [torch.randint(2, VOCAB, (L,), generator=g).tolist() for L in lengths]


def run_once(generator, prompts, params, seed: int) -> tuple[float, int, list[int]]:
    """(seconds, useful tokens, completion lengths) of one generate call."""
    params.seed = seed
    t0 = time.perf_counter()
    out = generator.generate(prompts, params)
    dt = time.perf_counter() - t0
    lengths = [len(c.token_ids) for c in out]
    return dt, sum(lengths), lengths


def summarize(runs: list[tuple[float, int, list[int]]], max_new: int) -> dict:
    """Throughput over all runs (total useful tokens / total seconds) plus per-run figures."""
    seconds = sum(r[0] for r in runs)
    tokens = sum(r[1] for r in runs)
    lengths = [n for r in runs for n in r[2]]
    return {"seconds": seconds, "tokens": tokens, "tok_per_s": tokens / seconds,
            "runs_tok_per_s": [r[1] / r[0] for r in runs], "mean_len": tokens / len(lengths),
            "capped_frac": sum(n == max_new for n in lengths) / len(lengths)}


def main(argv: list[str] | None = None) -> dict:
    from aha.rollout import SamplingParams, get_generator

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--models", default="base,small", help="comma-separated: base, small")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--eos-bias", type=float, default=3.5, help="EOS logit bias (3.5 -> mean length ~60)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--backends", default="hf,engine")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    prompts = make_prompts(args.prompts)
    results: dict = {"config": vars(args).copy(), "models": {}}
    for name in args.models.split(","):
        model = build_model(name, args.eos_bias, args.device, dtype)
        row: dict = {"params": sum(p.numel() for p in model.parameters())}
        backends = args.backends.split(",")
        gens = {b: get_generator(b, model, [EOS], pad_token_id=PAD) for b in backends}
        for gen in gens.values():
            gen.generate(prompts[:2], SamplingParams(temperature=1.0, max_new_tokens=8, n=2))  # warm-up
        params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new, n=args.samples)
        runs: dict[str, list] = {b: [] for b in backends}
        # interleaved, so that load from other processes hits both backends alike
        for r in range(args.repeats):
            for b in backends:
                runs[b].append(run_once(gens[b], prompts, params, seed=r))
        for b in backends:
            row[b] = res = summarize(runs[b], args.max_new)
            print(f"{name:6s} {b:7s} {res['tok_per_s']:9.0f} tok/s  {res['seconds']:6.2f} s  {res['tokens']} tokens  "
                  f"mean len {res['mean_len']:.1f}  capped {res['capped_frac']:.0%}", flush=True)
        if "hf" in row and "engine" in row:
            row["speedup"] = row["engine"]["tok_per_s"] / row["hf"]["tok_per_s"]
            print(f"{name:6s} speedup engine/hf: {row['speedup']:.2f}x", flush=True)
        results["models"][name] = row
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
