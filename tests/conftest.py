"""Shared fixtures: a tiny model folder built once per test session (no downloads anywhere)."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the engine's compiled CPU kernel is built into the temp folder (reused by later runs: the file name
# hashes the source and compiler), not the user's ~/.cache/aha
_user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
os.environ.setdefault("AHA_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"aha-test-cache-{_user}"))

TINY_CORPUS = [
    "Ann says that Bob is a knight. Bob says that Ann is a knave. Who is a knight and who is a knave?",
    "<think>Assume Ann is a knight. Then Bob is a knight. Bob says Ann is a knave: contradiction. "
    "Reconsider: Ann is a knave.</think><answer>(1) Ann is a knave\n(2) Bob is a knight</answer>",
    "What is 12 + 34 * 2? <think>34 * 2 = 68. 12 + 68 = 80.</think><answer>80</answer> \\boxed{80}",
    "You are a helpful assistant. Reason step by step, then answer.",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder with a tiny Qwen2 model (hidden 64, 2 layers) and a ChatML BPE tokenizer (vocab ~400),
    loadable with AutoModelForCausalLM / AutoTokenizer."""
    from aha.models import init_model

    out = tmp_path_factory.mktemp("tiny_model")
    init_model(out, size="nano", corpus=TINY_CORPUS, vocab_size=400, seed=0, hidden_size=64,
               num_hidden_layers=2, intermediate_size=128)
    return out


# ----------------------------------------------------------------------------- a tiny LM for the rollout tests

# a word-level vocabulary whose pieces concatenate, so stop strings can span tokens
PIECES = ["<pad>", "<eos>", "<|im_end|>"] + [chr(ord("a") + i) for i in range(26)] + \
    ["</ans", "wer>", "</answer>", "ab", "ba", " ", "\n", "<", ">", "xyz", "é", "!", "?", "0", "1", "2", "3", "4", "5"]
VOCAB = len(PIECES)  # 48
PAD, EOS, END = 0, 1, 2


def make_tokenizer():
    """A word-level tokenizer whose decoder concatenates pieces (so strings can span tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({p: i for i, p in enumerate(PIECES)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>",
                                   additional_special_tokens=["<|im_end|>"])


def make_model(seed: int = 0):
    """A tiny random Qwen2 (init range 0.2, so greedy output is not just the last token repeated)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=True,
                      initializer_range=0.2, eos_token_id=EOS, pad_token_id=PAD)
    return Qwen2ForCausalLM(cfg).eval()


def random_prompts(lengths: list[int], seed: int = 1) -> list[list[int]]:
    """Prompts of the given lengths of random non-special tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a loaded machine two threads spin against each other.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    """The tiny word-level tokenizer (`make_tokenizer`)."""
    return make_tokenizer()


@pytest.fixture(scope="module")
def model():
    """The tiny random Qwen2 (`make_model()`), in eval mode."""
    return make_model()
