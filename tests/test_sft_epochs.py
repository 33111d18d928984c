"""SFT's `epochs`: full passes over the data instead of a step count; the step total is known up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aha.config import load_config
from aha.runs import read_jsonl
from aha.train.sft import SftConfig, epoch_steps, token_budget_batches

pytestmark = pytest.mark.usefixtures("one_thread")


# each case: example lengths, batch_tokens, epochs, the step total worked out by hand
EPOCH_CASES = [
    ([10, 10, 10, 10], 20, 3, 6),     # two examples fit a 20-token batch (2 x 10), so 2 batches per epoch
    ([10, 10, 10, 10], 40, 2, 2),     # all four fit: one batch per epoch
    ([20, 20, 20, 20], 30, 1, 4),     # two would pad to 40 > 30: one example per batch
    ([5, 30], 30, 2, 4),              # 5 and 30 together pad to 2 x 30 = 60 > 30: two batches per epoch
]


@pytest.mark.parametrize("lengths,batch_tokens,epochs,expected", EPOCH_CASES)
def test_epoch_steps_by_hand(lengths, batch_tokens, epochs, expected):
    cfg = load_config(SftConfig, None, ["data.files=[x.jsonl]", f"batch_tokens={batch_tokens}", f"epochs={epochs}"])
    assert epoch_steps(lengths, cfg) == expected
    # the same batches the loop cuts, epoch by epoch
    assert sum(len(token_budget_batches(lengths, batch_tokens, 0, e)) for e in range(epochs)) == expected


def test_epochs_is_documented_and_checked():
    from aha.config import format_help
    from aha.errors import AhaError

    assert "epochs" in format_help(SftConfig)
    with pytest.raises(AhaError, match="epochs must be >= 0"):
        load_config(SftConfig, None, ["data.files=[x.jsonl]", "epochs=-1"])


def test_sft_runs_its_epochs(tmp_path: Path, tiny_model_dir):
    from aha.cli import main

    rows = [{"prompt": f"What is {i} + 1?", "response": f"<answer>{i + 1}</answer>"} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    # batch_tokens so small that each example is its own batch: 6 per epoch, 12 for 2 epochs; steps is ignored
    assert main(["sft", f"model.path={tiny_model_dir}", f"data.files=[{tmp_path / 'd.jsonl'}]", "epochs=2",
                 "steps=1000", "batch_tokens=40", "val_every=0", "data.max_length=40", "run.progress=false",
                 f"run.out_dir={out}"]) == 0
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert [m["epoch"] for m in metrics] == [0] * 6 + [1] * 6
