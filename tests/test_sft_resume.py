"""SFT resume meets GRPO's bar: a run of N steps equals a run stopped (kill -9, Ctrl-C, SIGTERM, a kill
inside a checkpoint write) and resumed, in weights, optimizer state and metrics (no duplicated rows,
`loss_ema` continuing); a changed config and a folder that is not an SFT run are refused before
anything is written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aha.train.sft as sft_module
from aha.cli import main
from aha.runs import read_jsonl

STEPS = 12
# figures that measure the machine, not the run
_CLOCK_KEYS = {"time", "tokens_per_s"}


def _write_pairs(path: Path, n: int) -> None:
    rows = [{"prompt": f"What is {i % 7} + {i % 5}?", "response": f"<answer>{i % 7 + i % 5}</answer>"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _args(tmp_path: Path, tiny_model_dir: Path, out: Path, steps: int = STEPS) -> list[str]:
    return ["sft", f"model.path={tiny_model_dir}", f"data.files=[{tmp_path / 'train.jsonl'}]", f"steps={steps}",
            "optim.lr=3e-3", "optim.warmup_steps=2", "val_every=4", "data.val_fraction=0.1", "batch_tokens=256",
            "checkpoint_every=3", "keep_checkpoints=20", "run.progress=false", f"run.out_dir={out}"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_model_dir):
    """A run of STEPS steps without interruption (1 thread, so every run below can match it bitwise)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sft_resume")
    _write_pairs(tmp / "train.jsonl", 80)
    out = tmp / "straight"
    assert main(_args(tmp, tiny_model_dir, out)) == 0
    return tmp, out


def _assert_same_run(a: Path, b: Path) -> None:
    rows_a, rows_b = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == list(range(1, STEPS + 1))
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in rb.items() if k not in _CLOCK_KEYS} == \
            {k: v for k, v in ra.items() if k not in _CLOCK_KEYS}, ra["step"]
    times = [r["time"] for r in rows_b]
    assert times == sorted(times)  # the metrics clock goes on across a resume, it does not restart at 0
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    last = f"checkpoints/step_{STEPS:06d}"
    oa = torch.load(a / last / "optimizer.pt", weights_only=True)
    ob = torch.load(b / last / "optimizer.pt", weights_only=True)
    assert oa["state"].keys() == ob["state"].keys()
    for k in oa["state"]:
        for name, value in oa["state"][k].items():
            assert torch.equal(value, ob["state"][k][name]), (k, name)
    sa = json.loads((a / last / "state.json").read_text())
    sb = json.loads((b / last / "state.json").read_text())
    assert {k: v for k, v in sb.items() if k != "elapsed"} == {k: v for k, v in sa.items() if k != "elapsed"}


def _copy_at(straight_out: Path, dest: Path, checkpoint_step: int | None, metrics_through: int,
             torn: bool = False, partial_write: int | None = None) -> None:
    """The folder a kill would leave: checkpoints up to `checkpoint_step`, metrics lines through
    `metrics_through` (steps after the checkpoint that the kill lost), optionally a torn last line and
    the `.tmp` folder of a checkpoint write cut short."""
    shutil.copytree(straight_out, dest)
    shutil.rmtree(dest / "model")
    for ckpt in (dest / "checkpoints").iterdir():
        if checkpoint_step is None or int(ckpt.name.split("_")[1]) > checkpoint_step:
            shutil.rmtree(ckpt)
    rows = read_jsonl(straight_out / "metrics.jsonl")[:metrics_through]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn:
        text += f'{{"step": {metrics_through + 1}, "train/lo'
    (dest / "metrics.jsonl").write_text(text)
    if partial_write is not None:
        tmp = dest / "checkpoints" / f"step_{partial_write:06d}.tmp"
        shutil.copytree(straight_out / "checkpoints" / f"step_{partial_write:06d}", tmp)
        (tmp / "optimizer.pt").write_bytes(b"PK\x03\x04 cut")  # the write stopped in the middle of this file
        (tmp / "state.json").unlink()


@pytest.mark.parametrize("checkpoint_step, metrics_through, torn, partial_write", [
    (6, 8, False, None),  # kill -9 two steps after a checkpoint: steps 7-8 logged, then redone
    (6, 7, True, None),  # kill -9 while writing the metrics line of step 8 (a torn last line)
    (6, 9, False, 9),  # kill -9 inside the step-9 checkpoint write (a partial .tmp folder)
    (None, 2, False, None),  # kill -9 before the first checkpoint: the run starts again from step 0
])
def test_killed_run_resumes_to_the_straight_run(straight, tiny_model_dir, checkpoint_step, metrics_through,
                                                torn, partial_write):
    tmp, out = straight
    run = tmp / f"killed-{checkpoint_step}-{metrics_through}-{torn}-{partial_write}"
    _copy_at(out, run, checkpoint_step, metrics_through, torn, partial_write)
    assert main(_args(tmp, tiny_model_dir, run) + [f"resume={run}"]) == 0
    _assert_same_run(out, run)


def test_real_kill_9_then_resume_matches_the_straight_run(straight, tiny_model_dir):
    """A real SIGKILL of an `aha sft` process once it has logged 4 steps (checkpoints every 3)."""
    tmp, out = straight
    run = tmp / "kill9"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aha.cli", *_args(tmp, tiny_model_dir, run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    try:
        while proc.poll() is None:
            if metrics.is_file() and metrics.read_text().count("\n") >= 4:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "model").exists()
    assert main(_args(tmp, tiny_model_dir, run) + [f"resume={run}"]) == 0
    _assert_same_run(out, run)


def _interrupt_at(monkeypatch, call: int, signals: list[int]) -> None:
    """Send `signals` from inside the `call`-th training forward pass (mid-step: after the batch is
    taken, before the optimizer update)."""
    real = sft_module.response_loss
    calls = {"n": 0}

    def interrupted(model, *args, **kwargs):
        calls["n"] += model.training  # validation batches run in eval mode and do not count
        if model.training and calls["n"] == call:
            for sig in signals:
                signal.raise_signal(sig)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(sft_module, "response_loss", interrupted)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_mid_step_finishes_the_step_and_resumes_exactly(straight, tiny_model_dir, monkeypatch, sig):
    tmp, out = straight
    run = tmp / f"signal-{sig}"
    _interrupt_at(monkeypatch, 5, [sig])
    assert main(_args(tmp, tiny_model_dir, run)) == 130
    monkeypatch.undo()
    state = json.loads((run / "checkpoints" / "step_000005" / "state.json").read_text())
    assert state["step"] == 5 and state["loss_ema"] is not None  # the step in progress finished, then saved
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert not (run / "model").exists()
    assert main(_args(tmp, tiny_model_dir, run) + [f"resume={run}"]) == 0
    _assert_same_run(out, run)


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(straight, tiny_model_dir, monkeypatch):
    tmp, out = straight
    run = tmp / "double-ctrl-c"
    _interrupt_at(monkeypatch, 5, [signal.SIGINT, signal.SIGINT])
    assert main(_args(tmp, tiny_model_dir, run)) == 130
    monkeypatch.undo()
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_000003"]  # nothing saved from the middle of step 5
    assert main(_args(tmp, tiny_model_dir, run) + [f"resume={run}"]) == 0
    _assert_same_run(out, run)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_changed_config_is_refused_on_resume(straight, tiny_model_dir, capsys):
    tmp, out = straight
    run = tmp / "changed"
    _copy_at(out, run, 6, 6)
    before = _snapshot(run)
    assert main(_args(tmp, tiny_model_dir, run) + [f"resume={run}", "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aha sft: error: the config differs from") and "optim.lr" in err
    assert "allow_config_change=true" in err and "\n" not in err
    assert _snapshot(run) == before
    # `resume=DIR` alone reads the run's own config.yaml and continues
    assert main(["sft", f"resume={run}"]) == 0
    _assert_same_run(out, run)


@pytest.mark.parametrize("make, message", [
    # an empty folder
    (lambda d: None, "has no config.yaml: it is not an aha sft run directory"),
    # a folder of unrelated files
    (lambda d: (d / "notes.txt").write_text("hello"), "has no config.yaml"),
    # an `aha train` run folder
    (lambda d: (d / "config.yaml").write_text("task: {name: knights-knaves}\nrollout: {temperature: 1.0}\n"),
     "does not hold an aha sft config, so its folder is not an aha sft run to resume"),
    # a config.yaml that is not a mapping
    (lambda d: (d / "config.yaml").write_text("- a\n- b\n"), "is not an aha sft run"),
])
def test_resume_of_a_folder_that_is_not_an_sft_run_writes_nothing(tmp_path, tiny_model_dir, capsys, make, message):
    _write_pairs(tmp_path / "train.jsonl", 10)
    folder = tmp_path / "other"
    folder.mkdir()
    make(folder)
    before = _snapshot(folder)
    assert main(_args(tmp_path, tiny_model_dir, tmp_path / "unused") + [f"resume={folder}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert _snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(before)
    assert not (tmp_path / "unused").exists()


def test_resume_of_a_missing_folder_is_one_line(tmp_path, tiny_model_dir, capsys):
    _write_pairs(tmp_path / "train.jsonl", 10)
    missing = tmp_path / "nope"
    assert main(_args(tmp_path, tiny_model_dir, tmp_path / "unused") + [f"resume={missing}"]) == 2
    assert "does not exist; pass the folder of an aha sft run" in capsys.readouterr().err
    assert not missing.exists()


def test_resume_with_a_recipe_of_a_train_run_folder_writes_nothing(tmp_path, tiny_model_dir, capsys):
    """With a recipe given, the folder's own config.yaml is compared, not loaded: a train run is named so."""
    _write_pairs(tmp_path / "train.jsonl", 10)
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model: {{path: {tiny_model_dir}}}\ndata: {{files: [{tmp_path / 'train.jsonl'}]}}\n")
    folder = tmp_path / "train-run"
    folder.mkdir()
    (folder / "config.yaml").write_text("task: {name: knights-knaves}\nrollout: {temperature: 1.0}\n")
    before = _snapshot(folder)
    assert main(["sft", str(recipe), f"resume={folder}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not an aha sft run (its config.yaml has rollout, task, which `aha sft` does not know)" in err
    assert "\n" not in err and _snapshot(folder) == before
