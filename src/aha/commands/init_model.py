"""`aha init-model`: a tokenizer trained on task text plus a randomly initialised Qwen2 model."""

from __future__ import annotations

import argparse
from pathlib import Path

from aha.errors import AhaError

HELP = "build a tiny model from scratch: tokenizer trained on task text + random Qwen2 weights"
DESCRIPTION = """Train a byte-level BPE tokenizer (ChatML special tokens and chat template, <|im_end|> as EOS)
on text from a task or from text files, build a Qwen2-architecture model of a named size with random
weights, and save both with save_pretrained into --out (loadable with plain transformers).

Sizes: nano (hidden 128, 4 layers, ~0.9M params), tiny (hidden 256, 4 layers, ~3.4M),
small (hidden 512, 8 layers, ~25M); --hidden/--layers/... override single dimensions.

example:  aha init-model --size tiny --task knights-knaves --out models/kk-tiny"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default="tiny", help="nano | tiny | small (default tiny)")
    p.add_argument("--task", default=None,
                   help="task whose text trains the tokenizer (default: knights-knaves and arithmetic)")
    p.add_argument("--corpus", nargs="+", default=None, metavar="FILE",
                   help="text files to train the tokenizer on instead (one document per line)")
    p.add_argument("--corpus-size", type=int, default=2000, help="documents to draw from --task (default 2000)")
    p.add_argument("--vocab-size", type=int, default=2000, help="tokenizer vocabulary size (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the corpus (default 0)")
    p.add_argument("--hidden", type=int, default=None, help="override hidden size")
    p.add_argument("--layers", type=int, default=None, help="override number of layers")
    p.add_argument("--heads", type=int, default=None, help="override attention heads")
    p.add_argument("--kv-heads", type=int, default=None, help="override key/value heads")
    p.add_argument("--intermediate", type=int, default=None, help="override MLP intermediate size")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from aha.models import count_parameters, init_model

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise AhaError(f"{out} is not empty; pass --force to overwrite it")
    if args.vocab_size < 300:
        raise AhaError("--vocab-size must be at least 300 (256 byte tokens plus special tokens)")
    if args.corpus:
        texts = []
        for name in args.corpus:
            path = Path(name)
            if not path.is_file():
                raise AhaError(f"corpus file {name!r} does not exist")
            texts.extend(line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line)
    elif args.task:
        from aha.tasks import get_task

        texts = list(get_task(args.task).corpus(args.corpus_size, args.seed))
    else:
        texts = default_corpus(args.corpus_size, args.seed)
    model, tokenizer = init_model(
        out, size=args.size, corpus=texts, vocab_size=args.vocab_size, seed=args.seed,
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate,
    )
    cfg = model.config
    print(f"wrote {out}: Qwen2 hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
          f"{cfg.num_attention_heads} heads ({cfg.num_key_value_heads} kv), vocab {len(tokenizer)}, "
          f"{count_parameters(model) / 1e6:.2f}M parameters")
    return 0


def default_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Text for a tokenizer when no task is named: K&K puzzles and arithmetic if available, else digits."""
    from aha.tasks import get_task

    texts: list[str] = []
    for name in ("knights-knaves", "arithmetic"):
        try:
            texts.extend(get_task(name).corpus(n, seed))
        except (AhaError, ImportError, TypeError):
            continue
    if not texts:
        texts = [" ".join(str((i * 7919 + j) % 1000) for j in range(20)) for i in range(n)]
    return texts
