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
