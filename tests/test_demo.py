"""`aha demo --quick` runs every stage and leaves every artefact (plumbing, not a quality bar)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from aha.cli import main


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for stage in ("untrained", "sft", "sft_continued", "grpo"):
        entry = results["stages"][stage]
        assert {"accuracy", "ci_low", "ci_high", "buckets", "seconds"} <= set(entry), stage
        assert set(entry["buckets"]) == {"2ppl", "3ppl"}
        assert (out / "eval" / stage / "results.json").is_file()
    for path in ["REPORT.md", "compare.md", "settings.json", "data/train.jsonl", "data/test.jsonl",
                 "sft/model/model.safetensors", "grpo/model/model.safetensors", "grpo/metrics.jsonl",
                 "sft_continued/model/model.safetensors"]:
        assert (out / path).is_file(), path
    # the training curves: GRPO's reward, accuracy, length and KL; the SFT loss with the control after it
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "grpo_accuracy.png", "grpo_kl.png", "grpo_response_length.png", "grpo_reward.png", "sft_loss.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in (out / "plots").glob("*.png"))
    assert results["seconds"]["sft_continued"] > 0
    report = (out / "REPORT.md").read_text()
    for text in ("GRPO minus SFT", "GRPO minus the control", "reflection rate", "mean length", "## Training curves",
                 "standing in for samples a teacher model would give", "200 reflective traces"):
        assert text in report, text
    # GRPO against the control is a paired difference with an interval, and "above" means beyond it
    v = results["verdict"]
    low, high = v["grpo_minus_control_ci"]
    assert low <= v["grpo_minus_control"] <= high
    assert v["grpo_minus_control"] == pytest.approx(
        results["stages"]["grpo"]["accuracy"] - results["stages"]["sft_continued"]["accuracy"])
    assert v["grpo_above_control"] == (low > 0)
    paired = results["paired"]["GRPO minus the control"]
    assert (paired["baseline"], paired["stage"], paired["difference"]) == ("sft_continued", "grpo",
                                                                         v["grpo_minus_control"])
    # the report can be rebuilt from the folder alone, to the same text
    from aha.demo import write_report

    write_report(out)
    assert (out / "REPORT.md").read_text() == report
    assert "grpo" in capsys.readouterr().out
    # every budget is a step count, run in full; the control's is GRPO's steps x the quiet-machine ratio
    assert results["valid"] is True and results["reason"] is None
    assert results["steps"] == {"sft": 40, "grpo": 4, "sft_continued": 16}  # 4 x 4.0
    assert results["estimate"]["sft_step_seconds"] > 0
    est = results["estimate"]
    assert est["total_seconds"] == pytest.approx(est["sft_seconds"] + 2 * est["control_seconds"] + 60)
    # SFT and the control learn from the same fixed set of teacher traces; validation traces lie outside it
    traces = [json.loads(x) for x in (out / "data" / "traces.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (out / "data" / "val_traces.jsonl").read_text().splitlines()]
    assert len(traces) == 200 and len(val) == 80 and not {t["id"] for t in traces} & {v["id"] for v in val}
    for stage in ("sft", "sft_continued"):
        cfg = yaml.safe_load((out / stage / "config.yaml").read_text())
        assert cfg["data"]["files"] == [str(out / "data" / "traces.jsonl")] and not cfg["data"]["task"]
    # GRPO is anchored to the SFT model by the KL term (without it the measured policy drifted)
    from aha.demo import DemoSettings

    grpo_cfg = yaml.safe_load((out / "grpo" / "config.yaml").read_text())
    assert grpo_cfg["algo"]["kl_coef"] == DemoSettings().grpo_kl_coef > 0
    assert grpo_cfg["batch"]["micro_batch_size"] == 16  # min(grpo_micro_batch, 4 prompts x 4 samples)

    # the GRPO stage alone, from this demo's SFT model, with another setting; compared with that SFT model
    again = tmp_path / "grpo-only"
    assert main(["demo", "--quick", "--grpo-from", str(out), "--set", "grpo_kl_coef=0", "--out", str(again)]) == 0
    only = json.loads((again / "results.json").read_text())
    assert set(only["stages"]) == {"sft", "grpo"}
    assert only["stages"]["sft"]["accuracy"] == results["stages"]["sft"]["accuracy"]
    assert only["verdict"]["grpo_minus_sft"] == pytest.approx(
        only["stages"]["grpo"]["accuracy"] - only["stages"]["sft"]["accuracy"])
    assert yaml.safe_load((again / "grpo" / "config.yaml").read_text())["algo"]["kl_coef"] == 0
    assert (again / "compare.md").is_file() and not (again / "sft").exists() and not (again / "models").exists()
    # other puzzle settings than the source demo's: refused before anything runs, naming the keys
    capsys.readouterr()
    assert main(["demo", "--grpo-from", str(out), "--out", str(tmp_path / "mismatch")]) != 0
    assert "train_count" in capsys.readouterr().err and not (tmp_path / "mismatch").exists()
    assert main(["demo", "--grpo-from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) != 0
    assert "finished aha demo" in capsys.readouterr().err


def test_demo_settings_overrides_are_typed_and_checked():
    from aha.commands.demo import settings_from_args
    from aha.demo import DemoSettings
    from aha.errors import AhaError

    s = settings_from_args(0, ["grpo_lr=1e-4", "fill=false", "sft_steps=12", "people=3"])
    assert (s.grpo_lr, s.fill, s.sft_steps, s.people) == (1e-4, False, 12, "3")
    assert DemoSettings().fill is True  # the default is untouched
    assert settings_from_args(7, []).seed == 7 and settings_from_args(7, ["seed=2"]).seed == 2
    with pytest.raises(AhaError, match="did you mean grpo_lr"):
        settings_from_args(0, ["grpo_l=1"])
    with pytest.raises(AhaError, match="grpo_steps must be an integer"):
        settings_from_args(0, ["grpo_steps=many"])
    with pytest.raises(AhaError, match="fill must be true or false"):
        settings_from_args(0, ["fill=maybe"])
    with pytest.raises(AhaError, match="quiz_style must be one of"):
        settings_from_args(0, ["quiz_style=fancy"])


def test_quick_settings_are_demo_settings():
    from dataclasses import fields

    from aha.demo import QUICK, DemoSettings

    assert set(QUICK) <= {f.name for f in fields(DemoSettings)}


@pytest.mark.parametrize("pair, message", [
    ("sft_stepz=3", "unknown config key 'sft_stepz' (did you mean sft_steps?)"),  # unknown key
    ("grpo_steps=many", "grpo_steps must be an integer, got 'many'"),  # bad value
    ("grpo_lr=-1", "grpo_lr must be >= 0.0"),  # out of range
    ("grpo_steps", "must look like key.sub=value"),  # not KEY=VALUE
])
def test_demo_bad_setting_is_a_one_line_cli_error(tmp_path, capsys, pair, message):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--set", pair]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("aha demo: error: ") and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_demo_help_lists_every_setting_with_its_help(capsys):
    from dataclasses import fields

    from aha.demo import DemoSettings

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for f in fields(DemoSettings):
        assert f"  {f.name} (" in text and f.metadata["help"] in text, f.name
    assert main(["demo", "--help-config"]) == 0
    assert "grpo_kl_coef (float, default 0.1)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("pairs, reason, ran", [
    # the SFT time guard cuts the stage: not a result, and nothing after it runs (the timed steps
    # warned of it before SFT started); 0.001 s may pass before the first step on a busy machine
    (["sft_max_seconds=0.001"], r"SFT stopped after [01] of its 40 steps", {"untrained"}),
    # SFT below the accuracy floor (quick SFT scores 0.000): GRPO from it would learn nothing
    (["min_sft_accuracy=0.5"], "SFT held-out accuracy 0.000 is at the floor", {"untrained", "sft"}),
])
def test_a_truncated_or_floored_run_is_invalid(tmp_path, capsys, pairs, reason, ran):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), *(x for pair in pairs for x in ("--set", pair))]) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["valid"] is False and re.search(reason, results["reason"])
    assert set(results["stages"]) == ran and not (out / "grpo").exists()
    report = (out / "REPORT.md").read_text().splitlines()
    assert report[0] == "# aha demo: INVALID RUN" and re.search(reason, report[2])
    printed = capsys.readouterr().out
    assert "INVALID RUN" in printed
    assert ("warning: at this speed SFT would take about" in printed) == ("sft_max_seconds=0.001" in pairs)


def test_teacher_traces_are_a_fixed_seeded_subset():
    from aha.demo import teacher_traces

    pool = list(range(1000))
    traced, val = teacher_traces(pool, 300, seed=0)
    assert len(traced) == 300 and len(val) == 100  # validation: min(200, a tenth of the pool)
    assert traced == sorted(traced) and not set(traced) & set(val)
    assert teacher_traces(pool, 300, seed=0) == (traced, val)  # the same seed, the same traces
    assert teacher_traces(pool, 300, seed=1)[0] != traced
    # a smaller budget is a prefix of the same shuffle: budgets nest, so a curve over them adds traces
    assert set(teacher_traces(pool, 100, seed=0)[0]) <= set(traced)
    everything, _ = teacher_traces(pool, 0, seed=0)  # 0: every puzzle but the validation ones
    assert len(everything) == 900 and teacher_traces(pool, 5000, seed=0)[0] == everything


def test_control_budget_is_a_step_count_from_the_ratio():
    from aha.demo import DemoSettings, control_steps

    assert control_steps(DemoSettings()) == 520  # 130 GRPO steps x 4.0
    assert control_steps(DemoSettings(grpo_steps=7, control_steps_per_grpo_step=2.5)) == 18  # 17.5 rounds to 18


def test_steps_done_reads_the_last_metrics_step(tmp_path):
    from aha.demo import StageStopped, _check_steps, steps_done

    assert steps_done(tmp_path) == 0  # no metrics.jsonl: nothing ran
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "time": s / 10}) + "\n"
                                                    for s in (5, 10, 12)))
    assert steps_done(tmp_path) == 12  # both trainers write their final step, logged or not
    assert _check_steps("SFT", tmp_path, 12, 900.0) == 12  # the whole budget: fine
    with pytest.raises(StageStopped, match="SFT stopped after 12 of its 40 steps"):
        _check_steps("SFT", tmp_path, 40, 900.0)  # cut short: the run is not a result


def test_sample_outputs_are_correct_reflective_and_one_per_size_first(tmp_path):
    from aha.demo import _samples_with_reflection

    rows = [  # (id, bucket, correct, reflections, completion)
        ("a", "2ppl", True, 1, "x" * 50),    # correct, reflects: the longest 2ppl one
        ("b", "2ppl", True, 2, "x" * 40),    # correct, reflects, shorter
        ("c", "3ppl", True, 1, "x" * 10),    # the only 3ppl candidate: picked before b
        ("d", "3ppl", False, 3, "x" * 90),   # wrong: never shown
        ("e", "2ppl", True, 0, "x" * 99),    # correct without reflection: never shown
    ]
    (tmp_path / "eval" / "grpo").mkdir(parents=True)
    (tmp_path / "eval" / "grpo" / "samples.jsonl").write_text("".join(
        json.dumps({"id": i, "bucket": b, "correct": c, "reflections": n, "completion": t}) + "\n"
        for i, b, c, n, t in rows))
    assert [r["id"] for r in _samples_with_reflection(tmp_path)] == ["a", "c"]
    assert [r["id"] for r in _samples_with_reflection(tmp_path, n=3)] == ["a", "c", "b"]
    assert _samples_with_reflection(tmp_path / "nothing") == []
