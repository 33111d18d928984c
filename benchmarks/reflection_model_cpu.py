"""REA-RL's reflection model on this CPU: label an overthinking policy's responses with the oracle, train
a labeller on them, and measure how far its cuts are from the oracle's on held-out puzzles.

1. `aha data reflection-labels` samples the policy (--policy, e.g. the overthinking model that
   benchmarks/rea_rl_cpu.py builds in OUT/sft/model) on training puzzles, chunks the responses as the
   RL runs do (8-32 tokens per chunk) and labels them with the oracle: reflection_sft.jsonl.
2. `aha sft` trains the labeller on it, starting from --base (default: the policy; its tokenizer
   knows the puzzles' words) with full fine-tuning.
3. On held-out (test split) puzzles the policy is sampled again and labelled by the oracle; the
   labeller labels the same chunks. Reported: per-chunk agreement of the Think/Result labels, and
   for REA-RL's normal cut (the one the RL step revises at) the share of responses where both cut
   at the same chunk, the mean |difference| in chunks, and how often the labeller cuts earlier or
   later; over all responses and over the correct ones; beside them the same figures for a labeller
   that never says Result (every cut at the cap), for scale.
4. The labeller folder then serves as `rollout.revision.labeler`; the REA-RL run with it:

    OMP_NUM_THREADS=1 python benchmarks/rea_rl_cpu.py --start ... --out RUN --labeler OUT/labeller/model \\
        --only rea_rl_model

    OMP_NUM_THREADS=1 python benchmarks/reflection_model_cpu.py --policy RUN/sft/model --out runs/labeller \\
        [--train-problems 1000] [--n 2] [--sft-steps 300] [--heldout-problems 600]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# the puzzles of benchmarks/rea_rl_cpu.py (its TASK, prompts without traces)
TASK_OPTIONS = ["people=2-3", "count=20000", "fill=true", "test_count=300", "seed=0", "name_pool=8",
                "quiz_style=plain", "system_prompt=", "trace_style=none"]
CHUNKING = ["--min-tokens", "8", "--max-tokens", "32"]


def agreement(oracle_rows: list[dict], labeller_probs: list[list[float]]) -> dict[str, float]:
    """Label and cut agreement of the labeller with the oracle over responses that have chunks.

    oracle_rows: labels.jsonl rows (chunks, p_result, correct); labeller_probs: the labeller's P(Result)
    per chunk of the same rows."""
    from aha.algo.overthinking import cut_points

    same_label = total_chunks = 0
    cuts: dict[str, list[int]] = {"all": [], "correct": []}
    for row, probs in zip(oracle_rows, labeller_probs):
        oracle = [p >= 0.5 for p in row["p_result"]]
        mine = [p >= 0.5 for p in probs]
        same_label += sum(a == b for a, b in zip(oracle, mine))
        total_chunks += len(oracle)
        diff = cut_points(probs).normal - cut_points(row["p_result"]).normal
        cuts["all"].append(diff)
        if row.get("correct"):
            cuts["correct"].append(diff)
    out: dict[str, float] = {"responses": float(len(cuts["all"])), "chunks": float(total_chunks),
                             "label_agreement": same_label / max(total_chunks, 1)}
    for name, diffs in cuts.items():
        n = max(len(diffs), 1)
        out[f"{name}/responses"] = float(len(diffs))
        out[f"{name}/same_cut"] = sum(d == 0 for d in diffs) / n
        out[f"{name}/mean_abs_cut_diff"] = sum(abs(d) for d in diffs) / n
        out[f"{name}/earlier"] = sum(d < 0 for d in diffs) / n
        out[f"{name}/later"] = sum(d > 0 for d in diffs) / n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="the overthinking policy whose responses are labelled")
    p.add_argument("--base", default=None, help="the labeller's starting model (default: the policy)")
    p.add_argument("--out", required=True)
    p.add_argument("--train-problems", type=int, default=1000)
    p.add_argument("--heldout-problems", type=int, default=600, help="held-out puzzles (600 = all, both sizes)")
    p.add_argument("--n", type=int, default=2, help="responses per training problem (one per held-out one)")
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--max-new-tokens", type=int, default=384)
    args = p.parse_args()

    from aha.cli import main as aha
    from aha.overthinking.detectors import ReflectionModelDetector
    from aha.runs import read_jsonl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    opts = [x for o in TASK_OPTIONS for x in ("--task-option", o)]

    def labels(split: str, limit: int, n: int, folder: Path, seed: int) -> None:
        t = time.time()
        assert aha(["data", "reflection-labels", "--model", args.policy, "--task", "knights-knaves", *opts,
                    "--split", split, "--limit", str(limit), "--n", str(n), "--max-new-tokens",
                    str(args.max_new_tokens), "--answer-tokens", "64", *CHUNKING, "--seed", str(seed),
                    "--device", "cpu", "--out", str(folder)]) == 0
        seconds[f"labels_{split}"] = time.time() - t

    labels("train", args.train_problems, args.n, out / "labels", 0)
    t = time.time()
    assert aha(["sft", f"model.path={args.base or args.policy}", "model.device=cpu",
                f"data.files=[{out / 'labels' / 'reflection_sft.jsonl'}]", f"steps={args.sft_steps}",
                f"optim.lr={args.lr}", "optim.warmup_steps=10", "val_every=0", "data.val_fraction=0",
                "batch_tokens=8192", "data.max_length=2048", f"run.out_dir={out / 'labeller'}",
                "run.progress=false"]) == 0
    seconds["sft"] = time.time() - t

    labels("test", args.heldout_problems, 1, out / "heldout", 1)
    t = time.time()
    rows = [r for r in read_jsonl(out / "heldout" / "labels.jsonl") if r["chunks"]]
    det = ReflectionModelDetector(out / "labeller" / "model", device="cpu")
    questions = {ex.id: ex for ex in _test_examples(args.heldout_problems)}
    from aha.overthinking.detectors import question_text

    probs = [det.label(question_text(questions[r["id"]]), r["chunks"]) for r in rows]
    seconds["labeller_heldout"] = time.time() - t
    # the trivial labeller that never says Result (no cut before the cap) for scale
    result = {"agreement": agreement(rows, probs),
              "never_result": agreement(rows, [[0.0] * len(r["p_result"]) for r in rows]), "seconds": seconds,
              "train_summary": json.loads((out / "labels" / "summary.json").read_text())}
    (out / "agreement.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _test_examples(limit: int) -> list:
    from aha.commands.score import parse_options
    from aha.tasks import get_task

    task = get_task("knights-knaves", **parse_options(TASK_OPTIONS))
    return list(task.examples("test"))[:limit]


if __name__ == "__main__":
    main()
