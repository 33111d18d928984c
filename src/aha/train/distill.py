"""Distillation data by rejection sampling: sample a teacher, keep only verified answers.

For every prompt of a task split the teacher is sampled `n` times; each sample is verified by the
task, wrong ones are dropped, exact duplicates removed, and at most `max_per_prompt` kept. The
kept (prompt, response) pairs are written as SFT JSONL (`aha sft data.files=[...]` reads it), with
a report of acceptance rate per bucket, response lengths and reflection-phrase frequency.

The teacher is a local model folder (sampled with the configured backend) or, for tasks that can
solve their own problems (Knights and Knaves, arithmetic), the task's solver traces
(`teacher.kind=solver`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.config import ModelConfig, RunConfig, option, section
from aha.errors import AhaError
from aha.rewards.reflection import count_report_reflections
from aha.rollout.base import Completion, SamplingParams
from aha.runs import RunDir, progress


@dataclass
class TeacherConfig:
    """Who answers."""

    kind: str = option("model", "'model' (sample a model folder) or 'solver' (the task's own traces)",
                       choices=["model", "solver"])
    model: ModelConfig = section(ModelConfig, "the teacher model when kind=model")
    backend: str = option("engine", "generation backend for a model teacher", choices=["engine", "hf"])


@dataclass
class DistillConfig:
    """`aha distill RECIPE [key=value ...]`: teacher sampling with rejection filtering."""

    teacher: TeacherConfig = section(TeacherConfig, "the teacher")
    task: str = option("knights-knaves", "task supplying prompts and the verifier")
    task_options: dict[str, Any] = option({}, "keyword options of the task")
    split: str = option("train", "split to distil")
    limit: int = option(0, "use at most this many prompts (0 = all)", min=0)
    n: int = option(4, "samples per prompt", min=1)
    temperature: float = option(0.7, "teacher sampling temperature", min=0.0)
    top_p: float = option(1.0, "nucleus threshold", min=0.0, max=1.0)
    top_k: int = option(0, "keep only the k most likely tokens (seed 000's teacher: 50); 0 is off", min=0)
    max_new_tokens: int = option(1024, "cap on teacher tokens per sample", min=1)
    stop: list[str] = option(["</answer>"], "stop strings")
    batch_prompts: int = option(16, "prompts per generation call", min=1)
    max_per_prompt: int = option(1, "keep at most this many verified, distinct responses per prompt", min=1)
    run: RunConfig = section(RunConfig, "output folder and seed")


def solver_samples(examples: list[Any], n: int) -> list[Completion]:
    """The task's own traces as completions (n copies each; dedup keeps one)."""
    out = []
    for i, ex in enumerate(examples):
        trace = ex.meta.get("trace")
        if trace is None:
            raise AhaError(f"example {ex.id} has no solver trace (meta.trace); use teacher.kind=model")
        for j in range(n):
            out.append(Completion(i, j, [], str(trace), "stop"))
    return out


def distill(cfg: DistillConfig, generator: Any = None, tokenizer: Any = None) -> Path:
    """Run distillation; `generator`/`tokenizer` may be injected (tests use a fake teacher)."""
    from aha.prompts import render_prompt
    from aha.tasks import get_task
    from aha.tasks.base import preopens_think, safe_verify

    task = get_task(cfg.task, **cfg.task_options)
    examples = list(task.examples(cfg.split))
    if cfg.limit:
        examples = examples[: cfg.limit]
    if not examples:
        raise AhaError(f"task {cfg.task!r} has no examples in split {cfg.split!r}")
    run = RunDir.create(cfg.run.out_dir or None, "distill")
    run.write_config(cfg)
    think_preopened = preopens_think(task)
    if cfg.teacher.kind == "model" and generator is None:
        from aha.models import load_model, load_tokenizer
        from aha.rollout import get_generator

        tokenizer = load_tokenizer(cfg.teacher.model.path)
        model = load_model(cfg.teacher.model.path, cfg.teacher.model.device, cfg.teacher.model.dtype).eval()
        generator = get_generator(cfg.teacher.backend, model, tokenizer)

    kept_rows: list[dict[str, Any]] = []
    per_bucket: dict[str, dict[str, int]] = {}
    t0 = time.time()
    with progress(len(examples), "distill", cfg.run.progress) as bar:
        for start in range(0, len(examples), cfg.batch_prompts):
            chunk = examples[start:start + cfg.batch_prompts]
            if cfg.teacher.kind == "solver":
                samples = solver_samples(chunk, cfg.n)
            else:
                prompts = [render_prompt(tokenizer, ex.prompt, think_preopened) for ex in chunk]
                params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                        max_new_tokens=cfg.max_new_tokens, n=cfg.n, stop=list(cfg.stop),
                                        seed=cfg.run.seed + start)
                samples = generator.generate(prompts, params)
            for i, ex in enumerate(chunk):
                stats = per_bucket.setdefault(ex.bucket, {"prompts": 0, "samples": 0, "correct": 0, "kept": 0,
                                                          "prompts_with_kept": 0})
                stats["prompts"] += 1
                seen: set[str] = set()
                kept_here = 0
                for c in (s for s in samples if s.prompt_index == i):
                    stats["samples"] += 1
                    verdict = safe_verify(task, c.text, ex)
                    if not verdict.correct:
                        continue
                    stats["correct"] += 1
                    key = c.text.strip()
                    if key in seen or kept_here >= cfg.max_per_prompt:
                        continue
                    seen.add(key)
                    kept_here += 1
                    response = c.text if not think_preopened else "<think>" + c.text
                    kept_rows.append({"id": ex.id, "bucket": ex.bucket, "prompt": ex.prompt, "response": response,
                                      "num_chars": len(c.text), "num_tokens": len(c.token_ids) or None,
                                      "reflections": count_report_reflections(c.text)})
                stats["kept"] += kept_here
                stats["prompts_with_kept"] += kept_here > 0
            bar.update(len(chunk), kept=len(kept_rows))

    data_path = run.path / "sft.jsonl"
    with open(data_path, "w", encoding="utf-8") as f:
        for row in kept_rows:
            f.write(json.dumps({"id": row["id"], "prompt": row["prompt"], "response": row["response"]},
                               ensure_ascii=False) + "\n")
    report = distill_report(per_bucket, kept_rows, cfg, time.time() - t0)
    (run.path / "report.json").write_text(json.dumps(report, indent=2))
    (run.path / "report.md").write_text(report_markdown(report))
    run.log.info(f"kept {len(kept_rows)} responses from {len(examples)} prompts "
                 f"(acceptance {report['overall']['acceptance_rate']:.1%}); data: {data_path}")
    return run.path


def distill_report(per_bucket: dict[str, dict[str, int]], kept: list[dict[str, Any]], cfg: DistillConfig,
                   seconds: float) -> dict[str, Any]:
    def summarise(stats: dict[str, int], rows: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = sorted(r["num_chars"] for r in rows)
        return {
            **stats,
            "acceptance_rate": stats["correct"] / max(stats["samples"], 1),
            "prompt_coverage": stats["prompts_with_kept"] / max(stats["prompts"], 1),
            "mean_chars": sum(lengths) / len(lengths) if lengths else 0.0,
            "median_chars": lengths[len(lengths) // 2] if lengths else 0,
            "share_with_reflection": sum(r["reflections"] > 0 for r in rows) / max(len(rows), 1),
            "reflections_per_response": sum(r["reflections"] for r in rows) / max(len(rows), 1),
        }

    total = {k: sum(s[k] for s in per_bucket.values()) for k in
             ("prompts", "samples", "correct", "kept", "prompts_with_kept")}
    return {
        "teacher": cfg.teacher.kind if cfg.teacher.kind == "solver" else cfg.teacher.model.path,
        "n": cfg.n, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens, "seconds": seconds,
        "overall": summarise(total, kept),
        "buckets": {b: summarise(s, [r for r in kept if r["bucket"] == b]) for b, s in sorted(per_bucket.items())},
    }


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Distillation report\n\nteacher: `{report['teacher']}`, n = {report['n']}, "
             f"temperature {report['temperature']}, max {report['max_new_tokens']} new tokens\n",
             "| bucket | prompts | samples | accepted | acceptance | prompts covered | kept | mean chars "
             "| with reflection | reflections/response |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in list(report["buckets"].items()) + [("all", report["overall"])]:
        lines.append(f"| {name} | {s['prompts']} | {s['samples']} | {s['correct']} | {s['acceptance_rate']:.1%} "
                     f"| {s['prompt_coverage']:.1%} | {s['kept']} | {s['mean_chars']:.0f} "
                     f"| {s['share_with_reflection']:.1%} | {s['reflections_per_response']:.2f} |")
    return "\n".join(lines) + "\n"

