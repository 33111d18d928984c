"""The transformers `generate` backend: trimming, stop strings, seeding, ordering."""

from __future__ import annotations

import pytest
import torch

from aha.errors import AhaError
from aha.rollout import SamplingParams, get_generator
from aha.rollout.hf import HFGenerator

from .conftest import END, EOS, PIECES, VOCAB, make_model, random_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


def manual_greedy(model, prompt: list[int], eos_ids: list[int], max_new: int) -> list[int]:
    """Greedy decoding by full forwards, no cache and no padding: an independent reference."""
    seq = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
            if nxt in eos_ids:
                break
    return out


def test_greedy_rows_are_trimmed_at_eos(model, tok):
    prompts = random_prompts([5, 2, 9])
    free = [manual_greedy(model, p, [EOS], 12) for p in prompts]
    eos_ids = [EOS, free[1][4]]  # an EOS in the middle of the second completion
    gen = HFGenerator(model, tok, eos_token_ids=eos_ids)
    out = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12, n=2))
    assert [(c.prompt_index, c.sample_index) for c in out] == [(i, j) for i in range(3) for j in range(2)]
    for c in out:
        expected = manual_greedy(model, prompts[c.prompt_index], eos_ids, 12)
        assert c.token_ids == expected
        assert c.finish_reason == ("eos" if expected[-1] in eos_ids else "length")
        assert c.text == tok.decode(expected, skip_special_tokens=True)
        assert c.logprobs is None
    assert out[2].finish_reason == "eos" and len(out[2].token_ids) <= 5


def test_stop_strings_end_completions(model, tok):
    prompts = random_prompts([5, 7])
    free = manual_greedy(model, prompts[0], [EOS], 16)
    stop_text = tok.decode(free[3:5])  # spans two tokens
    out = HFGenerator(model, tok, eos_token_ids=[EOS]).generate(
        prompts, SamplingParams(temperature=0.0, max_new_tokens=16, stop=[stop_text]))
    first = next(t for t in range(len(free)) if stop_text in tok.decode(free[:t + 1]))
    assert out[0].finish_reason == "stop"
    assert out[0].token_ids == free[:first + 1]
    assert out[0].text.endswith(stop_text)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(model, tok):
    gen = HFGenerator(model, tok, eos_token_ids=[EOS])
    prompts = random_prompts([6, 3])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = gen.generate(prompts, SamplingParams(max_new_tokens=10, n=3, seed=1))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    b = gen.generate(prompts, SamplingParams(max_new_tokens=10, n=3, seed=1))
    c = gen.generate(prompts, SamplingParams(max_new_tokens=10, n=3, seed=2))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    for x in a:
        assert x.finish_reason in ("eos", "length")
        assert x.finish_reason == "eos" or len(x.token_ids) == 10
        assert EOS not in x.token_ids[:-1]


def test_model_generation_config_does_not_leak(tok):
    # a model whose generation_config asks for top_k=1 (i.e. greedy) must still be sampled with top_k off
    model = make_model()
    model.generation_config.top_k = 1
    gen = HFGenerator(model, tok, eos_token_ids=[EOS])
    out = gen.generate([[4, 5, 6]], SamplingParams(max_new_tokens=6, n=6, seed=0))
    assert len({tuple(c.token_ids) for c in out}) > 1


def test_factory(model, tok):
    gen = get_generator("hf", model, tok)
    assert isinstance(gen, HFGenerator)
    assert gen.eos_ids == [EOS, END]
    ids_only = get_generator("hf", model, [EOS])
    out = ids_only.generate([[7, 8]], SamplingParams(temperature=0.0, max_new_tokens=3))
    assert out[0].text == "" and len(out[0].token_ids) >= 1
    with pytest.raises(AhaError, match="no options"):
        get_generator("hf", model, tok, mode="slab")
    with pytest.raises(AhaError, match="max_new_tokens"):
        gen.generate([[5]], SamplingParams(max_new_tokens=0))


def test_text_skips_special_tokens(tok):
    assert tok.decode([PIECES.index("a"), END, PIECES.index("b"), EOS], skip_special_tokens=True) == "ab"
    assert VOCAB == 48
