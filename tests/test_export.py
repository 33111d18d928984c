"""Export: a LoRA adapter merged into its base loads with plain transformers and gives the same logits."""

from __future__ import annotations

import torch

from aha.cli import main
from aha.config import LoraConfig
from aha.models import load_model
from aha.train.common import attach_lora


def test_export_merges_adapter_with_identical_logits(tmp_path, tiny_model_dir):
    base = load_model(tiny_model_dir, device="cpu")
    model = attach_lora(base, LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a trained adapter is not zero
    model.eval()
    adapter = tmp_path / "adapter"
    model.save_pretrained(str(adapter))
    ids = torch.tensor([[1, 5, 9, 12, 40, 7]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    assert main(["export", str(adapter), "--out", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    with torch.no_grad():
        plain = load_model(tiny_model_dir, device="cpu")(input_ids=ids).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter really changed the model


def test_export_refuses_missing_source(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
