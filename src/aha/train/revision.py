"""REA-RL's online sequential revision inside the GRPO group (`rollout.revision`).

The collect stage calls `Reviser.revise` on freshly sampled, verified groups of G and gets groups of
2G back, each original followed by its revision (REA-RL's interleaved layout); the rewards then see
all 2G together (so `refine_length`'s L_min counts correct revisions, as in the released code), and
`Reviser.settle` applies the failed-revision rule after scoring:

1. chunk the original's reasoning (`aha.overthinking.chunking`), read P(Result) per chunk from the
   detector and take its `strength` cut (`aha.algo.overthinking.cut_points`);
2. keep the original's own completion ids up to the cut (`aha.overthinking.revision.token_cut`),
   append the template ids (`answer_prefix`) and let the policy continue for at most
   `max_revision_tokens` with the step's sampling settings, all revisions of a step in one
   generation call;
3. verify the revision with the task. A response with no reasoning to chunk gets no revision: its
   slot holds a copy of the original (or nothing, with `on_failed: drop`).
4. after scoring, a wrong revision is replaced by a copy of its original (rewards included:
   REA-RL's `filter_failed_data`) or dropped (`on_failed: drop`, groups become ragged).

Template tokens are marked: with `loss_mask: generated_only` they carry no loss (the policy did not
sample them); `all` is REA-RL (the loss covers the copied prefix, the template and the answer).
The advantage stage zeroes groups with no correct member (`zero_adv_if_none_correct`), then, with
`pair_loss` on, gives each accepted revision and its original their pair term (`Reviser.pair_terms`;
the rule is `aha.algo.overthinking.pair_term_start`, REA-RL's optional `custom_loss`).

Metrics (`revision/...`): accepted_share (correct revisions / revisions made), truncation_accuracy
(REA-RL's "Truncation Accuracy": pairs whose revision is right or whose original was wrong),
token_ratio (revision length / original length, over revisions made; `token_ratio_accepted` over the
correct ones), cut_position (mean (cut + 1) / N) and cut_hist/<bin> (share of cuts per fifth of
the reasoning), p_result_mean, no_chunks (share of originals with nothing to cut), chunks_mean,
seconds (detection and generation time), generated_tokens (the continuations' tokens).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from aha.algo.overthinking import pair_scale, pair_term_start
from aha.errors import AhaError
from aha.overthinking.chunking import tokenizer_counter
from aha.overthinking.detectors import detect, make_detector
from aha.overthinking.options import RevisionConfig
from aha.overthinking.revision import (
    default_answer_prefix,
    kept_end,
    response_chunks,
    revision_ids,
    token_cut,
)
from aha.prompts import think_tag_ids
from aha.rollout.base import Completion, SamplingParams
from aha.tasks.base import preopens_think, safe_verify

HIST_BINS = ("0-20", "20-40", "40-60", "60-80", "80-100")


class Reviser:
    """Makes and settles the revisions of a run (see the module docstring)."""

    def __init__(self, cfg: RevisionConfig, task: Any, tokenizer: Any, task_name: str = ""):
        self.cfg = cfg
        self.task = task
        self.tokenizer = tokenizer
        self.detector = make_detector(cfg.labeler, task, task_name)
        self.count = tokenizer_counter(tokenizer)
        self.prefix = cfg.answer_prefix or default_answer_prefix(task)
        self.template = tokenizer(self.prefix, add_special_tokens=False)["input_ids"]
        self.think_preopened = preopens_think(task)
        self.close_id = think_tag_ids(tokenizer)[1]
        if cfg.pair_loss != "none" and self.close_id is None:
            raise AhaError("rollout.revision.pair_loss needs a tokenizer that encodes </think> as one token (it "
                           "finds the pair term's first token by that id); this one spells it in pieces: set "
                           "rollout.revision.pair_loss=none")

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def plan(self, original: Any) -> tuple[int | None, dict[str, float]]:
        """(token count of the original's kept prefix, or None when it has no chunks; cut figures)."""
        text = original.completion.text
        offset, chunks = response_chunks(text, self.count, self.think_preopened, self.cfg.min_tokens,
                                         self.cfg.max_tokens, self.cfg.enders)
        det = detect(self.detector, original.example, chunks)
        cut = det.cut(self.cfg.strength)
        if cut is None:
            return None, {}
        char_end = offset + kept_end(chunks, cut)
        t = token_cut(original.completion.token_ids, self.decode, char_end)
        return t, {"position": (cut + 1) / len(chunks), "chunks": float(len(chunks)),
                   "p_result": sum(det.probs) / len(det.probs)}

    def revise(self, generator: Any, model: Any, groups: list[list[Any]], params: SamplingParams
               ) -> tuple[list[list[Any]], dict[str, float]]:
        """Groups of G originals -> groups of 2G (original, revision, ...); `params` are the step's
        sampling settings (n and max_new_tokens are replaced). Returns the groups and the metrics of
        the detection."""
        t0 = time.time()
        originals = [r for g in groups for r in g]
        plans = [self.plan(r) for r in originals]
        todo = [i for i, (t, _) in enumerate(plans) if t is not None]
        prompts = [originals[i].prompt_ids + originals[i].completion.token_ids[:plans[i][0]] + self.template
                   for i in todo]
        continuations: dict[int, Completion] = {}
        if prompts:
            rparams = dataclasses.replace(params, n=1, max_new_tokens=self.cfg.max_revision_tokens)
            model.eval()
            with torch.no_grad():
                for c in generator.generate(prompts, rparams):
                    continuations[todo[c.prompt_index]] = c
            model.train()
        revisions = []
        for i, r in enumerate(originals):
            if i not in continuations:
                revisions.append(dataclasses.replace(r, kind="copy"))
                continue
            cont, t = continuations[i], plans[i][0]
            ids, (a, b) = revision_ids(r.completion.token_ids, t, self.template, cont.token_ids)
            text = self.decode(ids[:b]) + cont.text
            completion = Completion(r.completion.prompt_index, r.completion.sample_index + len(groups[0]), ids,
                                    text, cont.finish_reason)
            mask = None
            if self.cfg.loss_mask == "generated_only":
                mask = torch.ones(len(ids), dtype=torch.bool)
                mask[a:b] = False
            revisions.append(dataclasses.replace(r, completion=completion, verdict=safe_verify(self.task, text, r.example),
                                                 kind="revision", loss_mask=mask, revises=r))
        out, k = [], 0
        for g in groups:
            pairs = []
            for r in g:
                pairs += [r, revisions[k]]
                k += 1
            out.append(pairs)
        cuts = [p for _, p in plans if p]
        metrics = {"revision/no_chunks": 1.0 - len(cuts) / max(len(plans), 1), "revision/seconds": time.time() - t0,
                   "revision/generated_tokens": float(sum(len(c.token_ids) for c in continuations.values()))}
        if cuts:
            metrics["revision/cut_position"] = sum(c["position"] for c in cuts) / len(cuts)
            metrics["revision/chunks_mean"] = sum(c["chunks"] for c in cuts) / len(cuts)
            metrics["revision/p_result_mean"] = sum(c["p_result"] for c in cuts) / len(cuts)
            for j, name in enumerate(HIST_BINS):
                lo, hi = j / len(HIST_BINS), (j + 1) / len(HIST_BINS)
                metrics[f"revision/cut_hist/{name}"] = sum(
                    1 for c in cuts if lo < c["position"] <= hi or (j == 0 and c["position"] <= 0)) / len(cuts)
        return out, metrics

    def settle(self, groups: list[list[Any]]) -> tuple[list[list[Any]], dict[str, float]]:
        """After scoring: each wrong revision replaced by a copy of its original (or dropped).
        Returns the groups and the acceptance metrics."""
        made = accepted = fine = pairs = 0
        ratios, ratios_ok = [], []
        out = []
        for g in groups:
            kept = []
            for r in g:
                if r.kind == "sample":
                    kept.append(r)
                    continue
                pairs += 1
                if r.kind == "copy":  # no revision could be made
                    fine += not r.verdict.correct
                    if self.cfg.on_failed == "duplicate_original":
                        kept.append(r)
                    continue
                made += 1
                original = r.revises
                ratio = len(r.completion.token_ids) / max(len(original.completion.token_ids), 1)
                ratios.append(ratio)
                if r.verdict.correct:
                    accepted += 1
                    ratios_ok.append(ratio)
                    kept.append(r)
                else:
                    if self.cfg.on_failed == "duplicate_original":
                        kept.append(dataclasses.replace(original, kind="copy"))
                fine += r.verdict.correct or not original.verdict.correct
            out.append(kept)
        metrics = {"revision/made": float(made), "revision/accepted_share": accepted / made if made else 0.0,
                   "revision/truncation_accuracy": fine / pairs if pairs else 0.0}
        if ratios:
            metrics["revision/token_ratio"] = sum(ratios) / len(ratios)
        if ratios_ok:
            metrics["revision/token_ratio_accepted"] = sum(ratios_ok) / len(ratios_ok)
        return out, metrics

    def pair_terms(self, groups: list[list[Any]], advantages: torch.Tensor, valid: torch.Tensor) -> float:
        """Set `pair_from` and `pair_advantage` on each accepted revision and its original (with
        `pair_loss` on; rule in aha.algo.overthinking). groups: the kept groups after `settle`;
        advantages, valid: (P, G) as the advantage stage padded them. Returns the number of pairs with a
        term."""
        if self.cfg.pair_loss == "none":
            return 0.0
        scales = pair_scale(advantages, valid, self.cfg.pair_loss).tolist()  # (P,)
        made = 0
        for g, c in zip(groups, scales):
            for r in g:
                original = r.revises if r.kind == "revision" else None
                if original is None or not any(x is original for x in g):
                    continue
                start = pair_term_start(original.completion.token_ids, r.completion.token_ids, self.close_id)
                if start is None or c == 0.0:
                    continue
                original.pair_from, original.pair_advantage = start, -c
                r.pair_from, r.pair_advantage = start, c
                made += 1
        return float(made)
