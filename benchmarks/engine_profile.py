"""Generation alone on `grpo_step.py`'s workload: the engine against transformers `generate` ("hf") and vLLM.

Same model and prompts as benchmarks/grpo_step.py: a random-weight "tiny" Qwen2 (hidden 256, 4 layers,
4 heads, 2 KV heads, intermediate 688, vocabulary 2,000, tied, fp32) over a tokenizer trained on
Knights-and-Knaves text; 8 prompts (4-5 person puzzles, ~120 tokens, rendered with the chat template as
the trainer does) x 8 samples; up to 128 new tokens; temperature 1.0; no stop strings. Random weights
almost never emit EOS, so nearly every completion runs to the cap: this measures the decode step, not
the dropping of finished rows.

Both backends run in one process, interleaved, so load from other processes hits both alike; each
repeat uses a different seed (as successive training steps do).

    python3 benchmarks/engine_profile.py --threads 1 [--repeats 3] [--backends hf,engine]
    python3 benchmarks/engine_profile.py --threads 1 --profile [--top 25]   # torch profiler, engine only
    python3 benchmarks/engine_profile.py --threads 2 --lora 16 [--mode cascade]   # with a LoRA adapter
    $VENV/bin/python benchmarks/engine_profile.py --threads 2 --backends hf,engine,vllm [--vllm-eager]

The vllm backend needs the vLLM environment (`make test-vllm` builds it; VENV is the path
`.ci/vllm_venv.sh` prints). vLLM's first call includes the weight push and the backend's self-check,
so the warm-up call absorbs them; `--vllm-eager` skips vLLM's torch.compile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def build_workload(prompts: int = 8, seed: int = 0):
    """(model, tokenizer, prompt id lists) exactly as grpo_step.py builds them (without the disk round trip)."""
    from aha.models import build_model, train_tokenizer
    from aha.prompts import render_prompt
    from aha.tasks import get_task
    from aha.tasks.base import preopens_think
    from aha.train.grpo import example_at

    sys.path.insert(0, str(Path(__file__).parent))
    from grpo_step import TASK_OPTIONS  # one definition of the workload's puzzles

    task = get_task("knights-knaves", **TASK_OPTIONS)
    tokenizer = train_tokenizer(task.corpus(2000, 0), vocab_size=2000)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(2000 - len(tokenizer))])
    model = build_model(tokenizer, "tiny", seed=0).eval()
    examples = list(task.examples("train"))
    think = preopens_think(task)
    ids = [render_prompt(tokenizer, example_at(examples, i, seed).prompt, think) for i in range(prompts)]
    return model, tokenizer, ids


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--backends", default="hf,engine", help="comma-separated: hf, engine, vllm")
    ap.add_argument("--vllm-eager", action="store_true", help="vllm: enforce_eager (no torch.compile)")
    ap.add_argument("--mode", default="auto", help="engine mode (auto, native, cascade, slab, dynamic)")
    ap.add_argument("--profile", action="store_true", help="print the torch profiler's top ops of one engine call")
    ap.add_argument("--lora", type=int, default=0,
                    help="wrap the model in a LoRA adapter of this rank on every projection (0 = none)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    import torch

    from aha.rollout import SamplingParams, get_generator

    torch.set_num_threads(args.threads)
    model, tokenizer, prompts = build_workload(args.prompts)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.lora, lora_alpha=2 * args.lora, target_modules="all-linear"))
        with torch.no_grad():  # peft starts B at zero; make the adapter change the model
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    print(f"threads {torch.get_num_threads()}, {len(prompts)} prompts x {args.samples}, prompt tokens "
          f"{min(map(len, prompts))}-{max(map(len, prompts))}, max_new {args.max_new}", flush=True)
    backends = args.backends.split(",")
    def options(b: str) -> dict:
        if b == "engine":
            return {"mode": args.mode}
        if b == "vllm":
            return {"enforce_eager": args.vllm_eager, "kv_cache_gb": 1.0}
        return {}

    gens = {b: get_generator(b, model, tokenizer, **options(b)) for b in backends}

    def params(seed: int) -> SamplingParams:
        return SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new, n=args.samples, seed=seed)

    for g in gens.values():  # warm-up
        g.generate(prompts[:2], SamplingParams(temperature=1.0, max_new_tokens=8, n=2))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        gen = gens.get("engine") or get_generator("engine", model, tokenizer, mode=args.mode)
        gen.generate(prompts, params(0))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            gen.generate(prompts, params(1))
            dt = time.perf_counter() - t0
        print(f"engine under the profiler: {dt:.3f} s")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
        return {}

    times: dict[str, list[float]] = {b: [] for b in backends}
    tokens: dict[str, list[int]] = {b: [] for b in backends}
    for r in range(args.repeats):
        for b in backends:
            t0 = time.perf_counter()
            out = gens[b].generate(prompts, params(r))
            times[b].append(time.perf_counter() - t0)
            tokens[b].append(sum(len(c.token_ids) for c in out))
        line = "  ".join(f"{b} {times[b][-1]:.3f} s" for b in backends)
        for other in ("hf", "vllm"):
            if other in times and "engine" in times:
                line += f"  ratio {other}/engine {times[other][-1] / times['engine'][-1]:.2f}x"
        print(f"repeat {r}: {line}", flush=True)
    result = {}
    for b in backends:
        med = statistics.median(times[b])
        result[b] = {"median_s": med, "times": times[b], "tokens": tokens[b]}
        print(f"{b:7s} median {med:.3f} s  min {min(times[b]):.3f} s  tokens/call {statistics.mean(tokens[b]):.0f}")
    for other in ("hf", "vllm"):
        if other in times and "engine" in times:
            ratios = [h / e for h, e in zip(times[other], times["engine"])]
            result["ratio" if other == "hf" else f"ratio_{other}"] = statistics.median(ratios)
            print(f"speedup {other}/engine: median {statistics.median(ratios):.2f}x  (per repeat: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)})")
    return result


if __name__ == "__main__":
    main()
