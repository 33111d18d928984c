"""`aha eval --reference-perplexity`: the perplexity of each reference answer, with and without the model's
reasoning, computed by hand from fixed log-probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import aha.eval.perplexity as ppl_module
from aha.tasks.base import Example


class _FakeScorer:
    """Answer log-probabilities fixed per context: (sum of log-probs, tokens)."""

    def __init__(self, model, tokenizer, batch_size=8):
        pass

    def answer_logprobs(self, contexts, answers):
        # with reasoning the answer is likelier: -1 nat per token over 2 tokens; without it -2 per token
        return [(-2.0, 2) if "because" in c else (-4.0, 2) for c in contexts]


class _Tok:
    chat_template = None
    bos_token = None


def test_reference_perplexity_by_hand(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ppl_module, "Scorer", _FakeScorer)
    examples = [Example(id="a", prompt=[{"role": "user", "content": "1+1?"}], answer="2"),
                Example(id="b", prompt=[{"role": "user", "content": "2+2?"}], answer="4"),
                Example(id="c", prompt=[{"role": "user", "content": "no answer"}], answer="")]
    # a's sample 1 comes first in the file: the reasoning is still sample 0's
    rows = [{"id": "a", "sample": 1, "completion": "<think>no</think>"},
            {"id": "a", "sample": 0, "completion": "<think>because 1+1=2</think><answer>2</answer>"},
            {"id": "b", "sample": 0, "completion": "<think>guess</think><answer>5</answer>"},
            {"id": "c", "sample": 0, "completion": "x"}]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = ppl_module.reference_perplexity_summary(None, _Tok(), examples, path)
    # a: with its first sample's reasoning exp(1) = 2.718, b: no "because": exp(2) = 7.389; c has no answer
    assert s["problems"] == 2
    assert s["mean"] == pytest.approx((math.e + math.e ** 2) / 2)
    assert s["median"] == pytest.approx((math.e + math.e ** 2) / 2)
    assert s["without_reasoning_mean"] == pytest.approx(math.e ** 2)
    assert s["ratio"] == pytest.approx((math.e + math.e ** 2) / 2 / math.e ** 2)
    assert "| 2 |" in ppl_module.perplexity_markdown(s)
