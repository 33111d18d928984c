"""Reference-answer perplexity as an evaluation metric (seed 001): how likely a model finds the right answer.

For every evaluated problem, with the model's first sampled reasoning c (the think content of its
first completion) and the reference answer y*:

    with reasoning:     PPL(y* | prompt + <think>c</think> + connector)
    without reasoning:  PPL(y* | prompt + <think></think> + connector)

PPL = exp(-mean token log-prob of y*) (aha.rewards.likelihood.reference_perplexity's definition,
the same contexts as the likelihood reward). Seed 001 trains a policy to write reasoning that makes
the answer likelier under a frozen LM and reports that this perplexity falls much more than under
the correctness baseline. The scorer is the evaluated model itself, or `scorer`/`scorer_tokenizer`
(the frozen LM of the likelihood reward) when given.

Reported: mean and median over problems (with reasoning), the same without reasoning, and their
ratio of means; problems whose answer is empty are left out.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from aha.rewards.likelihood import DEFAULT_CONNECTOR, Scorer, render_prompt_text
from aha.runs import read_jsonl
from aha.tasks.formatting import THINK_CLOSE, THINK_OPEN, think_content

_EXP_CAP = 700.0


def reference_perplexity_summary(scorer_model: Any, tokenizer: Any, examples: list[Any], samples_path: str | Path,
                                 connector: str = DEFAULT_CONNECTOR, batch_size: int = 8,
                                 think_preopened: bool = False) -> dict[str, Any]:
    """{mean, median, without_reasoning_mean, without_reasoning_median, ratio, problems, connector}.

    examples: the evaluated examples (prompt messages and `answer`); samples_path: eval's
    samples.jsonl, whose first sample per id supplies the reasoning."""
    first: dict[str, str] = {}
    for rec in read_jsonl(samples_path):
        key = str(rec.get("id"))
        if key not in first or rec.get("sample") == 0:  # sample 0 wins wherever it stands in the file
            first[key] = str(rec.get("completion", ""))
    scored = [ex for ex in examples if str(ex.id) in first and str(ex.answer or "")]
    scorer = Scorer(scorer_model, tokenizer, batch_size=batch_size)
    prompts = [render_prompt_text(tokenizer, ex.prompt) for ex in scored]
    answers = [str(ex.answer) for ex in scored]
    with_ctx = [p + THINK_OPEN + think_content(first[str(ex.id)], think_preopened=think_preopened) + THINK_CLOSE
                + connector for p, ex in zip(prompts, scored)]
    without_ctx = [p + THINK_OPEN + THINK_CLOSE + connector for p in prompts]

    def ppl(contexts: list[str]) -> list[float]:
        return [math.exp(min(-s / n, _EXP_CAP)) for s, n in scorer.answer_logprobs(contexts, answers) if n]

    with_r, without_r = ppl(with_ctx), ppl(without_ctx)
    if not with_r:
        return {"problems": 0, "connector": connector}
    mean_with, mean_without = statistics.fmean(with_r), statistics.fmean(without_r)
    return {"mean": mean_with, "median": statistics.median(with_r), "without_reasoning_mean": mean_without,
            "without_reasoning_median": statistics.median(without_r), "ratio": mean_with / mean_without,
            "problems": len(with_r), "connector": connector}


def perplexity_markdown(summary: dict[str, Any]) -> str:
    if not summary.get("problems"):
        return "\n## Reference-answer perplexity\n\nno problem with a reference answer\n"
    return ("\n## Reference-answer perplexity\n\n"
            "| problems | with reasoning: mean | median | without reasoning: mean | median | ratio of means |\n"
            "|---|---|---|---|---|---|\n"
            f"| {summary['problems']} | {summary['mean']:.4g} | {summary['median']:.4g} | "
            f"{summary['without_reasoning_mean']:.4g} | {summary['without_reasoning_median']:.4g} | "
            f"{summary['ratio']:.4g} |\n")
