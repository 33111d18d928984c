"""SFT: the loss covers response tokens only; training lowers held-out loss; resume continues (the
learning-rate schedule included); the optimizer keys live in the shared `optim` section."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from aha.cli import main
from aha.errors import AhaError
from aha.models import load_tokenizer
from aha.runs import read_jsonl
from aha.train.sft import collate, encode_pair, read_pairs, token_budget_batches


def test_loss_mask_covers_response_and_end_of_turn_only(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ann says Bob is a knight."}]
    ids, n_prompt = encode_pair(tok, prompt, "<think>ok</think><answer>1</answer>")
    _, _, labels = collate([(ids, n_prompt)], tok.pad_token_id, "cpu")
    kept = [t for t in labels[0].tolist() if t != -100]
    assert tok.decode(kept) == "<think>ok</think><answer>1</answer><|im_end|>"
    assert tok.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n")
    # the same boundary the chat template's own assistant mask gives
    full = prompt + [{"role": "assistant", "content": "<think>ok</think><answer>1</answer>"}]
    enc = tok.apply_chat_template(full, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert enc["assistant_masks"].index(1) == n_prompt


def test_pre_opened_think_is_not_trained_twice(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    ids, n = encode_pair(tok, [{"role": "user", "content": "q"}], "<think>x</think><answer>1</answer>", True)
    assert tok.decode(ids[:n]).endswith("assistant\n<think>")
    assert tok.decode(ids[n:]) == "x</think><answer>1</answer><|im_end|>"


def test_token_budget_batches_respect_budget_and_cover_everything():
    lengths = [5, 50, 7, 48, 6, 52, 9, 10] * 5
    batches = token_budget_batches(lengths, batch_tokens=120, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 120 or len(b) == 1
    assert batches == token_budget_batches(lengths, 120, seed=0, epoch=0)  # seeded
    assert batches != token_budget_batches(lengths, 120, seed=0, epoch=1)  # reshuffled per epoch


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "x.jsonl, line 1: invalid JSON"),  # broken line
        ('{"messages": [{"role": "user", "content": "q"}]}', "ending with an assistant turn"),  # no reply
        ('{"text": "q"}', "needs field 'messages'"),  # unknown record shape
        ('[1, 2]', "expected a JSON object"),  # not an object
    ],
)
def test_bad_records_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "x.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(AhaError, match=message):
        read_pairs(path)


def _write_pairs(path, n, offset=0):
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 7, (i * 3) % 5
        rows.append({"prompt": f"What is {a} + {b}?", "response": f"<think>{a} + {b} = {a + b}</think>"
                     f"<answer>{a + b}</answer>"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sft_lowers_held_out_loss_and_resumes(tmp_path, tiny_model_dir):
    torch.set_num_threads(1)
    _write_pairs(tmp_path / "train.jsonl", 120)
    _write_pairs(tmp_path / "val.jsonl", 20, offset=500)
    out = tmp_path / "run"
    args = ["sft", f"model.path={tiny_model_dir}", f"data.files=[{tmp_path / 'train.jsonl'}]",
            f"data.val_files=[{tmp_path / 'val.jsonl'}]", "steps=30", "optim.lr=3e-3", "optim.warmup_steps=5",
            "val_every=15", "batch_tokens=1024", f"run.out_dir={out}", "checkpoint_every=15"]
    assert main(args) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    val = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(val) == 2 and val[-1] < rows[0]["train/loss"] * 0.7  # clearly below the untrained loss
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert (out / "model" / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out / "model"))
    # resuming with a larger step budget (a config change, so allowed explicitly) continues at step 31
    assert main(args + [f"resume={out}", "steps=35"]) == 2  # refused without allow_config_change
    assert main(args + [f"resume={out}", "steps=35", "allow_config_change=true"]) == 0
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl")]
    assert steps[-6:] == [30, 31, 32, 33, 34, 35]


def test_sft_schedule_follows_steps_and_survives_resume(tmp_path, tiny_model_dir):
    torch.set_num_threads(1)
    _write_pairs(tmp_path / "train.jsonl", 60)
    straight = tmp_path / "straight"
    args = ["sft", f"model.path={tiny_model_dir}", f"data.files=[{tmp_path / 'train.jsonl'}]", "steps=12",
            "optim.lr=1e-2", "optim.warmup_steps=3", "optim.min_lr_ratio=0.2", "val_every=0",
            "batch_tokens=512", "checkpoint_every=6", "run.progress=false"]
    assert main(args + [f"run.out_dir={straight}"]) == 0
    rows = read_jsonl(straight / "metrics.jsonl")
    # make_optimizer's schedule, by optimizer step only: warmup (k+1)/3, then a cosine from 1 to 0.2 over 9 steps
    def expected(k):
        if k < 3:
            return 1e-2 * (k + 1) / 3
        return 1e-2 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (k - 3) / 9)))
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["lr"] for r in rows] == pytest.approx([expected(k) for k in range(12)], rel=1e-12)
    # a run stopped at step 6 and resumed continues the schedule (and the data order) where it was
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_000012")
    (resumed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    assert main(args + [f"resume={resumed}"]) == 0
    again = read_jsonl(resumed / "metrics.jsonl")
    assert [r["step"] for r in again] == list(range(1, 13))
    assert [r["lr"] for r in again[6:]] == [r["lr"] for r in rows[6:]]
    assert [r["train/loss"] for r in again[6:]] == pytest.approx([r["train/loss"] for r in rows[6:]], rel=1e-4)
    assert json.loads((resumed / "checkpoints" / "step_000012" / "state.json").read_text())["step"] == 12
    assert (resumed / "checkpoints" / "step_000012" / "scheduler.pt").is_file()


def test_old_optimizer_keys_fail_with_their_new_names(tmp_path, capsys):
    assert main(["sft", "data.task=knights-knaves", "lr=3e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "aha sft: error: config key 'lr' is now 'optim.lr'; rename it in the recipe or override"
    recipe = tmp_path / "old.yaml"
    recipe.write_text("data: {task: knights-knaves}\nwarmup_steps: 10\nschedule: constant\n")
    assert main(["sft", str(recipe)]) == 2
    assert "'warmup_steps' is now 'optim.warmup_steps'" in capsys.readouterr().err
    from aha.config import load_config
    from aha.train.sft import SftConfig

    cfg = load_config(SftConfig, None, ["data.task=knights-knaves", "optim.lr=3e-3"])
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.schedule, cfg.optim.min_lr_ratio, cfg.optim.beta2) == \
        (3e-3, 50, "cosine", 0.1, 0.98)  # SFT's own defaults stay for the keys left out


@pytest.mark.parametrize("kind", [
    "csv",      # prompt/response columns, as a spreadsheet export has them
    "parquet",  # the same table through the datasets library
])
def test_sft_data_reads_csv_and_parquet_like_jsonl(tmp_path, kind):
    # SFT read JSONL only while every other reader took .csv/.parquet (issue 19, item 7)
    import datasets

    rows = {"prompt": ["2+2?", "3+3?"], "response": ["<answer>4</answer>", "<answer>6</answer>"]}
    path = tmp_path / f"sft.{kind}"
    if kind == "csv":
        path.write_text("prompt,response\n" + "".join(f"{p},{r}\n" for p, r in zip(*rows.values())))
    else:
        datasets.Dataset.from_dict(rows).to_parquet(str(path))
    assert read_pairs(path) == [([{"role": "user", "content": "2+2?"}], "<answer>4</answer>"),
                                ([{"role": "user", "content": "3+3?"}], "<answer>6</answer>")]


def test_sft_csv_without_the_columns_names_the_record(tmp_path):
    path = tmp_path / "sft.csv"
    path.write_text("question,answer\nq,a\n")
    with pytest.raises(AhaError, match="sft.csv, row 1: needs field 'messages' or fields 'prompt' and 'response'"):
        read_pairs(path)
