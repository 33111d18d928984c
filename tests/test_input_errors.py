"""Every bad input is one clear line (`aha CMD: error: ...`, exit 2) naming the file or key, what is wrong
and the fix, raised at config load or before the model loads; nothing is accepted silently (NaN and inf
pass no check, `"response": null` is not the text "None"), and no failed start leaves a run folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from pathlib import Path

import pytest

from aha.cli import main
from aha.config import load_config
from aha.errors import AhaError
from aha.train.config import TrainConfig
from aha.train.sft import SftConfig, read_pairs

# ----------------------------------------------------------------------------- the config loader


@pytest.mark.parametrize("override, message", [
    # NaN passes every `value < min` check: a NaN temperature gave a NaN loss
    ("rollout.temperature=nan", "rollout.temperature must be a finite number, got nan"),
    ("rollout.temperature=.nan", "rollout.temperature must be a finite number, got nan"),
    # inf temperature sampled uniformly
    ("rollout.temperature=.inf", "rollout.temperature must be a finite number, got inf"),
    # a NaN KL coefficient silently turned the KL off
    ("algo.kl_coef=nan", "algo.kl_coef must be a finite number, got nan"),
    ("algo.clip_high=nan", "algo.clip_high must be a finite number, got nan"),
    ("algo.clip_low=-.inf", "algo.clip_low must be a finite number, got -inf"),
    ("optim.lr=.nan", "optim.lr must be a finite number, got nan; set a number (the default is 1e-05)"),
    ("optim.max_grad_norm=inf", "optim.max_grad_norm must be a finite number, got inf"),
    ("max_seconds=.inf", "max_seconds must be a finite number, got inf"),
    ("lora.dropout=nan", "lora.dropout must be a finite number, got nan"),
    # top_p=0 and empty stop strings were caught only after the model had loaded
    ("rollout.top_p=0", "rollout: top_p must be in (0, 1], got 0.0"),
    ("val_top_p=0", "val_top_p must be in (0, 1], got 0.0"),
    ('rollout.stop=["</answer>", ""]', "rollout: stop[1] is an empty string"),
    # 1e9 new tokens allocated 128 GB before sampling
    ("rollout.max_new_tokens=1e9", "rollout.max_new_tokens must be <= 131072, got 1000000000"),
    ("val_max_new_tokens=10000000", "val_max_new_tokens must be <= 131072"),
    # task options are checked against the task's signature at load, not in the middle of the start
    ("task.options.peple=3", "unknown option task.options.peple of task 'knights-knaves' "
                             "(did you mean task.options.people?)"),
    ("task.options.count=abc", "task.options.count must be an integer, got 'abc'"),
    ("task.name=knights-knavs", "unknown task 'knights-knavs' (did you mean 'knights-knaves'?)"),
    # free-form options carry no annotation, so NaN is looked for inside them
    ("task.options.mix={a: .nan}", "task.options.mix.a must be a finite number, got nan"),
    ("rewards=[{name: length, weight: 1, options: {target: .nan}}]", "rewards[0].options.target must be a finite"),
    ("rewards=[{name: correctness, weight: .nan}]", "rewards[0].weight must be a finite number, got nan"),
    # reward names and options are checked at load too
    ("rewards=[{name: format, weight: 1, options: {x: 1}}]", "reward 'format' has no option 'x'"),
])
def test_train_config_rejects(override, message):
    with pytest.raises(AhaError) as err:
        load_config(TrainConfig, None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "optim.lr must be a finite number, got nan"),  # SFT's own optim section
    ("data.val_fraction=.nan", "data.val_fraction must be a finite number"),
    ("max_seconds=inf", "max_seconds must be a finite number"),
    # the task supplying traces has its options checked too
    ("data.task_options.peple=3", "unknown option data.task_options.peple of task 'knights-knaves'"),
])
def test_sft_config_rejects(override, message):
    with pytest.raises(AhaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(SftConfig, None, ["data.task=knights-knaves", override])


@pytest.mark.parametrize("override, key, value", [
    ("rollout.temperature=0", "temperature", 0.0),  # greedy
    ("rollout.top_p=1", "top_p", 1.0),  # off
    ("rollout.top_p=1e-3", "top_p", 1e-3),  # the smallest sensible nucleus
    ("rollout.max_new_tokens=131072", "max_new_tokens", 131072),  # the cap itself
    ("rollout.max_new_tokens=2e3", "max_new_tokens", 2000),  # YAML reads 2e3 as a string; still a count
])
def test_limits_still_accept_good_values(override, key, value):
    cfg = load_config(TrainConfig, None, [override])
    assert getattr(cfg.rollout, key) == value


def test_recipe_values_are_checked_like_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("algo:\n  kl_coef: .nan\n")
    with pytest.raises(AhaError, match="algo.kl_coef must be a finite number, got nan"):
        load_config(TrainConfig, recipe)


# ----------------------------------------------------------------------------- one line from the CLI


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aha {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_recipe_with_non_utf8_bytes(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"steps: 3\nrun: {out_dir: caf\xe9}\n")
    assert main(["train", str(recipe)]) == 2
    assert f"recipe '{recipe}' is not UTF-8 text" in _one_line(capsys, "train")


def test_recipe_nested_100k_deep(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["train", str(recipe)]) == 2
    assert "is nested too deeply to read" in _one_line(capsys, "train")


def test_invalid_yaml_recipe_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: [1, 2\nalgo: {\n")
    assert main(["train", str(recipe)]) == 2
    assert "is not valid YAML" in _one_line(capsys, "train")


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.nan", "optim.lr must be a finite number"),
    ("task.options.count=abc", "task.options.count must be an integer"),
    ("task.options.peple=3", "unknown option task.options.peple"),
])
def test_train_cli_bad_values_are_one_line(capsys, override, message):
    assert main(["train", override]) == 2
    assert message in _one_line(capsys, "train")


# ----------------------------------------------------------------------------- SFT data


@pytest.mark.parametrize("record, message", [
    # "response": null trained on the text "None"
    ({"prompt": "q", "response": None}, "line 1: field 'response' must be a string, got null"),
    ({"prompt": "q", "response": 3}, "field 'response' must be a string, got a number"),
    # malformed message lists
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]},
     "messages[1].content must be a string, got null"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
     "messages[0].content must be a string, got nothing"),
    ({"messages": ["hi", {"role": "assistant", "content": "a"}]},
     "messages[0] must be an object with 'role' and 'content', got a string"),
    ({"messages": [{"role": 1, "content": "q"}, {"role": "assistant", "content": "a"}]},
     "messages[0].role must be a string, got a number"),
    ({"messages": "hello"}, "field 'messages' must be a list ending with an assistant turn"),
    ({"messages": []}, "field 'messages' must be a list ending with an assistant turn"),
    ({"prompt": [{"role": "user", "content": ["a"]}], "response": "r"}, "prompt[0].content must be a string"),
    ({"prompt": [], "response": "r"}, "field 'prompt' must be a string or a non-empty list of messages"),
    ({"prompt": {"role": "user"}, "response": "r"}, "field 'prompt' must be a string or a non-empty list"),
])
def test_malformed_sft_records(tmp_path, record, message):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(AhaError) as err:
        read_pairs(path)
    assert str(err.value).startswith(f"{path}, line 1: ") and message in str(err.value)


def test_sft_data_with_non_utf8_bytes(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"prompt": "q", "response": "a"}\n{"prompt": "caf\xe9", "response": "a"}\n')
    with pytest.raises(AhaError, match=r"x.jsonl, line 2: not UTF-8 text \(byte 48\); save the file as UTF-8"):
        read_pairs(path)


def test_sft_data_nested_100k_deep(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "q", "response": "a"}\n{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(AhaError, match="x.jsonl, line 2: JSON nested too deeply to read"):
        read_pairs(path)


def test_bad_sft_data_fails_before_a_run_folder_exists(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"prompt": "q", "response": None}) + "\n")
    out = tmp_path / "run"
    assert main(["sft", f"model.path={tiny_model_dir}", f"data.files=[{path}]", f"run.out_dir={out}"]) == 2
    assert "field 'response' must be a string, got null" in _one_line(capsys, "sft")
    assert not out.exists()


# ----------------------------------------------------------------------------- the model folder


def _without_chat_template(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    return dest


def test_tokenizer_without_chat_template_fails_before_the_weights_load(tmp_path, tiny_model_dir, capsys,
                                                                       monkeypatch):
    import aha.models

    folder = _without_chat_template(tiny_model_dir, tmp_path / "plain")

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights loaded before the tokenizer was checked")

    monkeypatch.setattr(aha.models, "load_model", no_weights)
    pairs = tmp_path / "x.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    assert main(["sft", f"model.path={folder}", f"data.files=[{pairs}]", f"run.out_dir={tmp_path / 'run'}"]) == 2
    assert f"the tokenizer of '{folder}' has no chat template" in _one_line(capsys, "sft")
    assert not (tmp_path / "run").exists()  # the failed start left no folder
    assert main(["eval", "--model", str(folder), "--task-option", "count=2", "--out", str(tmp_path / "e")]) == 2
    assert "has no chat template" in _one_line(capsys, "eval")


# ----------------------------------------------------------------------------- aha eval and aha score arguments


@pytest.mark.parametrize("extra, message", [
    (["--batch-prompts", "0"], "--batch-prompts must be at least 1, got 0"),
    # --limit -1 silently dropped the last problem
    (["--limit", "-1"], "--limit must be >= 0 (0 = every problem), got -1"),
    (["--max-new-tokens", "1000000000"], "--max-new-tokens must be in [1, 131072]"),
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--temperature", "inf"], "--temperature must be a finite number >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "nan"], "--top-p must be in (0, 1]"),
    (["--stop", ""], "--stop has an empty string"),
    (["--task-option", "peple=3"], "unknown option --task-option peple of task 'knights-knaves' "
                                   "(did you mean --task-option people?)"),
    (["--task-option", "count=abc"], "--task-option count must be an integer, got 'abc'"),
])
def test_eval_arguments(tmp_path, capsys, monkeypatch, extra, message):
    import aha.models

    monkeypatch.setattr(aha.models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["eval", "--model", str(tmp_path / "m"), "--task-option", "count=3", *extra]) == 2
    assert message in _one_line(capsys, "eval")


def test_eval_out_under_a_file(tmp_path, capsys, monkeypatch):
    import aha.models

    monkeypatch.setattr(aha.models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    (tmp_path / "f").write_text("x")
    assert main(["eval", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "f" / "sub")]) == 2
    assert f"lies under '{tmp_path / 'f'}', which is a file, not a folder; choose another --out" in \
        _one_line(capsys, "eval")
    assert main(["eval", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "f")]) == 2
    assert "is a file, not a folder" in _one_line(capsys, "eval")


def test_score_out_with_a_lone_surrogate_writes_valid_json(tmp_path, capsys):
    data = tmp_path / "kk.jsonl"
    assert main(["data", "knights-knaves", "--people", "2", "--count", "2", "--split", "test", "--out",
                 str(data)]) == 0
    first = json.loads(data.read_text().splitlines()[0])
    completions = tmp_path / "c.jsonl"
    # a lone surrogate, as a generator cut inside an emoji writes it: valid JSON text with no UTF-8 form
    completions.write_text(json.dumps({"id": first["id"], "completion": "<answer>\ud83d</answer>"}) + "\n")
    out = tmp_path / "scores.json"
    assert main(["score", "--task", "knights-knaves", "--data", str(data), "--completions", str(completions),
                 "--out", str(out), "--report", str(tmp_path / "report")]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))  # whole, valid JSON
    assert doc["summary"] and len(doc["samples"]) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_score_out_under_a_file_fails_before_scoring(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    completions = tmp_path / "c.jsonl"
    completions.write_text('{"id": "1", "completion": "x"}\n')
    assert main(["score", "--task", "knights-knaves", "--data", str(tmp_path / "missing.jsonl"), "--completions",
                 str(completions), "--out", str(tmp_path / "f" / "scores.json")]) == 2
    assert "which is a file, not a folder; choose another --out" in _one_line(capsys, "score")
    assert main(["score", "--task", "knights-knaves", "--data", str(tmp_path / "missing.jsonl"), "--completions",
                 str(completions), "--report", str(tmp_path / "f")]) == 2
    assert "--report" in _one_line(capsys, "score")


# ----------------------------------------------------------------------------- readers in jsonl.py

@pytest.mark.parametrize("content, message", [
    (b'{"id": "1", "completion": "caf\xe9"}\n', "line 1: not UTF-8 text"),  # non-UTF-8 completions
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: JSON nested too deeply"),  # nested 100k deep
], ids=["non-utf8", "nested-100k"])
def test_completions_reader(tmp_path, capsys, content, message):
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    assert main(["score", "--task", "knights-knaves", "--data", str(path), "--completions", str(path)]) == 2
    assert message in _one_line(capsys, "score")


@pytest.mark.parametrize("command", [
    ["eval", "--model", "m", "--task", "gsm8k", "--data"],  # eval data
    ["train", "task.name=gsm8k", "steps=1"],  # train data (through task.options.data)
], ids=["eval", "train"])
def test_task_data_with_non_utf8_bytes(tmp_path, capsys, monkeypatch, command):
    import aha.models

    monkeypatch.setattr(aha.models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    args = command + [str(data)] if command[0] == "eval" else command + [f"task.options.data=[{data}]"]
    assert main(args) == 2
    assert "not UTF-8 text" in _one_line(capsys, command[0])


# ----------------------------------------------------------------------------- failed starts


def test_failed_start_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pairs = tmp_path / "x.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    assert main(["sft", f"model.path={tmp_path / 'no-model'}", f"data.files=[{pairs}]"]) == 2
    assert "cannot load a tokenizer" in _one_line(capsys, "sft")
    assert main(["train", f"model.path={tmp_path / 'no-model'}", "task.options.count=4", "steps=1"]) == 2
    assert "cannot load a tokenizer" in _one_line(capsys, "train")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    # a folder that existed before is kept, whatever happens
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["sft", f"model.path={tmp_path / 'no-model'}", f"data.files=[{pairs}]", f"run.out_dir={keep}"]) == 2
    assert (keep / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- the compiled kernel's cache


def test_kernel_cache_refuses_files_and_folders_others_can_write(tmp_path):
    from aha.rollout.cpu_kernels import check_trusted

    folder = tmp_path / "cache"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    lib = folder / "k.so"
    lib.write_bytes(b"\x7fELF")
    os.chmod(lib, 0o755)
    check_trusted(lib)  # private file in a private folder (under the sticky /tmp): accepted
    os.chmod(lib, 0o777)  # a file anyone can overwrite
    with pytest.raises(RuntimeError, match="is not a file only this user can write"):
        check_trusted(lib)
    os.chmod(lib, 0o755)
    os.chmod(folder, 0o777)  # a folder where anyone can swap the file (no sticky bit)
    with pytest.raises(RuntimeError, match="can be written by other users"):
        check_trusted(lib)
    os.chmod(folder, 0o755 | stat.S_ISVTX | 0o022)  # world-writable but sticky, like /tmp: accepted
    check_trusted(lib)
    os.chmod(folder, 0o755)
    link = folder / "link.so"
    link.symlink_to(lib)
    with pytest.raises(RuntimeError, match="is not a file only this user can write"):
        check_trusted(link)


def test_nan_and_inf_are_float_only_concerns():
    # ints never were NaN: the int coercion still refuses a non-integral float, the float one a NaN
    with pytest.raises(AhaError, match="steps must be an integer"):
        load_config(TrainConfig, None, ["steps=.nan"])
    assert math.isnan(float("nan"))
