"""A toy task for tests: the answer is a word; a completion is right when its answer block holds it."""

from __future__ import annotations

from aha.tasks.base import Example, Task, Verdict
from aha.tasks.formatting import check_think_answer, last_answer_block

WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "ocean", "amber"]


class ToyTask(Task):
    name = "toy"

    def __init__(self, count: int = 8, think_preopened: bool = False):
        self.count = count
        self.think_preopened = think_preopened

    def examples(self, split: str = "train"):
        offset = 0 if split == "train" else 3
        for i in range(self.count):
            word = WORDS[(i + offset) % len(WORDS)]
            yield Example(id=f"{split}-{i}", prompt=[{"role": "user", "content": f"Say {word}."}], answer=word,
                          meta={"bucket": "even" if i % 2 == 0 else "odd",
                                "trace": f"<think>say it</think><answer>{word}</answer>"})

    def verify(self, text: str, example: Example) -> Verdict:
        fmt = check_think_answer(text, self.think_preopened)
        got = last_answer_block(text)
        correct = got == example.answer
        return Verdict(parsed=got, format_ok=fmt.ok, correct=correct, partial=float(correct),
                       error=None if correct else "wrong word")
