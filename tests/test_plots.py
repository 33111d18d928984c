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


# ----------------------------------------------------------------------------- ProRL reset markers


def reset_rows(steps: int = 30) -> list[dict]:
    """rl_rows with the ProRL keys: resets after steps 9 (into phase 1) and 20 (phase 2), each logged
    from the next step on; the resumed part repeats steps 19-21 (nothing may be marked twice)."""
    rows = rl_rows(steps)
    for r in rows:
        s = r["step"]
        count = 0 if s <= 9 else 1 if s <= 20 else 2
        r.update({"reset/count": count, "reset/step": {0: 0, 1: 9, 2: 20}[count], "phase": count})
    repeat = [dict(r) for r in rows if 19 <= r["step"] <= 21]
    return rows + repeat


def capture_figures(monkeypatch):
    import aha.report.plots as plots

    figures = {}
    original = plots.save_figure

    def save(fig, path):
        figures[path.stem] = fig
        return original(fig, path)

    monkeypatch.setattr(plots, "save_figure", save)
    return figures


def markers_of(fig):
    ax = fig.axes[0]
    lines = [line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "reset"]
    texts = [t.get_text().strip() for t in ax.texts if t.get_gid() == "reset"]
    return lines, texts


def test_reset_markers_in_every_figure(tmp_path, monkeypatch):
    from aha.report.plots import Marker, reset_markers

    rows = reset_rows()
    assert reset_markers(rows) == [Marker(9.0, "reset 1, phase 1"), Marker(20.0, "reset 2, phase 2")]
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", rows)
    figures = capture_figures(monkeypatch)
    assert main(["plot", str(run)]) == 0
    assert set(figures) == EXPECTED_RL   # the ProRL keys add no figure of their own
    for name, fig in figures.items():
        assert markers_of(fig) == ([9.0, 20.0], ["reset 1, phase 1", "reset 2, phase 2"]), name
        assert all(not t.get_text().startswith("reset") for t in fig.axes[0].get_legend().get_texts())
    for p in (run / "plots").glob("*.png"):
        assert_png(p)


def test_reset_marker_labels_edge_cases():
    from aha.report.plots import Marker, reset_markers

    # no reset/step logged: the row's step; a reset that keeps the phase: no phase in the label;
    # a phase change without a reset: its own "phase" marker
    rows = [{"step": 1, "reset/count": 0, "phase": 0}, {"step": 2, "reset/count": 1, "phase": 0},
            {"step": 3, "reset/count": 1, "phase": 1}, {"step": 4, "reset/count": 1, "phase": 1}]
    assert reset_markers(rows) == [Marker(2.0, "reset 1"), Marker(3.0, "phase 1", "phase")]
    assert reset_markers([{"step": 1, "reset/count": 0, "phase": 0}]) == []   # resets on, none yet
    assert reset_markers(rl_rows()) == []


def test_no_reset_markers_without_resets(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", rl_rows())
    figures = capture_figures(monkeypatch)
    assert main(["plot", str(run)]) == 0
    assert set(figures) == EXPECTED_RL
    for fig in figures.values():
        ax = fig.axes[0]
        assert not [x for x in [*ax.get_lines(), *ax.texts] if x.get_gid() in ("reset", "phase")]
        assert not [t for t in ax.texts if "reset" in t.get_text() or "phase" in t.get_text()]
