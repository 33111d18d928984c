"""RUN_DIR/REPORT.md of `aha pipeline`: each stage's status, headline result, details and plots.

Read only from what the stages wrote (metrics.jsonl, results.json, compare.md, report.json, ...);
a stage folder that is missing or half written gives a shorter section, never an error: the report
is rewritten after every stage, also when one fails.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from aha.commands.pipeline_spec import Pipeline, Stage

# train metrics shown in the report, when the run logged them
_TRAIN_KEYS = ("reward/total/mean", "accuracy", "val/accuracy", "val/format_rate", "response_length/mean", "kl")
_SFT_KEYS = ("train/loss_ema", "val/loss", "epoch")
_MAX_PLOTS = 12


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _last_metrics(path: Path) -> dict[str, Any]:
    """The last value of every key in a metrics.jsonl (later lines win), and the last step."""
    out: dict[str, Any] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if isinstance(rec, dict):
            out.update({k: v for k, v in rec.items() if v is not None})
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def headline(stage: Stage) -> str:
    """One short result for the overview table."""
    d = stage.dir
    if stage.command == "eval":
        r = _json(d / "results.json")
        if isinstance(r, dict) and "accuracy" in r:
            text = f"accuracy {r['accuracy']:.3f} [{r.get('ci_low', 0):.3f}, {r.get('ci_high', 0):.3f}]"
            ppl = r.get("reference_perplexity")
            if isinstance(ppl, dict) and isinstance(ppl.get("mean"), (int, float)):
                text += f", reference perplexity {ppl['mean']:.3g}"
            return text
    elif stage.command in ("train", "sft"):
        m = _last_metrics(d / "metrics.jsonl")
        keys = _TRAIN_KEYS if stage.command == "train" else _SFT_KEYS
        shown = [f"{k} {_fmt(m[k])}" for k in keys if k in m]
        if "step" in m:
            return ", ".join([f"step {m['step']}", *shown])
    elif stage.command == "distill":
        r = _json(d / "report.json")
        if isinstance(r, dict) and isinstance(r.get("overall"), dict):
            o = r["overall"]
            return f"kept {o.get('kept', '?')} samples, acceptance {o.get('acceptance_rate', 0):.1%}"
    elif stage.command == "export":
        if (d / "config.json").is_file():
            return "standalone model folder"
    elif stage.command in ("compare", "plot"):
        name = "compare.md" if stage.command == "compare" else "summary.md"
        if (d / name).is_file():
            return f"see {name}"
    return ""


def details(stage: Stage, root: Path) -> list[str]:
    d = stage.dir
    lines: list[str] = []
    if stage.command == "eval":
        r = _json(d / "results.json")
        if isinstance(r, dict) and isinstance(r.get("buckets"), dict):
            names = list(r["buckets"])
            lines += ["| " + " | ".join(["Avg", *names]) + " |", "|" + "---|" * (len(names) + 1),
                      "| " + " | ".join([_fmt(r.get("bucket_avg")),
                                         *[_fmt(r["buckets"][b].get("accuracy")) for b in names]]) + " |", ""]
            o = r.get("overall") or {}
            if "reflection_rate" in o:
                lines.append(f"responses with reflection phrases: {_fmt(o.get('reflection_rate'))}, phrases per "
                             f"response {_fmt(o.get('reflections_mean'))}; accuracy with "
                             f"{_fmt(o.get('accuracy_with_reflection'))}, without "
                             f"{_fmt(o.get('accuracy_without_reflection'))}")
            ppl = r.get("reference_perplexity")
            if isinstance(ppl, dict):
                lines.append("reference-answer perplexity: " + ", ".join(
                    f"{k} {_fmt(ppl[k])}" for k in ("mean", "median", "without_reasoning_mean", "ratio", "problems")
                    if k in ppl) + f" (scorer: {ppl.get('scorer', '?')})")
            lines += ["", f"[results.md]({_rel(d / 'results.md', root)})"]
    elif stage.command in ("train", "sft") and (d / "metrics.jsonl").is_file():
        m = _last_metrics(d / "metrics.jsonl")
        keys = [k for k in sorted(m) if k.startswith("val/") or (k.startswith("reward/") and k.endswith("/mean")) or k in ("train/loss_ema", "epoch")]
        lines += [f"last step {m.get('step', '?')}: " + ", ".join(f"{k} {_fmt(m[k])}" for k in keys), "",
                  f"[metrics.jsonl]({_rel(d / 'metrics.jsonl', root)}), model: [{_rel(d / 'model', root)}]"
                  f"({_rel(d / 'model', root)})"]
    elif stage.command == "compare" and (d / "compare.md").is_file():
        lines += (d / "compare.md").read_text(encoding="utf-8").strip().splitlines()
    elif stage.command == "distill" and (d / "report.md").is_file():
        lines += (d / "report.md").read_text(encoding="utf-8").strip().splitlines()
    elif stage.command == "plot" and (d / "summary.md").is_file():
        lines += (d / "summary.md").read_text(encoding="utf-8").strip().splitlines()
    plots = sorted(d.rglob("*.png"))[:_MAX_PLOTS] if d.is_dir() else []
    if plots:
        lines += ["", *[f"![{_rel(pl, d)}]({_rel(pl, root)})" for pl in plots]]
    return lines


def pipeline_report(p: Pipeline, state: dict[str, Any]) -> str:
    root = p.run_dir
    recs = state.get("stages", {})
    out = [f"# Pipeline {p.name}", "", f"pipeline file: `{p.path}`"]
    for key in ("seed", "reproduces", "hardware", "results"):
        if key in p.meta:
            out.append(f"{key}: {p.meta[key]}")
    if p.vars:
        out.append("vars: " + ", ".join(f"`{k}={v}`" for k, v in p.vars.items()))
    out += ["", "| stage | command | status | seconds | result |", "|---|---|---|---|---|"]
    for s in p.stages:
        rec = recs.get(s.name, {})
        out.append(f"| [{s.name}]({_rel(s.dir, root)}) | {s.command} | {rec.get('status', 'pending')} | "
                   f"{_fmt(rec.get('seconds', ''))} | {headline(s)} |")
    for s in p.stages:
        rec = recs.get(s.name, {})
        out += ["", f"## {s.name} (aha {s.command}): {rec.get('status', 'pending')}", "", f"    {s.shell()}", ""]
        if rec.get("error"):
            out += [f"error: {rec['error']}", ""]
        out += details(s, root)
    return "\n".join(out) + "\n"
