"""Comparing evaluations of several models on the same problems.

Each evaluation is a folder written by `aha eval` (samples.jsonl). Against the first (the
baseline), every other evaluation gets: per-bucket accuracy side by side, the paired difference of
per-problem accuracy with 95% intervals (paired bootstrap over problems), "new abilities"
(problems the baseline never solves in any of its n samples and the other solves at least once)
and regressions (the reverse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.eval.stats import align_by_id, paired_difference
from aha.eval.tables import accuracy_table, markdown_table, natural_key
from aha.runs import read_jsonl


def load_eval(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """(label, per-sample records) of an evaluation folder (or a samples.jsonl file)."""
    p = Path(path)
    samples = p / "samples.jsonl" if p.is_dir() else p
    if not samples.is_file():
        raise AhaError(f"{p} holds no samples.jsonl: is it an `aha eval` output folder?")
    records = read_jsonl(samples)
    if not records:
        raise AhaError(f"{samples} is empty")
    label = p.name if p.is_dir() else p.parent.name
    return label, records


def per_problem(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """id -> {bucket, n, correct, accuracy}."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        e = out.setdefault(str(r["id"]), {"bucket": str(r.get("bucket", "all")), "n": 0, "correct": 0})
        e["n"] += 1
        e["correct"] += int(bool(r.get("correct")))
    for e in out.values():
        e["accuracy"] = e["correct"] / e["n"]
    return out


def compare(evaluations: list[tuple[str, list[dict[str, Any]]]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The comparison report (see the module docstring); the first evaluation is the baseline."""
    if len(evaluations) < 2:
        raise AhaError("compare needs at least two evaluations")
    labels = [name for name, _ in evaluations]
    if len(set(labels)) != len(labels):
        labels = [f"{name} ({i + 1})" for i, name in enumerate(labels)]
    problems = [per_problem(records) for _, records in evaluations]
    base = problems[0]
    buckets = sorted({e["bucket"] for e in base.values()}, key=natural_key)
    accuracy = {label: _bucket_means(p) for label, p in zip(labels, problems)}
    diffs = {}
    for label, other in zip(labels[1:], problems[1:]):
        shared = set(base) & set(other)
        if not shared:
            raise AhaError(f"{labels[0]} and {label} share no problem ids: evaluate both on the same data")
        entry: dict[str, Any] = {}
        for bucket in buckets + ["all"]:
            ids = [i for i in shared if bucket == "all" or base[i]["bucket"] == bucket]
            if not ids:
                continue
            _, b_vals, a_vals = align_by_id({i: other[i]["accuracy"] for i in ids}, {i: base[i]["accuracy"] for i in ids})
            d = paired_difference(b_vals, a_vals, n_boot=n_boot, seed=seed)
            new = sorted(i for i in ids if base[i]["correct"] == 0 and other[i]["correct"] > 0)
            lost = sorted(i for i in ids if base[i]["correct"] > 0 and other[i]["correct"] == 0)
            entry[bucket] = {"problems": len(ids), "difference": d.difference, "ci_low": d.bootstrap.low,
                             "ci_high": d.bootstrap.high, "p_value": d.p_value,
                             "new_abilities": len(new), "regressions": len(lost),
                             "new_ability_ids": new, "regression_ids": lost}
        diffs[label] = entry
    return {"baseline": labels[0], "labels": labels, "buckets": buckets, "accuracy": accuracy, "vs_baseline": diffs}


def _bucket_means(problems: dict[str, dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for e in problems.values():
        groups.setdefault(e["bucket"], []).append(e["accuracy"])
    return {b: sum(v) / len(v) for b, v in groups.items()}


def compare_markdown(report: dict[str, Any]) -> str:
    lines = ["# Comparison", "", f"Baseline: **{report['baseline']}**. Accuracy is per-problem pass@1 averaged over "
             "samples; differences are paired on the same problems with 95% bootstrap intervals.", "",
             accuracy_table(report["accuracy"], buckets=report["buckets"], digits=3, bold_best=True), ""]
    for label, entry in report["vs_baseline"].items():
        rows = [[b, str(e["problems"]), f"{e['difference']:+.3f}", f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]",
                 f"{e['p_value']:.3f}", str(e["new_abilities"]), str(e["regressions"])]
                for b, e in entry.items()]
        lines += [f"## {label} vs {report['baseline']}", "",
                  markdown_table(["bucket", "problems", "difference", "95% CI", "p", "new abilities", "regressions"],
                                 rows), ""]
    lines.append("New ability: never solved by the baseline in any sample, solved at least once by the other; "
                 "regression: the reverse.")
    return "\n".join(lines) + "\n"
