"""Likelihood-of-reference rewards: formulas by hand, then a tiny model taught one answer."""

from __future__ import annotations

import math

import pytest
import torch

from aha.rewards import REWARDS, RewardComposer, RewardSpec
from aha.rewards.likelihood import (
    DEFAULT_CONNECTOR,
    Scorer,
    clear_scorers,
    likelihood_score,
    reference_perplexity,
    render_prompt_text,
)
from aha.tasks.base import Example

from .test_rewards_basic import make_batch

E = math.e

# (sum_with, n_with, sum_without, n_without, form, expected); PPL = exp(-mean log-prob)
FORM_CASES = [
    (-2.0, 2, -4.0, 2, "relative", 1 - 1 / E),  # PPL e vs e^2: 1 - e/e^2
    (-2.0, 2, -4.0, 2, "absolute", 1 / E),  # 1 / PPL_with
    (-2.0, 2, -4.0, 2, "hybrid", (1 - 1 / E + 1 / E) / 2),  # their mean = 0.5
    (-2.0, 2, -4.0, 2, "verifree", E ** -2),  # probability of the whole answer
    (-4.0, 2, -2.0, 2, "relative", 0.0),  # the reasoning made the answer less likely: clipped at 0
    (-3.0, 3, -2.0, 2, "relative", 0.0),  # equal per-token perplexity: 0
    (-1.0, 1, -3.0, 1, "hybrid", ((1 - E ** -2) + E ** -1) / 2),
    (0.0, 4, -9000.0, 4, "relative", 1.0),  # a hopeless baseline does not overflow
]


@pytest.mark.parametrize("sw,nw,so,no,form,expected", FORM_CASES)
def test_likelihood_forms(sw, nw, so, no, form, expected):
    assert likelihood_score(sw, nw, so, no, form) == pytest.approx(expected)


def test_render_prompt_without_chat_template():
    class Plain:
        chat_template = None
        bos_token = "<s>"

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert render_prompt_text(Plain(), msgs) == "<s>Be brief.\n2+2?\n"
    assert render_prompt_text(Plain(), "already rendered") == "already rendered"


PROMPT = [{"role": "user", "content": "Who is a knave?"}]
TARGET, OTHER, RANDOM = "(1) Ann is a knave", "(2) Bob is a knight", "zq vk wq xj"
REASONING = "Ann lies."


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model taught: after REASONING say TARGET; with an empty reasoning say OTHER."""
    from aha.models import load_model, load_tokenizer

    torch.manual_seed(0)
    model = load_model(tiny_model_dir, device="cpu", dtype="float32", trainable=True)
    tok = load_tokenizer(tiny_model_dir)
    prompt = render_prompt_text(tok, PROMPT)
    texts = [prompt + f"<think>{REASONING}</think>" + DEFAULT_CONNECTOR + TARGET,
             prompt + "<think></think>" + DEFAULT_CONNECTOR + OTHER]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        for ids in rows:
            x = torch.tensor([ids])  # (1, T)
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    out = tmp_path_factory.mktemp("scorer")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    yield out
    clear_scorers()


def _batch(answers, reasonings, truncated=None):
    examples = [Example(f"e{i}", PROMPT, a) for i, a in enumerate(answers)]
    texts = [f"<think>{r}</think><answer>whatever</answer>" for r in reasonings]
    return make_batch(texts, examples=examples, truncated=truncated)


def test_trained_answer_scores_higher_than_random(trained_dir):
    reward = REWARDS.get("likelihood")
    batch = _batch([TARGET, RANDOM], [REASONING, REASONING])
    for form in ("absolute", "verifree", "hybrid"):
        out = reward(batch, model=str(trained_dir), form=form, device="cpu")
        assert out.scores[0] > out.scores[1], form
    out = reward(batch, model=str(trained_dir), form="absolute", device="cpu", batch_size=1)
    assert out.scores[0] > 0.5  # learned: mean token probability of the taught answer is high
    assert out.metrics["scorer_seconds"] > 0 and out.metrics["nll_with_mean"] > 0


def test_relative_rewards_the_reasoning_that_helps(trained_dir):
    reward = REWARDS.get("likelihood")
    batch = _batch([TARGET, TARGET], [REASONING, ""])
    out = reward(batch, model=str(trained_dir), form="relative", device="cpu")
    assert out.scores[0] > 0.5  # the reasoning turns a disfavoured answer into the likely one
    assert out.scores[1] == 0.0  # empty reasoning is exactly the baseline context
    assert "nll_without_mean" in out.metrics


def test_batching_does_not_change_scores(trained_dir):
    reward = REWARDS.get("likelihood")
    # different lengths in one batch: left padding and position ids must not leak into the scores
    batch = _batch([TARGET, RANDOM, OTHER, "a"], [REASONING, "x" * 40, "", "Bob is honest and Ann lies."])
    one = reward(batch, model=str(trained_dir), form="verifree", device="cpu", batch_size=1).scores
    many = reward(batch, model=str(trained_dir), form="verifree", device="cpu", batch_size=8).scores
    assert many == pytest.approx(one, rel=1e-4, abs=1e-9)


def test_edge_cases(trained_dir):
    reward = REWARDS.get("likelihood")
    batch = _batch([TARGET, "", TARGET], [REASONING, REASONING, REASONING], truncated=[False, False, True])
    out = reward(batch, model=str(trained_dir), form="verifree", device="cpu", truncated=0.0)
    assert out.scores[0] > 0
    assert out.scores[1] is None  # empty reference: not applicable
    assert out.scores[2] == 0.0  # cut off at the cap: VeriFree scores 0


def test_composer_passes_the_policy_path(trained_dir):
    composer = RewardComposer([RewardSpec("likelihood", 1.0, {"form": "absolute", "device": "cpu"})],
                              policy_path=str(trained_dir))
    totals, _, metrics = composer(_batch([TARGET], [REASONING]))
    assert totals[0] > 0.5 and metrics["reward/likelihood/seconds"] > 0


def test_reference_perplexity(trained_dir):
    from aha.models import load_model, load_tokenizer

    model = load_model(trained_dir, device="cpu", dtype="float32", trainable=True)
    tok = load_tokenizer(trained_dir)
    ctx = render_prompt_text(tok, PROMPT) + f"<think>{REASONING}</think>"
    ppl = reference_perplexity(model, tok, [ctx, ctx, PROMPT], [TARGET, RANDOM, ""], connector=DEFAULT_CONNECTOR)
    assert ppl[0] < ppl[1]
    assert math.isnan(ppl[2])
    assert model.training  # mode restored
    absolute = REWARDS.get("likelihood")(_batch([TARGET], [REASONING]), model=str(trained_dir), form="absolute",
                                         device="cpu").scores[0]
    assert 1 / ppl[0] == pytest.approx(absolute, rel=1e-4)  # absolute = 1 / PPL_with


def test_scorer_truncates_long_contexts(trained_dir):
    from aha.models import load_model, load_tokenizer

    scorer = Scorer(load_model(trained_dir, device="cpu", dtype="float32"), load_tokenizer(trained_dir),
                    max_length=8)
    [(s, n)] = scorer.answer_logprobs(["long context " * 50], [TARGET])
    assert n > 0 and math.isfinite(s)
