"""Evaluation: sample n completions per problem, verify them, and report.

`evaluate(...)` writes into an output folder:
    samples.jsonl   every completion with its verdict, length, finish reason and reflection count
    results.json    accuracy (pass@1 averaged over n), pass_at_k {k: ...} with bootstrap intervals,
                    buckets {name: ...}, n_samples, sampling, format rate, lengths, reflection stats,
                    pass_at_k_curve {k: ...} for every k = 1 .. n (overall and in every bucket),
                    pass1_histogram (per-problem pass@1), and with bucket_by=level,subject: by
                    {field: buckets}, cross (level x subject table) and regression (seed 003's OLS
                    of per-problem accuracy on level and subject)
    results.md      the same as tables (per-bucket table with an unweighted Avg column)

It is resumable: samples are appended a chunk of problems at a time, and a re-run with the same
settings skips problems that already have all n samples. `build_results` and `results_markdown`
turn any list of scored records into the report, so `aha score` shares them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from aha.errors import AhaError
from aha.eval.stats import (
    count_correct,
    default_ks,
    ols,
    pass1_histogram,
    pass_at_k_full_curve,
    pass_at_k_intervals,
    wilson_interval,
)
from aha.eval.tables import accuracy_table, markdown_table, natural_key, response_stats
from aha.rewards.reflection import count_report_reflections
from aha.rollout.base import SamplingParams
from aha.runs import append_jsonl, progress, read_jsonl, write_jsonl
from aha.tasks.base import Example


def _settings_of(params: SamplingParams, extra: dict[str, Any]) -> dict[str, Any]:
    return {"n": params.n, "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
            "max_new_tokens": params.max_new_tokens, "stop": list(params.stop), "seed": params.seed, **extra}


def evaluate(model: Any, tokenizer: Any, task: Any, examples: list[Example], params: SamplingParams,
             out_dir: str | Path, batch_prompts: int = 32, backend: str = "engine", label: str = "",
             show_progress: bool = True, generator: Any = None, budgets: list[int] | None = None) -> dict[str, Any]:
    """Sample, verify, and write samples.jsonl / results.json / results.md into `out_dir`.

    examples: the problems (ids must be unique). params: sampling settings (params.n samples each).
    budgets: token budgets B at which every response is also cut to B tokens and judged again
        (REA-RL: 8192 and 16384); each record gets budgets {B: {correct, num_tokens}}.
    Returns the results dict (also written as results.json).
    """
    from aha.prompts import render_prompt
    from aha.tasks.base import preopens_think, safe_verify

    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise AhaError("example ids are not unique; evaluation pairs samples by id")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings_of(params, {"task": getattr(task, "name", type(task).__name__), "problems": len(examples),
                                     **({"budgets": sorted(budgets)} if budgets else {})})
    settings_file = out / "eval_settings.json"
    samples_file = out / "samples.jsonl"
    done: dict[str, list[dict[str, Any]]] = {}
    if samples_file.exists() and settings_file.exists():
        if json.loads(settings_file.read_text()) != json.loads(json.dumps(settings)):
            raise AhaError(f"{out} holds an evaluation with other settings; use another --out or delete it")
        for r in read_jsonl(samples_file):
            done.setdefault(r["id"], []).append(r)
        # keep only problems with all n samples; a chunk cut short is redone whole
        done = {k: v for k, v in done.items() if len(v) == params.n}
        write_jsonl(samples_file, [r for rs in done.values() for r in rs])  # atomic: a kill keeps the old file
    elif samples_file.exists():
        samples_file.unlink()
    settings_file.write_text(json.dumps(settings, indent=2))

    think_preopened = preopens_think(task)
    if generator is None:
        from aha.rollout import get_generator

        generator = get_generator(backend, model, tokenizer)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    gen_tokens, gen_seconds = 0, 0.0
    import torch

    with progress(len(examples), f"eval {label}".strip(), show_progress) as bar:
        bar.update(len(done))
        for start in range(0, len(examples), batch_prompts):
            chunk = examples[start:start + batch_prompts]
            todo = [ex for ex in chunk if ex.id not in done]
            if not todo:
                continue
            chunk = todo if len(todo) == len(chunk) else chunk  # a partly done chunk is redone whole
            prompts = [render_prompt(tokenizer, ex.prompt, think_preopened) for ex in chunk]
            chunk_params = SamplingParams(**{**params.__dict__, "seed": params.seed + start})
            t0 = time.time()
            with torch.no_grad():
                completions = generator.generate(prompts, chunk_params)
            gen_seconds += time.time() - t0
            rows = []
            for c in completions:
                ex = chunk[c.prompt_index]
                verdict = safe_verify(task, c.text, ex)
                gen_tokens += len(c.token_ids)
                rows.append({"id": ex.id, "bucket": ex.bucket, "sample": c.sample_index, "completion": c.text,
                             "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason,
                             "reflections": count_report_reflections(c.text), **verdict.to_dict()})
                if isinstance(ex.meta.get("groups"), dict):
                    rows[-1]["groups"] = dict(ex.meta["groups"])  # bucket_by=level,subject
                if budgets:
                    rows[-1]["budgets"] = budget_verdicts(task, tokenizer, c, ex, verdict, budgets)
            rows = [r for r in rows if r["id"] not in done]
            append_jsonl(samples_file, rows)
            for r in rows:
                done.setdefault(r["id"], []).append(r)
            bar.update(len(todo))
    if was_training and hasattr(model, "train"):
        model.train()
    records = [r for ex in examples for r in done.get(ex.id, [])]
    results = build_results(records, settings, label=label)
    if gen_seconds > 0:
        results["generation"] = {"tokens": gen_tokens, "seconds": round(gen_seconds, 3),
                                 "tokens_per_s": gen_tokens / gen_seconds}
    write_results(results, out)
    return results


def budget_verdicts(task: Any, tokenizer: Any, completion: Any, example: Example, verdict: Any,
                    budgets: list[int]) -> dict[str, dict[str, Any]]:
    """{B: {correct, num_tokens}}: the completion cut to its first B tokens and judged again (the
    full verdict where it is no longer than B)."""
    from aha.tasks.base import safe_verify

    out = {}
    for b in sorted(budgets):
        ids = completion.token_ids
        if len(ids) <= b:
            out[str(b)] = {"correct": bool(verdict.correct), "num_tokens": len(ids)}
        else:
            text = tokenizer.decode(ids[:b], skip_special_tokens=True)
            out[str(b)] = {"correct": bool(safe_verify(task, text, example).correct), "num_tokens": b}
    return out


def build_results(records: list[dict[str, Any]], sampling: dict[str, Any], label: str = "",
                  n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The machine-readable report of scored records (one per sample; several samples per id).

    accuracy is pass@1 averaged over samples and then over problems; pass_at_k uses the unbiased
    estimator for k = 1, 2, 4, ... up to the smallest sample count per problem, each with a
    percentile-bootstrap 95% interval over problems; buckets carry the same per bucket plus a
    Wilson interval of the sample-level accuracy.
    """
    if not records:
        raise AhaError("nothing to report: no scored samples")

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        _, n, c = count_correct(rs)
        intervals = pass_at_k_intervals(n, c, n_boot=n_boot, seed=seed)
        k1 = intervals[1]
        stats = response_stats(rs, reflection_counter=count_report_reflections)
        wilson = wilson_interval(int(c.sum()), int(n.sum()))
        return {
            "accuracy": k1.estimate, "ci_low": k1.low, "ci_high": k1.high,
            "wilson_low": wilson.low, "wilson_high": wilson.high,
            "problems": int(len(n)), "samples": int(n.sum()),
            "pass_at_k": {str(k): iv.estimate for k, iv in intervals.items()},
            "pass_at_k_ci": {str(k): [iv.low, iv.high] for k, iv in intervals.items()},
            "pass_at_k_curve": {str(k): v for k, v in pass_at_k_full_curve(n, c).items()},
            "pass1_histogram": pass1_histogram(c / n),
            **{k: v for k, v in stats.items() if k not in ("samples", "problems", "accuracy")},
        }

    def grouped(label: Any) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            groups.setdefault(str(label(r)), []).append(r)
        return {b: block(groups[b]) for b in sorted(groups, key=natural_key)}

    overall = block(records)
    buckets = grouped(lambda r: r.get("bucket", "all"))
    per_problem = count_correct(records)[1]
    n_min = int(per_problem.min())
    counts: dict[int, int] = {}
    for n in per_problem.tolist():
        counts[int(n)] = counts.get(int(n), 0) + 1
    # several bucket fields (bucket_by=level,subject): one grouping per field
    dims = list(dict.fromkeys(d for r in records if isinstance(r.get("groups"), dict) for d in r["groups"]))
    by = {d: grouped(lambda r, d=d: (r.get("groups") or {}).get(d, "all")) for d in dims} if len(dims) > 1 else None
    cross = cross_table(records, dims[0], dims[1]) if len(dims) > 1 else None
    regression = level_regression(records, dims[0], dims[1]) if len(dims) > 1 else None
    from aha.eval.token_savings import budget_summary, token_summary

    budgets = budget_summary(records)
    return {
        "label": label,
        "tokens": token_summary(records),
        **({"budgets": budgets} if budgets else {}),
        "accuracy": overall["accuracy"],
        "ci_low": overall["ci_low"],
        "ci_high": overall["ci_high"],
        "bucket_avg": float(np.mean([b["accuracy"] for b in buckets.values()])),
        "pass_at_k": overall["pass_at_k"],
        "pass_at_k_ci": overall["pass_at_k_ci"],
        "n_samples": n_min,
        "samples_per_problem": {str(n): counts[n] for n in sorted(counts, reverse=True)},
        "sampling": sampling,
        "overall": overall,
        "buckets": buckets,
        **({"by": by} if by else {}),
        **({"cross": cross} if cross else {}),
        **({"regression": regression} if regression else {}),
        "pass_at_k_curve": overall["pass_at_k_curve"],
        "pass1_histogram": overall["pass1_histogram"],
        "ks": default_ks(n_min),
    }


def cross_table(records: list[dict[str, Any]], row_dim: str, col_dim: str) -> dict[str, Any]:
    """Accuracy per (row_dim, col_dim) cell, e.g. level x subject, from records with "groups".

    Returns {"rows": row_dim, "cols": col_dim, "row_values": [...], "col_values": [...],
    "cells": {row: {col: {"accuracy", "problems", "samples"}}}} (cells without problems left out);
    accuracy is per-problem pass@1 averaged over the cell's problems, as everywhere else.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        g = r.get("groups") or {}
        groups.setdefault((str(g.get(row_dim, "all")), str(g.get(col_dim, "all"))), []).append(r)
    row_values = sorted({k[0] for k in groups}, key=natural_key)
    col_values = sorted({k[1] for k in groups}, key=natural_key)
    cells: dict[str, dict[str, Any]] = {}
    for (rv, cv), rs in groups.items():
        _, n, c = count_correct(rs)
        cells.setdefault(rv, {})[cv] = {"accuracy": float(np.mean(c / n)), "problems": int(len(n)),
                                        "samples": int(n.sum())}
    cells = {rv: {cv: cells[rv][cv] for cv in col_values if cv in cells[rv]} for rv in row_values}
    return {"rows": row_dim, "cols": col_dim, "row_values": row_values, "col_values": col_values, "cells": cells}


def level_regression(records: list[dict[str, Any]], level_dim: str, category_dim: str) -> dict[str, Any] | None:
    """Seed 003's regression of per-problem accuracy on level and subject:

        accuracy_i = b_level * level_i + sum_s b_s * [subject_i = s]   (no intercept, one dummy per subject)

    accuracy_i is the problem's pass@1 (c / n); level_i is the number in its level value ("level 3"
    -> 3). Returns {"response", "level", "category", "problems", "coefficients": [`ols` rows, level
    first]}, or None when a level has no number or there are too few problems to fit.
    """
    per: dict[str, list[Any]] = {}
    for r in records:
        g = r.get("groups") or {}
        e = per.setdefault(str(r["id"]), [g.get(level_dim), g.get(category_dim), 0, 0])
        e[2] += 1
        e[3] += int(bool(r.get("correct")))
    levels = []
    for lv, *_ in per.values():
        found = re.search(r"-?\d+(?:\.\d+)?", str(lv))
        if not found:
            return None
        levels.append(float(found.group()))
    cats = sorted({str(e[1]) for e in per.values()}, key=natural_key)
    if len(per) <= len(cats) + 1:
        return None
    x = np.zeros((len(per), 1 + len(cats)))  # (M, 1 + S)
    x[:, 0] = levels
    for i, e in enumerate(per.values()):
        x[i, 1 + cats.index(str(e[1]))] = 1.0
    y = np.array([e[3] / e[2] for e in per.values()])  # (M,)
    return {"response": "per-problem pass@1", "level": level_dim, "category": category_dim, "problems": len(per),
            "coefficients": ols(x, y, [level_dim, *cats])}


def regression_markdown(reg: dict[str, Any]) -> str:
    """The regression as a table: variable, coef, std err, t, p (normal approximation)."""
    return markdown_table(["variable", "coef", "std err", "t", "p"],
                          [[c["variable"], _f(c["coef"], 4), _f(c["std_err"], 4), _f(c["t"], 3), _f(c["p_value"])]
                           for c in reg["coefficients"]])


def cross_markdown(cross: dict[str, Any]) -> str:
    """The level x subject table: one row per row value, one column per column value, cells
    "accuracy (problems)", with an unweighted Avg column (mean of the row's cells)."""
    header = [f"{cross['rows']} \\ {cross['cols']}", "Avg", *cross["col_values"]]
    rows = []
    for rv in cross["row_values"]:
        cells = cross["cells"].get(rv, {})
        accs = [cells[cv]["accuracy"] for cv in cross["col_values"] if cv in cells]
        rows.append([rv, _f(float(np.mean(accs)) if accs else None),
                     *(f"{cells[cv]['accuracy']:.3f} ({cells[cv]['problems']})" if cv in cells else "–"
                       for cv in cross["col_values"])])
    return markdown_table(header, rows)


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: settings, per-bucket accuracy (Avg unweighted), pass@k with intervals, responses."""
    s = results["sampling"]
    name = results.get("label") or "model"
    lines = [f"# Evaluation: {name}", "",
             f"{results['overall']['problems']} problems, {_sample_counts(results)} ({_decoding(s)}). "
             "Accuracy is pass@1 averaged over each problem's samples; intervals are 95% percentile-bootstrap "
             "over problems.", "",
             "## Accuracy per bucket", "",
             accuracy_table({name: {b: v["accuracy"] for b, v in results["buckets"].items()}}, digits=3), "",
             f"Overall (all problems pooled): **{results['accuracy']:.3f}** "
             f"[{results['ci_low']:.3f}, {results['ci_high']:.3f}]", ""]
    for dim, groups in (results.get("by") or {}).items():
        lines += [f"## Accuracy per {dim}", "",
                  accuracy_table({name: {b: v["accuracy"] for b, v in groups.items()}}, digits=3), "",
                  markdown_table([dim, "problems", "accuracy", "95% CI"],
                                 [[b, str(v["problems"]), f"{v['accuracy']:.3f}",
                                   f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}]"] for b, v in groups.items()]), ""]
    if results.get("cross"):
        cr = results["cross"]
        lines += [f"## Accuracy per {cr['rows']} x {cr['cols']}", "",
                  "Cells: accuracy (problems); Avg is the unweighted mean of the row's cells.", "",
                  cross_markdown(cr), ""]
    if results.get("regression"):
        reg = results["regression"]
        lines += [f"## Regression of per-problem accuracy on {reg['level']} and {reg['category']}", "",
                  f"OLS over {reg['problems']} problems: pass@1 = b * {reg['level']} number + one coefficient per "
                  f"{reg['category']} (no intercept); p from the normal approximation.", "",
                  regression_markdown(reg), ""]
    rows = []
    for b, v in list(results["buckets"].items()) + [("all", results["overall"])]:
        rows.append([b, str(v["problems"]), f"{v['accuracy']:.3f}", f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}]",
                     _f(v.get("format_rate")), _f(v.get("length_mean"), 1), _f(v.get("length_median"), 1),
                     _f(v.get("length_p90"), 1), _f(v.get("truncated_share"))])
    lines += ["## Buckets", "", markdown_table(["bucket", "problems", "accuracy", "95% CI", "format", "len mean",
                                                "len median", "len p90", "truncated"], rows), ""]
    ks = list(results["pass_at_k"])
    if len(ks) > 1:
        lines += ["## pass@k", "", markdown_table(
            ["k", "pass@k", "95% CI"],
            [[k, f"{results['pass_at_k'][k]:.3f}", f"[{results['pass_at_k_ci'][k][0]:.3f}, "
              f"{results['pass_at_k_ci'][k][1]:.3f}]"] for k in ks]), ""]
    hist = results.get("pass1_histogram")
    if hist:
        edges = hist["edges"]
        lines += ["## Per-problem pass@1", "",
                  f"Never solved (0 of n): {hist['never_solved']} problems; always solved (n of n): "
                  f"{hist['always_solved']}.", "",
                  markdown_table(["pass@1", "problems"],
                                 [[f"[{edges[i]:.1f}, {edges[i + 1]:.1f}{']' if i == len(hist['counts']) - 1 else ')'}",
                                   str(v)] for i, v in enumerate(hist["counts"])]), ""]
    if results.get("tokens"):
        t = results["tokens"]
        lines += ["## Tokens", "", markdown_table(
            ["tokens/response", "tokens/correct answer", "correct response length"],
            [[_f(t["tokens_mean"], 1), _f(t.get("tokens_per_correct"), 1), _f(t.get("correct_tokens_mean"), 1)]]), ""]
    if results.get("budgets"):
        lines += ["## Re-judged at token budgets", "", "Each response cut to its first B tokens and judged again.", "",
                  markdown_table(["budget", "accuracy", "tokens/response"],
                                 [[b, _f(v["accuracy"]), _f(v["tokens_mean"], 1)]
                                  for b, v in results["budgets"].items()]), ""]
    o = results["overall"]
    lines += ["## Reflection", "", markdown_table(
        ["responses with reflection phrases", "phrases per response", "accuracy with", "accuracy without"],
        [[_f(o.get("reflection_rate")), _f(o.get("reflections_mean"), 2), _f(o.get("accuracy_with_reflection")),
          _f(o.get("accuracy_without_reflection"))]]), ""]
    if "generation" in results:
        g = results["generation"]
        lines += [f"Generation: {g['tokens']} tokens in {g['seconds']:.1f} s ({g['tokens_per_s']:.0f} tokens/s).", ""]
    return "\n".join(lines)


def _decoding(s: dict[str, Any]) -> str:
    """How the completions were sampled; completions scored by `aha score` carry no settings."""
    if "temperature" not in s and "max_new_tokens" not in s:
        source = s.get("source")
        return (f"completions from {source}; " if source else "") + "decoding settings not recorded"
    decoding = "greedy" if not s.get("temperature") else (f"temperature {s['temperature']}, top_p {s.get('top_p', 1.0)}"
                                                        + (f", top_k {s['top_k']}" if s.get("top_k") else ""))
    return f"{decoding}, max {s.get('max_new_tokens')} new tokens, seed {s.get('seed')}"


def _sample_counts(results: dict[str, Any]) -> str:
    """Either `n = 4 samples each` or `samples per problem: 4 (10 problems), 2 (1 problem); pass@k up to k = 2`."""
    counts = results.get("samples_per_problem") or {str(results["n_samples"]): results["overall"]["problems"]}
    if len(counts) == 1:
        n = int(next(iter(counts)))
        return f"n = {n} sample{'s' if n != 1 else ''} each"
    parts = ", ".join(f"{n} ({p} problem{'s' if p != 1 else ''})" for n, p in counts.items())
    return f"samples per problem: {parts}; pass@k up to k = {results['n_samples']}"


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def write_results(results: dict[str, Any], out_dir: str | Path) -> None:
    out = Path(out_dir)
    (out / "results.json").write_text(json.dumps(_finite(results), indent=2))
    (out / "results.md").write_text(results_markdown(results))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
