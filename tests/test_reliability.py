"""Nothing lost, nothing executed: GRPO checkpoints hold only states a step boundary really had,
a run folder's files are never unpickled, and every way a run can stop ends in a folder that
resumes (issue 18, items 1-3 and 5-7). Each test reproduces the defect first."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from aha.cli import main
from aha.rewards.base import RewardBatch, RewardOutput
from aha.runs import read_jsonl
from tests.test_grpo import base_args, vowel_share

TIMING = ("time", "seconds", "tokens_per_s")
# which reward call (1 = step 1's) sends which signals to this process: set by each test
SIGNALS: dict[int, list[int]] = {}
_CALLS = [0]


def signalling_vowels(batch: RewardBatch, **options) -> RewardOutput:
    """vowel_share, and the signals planned for this call, sent while the step is in progress."""
    _CALLS[0] += 1
    for sig in SIGNALS.get(_CALLS[0], []):
        os.kill(os.getpid(), sig)
    return vowel_share(batch, **options)


def args(model_dir, out, steps, extra=()):
    return [a if not a.startswith("rewards=") else "rewards=[{name: 'tests.test_reliability:signalling_vowels'}]"
            for a in base_args(model_dir, out, steps, ["checkpoint_every=1", "keep_checkpoints=3", *extra])]


def strip(rows):
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


@pytest.fixture
def plan_signals():
    def plan(schedule: dict[int, list[int]]):
        SIGNALS.clear()
        SIGNALS.update(schedule)
        _CALLS[0] = 0
    yield plan
    SIGNALS.clear()


@pytest.fixture
def straight(tmp_path_factory, tiny_model_dir):
    """Metrics and final weights of an uninterrupted 4-step run."""
    torch.set_num_threads(1)
    SIGNALS.clear()
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(args(tiny_model_dir, out, 4)) == 0
    return strip(read_jsonl(out / "metrics.jsonl")), torch.load(out / "checkpoints" / "step_000004" / "optimizer.pt")


@pytest.mark.parametrize("signals, stopped_after", [
    ([signal.SIGINT], 2),                 # Ctrl-C during step 2: step 2 finishes, is checkpointed, run stops
    ([signal.SIGTERM], 2),                # what SLURM sends: the same
    ([signal.SIGINT, signal.SIGINT], 1),  # twice: stops at once; step 1's checkpoint stays the newest
])
def test_an_interrupted_run_resumes_to_the_straight_run(tmp_path, tiny_model_dir, straight, plan_signals,
                                                        signals, stopped_after):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    plan_signals({2: signals})
    assert main(args(tiny_model_dir, out, 4)) == 130
    names = [p.name for p in sorted((out / "checkpoints").iterdir())]
    assert names[-1] == f"step_{stopped_after:06d}", names
    state = json.loads((out / "checkpoints" / names[-1] / "state.json").read_text())
    assert state["step"] == stopped_after
    # the checkpoint's optimizer took exactly `stopped_after` steps (the defect: one more)
    opt = torch.load(out / "checkpoints" / names[-1] / "optimizer.pt")
    assert int(next(iter(opt["state"].values()))["step"]) == stopped_after
    plan_signals({})
    assert main(args(tiny_model_dir, out, 4, [f"resume={out}"])) == 0
    want_metrics, want_opt = straight
    assert strip(read_jsonl(out / "metrics.jsonl")) == want_metrics
    got_opt = torch.load(out / "checkpoints" / "step_000004" / "optimizer.pt")
    for key, value in want_opt["state"].items():
        assert all(torch.equal(value[k], got_opt["state"][key][k]) for k in value)


class _Payload:
    """Unpickling this runs code: it touches a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng.pt"])
def test_a_planted_pickle_is_refused_and_never_runs(tmp_path, tiny_model_dir, capsys, plan_signals, name):
    torch.set_num_threads(1)
    plan_signals({})
    out = tmp_path / "run"
    assert main(args(tiny_model_dir, out, 2, ["max_seconds=0.001"])) == 0  # one step, one checkpoint
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker)}, out / "checkpoints" / "step_000001" / name)
    assert main(args(tiny_model_dir, out, 2, [f"resume={out}"])) == 2
    assert not marker.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the lines before it are the run's log
    assert err.startswith("aha train: error:") and name in err and "unpickling" in err


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, tiny_model_dir, straight, plan_signals):
    torch.set_num_threads(1)
    plan_signals({})
    out = tmp_path / "run"
    assert main(args(tiny_model_dir, out, 4, ["max_seconds=0.001"])) == 0
    assert main(args(tiny_model_dir, out, 4, ["max_seconds=0.001", f"resume={out}"])) == 0  # steps 1-2
    (out / "checkpoints" / "step_000002" / "optimizer.pt").write_bytes(b"PK\x03\x04 torn")  # a torn write
    assert main(args(tiny_model_dir, out, 4, [f"resume={out}", "max_seconds=0"])) == 0
    assert "trying the one before it" in (out / "run.log").read_text()
    assert strip(read_jsonl(out / "metrics.jsonl")) == straight[0]


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, tiny_model_dir, straight, plan_signals):
    # a double Ctrl-C inside the first checkpoint's write leaves only step_000001.tmp and a metrics
    # line: resume must start the run again (it said "no complete checkpoint"; a new start said
    # "already holds a run")
    torch.set_num_threads(1)
    plan_signals({})
    out = tmp_path / "run"
    assert main(args(tiny_model_dir, out, 4, ["max_seconds=0.001"])) == 0
    ckpt = out / "checkpoints" / "step_000001"
    ckpt.rename(ckpt.with_name("step_000001.tmp"))
    assert main(args(tiny_model_dir, out, 4, [f"resume={out}", "max_seconds=0"])) == 0
    assert not (out / "checkpoints" / "step_000001.tmp").exists()
    assert strip(read_jsonl(out / "metrics.jsonl")) == straight[0]


def test_resume_does_not_duplicate_validation_records(tmp_path, tiny_model_dir, plan_signals):
    torch.set_num_threads(1)
    plan_signals({})
    out = tmp_path / "run"
    extra = ["val_every=1", "val_size=4"]
    assert main(args(tiny_model_dir, out, 3, [*extra, "max_seconds=0.001"])) == 0
    (out / "checkpoints" / "step_000001").rename(out / "checkpoints" / "step_000001.tmp")
    assert main(args(tiny_model_dir, out, 3, [*extra, f"resume={out}", "max_seconds=0"])) == 0  # redoes step 1
    assert len(read_jsonl(out / "eval" / "val_step_00001.jsonl")) == 4


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dir, capsys,
                                                                    monkeypatch, plan_signals):
    import aha.train.checkpoint as checkpoint

    torch.set_num_threads(1)
    plan_signals({})
    real_save, calls = torch.save, []

    def full_disk(obj, path, *a, **k):
        calls.append(path)
        if len(calls) > 3:  # step 1's optimizer, scheduler and rng files fit; then the disk is full
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    out = tmp_path / "run"
    assert main(args(tiny_model_dir, out, 3)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the lines before it are the run's log
    assert err.startswith("aha train: error:") and "No space left on device" in err and "step_000001" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001"]  # no .tmp left
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert main(args(tiny_model_dir, out, 3, [f"resume={out}"])) == 0


def test_a_rewrite_killed_midway_leaves_the_old_file(tmp_path):
    # the resume-time rewrites of metrics.jsonl and samples.jsonl went through write_text in place: a
    # kill mid-write left a truncated (once 0-byte) file; now a temp file is renamed over it
    from aha.runs import write_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')

    class Unserialisable:
        def __repr__(self):
            raise KeyboardInterrupt  # stands for the kill arriving while the new file is written

    with pytest.raises((KeyboardInterrupt, TypeError)):
        write_jsonl(path, [{"step": 1}, {"step": Unserialisable()}])
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left


def test_an_unwritable_output_folder_is_one_line(tmp_path, tiny_model_dir, capsys):
    # `--out` under a path that is a file (a read-only folder fails the same way, Errno 30): it was a
    # traceback from mkdir
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(base_args(tiny_model_dir, blocker / "run", 1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aha train: error: cannot write the run folder") and len(err.splitlines()) == 1
