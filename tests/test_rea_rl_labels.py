"""`aha data reflection-labels` end to end on a tiny model with the oracle teacher: labels, the
reflection model's SFT data (trained with `aha sft` and then used as a detector), and the truncated
SFT baseline."""

from __future__ import annotations

import json

import pytest

from aha.cli import main
from aha.rollout.base import Completion
from aha.runs import read_jsonl
from tests.test_rea_rl_revision import KK_ANSWER, KK_PARAGRAPHS, kk_text

KK_OPTIONS = ["--task-option", "people=3", "--task-option", "count=5", "--task-option", "test_count=5",
              "--task-option", "quiz_style=plain", "--task-option", "name_pool=6"]


class ScriptedGenerator:
    """The sampling call answers every prompt with the overthinking Ben/Finn/Dan response; a
    one-sample call (the truncated baseline's answer) continues with the right answer."""

    def __init__(self, tok):
        self.tok = tok

    def generate(self, prompts, params):
        text = kk_text() if params.n > 1 else KK_ANSWER + "</answer>"
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return [Completion(i, j, list(ids), self.tok.decode(ids, skip_special_tokens=True), "stop")
                for i in range(len(prompts)) for j in range(params.n)]


@pytest.mark.slow
def test_reflection_labels_end_to_end(tmp_path, tiny_model_dir, monkeypatch):
    import aha.rollout

    monkeypatch.setattr(aha.rollout, "get_generator", lambda backend, model, tok, **_: ScriptedGenerator(tok))
    out = tmp_path / "labels"
    assert main(["data", "reflection-labels", "--model", str(tiny_model_dir), "--task", "knights-knaves",
                 *KK_OPTIONS, "--n", "2", "--min-tokens", "1", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 5 and summary["responses"] == 10
    labels = read_jsonl(out / "labels.jsonl")
    right = [r for r in labels if r["correct"]]
    # only the Ben/Finn/Dan puzzle matches the scripted response: its 2 responses are labelled
    assert summary["labelled"] == len(right) == 2
    for r in right:
        assert r["chunks"] == KK_PARAGRAPHS
        assert r["p_result"] == [0.0, 1.0, 1.0, 1.0, 1.0] and r["accepted"] == [1, 2, 3, 4]
    rows = read_jsonl(out / "reflection_sft.jsonl")
    assert rows[0]["response"] == "[1]. Think\n\n[2]. Result\n\n[3]. Result\n\n[4]. Result\n\n[5]. Result"
    assert "**[2].** " + KK_PARAGRAPHS[1] in rows[0]["prompt"][0]["content"]
    # the baseline: the response cut after the first accepted chunk, the template, the policy's answer
    base = read_jsonl(out / "truncated_sft.jsonl")
    assert len(base) == 2
    assert base[0]["response"] == ("<think>" + "\n\n".join(KK_PARAGRAPHS[:2]) + "\n</think>\n<answer>" + KK_ANSWER
                                   + "</answer>")
    # windows of one chunk each (every chunk of this response is more than one token): one SFT row
    # per window, numbered from [1], Result where the chunk was accepted
    one = tmp_path / "windows"
    assert main(["data", "reflection-labels", "--model", str(tiny_model_dir), "--task", "knights-knaves",
                 *KK_OPTIONS, "--n", "2", "--min-tokens", "1", "--window-tokens", "1", "--device", "cpu",
                 "--out", str(one)]) == 0
    rows1 = read_jsonl(one / "reflection_sft.jsonl")
    assert [r["response"] for r in rows1[:5]] == ["[1]. Think"] + ["[1]. Result"] * 4
    assert rows1[1]["prompt"][0]["content"].startswith("**Question:**")
    assert "**[1].** " + KK_PARAGRAPHS[1] in rows1[1]["prompt"][0]["content"]
    assert len(rows1) == 2 * len(KK_PARAGRAPHS)
    assert json.loads((one / "summary.json").read_text())["labelling_windows"] == len(rows1)
    assert json.loads((one / "summary.json").read_text())["labelled"] == 2  # responses, not windows
    # the labeller trains on it with aha sft (LoRA) and serves as the detector of a revision run
    sft = tmp_path / "labeller"
    assert main(["sft", f"model.path={tiny_model_dir}", f"data.files=[{out / 'reflection_sft.jsonl'}]",
                 "lora.enabled=true", "steps=2", "val_every=0", "data.val_fraction=0", f"run.out_dir={sft}",
                 "run.progress=false"]) == 0
    from aha.overthinking.chunking import split_chunks
    from aha.overthinking.detectors import ReflectionModelDetector

    det = ReflectionModelDetector(sft / "model", device="cpu")
    chunks = split_chunks("\n\n".join(KK_PARAGRAPHS), lambda t: len(t.split()), min_tokens=1)
    assert len(det.label("quiz", [c.text for c in chunks])) == 5


@pytest.mark.slow
def test_a_model_teacher_labels_window_by_window(tmp_path, tiny_model_dir, monkeypatch):
    # a (random) model folder as the teacher, one chunk per window: five labelling calls of one part
    # each, whose P(Result) values make up the response's five probabilities
    import aha.rollout
    from aha.overthinking.detectors import ReflectionModelDetector

    monkeypatch.setattr(aha.rollout, "get_generator", lambda backend, model, tok, **_: ScriptedGenerator(tok))
    calls = []
    real = ReflectionModelDetector.label
    monkeypatch.setattr(ReflectionModelDetector, "label",
                        lambda self, q, chunks: calls.append(list(chunks)) or real(self, q, chunks))
    out = tmp_path / "labels"
    assert main(["data", "reflection-labels", "--model", str(tiny_model_dir), "--task", "knights-knaves",
                 *KK_OPTIONS, "--limit", "1", "--n", "2", "--min-tokens", "1", "--window-tokens", "1",
                 "--teacher", str(tiny_model_dir), "--device", "cpu", "--out", str(out)]) == 0
    labels = read_jsonl(out / "labels.jsonl")
    assert len(calls) == 2 * len(KK_PARAGRAPHS) and all(len(c) == 1 for c in calls)
    assert [c[0] for c in calls[:5]] == KK_PARAGRAPHS
    assert all(len(r["p_result"]) == 5 and all(0.0 <= p <= 1.0 for p in r["p_result"]) for r in labels)
