"""aha's rollout engine: equality with transformers generate, the sampler, seeds, stops, row removal."""

from __future__ import annotations

import math

import pytest
import torch

from aha.errors import AhaError
from aha.rollout import SamplingParams, get_generator
from aha.rollout.engine import EngineGenerator
from aha.rollout.sampling import row_keys, sample_tokens, step_uniforms, uniform_table

from .conftest import END, EOS, PAD, PIECES, VOCAB, make_model, make_tokenizer, random_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the counter-based uniforms


def _mix32_py(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _combine_py(h: int, x: int) -> int:
    return _mix32_py(h ^ _mix32_py((x + 0x9E3779B9) & 0xFFFFFFFF))


def uniform_py(seed: int, prompt_index: int, sample_index: int, step: int) -> float:
    """Plain-integer reference of the engine's per-(seed, prompt, sample, step) uniform."""
    h = _combine_py(_mix32_py(seed & 0xFFFFFFFF), (seed >> 32) & 0xFFFFFFFF)
    key = _combine_py(_combine_py(h, prompt_index), sample_index)
    return (_combine_py(key, step) >> 8) / 2 ** 24


def test_mix32_fixed_points():
    # 0 is a fixed point of xor-shift-multiply; 1 hashes to a value checked against the plain formula
    assert _mix32_py(0) == 0
    keys = row_keys(0, torch.tensor([0]), torch.tensor([0]))
    assert keys.item() == _combine_py(_combine_py(_combine_py(0, 0), 0), 0)


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3, -5])  # small, 64-bit and negative seeds
def test_uniforms_match_integer_reference(seed):
    pi = torch.tensor([0, 0, 1, 3, 1000])
    si = torch.tensor([0, 1, 0, 2, 15])
    keys = row_keys(seed, pi, si)
    for step in (0, 1, 127):
        u = step_uniforms(keys, step)
        expected = [uniform_py(seed, a, b, step) for a, b in zip(pi.tolist(), si.tolist())]
        assert u.tolist() == pytest.approx(expected, abs=0)


def test_uniforms_are_spread():
    keys = row_keys(3, torch.arange(100).repeat_interleave(10), torch.arange(10).repeat(100))
    u = torch.cat([step_uniforms(keys, t) for t in range(10)])  # 10,000 draws
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.01  # sd of the mean is 0.003
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert counts.min() > 900 and counts.max() < 1100
    assert len(set(u.tolist())) > 9_990  # no structural collisions


# ----------------------------------------------------------------------------- the sampler

P4 = [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("u,temperature,top_k,top_p,expected", [
    (0.05, 1.0, 0, 1.0, 0),   # cdf 0.1 0.3 0.6 1.0: 0.05 < 0.1
    (0.35, 1.0, 0, 1.0, 2),   # 0.3 <= 0.35 < 0.6
    (0.95, 1.0, 0, 1.0, 3),
    (0.0, 1.0, 0, 1.0, 0),    # u = 0 takes the first token with mass
    (0.5, 1.0, 2, 1.0, 3),    # top-2 keeps {2: 3/7, 3: 4/7}; cdf 0 0 .43 1
    (0.4, 1.0, 2, 1.0, 2),    # 0.4 < 3/7
    (0.5, 1.0, 0, 0.5, 3),    # mass above: 3:0, 2:.4, 1:.7 -> keep {3, 2}; same as top-2
    (0.99, 1.0, 0, 0.35, 3),  # only token 3 (mass above 2 is 0.4 >= 0.35)
    (0.4, 0.5, 0, 1.0, 2),    # T=0.5: p^2 -> .01 .04 .09 .16 (/.3): cdf .033 .167 .467 1
    (0.5, 0.5, 0, 1.0, 3),
    (0.3, 0.0, 0, 1.0, 3),    # greedy ignores u
    (0.9, 1.0, 3, 0.75, 3),   # top-3 {1,2,3}: .222 .333 .444; mass above 1 is .778 >= .75 -> {2,3}: 3/7, 4/7
])
def test_sample_tokens_table(u, temperature, top_k, top_p, expected):
    logits = torch.tensor([P4]).log()
    tokens, logprobs = sample_tokens(logits, torch.tensor([u]), temperature, top_p, top_k)
    assert tokens.tolist() == [expected]
    # log-prob under the temperature-scaled distribution before filtering (T=1 when greedy)
    scaled = [p ** (1 / temperature) for p in P4] if temperature > 0 else P4
    assert logprobs.item() == pytest.approx(math.log(scaled[expected] / sum(scaled)), abs=1e-6)


def test_sample_tokens_never_picks_a_filtered_token_at_u_near_one():
    logits = torch.tensor([[5.0, 4.0, -1e9, 3.0, -1e9]])  # the last token has no mass at all
    tokens, _ = sample_tokens(logits, torch.tensor([1.0 - 2 ** -24]), 1.0, 1.0, 2)
    assert tokens.item() == 1  # top-2 = {0, 1}: u ~ 1 takes the last kept token, not 3 or 4


# ----------------------------------------------------------------------------- equality with generate


def hf_greedy(model, prompts, eos_ids, max_new):
    """transformers generate, left-padded, greedy; rows cut after their first EOS."""
    P = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (P - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=max_new,
                             eos_token_id=eos_ids, pad_token_id=PAD)[:, P:].tolist()
    rows = []
    for seq in out:
        cut = next((t + 1 for t, x in enumerate(seq) if x in eos_ids), len(seq))
        rows.append(seq[:cut])
    return rows


@pytest.mark.parametrize("mode,attn", [
    ("native", "sdpa"),   # lean decode step + cascade attention (default for plain Qwen2)
    ("cascade", "sdpa"),  # shared prompt prefix + per-row suffix, through the model's forward
    ("slab", "sdpa"),     # prompt cache copied per row, ready-made boolean 4D masks
    ("slab", "eager"),    # additive float masks
    ("dynamic", "sdpa"),  # transformers DynamicCache and 2D masks
])
def test_greedy_equals_generate(tok, mode, attn):
    model = make_model()
    model.config._attn_implementation_internal = attn
    # different lengths, a duplicate prompt (prefilled once), a 1-token prompt
    prompts = random_prompts([5, 2, 9, 5, 1])
    prompts[3] = list(prompts[0])
    free = hf_greedy(model, prompts, [EOS], 14)
    # an EOS in the middle of the first completion (the token it emits at step 6), plus the cap
    eos_ids = [EOS, free[0][6]]
    expected = hf_greedy(model, prompts, eos_ids, 14)
    gen = EngineGenerator(model, tok, eos_token_ids=eos_ids, mode=mode, initial_capacity=4, compact_fraction=0.0)
    out = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=14, n=2))
    assert [(c.prompt_index, c.sample_index) for c in out] == [(i, j) for i in range(5) for j in range(2)]
    for c in out:
        assert c.token_ids == expected[c.prompt_index]
        assert c.finish_reason == ("eos" if c.token_ids[-1] in eos_ids else "length")
        assert c.finish_reason == "eos" or len(c.token_ids) == 14
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
        assert len(c.logprobs) == len(c.token_ids)
    assert out[0].finish_reason == "eos" and len(out[0].token_ids) <= 7


@pytest.mark.parametrize("mode", ["native", "cascade", "slab", "dynamic"])
def test_equal_length_prompts_and_chunked_prefill(model, tok, mode):
    # no padding at all (masks are skipped), and a prefill split into chunks of one prompt
    prompts = random_prompts([4, 4, 4], seed=3)
    expected = hf_greedy(model, prompts, [EOS], 8)
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS], mode=mode, max_prefill_tokens=4)
    out = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8, n=2))
    assert [c.token_ids for c in out] == [expected[c.prompt_index] for c in out]


def test_auto_mode_is_native_for_qwen2(model, tok):
    assert EngineGenerator(model, tok).mode == "native"


@pytest.mark.parametrize("arch", ["llama", "qwen3"])  # no q/k/v bias; per-head q/k RMSNorm
def test_native_step_on_other_architectures(tok, arch):
    import transformers

    config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                             "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[arch]
    torch.manual_seed(0)
    model = model_cls(config_cls(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=128, head_dim=16,
                                 initializer_range=0.2, tie_word_embeddings=True)).eval()
    prompts = random_prompts([5, 2, 7])
    expected = hf_greedy(model, prompts, [EOS], 10)
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS])
    assert gen.mode == "native"
    out = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=10, n=2))
    assert [c.token_ids for c in out] == [expected[c.prompt_index] for c in out]


def test_weight_updates_between_calls_are_seen(tok):
    # the trainer updates parameters in place between rollouts; the native step must not keep stale copies
    model = make_model()
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS])
    prompts = random_prompts([5, 3])
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    before = [c.token_ids for c in gen.generate(prompts, params)]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    after = [c.token_ids for c in gen.generate(prompts, params)]
    assert after == hf_greedy(model, prompts, [EOS], 10)
    assert after != before


# ----------------------------------------------------------------------------- sampling


def reference_sample(logits: list[float], u: float, temperature: float, top_k: int, top_p: float) -> int:
    """The engine's sampling rule written out with Python floats."""
    scaled = [x / temperature for x in logits]
    m = max(scaled)
    probs = [math.exp(x - m) for x in scaled]
    if top_k:
        kth = sorted(scaled, reverse=True)[top_k - 1]
        probs = [p if s >= kth else 0.0 for p, s in zip(probs, scaled)]
    if top_p < 1.0:
        total = sum(probs)
        order = sorted(range(len(probs)), key=lambda i: -probs[i])
        above = 0.0
        keep = set()
        for i in order:
            if above < top_p * total or not keep:
                keep.add(i)
            above += probs[i]
        probs = [p if i in keep else 0.0 for i, p in enumerate(probs)]
    target = u * (1 - 2 ** -20) * sum(probs)
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if acc > target:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.8, 10, 0.9)])
def test_sampling_matches_reference_sampler(model, tok, temperature, top_k, top_p):
    prompts = random_prompts([4, 7, 3], seed=2)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=10, n=2, seed=11)
    out = EngineGenerator(model, tok, eos_token_ids=[EOS]).generate(prompts, params)
    for c in out:
        seq = list(prompts[c.prompt_index])
        with torch.no_grad():  # the logits at every step, from full forwards without a cache
            logits = model(input_ids=torch.tensor([seq + c.token_ids])).logits[0, len(seq) - 1:]
        for t, token in enumerate(c.token_ids):
            u = uniform_py(11, c.prompt_index, c.sample_index, t)
            assert token == reference_sample(logits[t].tolist(), u, temperature, top_k, top_p)
            ref_lp = torch.log_softmax(logits[t] / temperature, -1)[token].item()
            assert c.logprobs[t] == pytest.approx(ref_lp, abs=1e-4)


def test_seeds_reproduce_and_differ(model, tok):
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS])
    prompts = random_prompts([6, 3, 8])
    a = gen.generate(prompts, SamplingParams(max_new_tokens=12, n=3, seed=1))
    b = gen.generate(prompts, SamplingParams(max_new_tokens=12, n=3, seed=1))
    c = gen.generate(prompts, SamplingParams(max_new_tokens=12, n=3, seed=2))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.logprobs for x in a] == [x.logprobs for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    # samples of one group differ from each other
    assert len({tuple(x.token_ids) for x in a[:3]}) == 3


@pytest.mark.parametrize("mode", ["native", "cascade", "slab", "dynamic"])
def test_completions_do_not_depend_on_the_batch(model, tok, mode):
    prompts = random_prompts([6, 3, 8, 5])
    params = SamplingParams(max_new_tokens=12, n=3, seed=4)
    base = EngineGenerator(model, tok, eos_token_ids=[EOS], mode=mode)
    full = base.generate(prompts, params)
    # a prefix of the prompt list keeps the indices, so its completions are the same
    part = base.generate(prompts[:2], params)
    assert [x.token_ids for x in part] == [x.token_ids for x in full[:6]]
    # several smaller batches (two groups at a time) give the same completions as one
    chunked = EngineGenerator(model, tok, eos_token_ids=[EOS], mode=mode, max_batch_rows=6)
    assert [x.token_ids for x in chunked.generate(prompts, params)] == [x.token_ids for x in full]


# ----------------------------------------------------------------------------- stop strings and finishing


def test_stop_string_spanning_tokens(model, tok):
    prompts = random_prompts([5, 7])
    greedy = EngineGenerator(model, tok, eos_token_ids=[EOS])
    free = greedy.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=16))
    ids = free[0].token_ids
    # the text of tokens 4..5 of the first completion becomes the stop string: it spans two tokens
    stop_text = tok.decode(ids[4:6])
    out = greedy.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=16, stop=[stop_text]))
    c = out[0]
    first = next(t for t in range(len(ids)) if stop_text in tok.decode(ids[:t + 1]))
    assert c.finish_reason == "stop"
    assert c.token_ids == ids[:first + 1]
    assert c.text.endswith(stop_text) and c.text.count(stop_text) == 1
    assert len(c.logprobs) == len(c.token_ids)


def test_stop_text_is_cut_inside_a_token():
    # a scripted check of build_completions: the token "</answer>" completes the stop "</ans"
    from aha.rollout.base import StopChecker, build_completions

    tokenizer = make_tokenizer()
    ids = [PIECES.index(p) for p in ["a", "b", "</answer>", "c"]]
    stop = StopChecker(tokenizer, ["</ans"])
    assert stop.first_stop(ids) == 2
    [c] = build_completions(tokenizer, stop, [(0, 0)], [ids[:3]], None, ["stop"])
    assert c.text == "ab</ans" and c.token_ids == ids[:3]


@pytest.mark.parametrize("stops,pieces,expected", [
    (["ba"], ["a", "b", "a", "c"], 2),            # spans two tokens
    (["ba"], ["ab", "a", "c"], 1),                # "ab" + "a": the match straddles a token boundary
    (["zz", "c"], ["a", "c", "z", "z"], 1),       # the earliest of several stop strings
    (["wer>"], ["</ans", "wer>"], 1),              # a stop equal to one token
    (["!?"], ["a", "!", "b", "?"], None),          # never contiguous
    (["é!"], ["a", "é", "!"], 2),                  # non-ASCII
    (["a b"], ["a", " ", "b"], 2),                 # a stop with a space (no candidate filter)
])
def test_stop_checker_table(stops, pieces, expected):
    from aha.rollout.base import StopChecker

    checker = StopChecker(make_tokenizer(), stops)
    assert checker.first_stop([PIECES.index(p) for p in pieces]) == expected


def test_rows_finish_at_eos_and_leave_the_batch(model, tok):
    # sample with a frequent EOS so rows finish at different steps; every reason must be consistent
    prompts = random_prompts([4, 6, 2, 8])
    gen = EngineGenerator(model, tok, eos_token_ids=list(range(3, 13)), compact_fraction=0.0, initial_capacity=2)
    out = gen.generate(prompts, SamplingParams(max_new_tokens=9, n=4, seed=3))
    lengths = {len(c.token_ids) for c in out}
    assert len(lengths) > 3  # rows really finished at different steps
    for c in out:
        if c.finish_reason == "eos":
            assert 3 <= c.token_ids[-1] < 13 and not any(3 <= x < 13 for x in c.token_ids[:-1])
        else:
            assert c.finish_reason == "length" and len(c.token_ids) == 9
    # removing rows early changes nothing: compare with never compacting
    lazy = EngineGenerator(model, tok, eos_token_ids=list(range(3, 13)), compact_fraction=2.0)
    assert [c.token_ids for c in lazy.generate(prompts, SamplingParams(max_new_tokens=9, n=4, seed=3))] == \
        [c.token_ids for c in out]


# ----------------------------------------------------------------------------- interface details


def test_factory_and_errors(model, tok):
    gen = get_generator("engine", model, [EOS])
    out = gen.generate([[5, 6]], SamplingParams(max_new_tokens=3, n=2))
    assert [c.text for c in out] == ["", ""] and all(len(c.token_ids) >= 1 for c in out)
    assert gen.generate([], SamplingParams()) == []
    with pytest.raises(AhaError, match="did you mean 'engine'"):
        get_generator("engin", model, tok)
    with pytest.raises(AhaError, match="stop strings need a tokenizer"):
        gen.generate([[5]], SamplingParams(stop=["a"]))
    with pytest.raises(AhaError, match="empty prompt"):
        gen.generate([[]], SamplingParams())
    with pytest.raises(AhaError, match="top_p"):
        gen.generate([[5]], SamplingParams(top_p=0.0))
    with pytest.raises(AhaError, match="mode"):
        get_generator("engine", model, tok, mode="paged")


def test_eos_ids_from_tokenizer_and_model(model, tok):
    # end-of-turn token + tokenizer EOS + the model's generation_config EOS (1 here)
    assert EngineGenerator(model, tok).eos_ids == [EOS, END]


def test_training_mode_is_restored(tok):
    model = make_model().train()
    EngineGenerator(model, tok).generate([[4, 5]], SamplingParams(max_new_tokens=2))
    assert model.training


def test_bf16_runs_and_is_deterministic(tok):
    model = make_model().to(torch.bfloat16)
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS])
    prompts = random_prompts([5, 3])
    a = gen.generate(prompts, SamplingParams(max_new_tokens=8, n=2, seed=5))
    b = gen.generate(prompts, SamplingParams(max_new_tokens=8, n=2, seed=5))
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert all(0 <= x < VOCAB for c in a for x in c.token_ids)
    assert all(math.isfinite(x) and x <= 0 for c in a for x in c.logprobs)


def test_lora_model_matches_its_base(tok):
    from peft import LoraConfig, get_peft_model

    base = make_model()
    prompts = random_prompts([5, 3])
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    expected = [c.token_ids for c in EngineGenerator(base, tok).generate(prompts, params)]
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))  # B = 0: no change
    gen = EngineGenerator(peft_model, tok)
    assert gen.mode == "native"
    assert [c.token_ids for c in gen.generate(prompts, params)] == expected


def lora_model(seed: int = 0, **config):
    """make_model() with LoRA on every projection and non-zero B (peft starts B at zero)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_model(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                    target_modules="all-linear", **config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.train()  # as in training: dropout on; generation must switch it off


@pytest.mark.parametrize("mode", ["native", "cascade"])
def test_lora_adapters_decode_like_generate(tok, mode):
    # native: the adapters merged into the step's weight copies; cascade: the peft model's own forward
    model = lora_model()
    prompts = random_prompts([5, 2, 9])
    expected = hf_greedy(model.eval(), prompts, [EOS], 12)
    model.train()
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS], mode=mode)
    out = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12, n=2))
    assert [c.token_ids for c in out] == [expected[c.prompt_index] for c in out]
    assert model.training  # restored
    with model.disable_adapter():
        assert hf_greedy(model.eval(), prompts, [EOS], 12) != expected  # the adapters do change the output


def test_lora_updates_between_calls_are_seen_by_the_native_step(tok):
    model = lora_model()
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS])
    assert gen.mode == "native"
    prompts = random_prompts([5, 3])
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    before = [c.token_ids for c in gen.generate(prompts, params)]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.add_(torch.randn_like(p) * 0.5)
    after = [c.token_ids for c in gen.generate(prompts, params)]
    assert after != before
    assert after == hf_greedy(model.eval(), prompts, [EOS], 10)


def test_adapter_variants_fall_back_to_the_peft_forward(tok):
    # DoRA rescales the merged weight by a learned magnitude: not a plain delta, so not merged natively
    model = lora_model(use_dora=True)
    assert EngineGenerator(model, tok, eos_token_ids=[EOS]).mode == "cascade"


# ----------------------------------------------------------------------------- decode-step internals


def reference_attention(q, pk, pv, plen, row_unique, key, value):
    """Per-row attention written out plainly: row b (prompt u) attends to the last plen[u] positions of
    prompt u's keys (left padding) followed by its own generated keys. q: (B, Hk, G, D), scaled."""
    out = torch.empty_like(q)
    for b, u in enumerate(row_unique):
        P = pk.shape[2]
        k = torch.cat([pk[u, :, P - plen[u]:], key[b]], dim=1)  # (Hk, L, D)
        v = torch.cat([pv[u, :, P - plen[u]:], value[b]], dim=1)
        for h in range(q.shape[1]):
            out[b, h] = torch.softmax(q[b, h] @ k[h].T, dim=-1) @ v[h]
    return out


@pytest.mark.parametrize("row_unique", [
    [0, 0, 1, 1, 2, 2],   # every prompt has the same number of rows, in order: the dense grid
    [0, 0, 0, 1, 2, 2],   # groups of different sizes
    [0, 2, 2],            # prompt 1 has no live row left
])
def test_cascade_core_equals_per_row_attention(row_unique):
    from aha.rollout.cascade import SharedPrefix, cascade_core

    g = torch.Generator().manual_seed(0)
    U, Hk, G, D, P, T = 3, 2, 2, 8, 5, 3
    plen = [5, 2, 4]  # prompts of different lengths, left-padded to P
    pk, pv = torch.randn(U, Hk, P, D, generator=g), torch.randn(U, Hk, P, D, generator=g)
    valid = torch.tensor([[i >= P - n for i in range(P)] for n in plen])  # (U, P)
    bias = torch.zeros(U, 1, 1, P).masked_fill_(~valid[:, None, None, :], float("-inf"))
    B = len(row_unique)
    q = torch.randn(B, Hk, G, D, generator=g) * D ** -0.5
    key, value = torch.randn(B, Hk, T, D, generator=g), torch.randn(B, Hk, T, D, generator=g)
    prefix = SharedPrefix([pk], [pv], bias)
    prefix.assign(row_unique, torch.device("cpu"))
    assert prefix.dense == (row_unique == [0, 0, 1, 1, 2, 2])
    out = cascade_core(q, key, value, prefix, 0)
    torch.testing.assert_close(out, reference_attention(q, pk, pv, plen, row_unique, key, value),
                               rtol=1e-5, atol=1e-6)


def test_cascade_core_hand_checked():
    # one KV head, one query head, D = 1: scores are plain products, easy to follow by hand.
    # prompt 0 = keys [1, pad], prompt 1 = keys [0, 2]; row 0 (prompt 0) and row 1 (prompt 1)
    # each have one generated key 1 with value 10.
    from aha.rollout.cascade import SharedPrefix, cascade_core

    pk = torch.tensor([[[[9.0], [1.0]]], [[[0.0], [2.0]]]])  # (U=2, 1, P=2, 1); 9 is padding
    pv = torch.tensor([[[[-5.0], [4.0]]], [[[6.0], [8.0]]]])
    bias = torch.tensor([[[[float("-inf"), 0.0]]], [[[0.0, 0.0]]]])  # prompt 0 is left-padded by one
    prefix = SharedPrefix([pk], [pv], bias)
    prefix.assign([0, 1], torch.device("cpu"))
    q = torch.tensor([[[[1.0]]], [[[1.0]]]])  # (B=2, 1, 1, 1)
    key = torch.ones(2, 1, 1, 1)
    value = torch.full((2, 1, 1, 1), 10.0)
    out = cascade_core(q, key, value, prefix, 0).flatten().tolist()
    # row 0: keys [1 | 1] -> weights 1/2, 1/2 -> (4 + 10) / 2 = 7
    # row 1: keys [0, 2 | 1] -> weights e^0, e^2, e^1 over their sum
    e = [1.0, math.exp(2), math.exp(1)]
    assert out == pytest.approx([7.0, (6 * e[0] + 8 * e[1] + 10 * e[2]) / sum(e)], rel=1e-6)


def test_uniform_table_equals_step_uniforms():
    keys = row_keys(9, torch.tensor([0, 1, 1, 4]), torch.tensor([0, 0, 3, 2]))
    table = uniform_table(keys, 20)
    assert table.shape == (4, 20)
    for t in range(20):
        assert torch.equal(table[:, t], step_uniforms(keys, t))
    assert torch.equal(uniform_table(keys, 5, start=13), table[:, 13:18])  # a later block


def test_uniforms_drawn_in_blocks_give_the_same_samples(model, tok, monkeypatch):
    # the decode loop draws its uniforms a block of steps at a time; rows that finish early leave
    # the batch between blocks, so a block size of 3 crosses many block edges and drops
    import aha.rollout.engine as engine

    prompts = random_prompts([6, 3, 8])
    params = SamplingParams(max_new_tokens=40, n=3, seed=5)  # three rows end at 12-15 tokens
    whole = EngineGenerator(model, tok, eos_token_ids=[EOS]).generate(prompts, params)
    monkeypatch.setattr(engine, "_UNIFORM_BLOCK", 3)
    blocks = EngineGenerator(model, tok, eos_token_ids=[EOS]).generate(prompts, params)
    assert [x.token_ids for x in blocks] == [x.token_ids for x in whole]
    assert [x.logprobs for x in blocks] == [x.logprobs for x in whole]


def test_onednn_linear_matches_f_linear():
    from aha.rollout.native import _lin, _lin_spec, _onednn_usable

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    if not _onednn_usable(w):
        pytest.skip("oneDNN linear not available in this torch build")
    for rows in (1, 3, 64):
        x = torch.randn(rows, 24, generator=g)
        for bias in (b, None):
            torch.testing.assert_close(_lin(x, _lin_spec(w, bias, True)), torch.nn.functional.linear(x, w, bias),
                                       rtol=1e-5, atol=1e-5)
    assert not _onednn_usable(w.to(torch.bfloat16))  # float32 only


def test_native_prefill_matches_the_model_forward(model):
    # left-padded prompts of different lengths: last-position logits and the prompt keys/values
    from aha.rollout.kv_cache import SlabCache

    gen = EngineGenerator(model, eos_token_ids=[EOS])
    prompts = random_prompts([6, 3, 1])
    P = 6
    ids = torch.tensor([[PAD] * (P - len(p)) + p for p in prompts])
    valid = torch.tensor([[i >= P - len(p) for i in range(P)] for p in prompts])
    pos = (torch.arange(P)[None] - (P - valid.sum(1, keepdim=True))).clamp(min=0)
    with torch.inference_mode():
        gen._native.refresh()
        logits, keys, values = gen._native.prefill(ids, pos, gen._allowed(valid, P))
        cache = SlabCache(gen.num_layers, P)
        ref = model(input_ids=ids, attention_mask=valid.long(), position_ids=pos, past_key_values=cache,
                    use_cache=True).logits[:, -1].float()
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    for layer, k, v in zip(cache.layers, keys, values):
        m = valid[:, None, :, None]  # padded positions hold whatever; they are masked out later
        torch.testing.assert_close(torch.where(m, k, 0.0), torch.where(m, layer.keys, 0.0), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.where(m, v, 0.0), torch.where(m, layer.values, 0.0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["no_onednn", "unfused", "no_kernel"])
def test_native_fallbacks_equal_generate(tok, monkeypatch, variant):
    # the F.linear path of the native step (other devices and dtypes, builds without oneDNN), the
    # separate q/k/v and gate/up matmuls of models too large for fused weight copies, and the PyTorch
    # attention used where the compiled CPU kernel is unavailable (other devices, no C compiler)
    import aha.rollout.native as native
    from aha.rollout.cpu_kernels import cascade_kernels

    kernels_here = cascade_kernels() is not None
    packs_here = native._onednn_usable(torch.zeros(1))
    if variant == "no_onednn":
        monkeypatch.setitem(native._ONEDNN_STATE, "ok", False)
    elif variant == "unfused":
        monkeypatch.setattr(native, "_FUSE_MAX_PARAMS", 0)
    else:
        monkeypatch.setattr(native, "cascade_kernels", lambda: None)
    model = make_model()
    prompts = random_prompts([5, 2, 9])
    expected = hf_greedy(model, prompts, [EOS], 12)
    gen = EngineGenerator(model, tok, eos_token_ids=[EOS], initial_capacity=4)
    out = gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12, n=2))
    assert gen._native.packed == (variant == "no_kernel" and packs_here)
    assert (gen._native.kernels is not None) == (variant != "no_kernel" and kernels_here)
    assert [c.token_ids for c in out] == [expected[c.prompt_index] for c in out]


def test_compiled_attention_is_used_and_matches_the_pytorch_path(model, tok, monkeypatch):
    # sampled rows that finish at different steps (compaction, buffer growth): the kernel path and the
    # PyTorch cascade path give the same tokens and nearly the same log-probabilities
    import aha.rollout.native as native
    from aha.rollout.cpu_kernels import cascade_kernels

    if cascade_kernels() is None:
        pytest.skip("no compiled CPU kernel on this machine (no C compiler or OpenMP)")
    prompts = random_prompts([4, 6, 2, 8])
    params = SamplingParams(max_new_tokens=12, n=4, seed=5)
    kwargs = dict(eos_token_ids=list(range(3, 9)), initial_capacity=2, compact_fraction=0.1)
    fast = EngineGenerator(model, tok, **kwargs)
    with_kernel = fast.generate(prompts, params)
    assert fast._native.kernels is not None
    monkeypatch.setattr(native, "cascade_kernels", lambda: None)
    plain = EngineGenerator(model, tok, **kwargs).generate(prompts, params)
    assert [c.token_ids for c in with_kernel] == [c.token_ids for c in plain]
    assert len({len(c.token_ids) for c in plain}) > 3
    for a, b in zip(with_kernel, plain):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_a_sliding_window_model_decodes_with_the_plain_transformers_cache():
    # Mistral keeps its window in `sliding_window` (no layer_types): the engine's own caches assume
    # full attention, so such a model must get the dynamic (transformers cache) mode
    import transformers

    config = transformers.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, vocab_size=64,
                                        sliding_window=8)
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert EngineGenerator(model, None, eos_token_ids=[1], pad_token_id=0).mode == "dynamic"
