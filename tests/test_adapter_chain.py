"""Adapter folders whose base is itself an adapter folder (a run started from another run's
adapter): the whole chain is merged in order, and relative base paths load from any directory."""

from __future__ import annotations

import json
import os

import pytest
import torch

from aha.cli import main
from aha.config import LoraConfig, ModelConfig
from aha.errors import AhaError
from aha.models import adapter_base, adapter_chain, load_model
from aha.train.common import load_policy

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


def make_adapter(base_dir, out, name_in_config: str, seed: int, targets=("q_proj", "v_proj")):
    """A LoRA adapter with random (nonzero) A and B on the full model at `base_dir`, saved to `out`
    with `base_model_name_or_path` = `name_in_config`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    cfg = PeftLoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False)
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.save_pretrained(str(out))
    path = out / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = name_in_config
    path.write_text(json.dumps(data))
    return out


def expected_logits(base_dir, adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    for a in adapters:
        model = PeftModel.from_pretrained(model, str(a)).merge_and_unload()
    with torch.no_grad():
        return model.eval()(IDS).logits


def logits(model):
    with torch.no_grad():
        return model.eval()(IDS).logits


@pytest.fixture()
def chain(tiny_model_dir, tmp_path):
    a = make_adapter(tiny_model_dir, tmp_path / "run_a" / "model", str(tiny_model_dir), seed=1)
    # B's base is A, stored relative to the working directory B was trained in (tmp_path)
    b = make_adapter(tiny_model_dir, tmp_path / "run_b" / "model", "run_a/model", seed=2,
                     targets=("k_proj", "o_proj", "v_proj"))
    return a, b


def test_chain_is_merged_in_order(tiny_model_dir, tmp_path, chain, monkeypatch):
    a, b = chain
    monkeypatch.chdir(tmp_path)
    base, adapters = adapter_chain(b)
    assert base == str(tiny_model_dir) and [p.resolve() for p in adapters] == [a.resolve(), b.resolve()]
    want = expected_logits(tiny_model_dir, [a, b])
    dropped = expected_logits(tiny_model_dir, [b])
    assert not torch.allclose(want, dropped, atol=1e-4)  # A's delta matters
    got = logits(load_model(b, device="cpu", dtype="float32"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    model, _ = load_policy(ModelConfig(path=str(b), device="cpu", dtype="float32"), LoraConfig(enabled=False))
    torch.testing.assert_close(logits(model), want, atol=1e-5, rtol=1e-5)
    # bf16: the earlier adapters are merged in fp32, then the weights cast once
    bf16 = load_model(b, device="cpu", dtype="bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert (logits(bf16).float() - want).abs().max() < 0.1
    # `aha export` of the run writes base + A + B (the tokenizer comes from the root of the chain)
    from transformers import AutoModelForCausalLM

    assert main(["export", "run_b", "--out", "exported"]) == 0
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "exported"), dtype=torch.float32)
    torch.testing.assert_close(logits(exported), want, atol=1e-5, rtol=1e-5)


def test_relative_base_loads_from_any_directory(tiny_model_dir, tmp_path, chain, monkeypatch):
    a, b = chain
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # "run_a/model" does not exist from here: not found as given, so not yet resolvable
    assert adapter_base(b) == "run_a/model"
    # stored relative to the adapter folder itself: found from any working directory
    data = json.loads((b / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = os.path.relpath(a, b)
    (b / "adapter_config.json").write_text(json.dumps(data))
    assert os.path.samefile(adapter_base(b), a)
    got = logits(load_model(b, device="cpu", dtype="float32"))
    torch.testing.assert_close(got, expected_logits(tiny_model_dir, [a, b]), atol=1e-5, rtol=1e-5)


def test_new_adapter_names_the_cold_start_folder(tiny_model_dir, tmp_path, chain, monkeypatch):
    """A LoRA run started from adapter B saves an adapter whose base is B (absolute), so loading it
    back gives base + A + B + the new delta, from any working directory."""
    a, b = chain
    data = json.loads((b / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = os.path.relpath(a, b)  # B's own base: relative to B
    (b / "adapter_config.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    model, _ = load_policy(ModelConfig(path="run_b/model", device="cpu", dtype="float32"),
                           LoraConfig(enabled=True, r=2, alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    want = logits(model)
    out = tmp_path / "run_c" / "model"
    model.save_pretrained(str(out))
    saved = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert os.path.isabs(saved) and os.path.samefile(saved, b)
    monkeypatch.chdir(tmp_path / "run_c")
    base, adapters = adapter_chain(out)
    assert base == str(tiny_model_dir) and len(adapters) == 3
    torch.testing.assert_close(logits(load_model(out, device="cpu", dtype="float32")), want, atol=1e-5, rtol=1e-5)


def test_loop_refused(tiny_model_dir, tmp_path):
    a = make_adapter(tiny_model_dir, tmp_path / "a", str(tmp_path / "b"), seed=1)
    make_adapter(tiny_model_dir, tmp_path / "b", str(a), seed=2)
    with pytest.raises(AhaError, match="loop"):
        load_model(a, device="cpu", dtype="float32")
