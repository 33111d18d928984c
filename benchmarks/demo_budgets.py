r"""How much GRPO adds as the teacher's budget shrinks: `aha demo` at several teacher budgets.

    python3 benchmarks/demo_budgets.py --budgets 500,1000,2000,4000,0 --out runs/budgets
    python3 benchmarks/demo_budgets.py --budgets 1000,4000 --out runs/budgets --jobs 2 --nice 5 --threads 1 \
        --set sft_max_seconds=30000 --set grpo_max_seconds=30000    # a shared machine
    python3 benchmarks/demo_budgets.py --budgets 1000,4000 --out runs/budgets --collect-only

Each budget N is one full `aha demo --set teacher_budget=N --out OUT/N` (0 = a trace for every
training puzzle): SFT on N traces, GRPO from that SFT model, and the control continuing SFT on the
same N traces, all scored paired on the same held-out puzzles. A folder that already holds a
finished demo is reused, so the sweep can be run in pieces (or by hand with the same command); a
folder of an invalid run is reported as such and left out of the curve. `--jobs 2` runs two demos
at once (the numbers do not change: budgets are step counts; only the wall time does).

Writes OUT/budgets.md (the table), OUT/budgets.json, and the figures OUT/budgets_accuracy.png
(accuracy of SFT, GRPO and the control per budget) and OUT/budgets_gain.png (GRPO minus SFT and
minus the control, with paired 95% intervals); `--docs DIR` copies the figures and table there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def run_one(budget: int, out: Path, extra: list[str], nice: int, threads: int) -> int:
    folder = out / str(budget)
    if (folder / "results.json").is_file():
        return 0
    if folder.exists():
        print(f"{folder} exists without results.json: another run may be writing it; skipped", file=sys.stderr)
        return 1
    cmd = [sys.executable, "-m", "aha.cli", "demo", "--set", f"teacher_budget={budget}", "--out", str(folder), *extra]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    with open(out / f"{budget}.log", "w", encoding="utf-8") as log:
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def collect(budgets: list[int], out: Path) -> list[dict[str, Any]]:
    """One row per budget whose demo finished (valid or not), from its results.json."""
    from aha.demo import write_report

    rows = []
    for budget in budgets:
        path = out / str(budget) / "results.json"
        if not path.is_file():
            print(f"budget {budget}: no finished demo in {path.parent}", file=sys.stderr)
            continue
        r = json.loads(path.read_text())
        if r.get("valid", True) and "paired" not in r:
            r = write_report(path.parent)  # a run from an earlier demo version: its report, re-rendered
        row: dict[str, Any] = {"budget": budget, "valid": r.get("valid", True), "reason": r.get("reason"),
                               "traces": sum((r.get("data") or {}).get("traces", {}).values()),
                               "seconds": sum((r.get("seconds") or {}).values()), "load": r.get("load")}
        for stage in ("sft", "grpo", "sft_continued"):
            if stage in r["stages"]:
                e = r["stages"][stage]
                row[stage] = {k: e[k] for k in ("accuracy", "ci_low", "ci_high", "reflection_rate",
                                                "response_length")}
        for key, label in (("grpo_minus_sft", "GRPO minus SFT"), ("grpo_minus_control", "GRPO minus the control"),
                           ("control_minus_sft", "control minus SFT")):
            if r.get("paired"):
                e = r["paired"][label]
                row[key] = {k: e[k] for k in ("difference", "ci_low", "ci_high", "new_abilities", "regressions")}
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    from aha.eval.tables import markdown_table

    def acc(e: dict[str, Any] | None) -> str:
        return "-" if not e else f"{e['accuracy']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"

    def diff(e: dict[str, Any] | None) -> str:
        return "-" if not e else f"{e['difference']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]"

    body = []
    for r in rows:
        name = f"{r['traces']:,}" + (" (all)" if r["budget"] == 0 else "")
        if not r["valid"]:
            body.append([name, f"invalid: {r['reason']}", "-", "-", "-", "-", "-"])
            continue
        body.append([name, acc(r.get("sft")), acc(r.get("grpo")), acc(r.get("sft_continued")),
                     diff(r.get("grpo_minus_sft")), diff(r.get("grpo_minus_control")),
                     f"{r['seconds'] / 60:.0f} ({(r.get('load') or {}).get('start')})"])
    return markdown_table(["teacher traces", "SFT", "SFT + GRPO", "control", "GRPO minus SFT",
                           "GRPO minus control", "minutes (load)"], body)


def figures(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    rows = [r for r in rows if r["valid"] and r.get("grpo")]
    if not rows:
        return []
    return [
        _budget_figure(rows, (("sft", "SFT"), ("grpo", "SFT + GRPO"), ("sft_continued", "control")), "accuracy",
                       "greedy accuracy, held-out puzzles", "aha demo: accuracy per teacher budget (95% intervals)",
                       out / "budgets_accuracy.png", first_color=0, zero_line=False),
        _budget_figure(rows, (("grpo_minus_sft", "GRPO minus SFT"), ("grpo_minus_control", "GRPO minus control")),
                       "difference", "paired difference in accuracy",
                       "What GRPO adds as the teacher's budget shrinks (paired 95% intervals)",
                       out / "budgets_gain.png", first_color=1, zero_line=True),
    ]


def _budget_figure(rows: list[dict[str, Any]], series: tuple[tuple[str, str], ...], value: str, ylabel: str,
                   title: str, path: Path, first_color: int, zero_line: bool) -> Path:
    """One curve per (row key, name) over the teacher budgets, with each point's 95% interval."""
    from aha.report.plots import new_figure, save_figure

    xs = [r["traces"] for r in rows]
    labels = [f"{r['traces']:,}" + ("\n(all)" if r["budget"] == 0 else "") for r in rows]
    fig, ax = new_figure()
    if zero_line:
        ax.axhline(0.0, color="0.4", linewidth=1.0)
    for i, (key, name) in enumerate(series):
        ys = [r[key][value] for r in rows]
        err = [[r[key][value] - r[key]["ci_low"] for r in rows], [r[key]["ci_high"] - r[key][value] for r in rows]]
        ax.errorbar(xs, ys, yerr=err, color=f"C{i + first_color}", marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, labels)
    ax.set_xlabel("teacher traces SFT learns from")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="500,1000,2000,4000,0", help="teacher budgets, comma-separated (0 = all)")
    ap.add_argument("--out", default="runs/budgets", help="folder of the demos (OUT/N) and the summary")
    ap.add_argument("--jobs", type=int, default=1, help="demos at once (default 1)")
    ap.add_argument("--nice", type=int, default=0, help="run the demos under `nice -n N` (a shared machine)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per demo (OMP_NUM_THREADS; default: "
                    "torch's own, the core count). Results are exact per thread count")
    ap.add_argument("--collect-only", action="store_true", help="only summarize the demos already finished")
    ap.add_argument("--docs", default=None, help="also copy the figures and the table into this folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another demo setting for every budget (repeatable)")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        extra = [x for pair in args.set for x in ("--set", pair)]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            codes = list(pool.map(lambda b: run_one(b, out, extra, args.nice, args.threads), budgets))
        for b, code in zip(budgets, codes):
            if code:
                print(f"budget {b}: aha demo exited with {code} (see {out / f'{b}.log'})", file=sys.stderr)
    rows = collect(budgets, out)
    md = table(rows)
    (out / "budgets.md").write_text(md + "\n")
    (out / "budgets.json").write_text(json.dumps(rows, indent=2))
    made = figures(rows, out)
    print(md)
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        for path in [*made, out / "budgets.md"]:
            shutil.copy(path, docs / path.name)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"\n{len(rows)} budgets; load average now {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
