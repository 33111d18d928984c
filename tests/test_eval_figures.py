"""Seed 003's evaluation figures: full pass@k curves (every k up to n, unbiased), the per-problem
pass@1 histogram, the new-ability analysis of `aha compare`, and the level x subject table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aha.cli import main
from aha.eval.compare import compare, compare_markdown
from aha.eval.runner import build_results, cross_markdown, results_markdown
from aha.eval.stats import pass1_histogram, pass_at_k, pass_at_k_all, pass_at_k_full_curve

PNG = b"\x89PNG\r\n\x1a\n"


def test_full_curve_by_hand():
    # n = 4, c = 1: pass@k = 1 - C(3, k) / C(4, k) = 1/4, 1 - 3/6, 1 - 1/4, 1
    assert pass_at_k_full_curve([4], [1]) == pytest.approx({1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0})
    # two problems (n = 4, c = 0) and (n = 4, c = 4): 0 and 1 for every k -> mean 0.5
    assert pass_at_k_full_curve(4, [0, 4]) == pytest.approx({1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5})


def test_full_curve_equals_the_scalar_estimator():
    rng = np.random.default_rng(0)
    n = rng.integers(16, 130, size=40)
    c = np.array([rng.integers(0, ni + 1) for ni in n])
    table = pass_at_k_all(n, c, 16)
    assert table.shape == (40, 16)
    for i in range(40):
        for k in (1, 2, 5, 16):
            assert table[i, k - 1] == pytest.approx(pass_at_k(int(n[i]), int(c[i]), k), abs=1e-12)
    assert pass_at_k_all(128, [3], 128)[0, -1] == 1.0
    with pytest.raises(ValueError):
        pass_at_k_all([4], [5])
    with pytest.raises(ValueError):
        pass_at_k_all([4], [1], 5)


def test_histogram_bins():
    h = pass1_histogram([0.0, 0.0, 0.05, 0.5, 1.0])
    assert h["counts"] == [3, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert h["never_solved"] == 2 and h["always_solved"] == 1
    assert len(h["edges"]) == 11 and h["edges"][0] == 0.0 and h["edges"][-1] == 1.0


def _rows(correct_by_id, n, groups=None):
    rows = []
    for pid, c in correct_by_id.items():
        bucket = "easy" if pid.startswith("e") else "hard"
        for j in range(n):
            r = {"id": pid, "bucket": bucket, "sample": j, "correct": j < c, "format_ok": True,
                 "completion": "x", "num_tokens": 3}
            if groups:
                r["groups"] = groups[pid]
            rows.append(r)
    return rows


def test_results_hold_curves_histogram_and_cross_table():
    groups = {"e1": {"level": "level 1", "subject": "Algebra"}, "e2": {"level": "level 1", "subject": "Geometry"},
              "h1": {"level": "level 2", "subject": "Algebra"}}
    records = _rows({"e1": 4, "e2": 1, "h1": 0}, n=4, groups=groups)
    for r in records:
        r["bucket"] = r["groups"]["level"]
    res = build_results(records, {"source": "x"}, n_boot=50)
    assert list(res["pass_at_k_curve"]) == ["1", "2", "3", "4"]
    # per problem pass@2: 1, 0.5, 0 -> 0.5
    assert res["pass_at_k_curve"]["2"] == pytest.approx(0.5)
    assert res["pass_at_k_curve"]["1"] == pytest.approx(res["accuracy"])
    assert res["buckets"]["level 1"]["pass_at_k_curve"]["3"] == pytest.approx((1 + 0.75) / 2)
    assert res["by"]["subject"]["Algebra"]["pass_at_k_curve"]["1"] == pytest.approx(0.5)
    assert res["pass1_histogram"]["counts"][0] == 1 and res["pass1_histogram"]["counts"][-1] == 1
    assert res["pass1_histogram"]["never_solved"] == 1
    cross = res["cross"]
    assert cross["rows"] == "level" and cross["cols"] == "subject"
    assert cross["cells"]["level 1"]["Geometry"] == {"accuracy": 0.25, "problems": 1, "samples": 4}
    assert "Geometry" not in cross["cells"]["level 2"]
    table = cross_markdown(cross)
    assert "level 1" in table and "0.250 (1)" in table and "–" in table
    # Avg of level 1: (1 + 0.25) / 2
    assert "0.625" in table
    text = results_markdown(res)
    assert "## Accuracy per level x subject" in text and "## Per-problem pass@1" in text
    json.dumps(res)  # serialisable


def test_one_field_has_no_cross_table():
    res = build_results(_rows({"e1": 1}, n=2), {"source": "x"}, n_boot=20)
    assert "cross" not in res and res["pass_at_k_curve"] == pytest.approx({"1": 0.5, "2": 1.0})


BASE = {"e1": 8, "e2": 2, "hX": 0, "hY": 0}
TRAINED = {"e1": 8, "e2": 4, "hX": 3, "hY": 0}


def test_new_ability_on_a_planted_problem():
    report = compare([("base", _rows(BASE, 8)), ("rl", _rows(TRAINED, 8))], n_boot=50)
    na = report["new_ability"]["rl"]
    assert na["ids"] == ["hX", "hY"] and na["base_unsolved"] == 2 and na["solved"] == 1
    assert na["base_samples"] == 8
    # hX: 3 of 8 -> pass@1 3/8, pass@2 = 1 - C(5, 2) / C(8, 2) = 1 - 10/28; hY: 0 -> mean of the two
    assert na["pass_at_k_curve"]["1"] == pytest.approx(3 / 8 / 2)
    assert na["pass_at_k_curve"]["2"] == pytest.approx((1 - 10 / 28) / 2)
    assert na["pass_at_k_curve"]["8"] == pytest.approx(0.5)
    assert list(na["pass_at_k"]) == ["1", "2", "4", "8"]
    assert list(na["buckets"]) == ["hard"]
    # the trained model alone on problem X
    only_x = compare([("base", _rows({"hX": 0}, 8)), ("rl", _rows({"hX": 3}, 8))], n_boot=20)
    assert only_x["new_ability"]["rl"]["pass_at_k"]["1"] == pytest.approx(3 / 8)
    # every evaluation's full curve, overall and per bucket
    assert report["pass_at_k_curve"]["base"]["all"]["1"] == pytest.approx((1 + 0.25) / 4)
    assert set(report["pass_at_k_curve"]["rl"]) == {"all", "easy", "hard"}
    assert report["pass1_histogram"]["base"]["never_solved"] == 2
    text = compare_markdown(report)
    assert "## New ability: rl on the problems base never solves" in text
    assert "0.188" in text  # pass@1 = 3/16


def test_new_ability_when_the_base_solves_everything():
    report = compare([("base", _rows({"e1": 1}, 2)), ("rl", _rows({"e1": 2}, 2))], n_boot=20)
    assert report["new_ability"]["rl"]["base_unsolved"] == 0
    assert report["new_ability"]["rl"]["pass_at_k_curve"] == {}
    assert "solves every problem at least once" in compare_markdown(report)


def test_compare_cli_writes_figures(tmp_path):
    for name, table in [("base", BASE), ("rl", TRAINED)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(table, 8)))
    out = tmp_path / "c"
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "rl"), "--out", str(out)]) == 0
    for name in ("pass_at_k_curve", "pass_at_k_easy", "pass_at_k_hard", "pass1_histogram", "new_ability"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG, name
    report = json.loads((out / "compare.json").read_text())
    assert report["new_ability"]["rl"]["pass_at_k"]["1"] == pytest.approx(3 / 16)
    out2 = tmp_path / "c2"
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "rl"), "--out", str(out2), "--no-plots"]) == 0
    assert not list(out2.glob("*.png"))


def test_plot_eval_writes_figures(tmp_path):
    from aha.report.eval_plots import plot_eval, slug

    groups = {"e1": {"level": "level 1", "subject": "Counting & Probability"},
              "h1": {"level": "level 2", "subject": "Algebra"}}
    res = build_results(_rows({"e1": 3, "h1": 1}, n=4, groups=groups), {"source": "x"}, n_boot=20)
    paths = plot_eval(res, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == ["pass1_histogram.png", "pass_at_k_buckets.png", "pass_at_k_curve.png",
                     "pass_at_k_level.png", "pass_at_k_subject.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    assert slug("Counting & Probability") == "counting_probability"


def test_help_documents_the_options(capsys):
    for cmd in ("eval", "compare"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "--no-plots" in text and "pass_at_k_curve" in text
    assert math.isfinite(pass_at_k_full_curve([2], [1])[1])


def test_score_report_has_the_level_by_subject_table_and_figures(tmp_path):
    data = tmp_path / "math.jsonl"
    rows = [{"unique_id": f"p{i}", "problem": f"q{i}", "answer": str(i), "level": f"Level {1 + i % 2}",
             "type": ["Algebra", "Counting & Probability"][i // 2]} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    comps = tmp_path / "c.jsonl"
    # two samples per problem; p0 right twice, p1 once, p2 and p3 never
    lines = [{"id": f"p{i}", "completion": f"\\boxed{{{i if (i == 0 or (i == 1 and j == 0)) else 9}}}"}
             for i in range(4) for j in range(2)]
    comps.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = tmp_path / "report"
    assert main(["score", "--task", "math", "--data", str(data), "--completions", str(comps),
                 "--task-option", "bucket_by=level,subject", "--report", str(report)]) == 0
    res = json.loads((report / "results.json").read_text())
    cells = res["cross"]["cells"]
    assert cells["level 1"]["Algebra"]["accuracy"] == 1.0 and cells["level 2"]["Algebra"]["accuracy"] == 0.5
    assert cells["level 1"]["Counting & Probability"]["accuracy"] == 0.0
    assert res["pass_at_k_curve"] == pytest.approx({"1": 1.5 / 4, "2": 2 / 4})
    assert "## Accuracy per level x subject" in (report / "results.md").read_text()
    assert (report / "plots" / "pass_at_k_subject.png").read_bytes()[:8] == PNG
    assert (report / "plots" / "pass1_histogram.png").is_file()


def test_compare_curves_per_field_value(tmp_path):
    from aha.report.eval_plots import plot_compare

    groups = {"e1": {"level": "level 1", "subject": "Algebra"}, "e2": {"level": "level 1", "subject": "Geometry"},
              "hX": {"level": "level 2", "subject": "Algebra"}, "hY": {"level": "level 2", "subject": "Geometry"}}
    report = compare([("base", _rows(BASE, 8, groups)), ("rl", _rows(TRAINED, 8, groups))], n_boot=20)
    assert report["by"] == {"level": ["level 1", "level 2"], "subject": ["Algebra", "Geometry"]}
    # rl on Algebra: e1 8/8 and hX 3/8 -> pass@1 (1 + 3/8) / 2
    assert report["pass_at_k_curve_by"]["rl"]["subject"]["Algebra"]["1"] == pytest.approx((1 + 3 / 8) / 2)
    names = {p.name for p in plot_compare(report, tmp_path)}
    assert {"pass_at_k_subject_algebra.png", "pass_at_k_subject_geometry.png", "new_ability.png"} <= names


def test_ols_by_hand():
    from aha.eval.stats import ols

    y = np.array([1.0, 2.0, 3.0, 6.0])
    (row,) = ols(np.ones((4, 1)), y, ["mean"])
    # one constant column: coef = mean 3, se = sd (ddof 1) / sqrt(4) = sqrt(14/3) / 2
    assert row["coef"] == pytest.approx(3.0)
    assert row["std_err"] == pytest.approx(math.sqrt(14 / 3) / 2)
    assert row["t"] == pytest.approx(3.0 / (math.sqrt(14 / 3) / 2))


def test_level_subject_regression_recovers_planted_coefficients():
    from aha.eval.runner import level_regression

    # accuracy = -0.1 * level + (0.9 Algebra, 0.7 Geometry), exactly, with n = 10 samples per problem
    records = []
    for level in (1, 2, 3):
        for subject, a in (("Algebra", 0.9), ("Geometry", 0.7)):
            for rep in range(2):
                c = round((a - 0.1 * level) * 10)
                pid = f"{level}-{subject}-{rep}"
                records += [{"id": pid, "correct": j < c, "groups": {"level": f"Level {level}", "subject": subject}}
                            for j in range(10)]
    reg = level_regression(records, "level", "subject")
    coefs = {c["variable"]: c["coef"] for c in reg["coefficients"]}
    assert coefs == pytest.approx({"level": -0.1, "Algebra": 0.9, "Geometry": 0.7})
    assert reg["problems"] == 12
    res = build_results(records, {"source": "x"}, n_boot=20)
    assert res["regression"]["coefficients"][0]["variable"] == "level"
    assert "## Regression of per-problem accuracy on level and subject" in results_markdown(res)
    # a level without a number: no regression
    for r in records:
        r["groups"] = {"level": "hard", "subject": r["groups"]["subject"]}
    assert level_regression(records, "level", "subject") is None
