"""The `rollout.revision` section of `aha train` (REA-RL's online revision; off by default)."""

from __future__ import annotations

from dataclasses import dataclass

from aha.algo.overthinking import STRENGTHS
from aha.config import option
from aha.overthinking.chunking import ENDERS, MAX_TOKENS, MIN_TOKENS

# REA-RL's online template after the kept reasoning (R1-style math)
R1_ANSWER_PREFIX = "\n</think>\n\n**Final Answer:**\n\n"
# the same for tasks with a <think>/<answer> contract (Knights and Knaves, aha's arithmetic)
TAGGED_ANSWER_PREFIX = "\n</think>\n<answer>"


@dataclass
class RevisionConfig:
    """REA-RL online revision: each sampled response is cut where its answer was first reached, the
    closing template appended and the policy continues; the revision joins the group (2G members)."""

    enabled: bool = option(False, "revise every sampled response and add the revision to its group (REA-RL)")
    labeler: str = option("oracle", "overthinking detector: 'oracle' or 'oracle:<task>' (the task's verifier on "
                          "the answer stated so far; Knights and Knaves, math), or a reflection-model folder")
    strength: str = option("normal", "which cut: strong (earliest), normal (REA-RL online), weak (latest)",
                           choices=list(STRENGTHS))
    min_tokens: int = option(MIN_TOKENS, "chunking: a chunk may close at a sentence end from this many tokens",
                             min=1)
    max_tokens: int = option(MAX_TOKENS, "chunking: a paragraph that would bring a chunk to this many tokens "
                             "starts the next one (paragraphs are never split)", min=1)
    enders: str = option(ENDERS, "chunking: characters that end a sentence")
    answer_prefix: str = option("", "template inserted after the kept reasoning; empty = per task: "
                                f"{TAGGED_ANSWER_PREFIX!r} for <think>/<answer> tasks (knights-knaves, arithmetic), "
                                f"else REA-RL's {R1_ANSWER_PREFIX!r}")
    max_revision_tokens: int = option(256, "cap on the policy's continuation after the template", min=1)
    on_failed: str = option("duplicate_original", "a revision whose answer is wrong: replaced by a copy of its "
                            "original (REA-RL) or dropped from the group",
                            choices=["duplicate_original", "drop"])
    zero_adv_if_none_correct: bool = option(True, "advantage 0 for every member of a group with no correct "
                                            "member (REA-RL), so length/reflection rewards do not act alone")
    loss_mask: str = option("all", "which revision tokens carry loss: all (REA-RL: copied prefix, template and "
                            "continuation) or generated_only (the template tokens, not sampled, are masked)",
                            choices=["all", "generated_only"])
    pair_loss: str = option("none", "REA-RL's optional custom_loss: a second policy-gradient term on the tokens "
                            "from each accepted revision's </think> on, in it (advantage +c) and its original "
                            "(-c), c = the group's mean |A| (custom_loss 1) or max |A| (2); needs </think> as "
                            "one token", choices=["none", "mean", "max"])

    def validate(self) -> None:
        if not self.enabled:
            return
        if self.labeler.startswith("oracle:") and not self.labeler.partition(":")[2]:
            raise ValueError("rollout.revision.labeler 'oracle:' names no task; use 'oracle' (the run's task) or "
                             "'oracle:<task>'")
        # a model folder is checked when the run starts (recipes name folders of other machines)
