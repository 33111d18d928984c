"""The evaluation figures of seed 003 (ProRL): pass@k curves, per-problem pass@1 histograms and the
"new ability" curve, drawn from what `aha eval` (results.json) and `aha compare` (compare.json) hold.

pass@k curves use every k = 1 .. n ("pass_at_k_curve": {k: value}); only the largest k is sampled,
each smaller k is the unbiased estimate from the same samples (`aha.eval.stats.pass_at_k_all`).
Figures are drawn on matplotlib's Agg canvas without pyplot (no window, no global state).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aha.report.plots import finish_pass_at_k_figure, new_figure, save_figure


def slug(text: str) -> str:
    """A file-name-safe form of a bucket name: "Counting & Probability" -> "counting_probability"."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "bucket"


def _points(curve: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    pairs = sorted((int(k), float(v)) for k, v in curve.items() if v is not None)
    return [k for k, _ in pairs], [v for _, v in pairs]


def plot_pass_at_k_curves(curves: Mapping[str, Mapping[str, Any]], path: str | Path,
                          title: str = "pass@k") -> Path | None:
    """One line per label of {label: {k: mean pass@k}} against k on a log2 axis (k = 1 .. n).

    Returns the path, or None when no curve has a point."""
    fig, ax = new_figure()
    k_max = 0
    for i, (label, curve) in enumerate(curves.items()):
        ks, vs = _points(curve or {})
        if not ks:
            continue
        k_max = max(k_max, ks[-1])
        ax.plot(ks, vs, color=f"C{i % 10}", label=label, marker="o" if len(ks) <= 12 else None, markersize=3)
    if not k_max:
        return None
    ticks = [2 ** i for i in range(k_max.bit_length()) if 2 ** i <= k_max]
    if ticks[-1] != k_max:
        ticks.append(k_max)
    return finish_pass_at_k_figure(fig, ax, ticks, "k (samples per problem; k < n estimated unbiasedly from n)",
                                   title, path)


def plot_pass1_histograms(hists: Mapping[str, Mapping[str, Any]], path: str | Path,
                          title: str = "per-problem pass@1") -> Path | None:
    """Side-by-side bars of {label: {"edges", "counts"}} (as `aha.eval.stats.pass1_histogram`):
    the share of problems in each pass@1 bin. Returns the path, or None without data."""
    hists = {k: v for k, v in hists.items() if v and v.get("counts") and sum(v["counts"])}
    if not hists:
        return None
    fig, ax = new_figure()
    width = 1.0 / len(hists)
    for i, (label, h) in enumerate(hists.items()):
        total = sum(h["counts"])
        xs = [j + (i - (len(hists) - 1) / 2) * width * 0.9 for j in range(len(h["counts"]))]
        ax.bar(xs, [c / total for c in h["counts"]], width=width * 0.9, color=f"C{i % 10}",
               label=f"{label} ({total} problems)")
    edges = next(iter(hists.values()))["edges"]
    ax.set_xticks(range(len(edges) - 1))
    ax.set_xticklabels([f"{edges[j]:.1f}-{edges[j + 1]:.1f}" for j in range(len(edges) - 1)], fontsize=7)
    ax.set_xlabel("per-problem pass@1 (share of a problem's samples that are correct)")
    ax.set_ylabel("share of problems")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center")
    return save_figure(fig, Path(path))


def plot_eval(results: Mapping[str, Any], out_dir: str | Path, label: str = "") -> list[Path]:
    """The figures of one `aha eval` results.json object into out_dir:
    pass_at_k_curve.png (overall), pass_at_k_buckets.png (one line per bucket), one
    pass_at_k_<field>.png per field of bucket_by=level,subject, and pass1_histogram.png."""
    out = Path(out_dir)
    name = label or results.get("label") or "model"
    written: list[Path | None] = []
    if results.get("pass_at_k_curve"):
        written.append(plot_pass_at_k_curves({name: results["pass_at_k_curve"]}, out / "pass_at_k_curve.png",
                                             f"pass@k: {name}"))
    buckets = {b: v.get("pass_at_k_curve") or {} for b, v in (results.get("buckets") or {}).items()}
    if len(buckets) > 1:
        written.append(plot_pass_at_k_curves(buckets, out / "pass_at_k_buckets.png", f"pass@k per bucket: {name}"))
    for dim, groups in (results.get("by") or {}).items():
        written.append(plot_pass_at_k_curves({g: v.get("pass_at_k_curve") or {} for g, v in groups.items()},
                                             out / f"pass_at_k_{slug(dim)}.png", f"pass@k per {dim}: {name}"))
    if results.get("pass1_histogram"):
        written.append(plot_pass1_histograms({name: results["pass1_histogram"]}, out / "pass1_histogram.png",
                                             f"per-problem pass@1: {name}"))
    return [p for p in written if p is not None]


def plot_compare(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The figures of an `aha compare` report into out_dir: pass_at_k_curve.png (every evaluation
    overlaid), pass_at_k_<bucket>.png per bucket, pass_at_k_<field>_<value>.png per value of every
    further bucket_by field (e.g. subject), pass1_histogram.png, and new_ability.png (each
    other model's pass@k on the problems the baseline never solves)."""
    out = Path(out_dir)
    curves: Mapping[str, Mapping[str, Any]] = report.get("pass_at_k_curve") or {}
    written: list[Path | None] = []
    if curves:
        written.append(plot_pass_at_k_curves({lb: c.get("all") or {} for lb, c in curves.items()},
                                             out / "pass_at_k_curve.png", "pass@k: all problems"))
        buckets: Sequence[str] = report.get("buckets") or []
        if len(buckets) > 1:
            for b in buckets:
                written.append(plot_pass_at_k_curves({lb: c.get(b) or {} for lb, c in curves.items()},
                                                     out / f"pass_at_k_{slug(b)}.png", f"pass@k: {b}"))
    by: Mapping[str, Sequence[str]] = report.get("by") or {}
    curves_by: Mapping[str, Any] = report.get("pass_at_k_curve_by") or {}
    for dim in list(by)[1:]:  # the first field is the bucket, drawn above
        for value in by[dim]:
            written.append(plot_pass_at_k_curves(
                {lb: (c.get(dim) or {}).get(value) or {} for lb, c in curves_by.items()},
                out / f"pass_at_k_{slug(dim)}_{slug(value)}.png", f"pass@k: {dim} {value}"))
    if report.get("pass1_histogram"):
        written.append(plot_pass1_histograms(report["pass1_histogram"], out / "pass1_histogram.png"))
    new = {lb: na.get("pass_at_k_curve") or {} for lb, na in (report.get("new_ability") or {}).items()}
    if any(new.values()):
        base = report.get("baseline", "baseline")
        counts = {lb: na.get("base_unsolved", 0) for lb, na in report["new_ability"].items()}
        written.append(plot_pass_at_k_curves(
            {f"{lb} ({counts[lb]} problems)": c for lb, c in new.items()}, out / "new_ability.png",
            f"new ability: pass@k on problems {base} never solves"))
    return [p for p in written if p is not None]
