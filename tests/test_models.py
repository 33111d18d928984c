"""Models: tiny models from scratch round-trip through plain transformers; loading errors are clear."""

from __future__ import annotations

import json

import pytest
import torch

from aha.errors import AhaError
from aha.models import (
    EOS_TOKEN,
    build_model,
    check_model_folder,
    count_parameters,
    eos_token_ids,
    init_model,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    train_tokenizer,
)

from .conftest import TINY_CORPUS


def test_round_trip_with_plain_transformers(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert model.config.model_type == "qwen2"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == EOS_TOKEN
    ours = load_model(tiny_model_dir, device="cpu")
    for (name, a), (_, b) in zip(model.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name


def test_chat_template_renders_chatml_and_marks_assistant(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Ann says Bob is a knight."},
        {"role": "assistant", "content": "<think>ok</think><answer>(1) Ann is a knight</answer>"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAnn says Bob is a knight.<|im_end|>\n"
        "<|im_start|>assistant\n<think>ok</think><answer>(1) Ann is a knight</answer><|im_end|>\n"
    )
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    # the loss mask covers exactly the assistant reply and its end-of-turn token
    assert tok.decode(kept) == "<think>ok</think><answer>(1) Ann is a knight</answer><|im_end|>"


def test_tags_are_single_tokens_that_survive_decoding(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    assert tok.tokenize("<think>x</think>")[0] == "<think>"
    ids = tok("<answer>7</answer>")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "<answer>7</answer>"
    assert tok.decode(tok("any text: ünïcode ✓")["input_ids"]) == "any text: ünïcode ✓"  # byte-level: no UNK


def test_generation_runs_and_stops_at_eos(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, device="cpu")
    enc = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 4
    assert eos_token_ids(tok, model) == [tok.convert_tokens_to_ids(EOS_TOKEN)]


def test_eos_token_ids_rule():
    # end-of-turn tokens in the vocabulary + the tokenizer's EOS + the model's generation_config EOS
    class Tok:
        eos_token_id = 7

        def get_vocab(self):
            return {"<|im_end|>": 3, "<|eot_id|>": 5, "x": 9}

    class Model:
        class generation_config:  # stands in for the model attribute
            eos_token_id = [11, 3]

    assert eos_token_ids(Tok(), Model()) == [3, 5, 7, 11]
    assert eos_token_ids(Tok(), Model(), explicit=[4, 4]) == [4]
    with pytest.raises(AhaError, match="no end-of-sequence"):
        eos_token_ids(None, None)


def test_same_seed_same_weights_other_seed_differs():
    tok = train_tokenizer(TINY_CORPUS, vocab_size=350)
    a = build_model(tok, "nano", seed=3, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    b = build_model(tok, "nano", seed=3, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    c = build_model(tok, "nano", seed=4, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    # the global RNG is left untouched by model construction
    torch.manual_seed(0)
    x = torch.rand(1)
    torch.manual_seed(0)
    build_model(tok, "nano", seed=9, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    assert torch.equal(torch.rand(1), x)


def test_tokenizer_training_is_deterministic():
    a = train_tokenizer(TINY_CORPUS, vocab_size=350)
    b = train_tokenizer(TINY_CORPUS, vocab_size=350)
    assert a.get_vocab() == b.get_vocab()


def test_named_sizes_have_the_documented_parameter_counts():
    tok = train_tokenizer(TINY_CORPUS, vocab_size=2000)
    # the corpus is small, so the vocabulary stops short of 2000; count without the (tied) embeddings.
    # per layer: q (h*h + h) + k, v (h*kv + kv each, kv = h/2) + o (h*h) + MLP 3*h*i + 2 norms (2h);
    # nano h=128, i=344: 181,760 x 4 layers + final norm 128 = 727,168 (0.98M with a 2,000 vocabulary)
    # tiny h=256, i=688: 726,016 x 4 layers + final norm 256 = 2,904,320 (3.42M with a 2,000 vocabulary)
    for size, expected in [("nano", 727_168), ("tiny", 2_904_320)]:
        model = build_model(tok, size)
        body = count_parameters(model) - model.model.embed_tokens.weight.numel()
        assert body == expected, size


def test_init_model_writes_a_loadable_folder(tmp_path):
    init_model(tmp_path / "m", size="nano", corpus=TINY_CORPUS, vocab_size=300, hidden_size=32,
               num_hidden_layers=1, intermediate_size=64)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert check_model_folder(tmp_path / "m") == tmp_path / "m"


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "does not exist"),  # nothing there
        (lambda p: p.mkdir(), "neither config.json"),  # empty folder
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{bad")), "not valid JSON"),  # broken config
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{}")), "no weights"),  # config only
        (lambda p: p.write_text("x"), "is a file"),  # a file, not a folder
    ],
)
def test_bad_model_folders_give_clear_errors(tmp_path, setup, message):
    path = tmp_path / "model"
    setup(path)
    with pytest.raises(AhaError, match=message):
        load_model(path, device="cpu")


def test_garbage_weights_give_a_clear_error(tmp_path, tiny_model_dir):
    path = tmp_path / "broken"
    path.mkdir()
    (path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AhaError, match="cannot load a causal LM"):
        load_model(path, device="cpu")


def test_device_and_dtype_defaults():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(AhaError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"


def test_config_json_is_plain_qwen2(tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["tie_word_embeddings"] is True


def _small(config_class, **extra):
    import transformers

    return getattr(transformers, config_class)(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, num_key_value_heads=1, vocab_size=64, **extra)


@pytest.mark.parametrize("config_class, extra, expected", [
    ("LlamaConfig", {}, True),  # plain full attention
    ("Qwen2Config", {}, True),
    # Qwen2 windows only the layers from max_window_layers on: with 28, these 2 layers attend fully
    ("Qwen2Config", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 28}, True),
    ("Qwen2Config", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0}, False),
    ("MistralConfig", {"sliding_window": 8}, False),  # no layer_types: the window is read from sliding_window
    ("MistralConfig", {"sliding_window": None}, True),
])
def test_full_attention_only_reads_windows_like_the_model(config_class, extra, expected):
    from aha.models import full_attention_only

    assert full_attention_only(_small(config_class, **extra)) is expected


def test_active_dropout_needs_training_mode_and_a_positive_rate():
    import transformers

    from aha.models import active_dropout

    plain = transformers.AutoModelForCausalLM.from_config(_small("Qwen2Config"))
    assert not active_dropout(plain.train())  # Qwen2 has no dropout modules and attention_dropout 0
    dropping = transformers.AutoModelForCausalLM.from_config(_small("Qwen2Config", attention_dropout=0.1))
    assert active_dropout(dropping.train())
    assert not active_dropout(dropping.eval())  # eval mode drops nothing
