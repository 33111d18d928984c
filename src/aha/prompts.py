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
