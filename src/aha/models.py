"""Models and tokenizers: load from a local folder, build tiny ones from scratch, pick device and dtype.

No weights can be downloaded where aha is developed, so every test and the offline demo get their
model from `init_model`: a byte-level BPE tokenizer trained on a task's own text, with the special
tokens and chat template of a real chat model (ChatML turns, `<|im_end|>` as end of turn and EOS),
and a Qwen2-architecture model of a named size with random weights, saved with `save_pretrained` so
plain transformers loads it back unchanged.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.errors import AhaError

# ChatML, as Qwen2 chat models use it. `{% generation %}` marks assistant tokens so that
# `apply_chat_template(..., return_assistant_tokens_mask=True)` yields the SFT loss mask.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]
# Single tokens, but not "special": they must survive decoding with skip_special_tokens=True.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
# End-of-turn tokens of common chat templates (ChatML, Llama 3, Gemma, Phi-3). A chat model stops
# its reply with these, which are often not the tokenizer's `eos_token`.
END_OF_TURN_TOKENS = (EOS_TOKEN, "<|eot_id|>", "<end_of_turn>", "<|end|>")


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


# Named sizes; parameter counts are for the default 2,000-token vocabulary with tied embeddings.
MODEL_SIZES = {
    "nano": ModelSize(128, 4, 4, 2, 344),  # ~1.0M: the size the CPU demo trains in minutes
    "tiny": ModelSize(256, 4, 4, 2, 688),  # ~3.4M: the benchmark model
    "small": ModelSize(512, 8, 8, 4, 1376),  # ~25M
}


# ----------------------------------------------------------------------------- device and dtype


def resolve_device(device: str = "auto") -> Any:
    """'auto' -> CUDA when available, else CPU; otherwise the named device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise AhaError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AhaError(f"device {device!r} asked for, but CUDA is not available here; use device=cpu")
    return dev


def resolve_dtype(dtype: str, device: Any) -> Any:
    """'auto' -> bfloat16 on CUDA (when supported), float32 elsewhere."""
    import torch

    if dtype == "auto":
        if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise AhaError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(table)}")
    return table[dtype]


# ----------------------------------------------------------------------------- loading


def check_model_folder(path: str | Path) -> Path:
    """Fail with a clear message when `path` is not a usable model or adapter folder."""
    folder = Path(path)
    if not str(path):
        raise AhaError("no model given: set model.path to a local model folder (see `aha init-model`)")
    if not folder.exists():
        raise AhaError(f"model folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise AhaError(f"model path {str(folder)!r} is a file, not a model folder")
    adapter = folder / "adapter_config.json"
    config = folder / "config.json"
    if not adapter.is_file() and not config.is_file():
        raise AhaError(f"{str(folder)!r} holds neither config.json (a model) nor adapter_config.json (a LoRA adapter)")
    for file in (adapter, config):
        if file.is_file():
            try:
                json.loads(file.read_text())
            except json.JSONDecodeError as exc:
                raise AhaError(f"{file} is not valid JSON: {exc}") from exc
    if config.is_file() and not adapter.is_file():
        weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
        if not weights:
            raise AhaError(f"{str(folder)!r} has a config.json but no weights (*.safetensors or *.bin)")
    return folder


def looks_local(path: str | Path) -> bool:
    """True for a path on disk or one written like a path; hub names look like 'org/name'."""
    text = str(path)
    return Path(text).exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(folder: str | Path) -> str | None:
    """The base model an adapter folder names (`base_model_name_or_path`), or None when it names none.

    A local path is taken as given when it exists (relative to the working directory), else relative
    to the adapter folder itself, so an adapter whose base was stored as a relative path loads from
    any working directory. Anything else (a hub name, a missing folder) is returned as written."""
    folder = Path(folder)
    try:
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    if not base:
        return None
    base = str(base)
    given = Path(base).expanduser()
    if given.exists():
        return str(given)
    if not given.is_absolute() and (folder / given).exists():
        return str(folder / given)
    return base


def adapter_chain(path: str | Path) -> tuple[str, list[Path]]:
    """(the full base model, the adapter folders from the one on that base up to `path`) for an
    adapter folder whose base may itself be an adapter folder (a run started from another run's
    adapter). Raises AhaError for an adapter that names no base or a chain that loops."""
    chain: list[Path] = []
    current: str | Path = path
    seen: set[Path] = set()
    while looks_local(current) and is_adapter_folder(current):
        folder = Path(current)
        key = folder.resolve()
        if key in seen:
            names = " -> ".join(str(f) for f in [*reversed(chain), folder])
            raise AhaError(f"the adapter folders {names} name each other as base models in a loop; point "
                           "base_model_name_or_path in adapter_config.json at a full model folder")
        seen.add(key)
        chain.append(folder)
        base = adapter_base(folder)
        if not base:
            raise AhaError(f"{folder}/adapter_config.json does not name its base model "
                           "(base_model_name_or_path)")
        current = base
    return str(current), list(reversed(chain))


def quiet_transformers() -> None:
    """Turn off transformers' per-file progress bars (aha shows its own progress)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(path: str | Path) -> Any:
    """Tokenizer of a model or adapter folder; pad defaults to EOS and padding is on the left."""
    from transformers import AutoTokenizer

    folder = Path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # transformers raises many types for a broken folder
        if is_adapter_folder(folder):
            base = adapter_base(folder)
            if base:
                return load_tokenizer(base)
        raise AhaError(f"cannot load a tokenizer from {str(folder)!r}: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def require_chat_template(tokenizer: Any, path: str | Path) -> None:
    """AhaError unless the tokenizer has a chat template: every prompt aha trains or samples on is
    rendered with it (`aha.prompts.render_prompt`). Check it before the weights load."""
    if not getattr(tokenizer, "chat_template", None):
        raise AhaError(f"the tokenizer of {str(path)!r} has no chat template, which aha needs to render prompts; "
                       "use a chat (instruct) model folder, or add one as chat_template.jinja (or 'chat_template' "
                       "in tokenizer_config.json)")


def load_model(path: str | Path, device: str = "auto", dtype: str = "auto", trainable: bool = False) -> Any:
    """Load a causal LM (or a base + LoRA adapter) from a local folder onto a device.

    A folder with adapter_config.json is loaded as its base model (from `base_model_name_or_path`,
    see `adapter_base`) with the adapter on top (a peft PeftModel). When that base is itself an
    adapter folder (`adapter_chain`), the full model at the root of the chain is loaded and every
    earlier adapter merged into it in order, in fp32, before the last one is put on top. Hub names
    work where a network exists.
    """
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    local = looks_local(path)
    if local:
        check_model_folder(path)
    try:
        if local and is_adapter_folder(path):
            from peft import PeftModel

            base_path, adapters = adapter_chain(path)
            if len(adapters) == 1:
                base = load_model(base_path, device=str(dev), dtype=dtype)
            else:
                # an adapter trained on top of other adapters: the base, then every earlier adapter
                # merged in order, in fp32 (exact), cast once to the asked dtype
                base = load_model(base_path, device=str(dev), dtype="float32")
                for folder in adapters[:-1]:
                    base = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
                base.to(torch_dtype)
                base.name_or_path = str(adapters[-2].resolve())
            model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    except AhaError:
        raise
    except Exception as exc:
        raise AhaError(f"cannot load a causal LM from {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    model.to(dev)
    model.train(trainable)
    return model


def eos_token_ids(tokenizer: Any = None, model: Any = None, explicit: Sequence[int] | None = None) -> list[int]:
    """The token ids that end a completion (sorted), for every generator and model aha builds.

    explicit: when given (non-empty), exactly these ids.
    Otherwise: the chat end-of-turn tokens the tokenizer's vocabulary holds (END_OF_TURN_TOKENS), the
    tokenizer's `eos_token_id`, and the model's `generation_config.eos_token_id` (int or list).
    Raises AhaError when nothing is found: a generator that can never stop early is a configuration bug.
    """
    if explicit:
        return sorted({int(i) for i in explicit})
    ids: set[int] = set()
    if tokenizer is not None:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        for token in END_OF_TURN_TOKENS:
            if token in vocab:
                ids.add(int(vocab[token]))
        if getattr(tokenizer, "eos_token_id", None) is not None:
            ids.add(int(tokenizer.eos_token_id))
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(int(i) for i in cfg_eos)
    if not ids:
        raise AhaError("no end-of-sequence token found: give the tokenizer an eos_token or pass eos_token_ids")
    return sorted(ids)


# ----------------------------------------------------------------------------- tiny models from scratch


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> Any:
    """A byte-level BPE tokenizer (any text encodes; no unknown token) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + TAG_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=["<|im_start|>"],
    )
    # the tag tokens were learnt as whole tokens above; registering them as added (non-special)
    # tokens makes the pre-tokenizer keep them whole in any context
    fast.add_tokens(TAG_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_model(tokenizer: Any, size: str | ModelSize = "tiny", seed: int = 0, max_position_embeddings: int = 4096,
                **overrides: Any) -> Any:
    """A randomly initialised Qwen2ForCausalLM for `tokenizer`, deterministic given `seed`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if isinstance(size, str):
        if size not in MODEL_SIZES:
            raise AhaError(f"unknown model size {size!r}: use one of {', '.join(MODEL_SIZES)} or explicit dims")
        size = MODEL_SIZES[size]
    dims = {**size.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    if dims["hidden_size"] % dims["num_attention_heads"]:
        raise AhaError(f"hidden size {dims['hidden_size']} is not divisible by {dims['num_attention_heads']} heads")
    if dims["num_attention_heads"] % dims["num_key_value_heads"]:
        raise AhaError("attention heads must be a multiple of key/value heads")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        **dims,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def init_model(out_dir: str | Path, size: str = "tiny", corpus: Iterable[str] | None = None,
               vocab_size: int = 2000, seed: int = 0, **dims: Any) -> tuple[Any, Any]:
    """Train a tokenizer, build a model, save both to `out_dir`; returns (model, tokenizer)."""
    texts = list(corpus) if corpus is not None else []
    if not texts:
        raise AhaError("the tokenizer corpus is empty: pass corpus= texts of the task the model is for")
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    model = build_model(tokenizer, size=size, seed=seed, **dims)
    quiet_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return model, tokenizer


def hf_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_keyword(model: Any) -> str:
    """The forward() keyword that takes a key/value cache: `cache` in newer transformers (which
    deprecates `past_key_values`), `past_key_values` in older ones. Looks through a peft wrapper."""
    return _cache_keyword_of(type(hf_model(model)))


@functools.cache
def _cache_keyword_of(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The key/value cache of a forward's output, under either transformers' name for it."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def activation_checkpointing(model: Any) -> bool:
    """Whether the model recomputes activations in backward (transformers then drops the cache of a
    forward that runs in training mode with gradients on)."""
    base = hf_model(model)
    flag = getattr(base, "is_activation_checkpointing", None)
    return bool(flag if flag is not None else getattr(base, "is_gradient_checkpointing", False))


def full_attention_only(config: Any) -> bool:
    """True when every layer of a model with this config keeps a plain, unbounded key/value cache
    (transformers' DynamicLayer): every layer attends to the whole past, with no sliding window,
    chunked or linear attention and no convolution state. Asks transformers' own cache, which
    reads the config the way the model's masks do (Mistral's `sliding_window` included)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - a config transformers cannot build a cache for: not plain
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def plain_kv_cache(model: Any) -> bool:
    """`full_attention_only` for a model (through a peft wrapper): only then does a cache hold
    exactly what a longer sequence would attend to."""
    return full_attention_only(hf_model(model).config)


def active_dropout(model: Any) -> bool:
    """True when a forward in the model's current mode drops activations (training mode with a
    dropout module, LoRA's included, or attention dropout above 0), so two forwards of one input differ."""
    import torch

    if not model.training:
        return False
    if float(getattr(hf_model(model).config, "attention_dropout", 0.0) or 0.0) > 0:
        return True
    kinds = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.AlphaDropout)
    return any(isinstance(m, kinds) and m.p > 0 for m in model.modules())


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
