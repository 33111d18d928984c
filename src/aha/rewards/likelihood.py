"""Likelihood of the reference answer under a frozen scorer LM (seed 001; VeriFree).

A frozen causal LM (any local model folder; by default the policy's initial weights, which the
trainer passes as `policy_path`) reads

    with:     prompt + <think>reasoning</think> + connector    then the reference answer y*
    without:  prompt + <think></think> + connector            then the reference answer y*

and the reward is built from the answer tokens' log-probabilities. With
PPL(y*|c) = exp(-mean log p(y*_t | c, y*_<t)):

    relative  = max(0, 1 - PPL(y*|with) / PPL(y*|without))   the reasoning made the answer likelier
    absolute  = 1 / PPL(y*|with)                              the mean token probability, geometric
    hybrid    = (relative + absolute) / 2                     (the UPenn project's --reward_type hybrid)
    verifree  = exp(sum log p(y*_t | with))                   the probability of the whole answer

The prompt is rendered with the tokenizer's chat template (generation prompt added) when it has
one, else the message contents joined by newlines. The reasoning is the completion's think content
re-wrapped in `<think>...</think>`, so the answer block the policy wrote never leaks into the
context, and an empty reasoning gives exactly the baseline context (relative reward 0). Context
and answer are tokenized separately and concatenated, so the answer's tokens are
identical in both contexts; contexts too long for `max_length` lose their oldest tokens.

Combination with correctness ("hybrid" in DESIGN's sense) is done by the composer: list both
rewards with weights in the recipe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput
from aha.tasks.formatting import THINK_CLOSE, THINK_OPEN, think_content

FORMS = ("relative", "absolute", "hybrid", "verifree")
DEFAULT_CONNECTOR = "\nThe final answer is: "
_EXP_CAP = 700.0  # math.exp overflows just above 709


def render_prompt_text(tokenizer: Any, prompt: Sequence[dict[str, str]] | str) -> str:
    """The prompt as text, ending where the assistant's reply starts.

    prompt: chat messages `[{"role", "content"}, ...]` or an already rendered string.
    """
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    text = "\n".join(str(m.get("content", "")) for m in prompt) + "\n"
    bos = getattr(tokenizer, "bos_token", None)
    return (bos or "") + text


class Scorer:
    """A frozen causal LM that scores answers after contexts.

    model: a transformers causal LM (its train/eval mode is restored after each call).
    tokenizer: its tokenizer.
    batch_size: sequences per forward pass.
    max_length: longest sequence fed to the model; None uses config.max_position_embeddings.
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        cfg_max = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = int(max_length or cfg_max or 4096)
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def answer_logprobs(self, contexts: Sequence[str], answers: Sequence[str]) -> list[tuple[float, int]]:
        """(sum of the answer tokens' log-probs, number of answer tokens) for each (context, answer).

        contexts, answers: equal-length lists of text. An empty answer gives (0.0, 0).
        """
        import torch

        rows: list[tuple[list[int], int]] = []  # (ids, answer length)
        for ctx, ans in zip(contexts, answers):
            ans_ids = self._encode(ans)[: self.max_length - 1]
            ctx_ids = self._encode(ctx)[-(self.max_length - len(ans_ids)):] if ans_ids else []
            if not ctx_ids:
                ctx_ids = [self.pad_id]  # the first answer token needs a position to be predicted from
            rows.append((ctx_ids + ans_ids, len(ans_ids)))
        results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
        order = sorted((i for i, r in enumerate(rows) if r[1] > 0), key=lambda i: -len(rows[i][0]))
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start:start + self.batch_size]
                    sums = self._forward([rows[i] for i in chunk], device)
                    for i, s in zip(chunk, sums):
                        results[i] = (s, rows[i][1])
        finally:
            self.model.train(was_training)
        return results

    def _forward(self, rows: list[tuple[list[int], int]], device: Any) -> list[float]:
        import torch

        width = max(len(ids) for ids, _ in rows)
        span = max(a for _, a in rows)
        # left padding puts every answer at the right edge, so only the last span+1 logits are needed
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for r, (seq, _) in enumerate(rows):
            ids[r, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[r, width - len(seq):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        try:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                logits_to_keep=span + 1).logits  # (B, span+1, V)
        except TypeError:  # models without logits_to_keep
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits  # (B, T, V)
        logits = logits[:, -(span + 1):-1].float()  # (B, span, V): predictions of the last span tokens
        targets = ids[:, width - span:]  # (B, span)
        token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, span)
        lengths = torch.tensor([a for _, a in rows], device=device)  # (B,)
        keep = torch.arange(span, device=device).unsqueeze(0) >= (span - lengths).unsqueeze(1)  # (B, span)
        return (token_lp * keep).sum(-1).tolist()


_SCORERS: dict[tuple[str, str, str], Scorer] = {}


def get_scorer(path: str | Path, device: str = "auto", dtype: str = "auto") -> Scorer:
    """The scorer for a model folder, loaded once per (path, device, dtype) and kept for the process."""
    key = (str(Path(path).expanduser().resolve()), device, dtype)
    if key not in _SCORERS:
        from aha.models import load_model, load_tokenizer

        model = load_model(path, device=device, dtype=dtype, trainable=False)
        model.requires_grad_(False)
        _SCORERS[key] = Scorer(model, load_tokenizer(path))
    return _SCORERS[key]


def clear_scorers() -> None:
    """Drop the cached scorers (frees their memory)."""
    _SCORERS.clear()


def likelihood_score(sum_with: float, n_with: int, sum_without: float | None, n_without: int | None,
                     form: str = "relative") -> float:
    """One reward value from answer log-probs (formulas in the module docstring).

    sum_with, n_with: sum of the answer tokens' log-probs and their count after the reasoning.
    sum_without, n_without: the same without the reasoning (needed by relative and hybrid).
    form: one of relative, absolute, hybrid, verifree.
    """
    if form == "verifree":
        return math.exp(min(sum_with, _EXP_CAP))
    mean_with = sum_with / n_with
    absolute = math.exp(min(mean_with, _EXP_CAP))
    if form == "absolute":
        return absolute
    if sum_without is None or not n_without:
        raise ValueError(f"form {form!r} needs the log-probs without the reasoning")
    # PPL_with / PPL_without = exp(mean_without - mean_with), kept in log space against overflow
    ratio = math.exp(min(sum_without / n_without - mean_with, _EXP_CAP))
    relative = max(0.0, 1.0 - ratio)
    if form == "relative":
        return relative
    return 0.5 * (relative + absolute)


def reference_perplexity(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]] | str],
                         answers: Sequence[str], batch_size: int = 8, connector: str = "") -> list[float]:
    """Perplexity of each reference answer after its prompt, exp(-mean token log-prob) (an evaluation metric).

    model, tokenizer: any causal LM and its tokenizer (the policy under evaluation, say).
    prompts: chat messages or rendered strings, one per answer.
    answers: the reference answers as text.
    batch_size: sequences per forward pass.
    connector: text placed between the prompt and the answer.
    Returns NaN for an empty answer.
    """
    scorer = Scorer(model, tokenizer, batch_size=batch_size)
    contexts = [render_prompt_text(tokenizer, p) + connector for p in prompts]
    out = []
    for s, n in scorer.answer_logprobs(contexts, [str(a) for a in answers]):
        out.append(math.exp(min(-s / n, _EXP_CAP)) if n else math.nan)
    return out


class LikelihoodReward:
    """The "likelihood" reward (formulas in the module docstring); an object so the scorer loads once.

    `accepts_policy_path`: the composer passes the policy's model folder as `model` when the recipe
    leaves it unset.
    """

    accepts_policy_path = True

    @staticmethod
    def check_options(**options: Any) -> None:
        """Raise AhaError for unusable options (cheap: no model is loaded)."""
        form = options.get("form", "relative")
        if form not in FORMS:
            raise AhaError(f"likelihood: form must be one of {', '.join(FORMS)}, got {form!r}")
        model = options.get("model")
        if model is None:
            raise AhaError("likelihood: no scorer model: set options.model to a local model folder "
                           "(the trainer fills in the policy's own folder when it knows it)")
        from aha.models import check_model_folder, looks_local

        if looks_local(model):
            check_model_folder(model)
        if int(options.get("batch_size", 8)) < 1:
            raise AhaError("likelihood: batch_size must be >= 1")

    def __call__(self, batch: RewardBatch, model: str | None = None, form: str = "relative",
                 connector: str = DEFAULT_CONNECTOR, answer_template: str = "{answer}", batch_size: int = 8,
                 max_length: int | None = None, device: str = "auto", dtype: str = "auto",
                 truncated: float | None = None, think_preopened: bool = False) -> RewardOutput:
        """Score a batch.

        batch: completions with their examples (prompt messages and reference `answer`).
        model: the scorer's local model folder (default: the policy's initial weights, via the composer).
        form: relative, absolute, hybrid or verifree.
        connector: text between the reasoning (or the prompt) and the answer.
        answer_template: how the reference is written; the text "{answer}" is replaced by
            `example.answer` (plain replacement, so VeriFree's "<answer> \\boxed{{answer}} </answer>"
            gives "<answer> \\boxed{42} </answer>").
        batch_size: sequences per forward pass of the scorer.
        max_length: longest scored sequence in tokens (None: the model's limit).
        device, dtype: where and how the scorer runs ("auto": CUDA and bf16 when available).
        truncated: score of completions cut off at the generation cap (VeriFree uses 0); None scores
            them like the others.
        think_preopened: the prompt already opened `<think>`.

        None where the reference answer is empty. Metrics: `scorer_seconds` (forward passes of this
        call), `load_seconds` (when this call loaded the scorer), `nll_with_mean` and
        `nll_without_mean` (mean per-token negative log-likelihood of the answers).
        """
        if model is None:
            raise AhaError("likelihood: no scorer model: set options.model to a local model folder")
        metrics: dict[str, float] = {}
        t0 = time.perf_counter()
        loaded_before = len(_SCORERS)
        scorer = get_scorer(model, device=device, dtype=dtype)
        if len(_SCORERS) > loaded_before:
            metrics["load_seconds"] = time.perf_counter() - t0
        scorer.batch_size = max(1, int(batch_size))
        if max_length is not None:
            scorer.max_length = int(max_length)
        t1 = time.perf_counter()

        prompts = [render_prompt_text(scorer.tokenizer, ex.prompt) for ex in batch.examples]
        answers = [answer_template.replace("{answer}", str(ex.answer)) for ex in batch.examples]
        with_ctx = [p + THINK_OPEN + think_content(text, think_preopened=think_preopened) + THINK_CLOSE + connector
                    for p, text in zip(prompts, batch.completions)]
        with_lp = scorer.answer_logprobs(with_ctx, answers)
        without_lp: list[tuple[float, int] | None] = [None] * len(batch)
        if form in ("relative", "hybrid"):
            # the no-reasoning baseline depends only on the prompt, so it is scored once per group
            unique: dict[tuple[str, str], int] = {}
            baseline = [p + THINK_OPEN + THINK_CLOSE + connector for p in prompts]
            for ctx, a in zip(baseline, answers):
                unique.setdefault((ctx, a), len(unique))
            keys = list(unique)
            base = scorer.answer_logprobs([k[0] for k in keys], [k[1] for k in keys])
            without_lp = [base[unique[(ctx, a)]] for ctx, a in zip(baseline, answers)]

        scores: list[float | None] = []
        nll_with, nll_without = [], []
        for i, (s, n) in enumerate(with_lp):
            if n == 0:
                scores.append(None)
                continue
            nll_with.append(-s / n)
            wo = without_lp[i]
            if wo is not None:
                nll_without.append(-wo[0] / wo[1])
            if truncated is not None and batch.truncated[i]:
                scores.append(float(truncated))
                continue
            scores.append(likelihood_score(s, n, wo[0] if wo else None, wo[1] if wo else None, form))
        metrics["scorer_seconds"] = time.perf_counter() - t1
        if nll_with:
            metrics["nll_with_mean"] = sum(nll_with) / len(nll_with)
        if nll_without:
            metrics["nll_without_mean"] = sum(nll_without) / len(nll_without)
        return RewardOutput(scores, metrics)


REWARDS.register("likelihood")(LikelihoodReward())
