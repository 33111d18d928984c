"""The vLLM backend against the real vLLM (its CPU build): run by `make test-vllm` in its own environment.

Skipped wherever vLLM is not installed. The models have head size 32 (vLLM's CPU attention has no
kernel for the 16 of the other tests' tiny models). Every generator here is built with the same engine
options, so they share one vLLM engine (`vllm_backend._ENGINES`) and the module starts it once.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("vllm")

from aha.errors import AhaError  # noqa: E402
from aha.rollout import SamplingParams, get_generator  # noqa: E402
from aha.rollout.vllm_backend import VLLMGenerator, checkpoint_weights  # noqa: E402
from aha.train.logprobs import completion_logprobs  # noqa: E402

from .conftest import EOS, PAD, TINY_CORPUS, VOCAB, make_tokenizer, random_prompts  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("one_thread")]

# small KV cache, no torch.compile: the tests start the engine in seconds
OPTIONS = dict(enforce_eager=True, kv_cache_gb=0.25, max_model_len=512)


def make_model32(seed: int = 0):
    """A tiny random Qwen2 over the word-level test vocabulary, head size 32 (hidden 64, 2 heads)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=128, tie_word_embeddings=True,
                      initializer_range=0.2, eos_token_id=EOS, pad_token_id=PAD)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tok32():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model32():
    return make_model32()


def vllm_gen(model, tok, **kw):
    return get_generator("vllm", model, tok, **OPTIONS, **kw)


def engine_gen(model, tok, **kw):
    return get_generator("engine", model, tok, **kw)


def ids(completions):
    return [c.token_ids for c in completions]


def test_greedy_equals_the_engine(model32, tok32):
    prompts = random_prompts([5, 2, 9, 14])
    params = SamplingParams(temperature=0.0, max_new_tokens=24, n=2)
    out = vllm_gen(model32, tok32, eos_token_ids=[EOS]).generate(prompts, params)
    ref = engine_gen(model32, tok32, eos_token_ids=[EOS]).generate(prompts, params)
    assert [(c.prompt_index, c.sample_index) for c in out] == [(i, j) for i in range(4) for j in range(2)]
    assert ids(out) == ids(ref)
    assert [c.finish_reason for c in out] == [c.finish_reason for c in ref]
    assert [c.text for c in out] == [c.text for c in ref]
    assert len({tuple(t) for t in ids(out)}) == 4  # the prompts lead to different completions
    for a, b in zip(out, ref):  # greedy log-probs: log_softmax of the raw logits in both
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_logprobs_are_the_trainers_at_temperature(model32, tok32):
    prompts = random_prompts([6, 11, 3])
    out = vllm_gen(model32, tok32, eos_token_ids=[EOS]).generate(
        prompts, SamplingParams(temperature=0.7, max_new_tokens=16, n=3, seed=3))
    rows = [prompts[c.prompt_index] for c in out]
    for temperature, close in [(0.7, True), (1.0, False)]:  # post-temperature: the sampled distribution's
        lp, _, mask = completion_logprobs(model32, rows, ids(out), PAD, temperature)  # (B, C) each
        ours = torch.nn.utils.rnn.pad_sequence([torch.tensor(c.logprobs) for c in out], batch_first=True)  # (B, C)
        diff = float(((lp.detach() - ours).abs() * mask).max())
        assert (diff < 1e-4) == close, (temperature, diff)


def test_sampling_is_seeded_and_leaves_the_process_alone(model32, tok32):
    gen = vllm_gen(model32, tok32, eos_token_ids=[EOS])
    prompts = random_prompts([4, 8])
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=4, seed=11)
    gen.generate(prompts, params)  # the first call pushes weights and self-checks
    rng = torch.get_rng_state()
    first = gen.generate(prompts, params)
    assert torch.equal(torch.get_rng_state(), rng)  # the trainer's RNG stream is untouched
    assert ids(gen.generate(prompts, params)) == ids(first)
    assert ids(gen.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=12, n=4, seed=12))) != ids(first)
    assert len({tuple(t) for t in ids(first)}) > 2  # samples of a group differ
    # vLLM's CPU worker replaces torch.set_num_threads with a no-op; the backend puts it back
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)


def test_a_sync_pushes_the_new_weights(model32, tok32):
    model = copy.deepcopy(model32)
    gen = vllm_gen(model, tok32, eos_token_ids=[EOS])
    prompts = random_prompts([5, 9, 3], seed=4)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    before = gen.generate(prompts, greedy)
    version = gen.weight_version
    with torch.no_grad():  # an "optimizer step"
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    assert ids(gen.generate(prompts, greedy)) == ids(before)  # no sync yet: vLLM still has the old weights
    gen.sync_weights(model)
    after = gen.generate(prompts, greedy)
    assert gen.weight_version == version + 1
    assert ids(after) != ids(before)
    assert ids(after) == ids(engine_gen(model, tok32, eos_token_ids=[EOS]).generate(prompts, greedy))
    emb = gen.llm.apply_model(lambda m: m.model.embed_tokens.weight.detach().clone())[0]  # (V padded, H)
    assert torch.equal(emb[:VOCAB], model.model.embed_tokens.weight)  # the very values, not close ones
    sampled = gen.generate(prompts, SamplingParams(temperature=0.8, max_new_tokens=12, n=2, seed=1))
    lp, _, mask = completion_logprobs(model, [prompts[c.prompt_index] for c in sampled], ids(sampled), PAD, 0.8)
    ours = torch.nn.utils.rnn.pad_sequence([torch.tensor(c.logprobs) for c in sampled], batch_first=True)
    assert float(((lp.detach() - ours).abs() * mask).max()) < 1e-4


def test_self_check_catches_weights_that_did_not_arrive(model32, tok32):
    model = copy.deepcopy(model32)
    gen = vllm_gen(model, tok32, eos_token_ids=[EOS], check_every=1)
    prompts = random_prompts([5, 9, 3], seed=5)
    gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8))
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(-1.0)  # changed behind the generator's back (no sync)
    with pytest.raises(AhaError, match="do not match the trainer's"):
        gen.self_check(prompts)
    gen.sync_weights(model)
    gen.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8))  # pushes, checks again: passes
    assert gen._checked_at == gen.weight_version


def test_lora_sync_merges_and_pushes_only_the_adapted_modules(model32, tok32):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model32), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # peft starts B at zero; make the adapter change the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    gen = vllm_gen(peft_model, tok32, eos_token_ids=[EOS])
    prompts = random_prompts([6, 10], seed=6)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    before = gen.generate(prompts, greedy)
    assert ids(before) == ids(engine_gen(peft_model, tok32, eos_token_ids=[EOS]).generate(prompts, greedy))
    assert ids(before) != ids(engine_gen(model32, tok32, eos_token_ids=[EOS]).generate(prompts, greedy))
    with torch.no_grad():  # a step moves the adapter only
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    gen.sync_weights(peft_model)
    # q_proj and v_proj changed; vLLM packs them with k_proj into qkv_proj, so q, k, v (weights and
    # biases) of both layers go: 12 tensors of the model's 26
    assert len(checkpoint_weights(peft_model)) == 26
    assert gen.push_weights() == 12
    after = gen.generate(prompts, greedy)
    assert ids(after) != ids(before)
    assert ids(after) == ids(engine_gen(peft_model, tok32, eos_token_ids=[EOS]).generate(prompts, greedy))


def test_finish_reasons_eos_stop_and_length(model32, tok32):
    prompts = random_prompts([5, 7, 4], seed=4)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    free = ids(engine_gen(model32, tok32, eos_token_ids=[EOS]).generate(prompts, greedy))
    # a token in the middle of the second completion that the first does not hold before its stop
    # string becomes an EOS; a stop string spans tokens 3 and 4 of the first
    end = next(t for t in free[1][2:] if t not in free[0][:5])
    eos_ids = [EOS, end]
    stop_text = tok32.decode(free[0][3:5])
    params = SamplingParams(temperature=0.0, max_new_tokens=16, stop=[stop_text])
    out = vllm_gen(model32, tok32, eos_token_ids=eos_ids).generate(prompts, params)
    ref = engine_gen(model32, tok32, eos_token_ids=eos_ids).generate(prompts, params)
    assert [c.finish_reason for c in out][:2] == ["stop", "eos"]
    assert {c.finish_reason for c in out} <= {"eos", "stop", "length"}
    assert [c.finish_reason for c in out] == [c.finish_reason for c in ref]
    assert ids(out) == ids(ref) and [c.text for c in out] == [c.text for c in ref]
    assert out[0].text.endswith(stop_text) and out[1].token_ids[-1] == end
    capped = vllm_gen(model32, tok32, eos_token_ids=[EOS]).generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=3))
    assert [c.finish_reason for c in capped] == ["length"] * 3 and all(len(c.token_ids) == 3 for c in capped)


def test_waves_split_rows_and_keep_greedy_completions(model32, tok32):
    prompts = random_prompts([5, 8, 3], seed=7)
    params = SamplingParams(temperature=0.0, max_new_tokens=10, n=2)
    whole = vllm_gen(model32, tok32, eos_token_ids=[EOS]).generate(prompts, params)
    waved = VLLMGenerator(model32, tok32, eos_token_ids=[EOS], max_batch_rows=3, **OPTIONS).generate(prompts, params)
    assert ids(waved) == ids(whole)
    assert [(c.prompt_index, c.sample_index) for c in waved] == [(i, j) for i in range(3) for j in range(2)]


def test_a_request_over_max_model_len_is_a_clear_error(model32, tok32):
    gen = vllm_gen(model32, tok32, eos_token_ids=[EOS])
    with pytest.raises(AhaError, match="exceeds vLLM's max_model_len 512"):
        gen.generate(random_prompts([500]), SamplingParams(temperature=0.0, max_new_tokens=16))


def test_unsupported_head_size_is_a_clear_error(tok32):
    from .conftest import make_model

    with pytest.raises(AhaError, match="head sizes"):
        vllm_gen(make_model(), tok32)  # hidden 64 over 4 heads: head size 16


# ----------------------------------------------------------------------------- the trainer with vLLM


@pytest.fixture(scope="module")
def model32_dir(tmp_path_factory):
    """An `aha init-model` folder with head size 32 (the trainer's chat template and BPE tokenizer)."""
    from aha.models import init_model

    out = tmp_path_factory.mktemp("model32")
    init_model(out, size="nano", corpus=TINY_CORPUS, vocab_size=400, seed=0, hidden_size=64, num_hidden_layers=2,
               intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, initializer_range=0.2)
    return out


@pytest.mark.slow
def test_grpo_with_vllm_equals_the_engine_under_greedy_sampling(tmp_path, model32_dir):
    from aha.cli import main
    from aha.runs import read_jsonl

    def run(backend: str):
        out = tmp_path / backend
        args = ["train", f"model.path={model32_dir}", "task.name=tests.toy_task:ToyTask", "task.options={count: 8}",
                "rewards=[{name: 'tests.test_grpo:vowel_share', weight: 1.0}]", "steps=3",
                "batch.prompts_per_step=2", "batch.samples_per_prompt=2", "batch.micro_batch_size=4",
                "rollout.max_new_tokens=12", "rollout.stop=[]", "rollout.temperature=0",
                # greedy groups have no spread, so no advantage: the entropy bonus moves the weights
                "algo.entropy_coef=1.0", "optim.lr=3e-2", "save_rollouts=true", f"rollout.backend={backend}",
                "rollout.vllm_enforce_eager=true", "rollout.vllm_kv_cache_gb=0.25", "rollout.vllm_max_model_len=512",
                "rollout.vllm_check_every=1", f"run.out_dir={out}", "run.progress=false"]
        assert main(args) == 0
        completions = [[json.loads(line)["completion"] for line in
                        (out / "rollouts" / f"step_{s:05d}.jsonl").read_text().splitlines()] for s in (1, 2, 3)]
        return [r["reward/total/mean"] for r in read_jsonl(out / "metrics.jsonl")], completions

    torch.set_num_threads(1)
    engine_rewards, engine_text = run("engine")
    vllm_rewards, vllm_text = run("vllm")
    assert vllm_rewards == engine_rewards
    assert vllm_text == engine_text
    assert engine_text[2] != engine_text[0]  # the weights moved, so vLLM followed the syncs
