"""Chat prompts as token ids: the one place a task's messages meet a tokenizer's chat template.

Training, distillation, evaluation and the benchmarks all render prompts here, so a prompt the model
is trained on is the prompt it is evaluated on.
"""

from __future__ import annotations

from typing import Any


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], think_preopened: bool = False) -> list[int]:
    """Token ids of a chat prompt ending with the opened assistant turn (and `<think>` if pre-opened)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if think_preopened:
        text += "<think>"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def think_tag_ids(tokenizer: Any) -> tuple[int | None, int | None]:
    """The token ids of `<think>` and `</think>` where the tokenizer encodes each tag as one token (R1-distill's
    151648 and 151649, the tags of `aha init-model`'s tokenizers); None for a tag it spells in pieces."""
    ids = []
    for tag in ("<think>", "</think>"):
        try:
            encoded = tokenizer(tag, add_special_tokens=False)["input_ids"]
        except (TypeError, ValueError, KeyError):
            encoded = []
        ids.append(int(encoded[0]) if len(encoded) == 1 else None)
    return ids[0], ids[1]
