"""Generation within a memory budget: a request split into waves gives the same completions as one batch."""

from __future__ import annotations

import pytest
import torch

from aha.errors import AhaError
from aha.rollout import SamplingParams, get_generator, wave_options
from aha.rollout import base as rollout_base
from aha.rollout.base import WaveBudget, kv_bytes_per_token, plan_waves

from .conftest import EOS, random_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the planner


def _flat(waves):
    return [row for wave in waves for row in wave]


def _cost(wave, lens, max_new):
    return len(wave) * (max(lens[i] for i, _ in wave) + max_new)


@pytest.mark.parametrize("max_rows,max_tokens", [(None, None), (1, None), (3, None), (4, None), (5, None),
                                                 (8, None), (None, 40), (None, 75), (6, 70), (None, 1)])
def test_waves_cover_the_rows_in_order_within_the_budget(max_rows, max_tokens):
    lens, n, max_new = [5, 9, 3, 7], 4, 10
    waves = plan_waves(lens, n, max_new, max_rows, max_tokens)
    assert _flat(waves) == [(i, j) for i in range(len(lens)) for j in range(n)]
    for wave in waves:
        assert wave
        if max_rows:
            assert len(wave) <= max_rows
        if max_tokens and len(wave) > 1:
            assert _cost(wave, lens, max_new) <= max_tokens


def test_groups_stay_whole_when_they_fit():
    # 4 samples per prompt, 8 rows per wave: two whole groups per wave
    assert [len(w) for w in plan_waves([5, 5, 5, 5, 5], 4, 10, max_rows=8)] == [8, 8, 4]
    # 6 rows per wave: one whole group each (never 4 + 2 of the next group)
    waves = plan_waves([5, 5, 5], 4, 10, max_rows=6)
    assert waves == [[(i, j) for j in range(4)] for i in range(3)]
    # a group larger than the cap is split, and the next group fills its last wave
    waves = plan_waves([5, 5], 4, 10, max_rows=3)
    assert waves == [[(0, 0), (0, 1), (0, 2)], [(0, 3), (1, 0), (1, 1)], [(1, 2), (1, 3)]]
    # a token budget counts the wave's longest prompt: 2 rows x (20 + 10) = 60 fit, 3 x 30 = 90 do not
    assert [len(w) for w in plan_waves([20, 2], 2, 10, max_tokens=60)] == [2, 2]
    # a single row over the budget still runs, alone
    assert plan_waves([50], 2, 10, max_tokens=10) == [[(0, 0)], [(0, 1)]]
    # row overhead (the logits) is charged per row
    assert [len(w) for w in plan_waves([10], 4, 10, max_tokens=100, row_overhead=5)] == [4]
    assert [len(w) for w in plan_waves([10], 4, 10, max_tokens=100, row_overhead=6)] == [3, 1]


def test_budget_checks_and_the_automatic_budget(model, monkeypatch):
    with pytest.raises(AhaError, match=">= 0"):
        WaveBudget(max_rows=-1)
    with pytest.raises(AhaError, match="memory_fraction"):
        WaveBudget(memory_fraction=1.5)
    # make_model: 2 layers x 2 kv heads x head_dim 16, keys and values, float32
    assert kv_bytes_per_token(model) == 2 * 2 * 2 * 16 * 4
    # on CPU the automatic budget is off: one wave
    assert WaveBudget().token_budget(model) == (None, 0)
    # with free device memory (as on CUDA): memory_fraction of it, in KV positions, plus the logits per row
    monkeypatch.setattr(rollout_base, "free_device_memory", lambda device: 1_000_000)
    tokens, overhead = WaveBudget(memory_fraction=0.5).token_budget(model)
    assert tokens == 500_000 // 512
    assert overhead == -(-48 * model.config.vocab_size // 512)
    assert WaveBudget(max_tokens=77).token_budget(model) == (77, 0)  # an explicit budget wins
    assert WaveBudget(memory_fraction=0.0).token_budget(model) == (None, 0)
    params = SamplingParams(max_new_tokens=100, n=4)
    waves = WaveBudget().waves(model, random_prompts([10] * 8), params)
    assert len(waves) > 1 and all(len(w) * (10 + 100 + overhead) <= tokens for w in waves)


# ----------------------------------------------------------------------------- the engine: exactly the same completions


def _same(a, b, exact=True):
    assert [(c.prompt_index, c.sample_index) for c in a] == [(c.prompt_index, c.sample_index) for c in b]
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    if exact:
        assert [c.logprobs for c in a] == [c.logprobs for c in b]  # bitwise
    else:
        for x, y in zip(a, b):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    assert [c.finish_reason for c in a] == [c.finish_reason for c in b]
    assert [c.text for c in a] == [c.text for c in b]


@pytest.mark.parametrize("mode", ["native", "cascade", "slab", "dynamic"])
def test_engine_waves_give_the_same_tokens_and_logprobs(model, tok, mode):
    """Native mode (Qwen2/Llama/Mistral/Qwen3, what the trainer runs): the same tokens and log-probs bit
    for bit. The other modes run the model's own forward, whose matmuls round differently for another
    batch size: the same tokens, log-probs equal to float rounding."""
    prompts = random_prompts([6, 3, 8, 5, 4])
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=14, n=4, seed=3, stop=["ab"])
    one = get_generator("engine", model, tok, eos_token_ids=[EOS], mode=mode).generate(prompts, params)
    assert len({c.finish_reason for c in one}) > 1  # rows end at different times
    for budget in [dict(max_batch_rows=1), dict(max_batch_rows=3), dict(max_batch_rows=4),
                   dict(max_batch_rows=7), dict(max_batch_tokens=60), dict(max_batch_tokens=150),
                   dict(max_batch_rows=6, max_batch_tokens=100)]:
        gen = get_generator("engine", model, tok, eos_token_ids=[EOS], mode=mode, **budget)
        assert len(gen.budget.waves(model, prompts, params)) > 1, budget
        _same(gen.generate(prompts, params), one, exact=mode == "native")


def test_engine_greedy_waves_and_a_bf16_model(tok):
    from .conftest import make_model

    model = make_model(2).to(torch.bfloat16)
    prompts = random_prompts([6, 3, 8])
    for params in (SamplingParams(temperature=0.0, max_new_tokens=10, n=2),
                   SamplingParams(temperature=1.0, max_new_tokens=10, n=3, seed=9)):
        one = get_generator("engine", model, tok, eos_token_ids=[EOS]).generate(prompts, params)
        waved = get_generator("engine", model, tok, eos_token_ids=[EOS], max_batch_rows=2).generate(prompts, params)
        _same(waved, one)


# ----------------------------------------------------------------------------- hf: greedy equality


def test_hf_waves_keep_greedy_completions_and_stay_reproducible(model, tok):
    prompts = random_prompts([6, 3, 8, 5])
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, n=2, stop=["ab"])
    one = get_generator("hf", model, tok, eos_token_ids=[EOS]).generate(prompts, greedy)
    for budget in [dict(max_batch_rows=1), dict(max_batch_rows=3), dict(max_batch_tokens=50)]:
        gen = get_generator("hf", model, tok, eos_token_ids=[EOS], **budget)
        assert len(gen.budget.waves(model, prompts, greedy)) > 1
        waved = gen.generate(prompts, greedy)
        assert [c.token_ids for c in waved] == [c.token_ids for c in one]
        assert [c.finish_reason for c in waved] == [c.finish_reason for c in one]
        assert [(c.prompt_index, c.sample_index) for c in waved] == [(c.prompt_index, c.sample_index) for c in one]
    # sampling in waves depends on the waves (one RNG stream over the batch), but repeats for a budget
    sampled = SamplingParams(max_new_tokens=12, n=3, seed=5)
    gen = get_generator("hf", model, tok, eos_token_ids=[EOS], max_batch_rows=3)
    a, b = gen.generate(prompts, sampled), gen.generate(prompts, sampled)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) > 1  # later waves do not replay the first one's draws
    with pytest.raises(AhaError, match="no options"):
        get_generator("hf", model, tok, mode="slab")


# ----------------------------------------------------------------------------- the trainer passes the budget


def test_wave_options_read_the_rollout_config():
    from aha.config import load_config
    from aha.train.config import TrainConfig

    cfg = load_config(TrainConfig, None, ["rollout.max_batch_rows=16", "rollout.max_batch_tokens=4096"])
    assert wave_options(cfg.rollout) == {"max_batch_rows": 16, "max_batch_tokens": 4096, "memory_fraction": 0.5}
    assert wave_options(TrainConfig().rollout) == {"max_batch_rows": 0, "max_batch_tokens": 0,
                                                   "memory_fraction": 0.5}
    with pytest.raises(AhaError, match="rollout.max_batch_rows"):
        load_config(TrainConfig, None, ["rollout.max_batch_rows=-2"])


def test_a_grpo_run_in_waves_samples_the_same_rollouts(tmp_path, tiny_model_dir):
    from aha.cli import main
    from aha.runs import read_jsonl

    from .test_grpo import base_args

    timing = ("time", "seconds", "tokens_per_s")

    def run(out, extra):
        assert main(base_args(tiny_model_dir, out, 2, extra)) == 0
        rows = read_jsonl(out / "metrics.jsonl")
        rollouts = [(out / "rollouts" / f"step_{s:05d}.jsonl").read_text() for s in (1, 2)]
        return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows], rollouts

    whole = run(tmp_path / "whole", [])
    waved = run(tmp_path / "waved", ["rollout.max_batch_rows=3"])
    assert waved == whole
