"""Comparing evaluations of several models on the same problems.

Each evaluation is a folder written by `aha eval` (samples.jsonl). Against the first (the
baseline), every other evaluation gets: per-bucket accuracy side by side, the paired difference of
per-problem accuracy with 95% intervals (paired bootstrap over problems), "new abilities"
(problems the baseline never solves in any of its n samples and the other solves at least once)
and regressions (the reverse); and the "new ability" analysis of seed 003 / ProRL: on the problems
the baseline never solves (0 of its n samples), the other model's unbiased pass@k for every k up to
its own sample count, overall and per bucket. Every evaluation also gets its full pass@k curve
(k = 1 .. n, overall and per bucket; with bucket_by=level,subject also per value of each field,
grouped as the baseline's records say) and its per-problem pass@1 histogram, for the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aha.errors import AhaError
from aha.eval.stats import align_by_id, default_ks, paired_difference, pass1_histogram, pass_at_k_full_curve
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
    curves = {label: pass_at_k_curves(p) for label, p in zip(labels, problems)}
    # bucket_by=level,subject: curves per value of every field too (records carry "groups")
    groups = [{str(r["id"]): r["groups"] for r in records if isinstance(r.get("groups"), dict)}
              for _, records in evaluations]
    dims = list(dict.fromkeys(d for g in groups[0].values() for d in g))
    by: dict[str, list[str]] = {}
    curves_by: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    if len(dims) > 1:
        by = {d: sorted({str(g.get(d, "all")) for g in groups[0].values()}, key=natural_key) for d in dims}
        for label, p in zip(labels, problems):
            curves_by[label] = {}
            for d, values in by.items():
                curves_by[label][d] = {}
                for v in values:
                    es = [e for i, e in p.items() if str(groups[0].get(i, {}).get(d, "all")) == v]
                    if es:
                        curves_by[label][d][v] = _curve(es)
    new_ability = {label: new_ability_analysis(base, other) for label, other in zip(labels[1:], problems[1:])}
    hist = {label: pass1_histogram([e["accuracy"] for e in p.values()]) for label, p in zip(labels, problems)}
    from aha.eval.token_savings import token_savings

    savings = token_savings([(label, records) for label, (_, records) in zip(labels, evaluations)])
    return {"baseline": labels[0], "labels": labels, "buckets": buckets, "accuracy": accuracy, "vs_baseline": diffs,
            "token_savings": savings,
            "new_ability": new_ability, "pass_at_k_curve": curves, "pass1_histogram": hist,
            **({"by": by, "pass_at_k_curve_by": curves_by} if by else {})}


def _curve(entries: list[dict[str, Any]]) -> dict[str, float]:
    n = np.array([e["n"] for e in entries], dtype=np.int64)
    c = np.array([e["correct"] for e in entries], dtype=np.int64)
    return {str(k): v for k, v in pass_at_k_full_curve(n, c).items()}


def pass_at_k_curves(problems: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{"all" | bucket: {k: mean pass@k}} for every k = 1 .. the fewest samples of a problem there."""
    out = {"all": _curve(list(problems.values()))}
    for bucket in sorted({e["bucket"] for e in problems.values()}, key=natural_key):
        out[bucket] = _curve([e for e in problems.values() if e["bucket"] == bucket])
    return out


def new_ability_analysis(base: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The other model on the problems the baseline never solves (0 correct in all its samples).

    Returns {"base_unsolved": how many such problems (shared with the other), "base_samples": the
    fewest baseline samples among them, "solved": how many the other solves at least once,
    "ids": their ids (sorted), "pass_at_k_curve": {k: the other's mean pass@k over them} for
    k = 1 .. its fewest samples there, "pass_at_k": the same at k = 1, 2, 4, ..., n, and
    "buckets": {bucket: {"base_unsolved", "solved", "pass_at_k": {...}}}}. Empty curves when the
    baseline solves every problem at least once.
    """
    ids = sorted((i for i in base if i in other and base[i]["correct"] == 0), key=natural_key)
    entries = [other[i] for i in ids]

    def summary(es: list[dict[str, Any]]) -> dict[str, Any]:
        curve = _curve(es) if es else {}
        ks = default_ks(min(e["n"] for e in es)) if es else []
        return {"base_unsolved": len(es), "solved": sum(1 for e in es if e["correct"] > 0),
                "pass_at_k_curve": curve, "pass_at_k": {str(k): curve[str(k)] for k in ks}}

    out = summary(entries)
    out["base_samples"] = min((base[i]["n"] for i in ids), default=0)
    out["ids"] = ids
    out["buckets"] = {}
    for bucket in sorted({base[i]["bucket"] for i in ids}, key=natural_key):
        out["buckets"][bucket] = summary([other[i] for i in ids if base[i]["bucket"] == bucket])
    return out


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
    for label, na in (report.get("new_ability") or {}).items():
        lines += ["", f"## New ability: {label} on the problems {report['baseline']} never solves", ""]
        if not na["base_unsolved"]:
            lines.append(f"{report['baseline']} solves every problem at least once.")
            continue
        ks = list(na["pass_at_k"])
        rows = [["all", str(na["base_unsolved"]), str(na["solved"]), *(f"{na['pass_at_k'][k]:.3f}" for k in ks)]]
        for b, e in na["buckets"].items():
            rows.append([b, str(e["base_unsolved"]), str(e["solved"]),
                         *(f"{e['pass_at_k'][k]:.3f}" if k in e["pass_at_k"] else "–" for k in ks)])
        lines += [f"{na['base_unsolved']} problems with 0 of {na['base_samples']} baseline samples correct; "
                  f"{label}'s unbiased pass@k on them:", "",
                  markdown_table(["bucket", "problems", "solved", *(f"pass@{k}" for k in ks)], rows)]
    if report.get("token_savings"):
        from aha.eval.token_savings import token_savings_markdown

        lines += ["", token_savings_markdown(report["token_savings"])]
    return "\n".join(lines) + "\n"
