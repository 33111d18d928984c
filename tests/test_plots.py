"""Plots and the run summary from synthetic run directories."""

from __future__ import annotations

import json
import math

import pytest

from aha.cli import main
from aha.report.plots import (
    _reward_keys,
    ema,
    numeric_keys,
    plot_buckets,
    plot_metrics,
    plot_pass_at_k,
    plot_run,
    series,
    summarize,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def rl_rows(steps: int = 30) -> list[dict]:
    rows = []
    for s in range(1, steps + 1):
        row = {
            "step": s, "time": 2.0 * s,
            "reward/total": 0.1 + 0.02 * s + 0.05 * math.sin(s),
            "reward/format": min(1.0, 0.05 * s), "reward/correctness": 0.01 * s,
            "accuracy": 0.01 * s, "format_rate": min(1.0, 0.05 * s),
            "response_length/mean": 100 + s, "response_length/min": 20, "response_length/max": 256,
            "truncated_share": max(0.0, 0.3 - 0.01 * s),
            "kl": 0.001 * s, "entropy": 1.5 - 0.02 * s,
            "clip_frac": 0.01, "clip_frac_low": 0.004, "clip_frac_high": 0.006,
            "loss": 0.0, "lr": 1e-5, "grad_norm": 0.5,
        }
        if s % 10 == 0:
            row.update({"val/accuracy": 0.02 * s, "val/bucket/3ppl": 0.03 * s, "val/bucket/10ppl": 0.01 * s})
        rows.append(row)
    return rows


RESULTS = {"accuracy": 0.61, "pass_at_k": {"1": 0.61, "2": 0.7, "4": 0.78, "8": 0.83},
           "buckets": {"3ppl": {"accuracy": 0.7, "n": 10}, "2ppl": {"accuracy": 0.9}, "10ppl": {"accuracy": 0.2}}}

EXPECTED_RL = {"reward", "accuracy", "val_buckets", "response_length", "truncated", "kl", "entropy", "clip_frac",
               "loss", "grad_norm", "lr"}


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, path


def test_plot_command_writes_every_plot_and_summary(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    write_jsonl(run / "metrics.jsonl", rl_rows())
    (run / "eval" / "results.json").write_text(json.dumps(RESULTS), encoding="utf-8")
    (run / "eval" / "notes.json").write_text("[1, 2]", encoding="utf-8")  # not a results object: ignored
    assert main(["plot", str(run)]) == 0
    plots = run / "plots"
    names = {p.stem for p in plots.glob("*.png")}
    assert names == EXPECTED_RL | {"pass_at_k", "eval_buckets"}
    for p in plots.glob("*.png"):
        assert_png(p)
    summary = (plots / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Run run")
    assert "30 logged steps, last step 30." in summary
    # final and best of val/accuracy: 0.6 at step 30 both
    line = next(x for x in summary.splitlines() if x.startswith("| val/accuracy "))
    assert [c.strip() for c in line.strip("|").split("|")] == ["val/accuracy", "0.6", "30", "0.6", "30"]
    assert "![reward](reward.png)" in summary
    assert "pass@8 = 0.8300" in summary
    assert str(plots / "summary.md") in capsys.readouterr().out


def test_plot_sft_run_with_out_dir(tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    rows = [{"step": s, "train/loss": 3.0 / s, "lr": 1e-4} for s in range(1, 21)]
    rows[9]["val/loss"] = 0.5
    rows[19]["val/loss"] = 0.4
    write_jsonl(run / "metrics.jsonl", rows)
    out = tmp_path / "figs"
    assert main(["plot", str(run), "--out", str(out), "--smoothing", "0"]) == 0
    assert {p.stem for p in out.glob("*.png")} == {"sft_loss", "lr"}
    for p in out.glob("*.png"):
        assert_png(p)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    line = next(x for x in summary.splitlines() if x.startswith("| val/loss "))
    assert [c.strip() for c in line.strip("|").split("|")] == ["val/loss", "0.4", "20", "0.4", "20"]
    assert not (run / "plots" / "summary.md").exists()


def test_plot_command_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plot", str(empty)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    write_jsonl(empty / "metrics.jsonl", [{"step": 1}])
    assert main(["plot", str(empty), "--smoothing", "1.5"]) == 2


def test_only_present_keys_are_plotted(tmp_path):
    rows = [{"step": s, "kl": 0.1 * s, "note": "text", "flag": True, "bad": None} for s in range(1, 4)]
    written = plot_metrics(rows, tmp_path)
    assert [p.stem for p in written] == ["kl"]
    assert numeric_keys(rows) == ["kl"]   # strings, booleans and nulls are not metrics


def test_eval_plots_multiple_and_intervals(tmp_path):
    other = {"pass_at_k": {"1": {"estimate": 0.4, "low": 0.3, "high": 0.5},
                           "4": {"estimate": 0.6, "low": 0.5, "high": 0.7}},
             "buckets": {"2ppl": 0.8, "level 3": {"accuracy": 0.1}}}
    p = plot_pass_at_k({"base": RESULTS, "rl": other}, tmp_path / "pk.png")
    b = plot_buckets({"base": RESULTS, "rl": other}, tmp_path / "b.png")
    assert_png(p)
    assert_png(b)
    assert plot_pass_at_k({"x": {"accuracy": 0.3}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_ema_debiased():
    # w = 0.5: m1 = 0.5, debias 0.5 -> 1; m2 = 0.25 + 1.5 = 1.75, debias 0.75 -> 2.3333
    assert ema([1.0, 3.0], 0.5) == pytest.approx([1.0, 7 / 3])
    assert ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])   # constant stays constant
    assert ema([1.0, 5.0], 0.0) == [1.0, 5.0]
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_series_and_reward_keys():
    rows = [{"step": 5, "a": 1.0}, {"step": 6}, {"step": 7, "a": float("nan")}, {"a": 2}]
    assert series(rows, "a") == ([5.0, 4.0], [1.0, 2.0])   # a row without step uses its index + 1
    keys = ["reward/total/mean", "reward/total/std", "reward/format/mean", "reward/b", "reward/b/mean", "kl"]
    assert _reward_keys(keys) == ["reward/total/mean", "reward/b", "reward/format/mean"]


def test_summarize_best_direction():
    rows = [{"step": 1, "val/loss": 2.0, "accuracy": 0.1, "response_length/mean": 50},
            {"step": 2, "val/loss": 1.0, "accuracy": 0.5, "response_length/mean": 80},
            {"step": 3, "val/loss": 1.5, "accuracy": 0.3, "response_length/mean": 70}]
    out = {e["key"]: e for e in summarize(rows)}
    assert out["val/loss"]["best"] == 1.0 and out["val/loss"]["best_step"] == 2    # lower is better
    assert out["accuracy"]["best"] == 0.5 and out["accuracy"]["final"] == 0.3      # higher is better
    assert "best" not in out["response_length/mean"]                              # descriptive only


def test_plot_run_eval_only(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(RESULTS), encoding="utf-8")
    written, summary = plot_run(tmp_path)
    assert {p.stem for p in written} == {"pass_at_k", "eval_buckets"}
    assert "| results " in summary.read_text(encoding="utf-8")
