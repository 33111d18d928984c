"""`aha plot RUN_DIR`: training-dynamics plots and a markdown summary of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from aha.errors import AhaError

HELP = "plot a run's metrics (reward, accuracy, length, KL, ...) and write plots/summary.md"
DESCRIPTION = """Read RUN_DIR/metrics.jsonl and any evaluation results (RUN_DIR/results.json,
RUN_DIR/eval/*.json) and write PNG plots plus summary.md (final and best figures) into
RUN_DIR/plots, or --out DIR. Only metrics present in the log are plotted; per-step curves are
smoothed with an EMA (raw curve faint).

examples:
  aha plot runs/train-20250101-120000
  aha plot runs/kk-grpo --out figures/kk --smoothing 0.9
  aha plot runs/kk-grpo --results base=runs/eval-base/results.json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding metrics.jsonl")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN_DIR/plots)")
    p.add_argument("--smoothing", type=float, default=0.8,
                   help="EMA weight in [0, 1) for per-step curves; 0 draws raw curves only (default 0.8)")
    p.add_argument("--results", nargs="+", default=[], metavar="[LABEL=]FILE",
                   help="extra evaluation results.json files to overlay in the pass@k and bucket plots")


def run(args: argparse.Namespace) -> int:
    from aha.report.plots import load_results, plot_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise AhaError(f"run directory {run_dir} does not exist")
    if not 0.0 <= args.smoothing < 1.0:
        raise AhaError(f"--smoothing must be in [0, 1), got {args.smoothing}")
    extra = {}
    for item in args.results:
        label, sep, name = item.partition("=")
        path = Path(name if sep else item)
        data = load_results(path)
        if data is None:
            raise AhaError(f"{path} is not an evaluation results.json (needs accuracy, pass_at_k or buckets)")
        extra[label if sep else path.parent.name or path.stem] = data
    has_eval = (run_dir / "results.json").is_file() or any((run_dir / "eval").glob("*.json"))
    if not (run_dir / "metrics.jsonl").is_file() and not has_eval and not extra:
        raise AhaError(f"{run_dir} has no metrics.jsonl and no evaluation results to plot")
    written, summary = plot_run(run_dir, args.out, smoothing=args.smoothing, results=extra)
    for p in written:
        print(p)
    print(summary)
    if not written:
        print("no plottable metrics found (the log has no numeric keys the plots know)")
    return 0
