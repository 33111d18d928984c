"""Run directories and the metrics writer behave as documented."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aha.errors import AhaError
from aha.runs import SUBDIRS, MetricsWriter, RunDir, append_jsonl, default_run_dir, read_jsonl


def test_run_dir_layout_and_config(tmp_path):
    from aha.config import ModelConfig

    run = RunDir.create(tmp_path / "run", "train")
    for name in SUBDIRS:
        assert (tmp_path / "run" / name).is_dir()
    run.write_config(ModelConfig(path="m"))
    assert "path: m" in (tmp_path / "run" / "config.yaml").read_text()
    run.log.info("hello")
    assert "hello" in (tmp_path / "run" / "run.log").read_text()


def test_existing_run_is_not_overwritten(tmp_path):
    run = RunDir.create(tmp_path / "run", "train")
    run.metrics.write(0, {"loss": 1.0})
    with pytest.raises(AhaError, match="already holds a run"):
        RunDir.create(tmp_path / "run", "train")
    assert RunDir.create(tmp_path / "run", "train", resume=True).path == tmp_path / "run"


def test_metrics_lines_are_flushed_and_json_safe(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer.write(1, {"loss": torch.tensor(0.5), "kl": float("nan"), "reward/format": 1})
    # readable before the writer is closed: every line is flushed as written
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    assert row["step"] == 1 and row["loss"] == 0.5 and row["kl"] is None and row["reward/format"] == 1
    assert row["time"] >= 0


def test_read_jsonl_names_the_bad_line_and_skips_a_torn_tail(tmp_path):
    path = tmp_path / "x.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as f:
        f.write('{"a": 3')  # a run killed mid-write
    assert [r["a"] for r in read_jsonl(path)] == [1, 2]
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(AhaError, match=r"x.jsonl, line 2"):
        read_jsonl(path)


def test_default_run_dir_is_unique(tmp_path):
    a = default_run_dir("eval", tmp_path)
    a.mkdir(parents=True)
    b = default_run_dir("eval", tmp_path)
    assert a != b and b.name.startswith("eval-")


def test_jsonable_handles_inf():
    from aha.runs import _jsonable

    assert _jsonable({"x": math.inf, "y": [torch.tensor(2.0)]}) == {"x": None, "y": [2.0]}


def test_optional_loggers_fail_with_an_install_hint(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_optional(name, *args, **kwargs):
        if name in ("wandb", "torch.utils.tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optional)
    with pytest.raises(AhaError, match="pip install wandb"):
        MetricsWriter(tmp_path / "m.jsonl", wandb_project="demo")
    with pytest.raises(AhaError, match="pip install tensorboard"):
        MetricsWriter(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
