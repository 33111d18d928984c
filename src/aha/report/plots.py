"""PNG plots of a run's training dynamics (from metrics.jsonl) and of evaluation results.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`), without
pyplot, so plotting never opens a window, needs no display and keeps no global figure state.

Training curves: each figure groups related keys (reward and its components, accuracy, response
length, KL, entropy, clip fraction, SFT loss, ...). Only keys present in the log are drawn, and a
figure without any of its keys is skipped. Noisy per-step curves are drawn faintly with an EMA
on top (`smoothing`); sparse curves (validation every N steps) are drawn with markers. In a run
with ProRL hard resets (`reset/count` in the log) every figure has a dashed vertical line at each
reset, labelled "reset N" and the new phase when it changes (`reset_markers`).

Evaluation: a pass@k curve and a per-bucket accuracy bar chart from results.json objects of the
form `{"accuracy": 0.61, "pass_at_k": {"1": 0.61, "8": 0.83}, "buckets": {"3ppl": {"accuracy":
0.7}, ...}}`; a pass@k value may also be `{"estimate"|"value"|"mean": v, "low": l, "high": h}`,
drawn with its interval.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aha.eval.tables import natural_key

Rows = list[dict[str, Any]]

DPI = 110
FIGSIZE = (7.0, 4.2)


# ----------------------------------------------------------------------------- data


def load_metrics(path: str | Path) -> Rows:
    """Rows of a metrics.jsonl (one JSON object per line with "step"); a torn last line is skipped."""
    from aha.runs import read_jsonl

    return read_jsonl(path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def numeric_keys(rows: Rows) -> list[str]:
    """Every key that holds a finite number in at least one row (except "step" and "time")."""
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k not in ("step", "time") and _is_number(v):
                keys[k] = None
    return list(keys)


def series(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where `key` is a finite number. Rows without "step" use their
    index + 1."""
    xs, ys = [], []
    for i, r in enumerate(rows):
        v = r.get(key)
        if _is_number(v):
            step = r.get("step", i + 1)
            xs.append(float(step) if _is_number(step) else float(i + 1))
            ys.append(float(v))
    return xs, ys


def ema(values: Sequence[float], smoothing: float) -> list[float]:
    """Debiased exponential moving average, as TensorBoard's scalar smoothing:
    m_t = w m_{t-1} + (1 - w) x_t with m_0 = 0, reported as m_t / (1 - w^t).
    smoothing w in [0, 1); 0 returns the values unchanged."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    out, m = [], 0.0
    for t, x in enumerate(values, 1):
        m = smoothing * m + (1.0 - smoothing) * x
        out.append(m / (1.0 - smoothing ** t))
    return out


# ----------------------------------------------------------------------------- figure specs


@dataclass
class PlotSpec:
    """One figure: file name (without .png), title, y-axis label, and a function that picks the
    keys to draw, in order, from the keys present in the log."""

    name: str
    title: str
    ylabel: str
    select: Callable[[list[str]], list[str]]
    ylim01: bool = False


def _exact(*candidates: str) -> Callable[[list[str]], list[str]]:
    return lambda keys: [c for c in candidates if c in keys]


def _matching(pattern: str, exclude: Iterable[str] = ()) -> Callable[[list[str]], list[str]]:
    rx = re.compile(pattern)
    skip = set(exclude)
    return lambda keys: sorted((k for k in keys if rx.fullmatch(k) and k not in skip), key=natural_key)


def _reward_keys(keys: list[str]) -> list[str]:
    """reward/total first, then components reward/<name> (or reward/<name>/mean); not std/min/max."""
    picked = [k for k in keys if re.fullmatch(r"reward/[^/]+(/mean)?", k)]
    # a component logged both plain and as /mean: keep the plain one
    picked = [k for k in picked if not (k.endswith("/mean") and k[:-5] in picked)]
    total = [k for k in picked if k in ("reward/total", "reward/total/mean")]
    rest = sorted((k for k in picked if k not in total), key=natural_key)
    if not total and "reward" in keys:
        total = ["reward"]
    return total + rest


def _length_keys(keys: list[str]) -> list[str]:
    order = ["response_length/mean", "response_length/min", "response_length/max", "val/response_length"]
    return [k for k in order if k in keys]


SPECS: list[PlotSpec] = [
    PlotSpec("reward", "Reward (total and components)", "reward", _reward_keys),
    PlotSpec("accuracy", "Accuracy", "accuracy", _exact("accuracy", "val/accuracy", "format_rate", "val/format_rate"),
             ylim01=True),
    PlotSpec("val_buckets", "Validation accuracy per bucket", "accuracy", _matching(r"val/bucket/.+"), ylim01=True),
    PlotSpec("val_metrics", "Other validation metrics", "value",
             _matching(r"val/(?!bucket/).+", exclude=("val/accuracy", "val/format_rate", "val/response_length",
                                                       "val/loss"))),
    PlotSpec("response_length", "Response length (tokens)", "tokens", _length_keys),
    PlotSpec("truncated", "Share of responses cut at the length limit", "share",
             _exact("truncated_share", "response_length/clip_ratio", "completions/clipped_ratio"), ylim01=True),
    PlotSpec("kl", "KL to the reference policy", "KL", _exact("kl", "kl_in_reward")),
    PlotSpec("entropy", "Policy entropy (nats per token)", "entropy", _exact("entropy")),
    PlotSpec("clip_frac", "Fraction of clipped tokens", "fraction", _exact("clip_frac", "clip_frac_low",
                                                                          "clip_frac_high", "dual_clip_frac")),
    PlotSpec("sft_loss", "SFT loss", "loss", _exact("train/loss", "val/loss")),
    PlotSpec("loss", "Policy loss", "loss", _exact("loss", "pg_loss")),
    PlotSpec("grad_norm", "Gradient norm (before clipping)", "norm", _exact("grad_norm")),
    PlotSpec("lr", "Learning rate", "lr", _exact("lr")),
]


# ----------------------------------------------------------------------------- drawing


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Any]:
    """A figure with one gridded axes, drawn off-screen (no display needed)."""
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _label(key: str) -> str:
    return key.removesuffix("/mean") if key.count("/") >= 2 else key


@dataclass(frozen=True)
class Marker:
    """A vertical line in every training figure: a hard reset (`kind` "reset") or a phase change
    without one ("phase"), at `step`, with its `label`."""

    step: float
    label: str
    kind: str = "reset"


def reset_markers(rows: Rows) -> list[Marker]:
    """The resets and phase changes of a run with ProRL resets (one whose log has `reset/count`);
    nothing for any other run.

    A reset is where `reset/count` rises above every earlier value (a resumed run's repeated rows
    mark nothing twice). It happens after its step's record, so it is drawn at `reset/step` (the
    step it followed) when the row has one, else at the row's step. The label is "reset N", plus
    "phase P" when `phase` changes there; a phase change with no reset is a "phase P" marker.
    """
    if not any(_is_number(r.get("reset/count")) for r in rows):
        return []
    out: list[Marker] = []
    top: float = 0.0
    phase: float | None = None
    seen: set[tuple[float, float | None]] = set()  # (reset count, phase) pairs already drawn or passed
    for i, r in enumerate(rows):
        step = r.get("step", i + 1)
        x = float(step) if _is_number(step) else float(i + 1)
        count = float(r["reset/count"]) if _is_number(r.get("reset/count")) else top
        new_phase = float(r["phase"]) if _is_number(r.get("phase")) else phase
        fresh = (count, new_phase) not in seen and count >= top
        phase_changed = fresh and phase is not None and new_phase != phase
        phase_text = f"phase {new_phase:g}" if new_phase is not None else ""
        if count > top:
            at = r.get("reset/step")
            label = f"reset {count:g}" + (f", {phase_text}" if phase_changed else "")
            out.append(Marker(float(at) if _is_number(at) and at > 0 else x, label, "reset"))
            top = count
        elif phase_changed:
            out.append(Marker(x, phase_text, "phase"))
        seen.add((count, new_phase))
        phase = new_phase
    return out


def _draw_markers(ax: Any, markers: Sequence[Marker]) -> None:
    """Dashed vertical lines (gid "reset" or "phase") with their labels along the top."""
    for m in markers:
        ax.axvline(m.step, color="0.3", linestyle="--" if m.kind == "reset" else ":", linewidth=1.0, alpha=0.7,
                   gid=m.kind)
        ax.text(m.step, 0.98, f" {m.label}", transform=ax.get_xaxis_transform(), rotation=90, ha="right",
                va="top", fontsize=7, color="0.25", gid=m.kind)


def figure_keys(rows: Rows, keys: Sequence[str], title: str, ylabel: str, smoothing: float = 0.8,
                ylim01: bool = False, markers: Sequence[Marker] = ()) -> Figure | None:
    """The figure `plot_keys` saves (None if no key has data)."""
    drawn = 0
    fig, ax = new_figure()
    for i, key in enumerate(keys):
        xs, ys = series(rows, key)
        if not xs:
            continue
        color = f"C{i % 10}"
        if len(xs) >= 10 and smoothing > 0:
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=1.0)
            ax.plot(xs, ema(ys, smoothing), color=color, linewidth=1.8, label=_label(key))
        else:
            ax.plot(xs, ys, color=color, linewidth=1.5, marker="o", markersize=3.5, label=_label(key))
        drawn += 1
    if not drawn:
        return None
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if ylim01:
        ax.set_ylim(-0.02, 1.02)
    _draw_markers(ax, markers)
    ax.legend(fontsize=8, loc="best")
    if smoothing > 0:
        ax.text(0.99, 0.01, f"EMA {smoothing:g} (raw faint)", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, alpha=0.6)
    return fig


def plot_keys(rows: Rows, keys: Sequence[str], path: str | Path, title: str, ylabel: str,
              smoothing: float = 0.8, ylim01: bool = False, markers: Sequence[Marker] = ()) -> Path | None:
    """Draw the given metric keys against step into one PNG. Returns the path, or None if no key
    has data.

    A curve with at least 10 points is drawn faintly (raw) with its EMA (`ema`, weight
    `smoothing`) in full colour; a shorter one is drawn raw, with markers. `markers` (see
    `reset_markers`) are drawn as labelled vertical lines.
    """
    fig = figure_keys(rows, keys, title, ylabel, smoothing=smoothing, ylim01=ylim01, markers=markers)
    return None if fig is None else save_figure(fig, Path(path))


def plot_metrics(rows: Rows, out_dir: str | Path, smoothing: float = 0.8,
                 specs: Sequence[PlotSpec] = SPECS) -> list[Path]:
    """Every figure of `specs` that has data, written as out_dir/<spec.name>.png. Returns the paths.
    In a run with ProRL resets every figure marks each reset (and phase change), see `reset_markers`."""
    keys = numeric_keys(rows)
    markers = reset_markers(rows)
    written = []
    for spec in specs:
        chosen = spec.select(keys)
        if not chosen:
            continue
        path = plot_keys(rows, chosen, Path(out_dir) / f"{spec.name}.png", spec.title, spec.ylabel,
                         smoothing=smoothing, ylim01=spec.ylim01, markers=markers)
        if path is not None:
            written.append(path)
    return written


# ----------------------------------------------------------------------------- evaluation plots


def _pass_value(v: Any) -> tuple[float, float | None, float | None] | None:
    """(value, low, high) from a number or {estimate|value|mean, low, high}; None if unreadable."""
    if _is_number(v):
        return float(v), None, None
    if isinstance(v, Mapping):
        for name in ("estimate", "value", "mean"):
            if _is_number(v.get(name)):
                low, high = v.get("low"), v.get("high")
                return (float(v[name]), float(low) if _is_number(low) else None,
                        float(high) if _is_number(high) else None)
    return None


def _pass_points(results: Mapping[str, Any]) -> list[tuple[int, float, float | None, float | None]]:
    points = []
    for k, v in (results.get("pass_at_k") or {}).items():
        try:
            k_int = int(k)
        except (TypeError, ValueError):
            continue
        parsed = _pass_value(v)
        if parsed is not None and k_int >= 1:
            points.append((k_int, *parsed))
    return sorted(points)


def plot_pass_at_k(results: Mapping[str, Mapping[str, Any]], path: str | Path,
                   title: str = "pass@k") -> Path | None:
    """pass@k against k (log2 axis) for one or more evaluations, with interval bands when given.

    Args:
        results: {label: results.json object}; each needs "pass_at_k" {k: value}.
        path: output PNG.
    Returns the path, or None if no evaluation has pass@k values.
    """
    fig, ax = new_figure()
    drawn = 0
    all_ks: set[int] = set()
    for i, (label, res) in enumerate(results.items()):
        points = _pass_points(res)
        if not points:
            continue
        ks = [p[0] for p in points]
        all_ks.update(ks)
        ax.plot(ks, [p[1] for p in points], marker="o", markersize=4, color=f"C{i % 10}", label=label)
        if all(p[2] is not None and p[3] is not None for p in points):
            ax.fill_between(ks, [p[2] for p in points], [p[3] for p in points], color=f"C{i % 10}", alpha=0.15)
        drawn += 1
    if not drawn:
        return None
    return finish_pass_at_k_figure(fig, ax, sorted(all_ks), "k (samples per problem)", title, path)


def finish_pass_at_k_figure(fig: Any, ax: Any, ticks: list[int], xlabel: str, title: str,
                            path: str | Path) -> Path:
    """The axes every pass@k figure shares (k on a log2 axis labelled at `ticks`, pass@k in [0, 1],
    legend at the lower right), then the PNG at `path`."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(k) for k in ticks])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pass@k")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, Path(path))


def plot_buckets(results: Mapping[str, Mapping[str, Any]], path: str | Path,
                 title: str = "Accuracy per bucket") -> Path | None:
    """Grouped bars of per-bucket accuracy (buckets in natural order) for one or more evaluations,
    each bar labelled with its value.

    Args:
        results: {label: results.json object}; each needs "buckets" {name: {"accuracy": v, ...}}
            (a bare number per bucket is accepted too).
        path: output PNG.
    Returns the path, or None if no evaluation has bucket accuracies.
    """
    table: dict[str, dict[str, float]] = {}
    for label, res in results.items():
        vals = {}
        for name, b in (res.get("buckets") or {}).items():
            v = b.get("accuracy") if isinstance(b, Mapping) else b
            if _is_number(v):
                vals[str(name)] = float(v)
        if vals:
            table[label] = vals
    if not table:
        return None
    buckets = sorted({b for v in table.values() for b in v}, key=natural_key)
    width_in = max(FIGSIZE[0], 0.6 * len(buckets) * max(1, len(table)) + 2)
    fig, ax = new_figure((min(width_in, 20.0), FIGSIZE[1]))
    n = len(table)
    bar_w = 0.8 / n
    for i, (label, vals) in enumerate(table.items()):
        xs = [j + (i - (n - 1) / 2) * bar_w for j in range(len(buckets))]
        ys = [vals.get(b, 0.0) for b in buckets]
        bars = ax.bar(xs, ys, width=bar_w, color=f"C{i % 10}", label=label)
        ax.bar_label(bars, labels=[f"{vals[b]:.2f}" if b in vals else "" for b in buckets], fontsize=7, padding=1)
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels(buckets, rotation=30 if len(buckets) > 8 else 0)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("bucket")
    ax.set_title(title)
    if n > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def load_results(path: str | Path) -> dict[str, Any] | None:
    """An evaluation results.json object, or None if the file is not JSON or not a results object
    (no "pass_at_k", "buckets" or "accuracy")."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and any(k in data for k in ("pass_at_k", "buckets", "accuracy")):
        return data
    return None


# ----------------------------------------------------------------------------- summary


# keys whose best value is the smallest (others: the largest)
_LOWER_IS_BETTER = re.compile(r"(^|/)(loss|truncated_share)$")

SUMMARY_KEYS = [
    "reward/total", "reward/total/mean", "accuracy", "format_rate", "val/accuracy", "val/format_rate",
    "response_length/mean", "val/response_length", "truncated_share", "kl", "entropy", "clip_frac",
    "train/loss", "val/loss",
]


def summarize(rows: Rows, extra_keys: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Final and best value (with its step) of the headline metrics present in the log.

    Headline metrics: `SUMMARY_KEYS`, every reward component, every val/bucket/*, plus
    `extra_keys`. "Best" is the minimum for losses and the truncated share, the maximum otherwise;
    length, KL, entropy and clip fraction have no best (they are descriptive).
    """
    keys = numeric_keys(rows)
    wanted = [k for k in SUMMARY_KEYS if k in keys]
    wanted += [k for k in _reward_keys(keys) if k not in wanted]
    wanted += sorted((k for k in keys if k.startswith("val/bucket/")), key=natural_key)
    wanted += [k for k in extra_keys if k in keys and k not in wanted]
    out = []
    for key in wanted:
        xs, ys = series(rows, key)
        if not xs:
            continue
        entry: dict[str, Any] = {"key": key, "final": ys[-1], "final_step": xs[-1], "points": len(xs)}
        if not re.search(r"length|entropy|clip_frac|(^|/)kl", key):
            pick = min if _LOWER_IS_BETTER.search(key) else max
            j = pick(range(len(ys)), key=lambda i: ys[i])
            entry.update(best=ys[j], best_step=xs[j])
        out.append(entry)
    return out


def summary_markdown(rows: Rows, title: str, plots: Sequence[Path] = (), extra_keys: Iterable[str] = ()) -> str:
    """A short markdown report of a run: steps, final/best figures, and the plot images."""
    from aha.eval.tables import markdown_table

    def num(v: float) -> str:
        return f"{v:.4g}"

    def step(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    lines = [f"# {title}", ""]
    steps = [r["step"] for r in rows if _is_number(r.get("step"))]
    if steps:
        lines += [f"{len(rows)} logged steps, last step {step(max(steps))}.", ""]
    last_time = next((r["time"] for r in reversed(rows) if _is_number(r.get("time"))), None)
    if last_time is not None:
        lines += [f"Wall time: {last_time / 60:.1f} min.", ""]
    summary = summarize(rows, extra_keys)
    if summary:
        table_rows = [[e["key"], num(e["final"]), step(e["final_step"]),
                       num(e["best"]) if "best" in e else "–", step(e["best_step"]) if "best" in e else "–"]
                      for e in summary]
        lines.append(markdown_table(["metric", "final", "at step", "best", "at step"], table_rows))
    for p in plots:
        lines += [f"![{p.stem}]({p.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, smoothing: float = 0.8,
             results: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[Path], Path]:
    """All plots of a run plus `summary.md`.

    Reads RUN_DIR/metrics.jsonl (if present) and every evaluation results object among
    RUN_DIR/results.json and RUN_DIR/eval/*.json (plus `results`, {label: object}); writes PNGs
    and summary.md into `out_dir` (default RUN_DIR/plots).

    Returns (PNG paths, summary path).
    """
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    rows = load_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    written = plot_metrics(rows, out, smoothing=smoothing) if rows else []
    evals: dict[str, Mapping[str, Any]] = {}
    for path in [run / "results.json", *sorted((run / "eval").glob("*.json"))]:
        data = load_results(path) if path.is_file() else None
        if data is not None:
            evals[path.stem if path.parent == run / "eval" else "results"] = data
    evals.update(results or {})
    if evals:
        for fn, name in ((plot_pass_at_k, "pass_at_k"), (plot_buckets, "eval_buckets")):
            p = fn(evals, out / f"{name}.png")
            if p is not None:
                written.append(p)
    md = summary_markdown(rows, f"Run {run.resolve().name}", written)
    if evals:
        lines = ["", "## Evaluations", ""]
        from aha.eval.tables import markdown_table

        table_rows = []
        for label, res in evals.items():
            acc = res.get("accuracy")
            points = _pass_points(res)
            top = points[-1] if points else None
            table_rows.append([label, f"{acc:.4f}" if _is_number(acc) else "–",
                               f"pass@{top[0]} = {top[1]:.4f}" if top else "–"])
        lines.append(markdown_table(["evaluation", "accuracy", "largest k"], table_rows))
        md = md + "\n".join(lines)
    summary_path = out / "summary.md"
    summary_path.write_text(md, encoding="utf-8")
    return written, summary_path
