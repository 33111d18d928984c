"""REA-RL on this CPU (issue 21's demonstration): a tiny model that overthinks, trained three ways.

1. Overthinking traces: the demo's Knights-and-Knaves solver traces (reflective), one paragraph per
   line ("\\n\\n" between lines, so REA-RL's chunking sees them), followed by a tail that keeps
   checking after the solution is found ("Wait, let me check again. ... NAME is a knight. ...").
2. SFT of a start model (by default the `aha demo` SFT model) on them -> the overthinking model.
3. From that model, the same steps and seed: GRPO on accuracy; GRPO + length (Kimi); REA-RL with
   the oracle detector (revision, refine_length, reflection_density with the released regex).
4. Greedy evaluation of the four models on held-out puzzles, `aha compare` against the
   overthinking model: accuracy with paired intervals and the token-savings table.

    OMP_NUM_THREADS=1 aha demo --set teacher_budget=0 --out DEMO_DIR   # the README's start C
    OMP_NUM_THREADS=1 python benchmarks/rea_rl_cpu.py --start DEMO_DIR/sft/model --out runs/rea-rl-cpu \
        [--sft-steps 100] [--rl-steps 40] [--prompts 8] [--lr 5e-5] [--temperature 0.6]
        [--pair-loss mean|max]   # a fourth way: REA-RL with the released optional pair term (rea_rl_pair)
        [--labeler FOLDER]       # and REA-RL with a trained reflection model as the detector (rea_rl_model)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TASK = {"people": "2-3", "count": 20000, "fill": True, "test_count": 300, "seed": 0, "depth": 2,
        "name_pool": 8, "quiz_style": "plain", "system_prompt": "", "trace_style": "reflective"}


def overthinking_trace(ex) -> str:
    """The solver's reflective trace as paragraphs, then a tail that goes over the solution twice
    more in the trace's own phrases (so the start model learns it fast): "Reconsider: NAME is a
    ROLE." for everyone, and the final check line again."""
    trace = ex.meta["trace"]
    think, _, rest = trace.partition("</think>")
    lines = [x for x in think.replace("<think>", "").split("\n") if x.strip()]
    roles = ["knight" if k else "knave" for k in ex.meta["solution"]]
    again = [f"Reconsider: {n} is a {r}." for n, r in zip(ex.meta["names"], roles)] + [lines[-1]]
    return "<think>" + "\n\n".join(lines + again + again) + "</think>" + rest


def revision_outcomes(run: Path) -> dict[str, int]:
    """Over a revising run's saved rollouts (each original followed by its revision or stand-in): how
    many revisions were right or wrong, split by whether their original was right."""
    from aha.runs import read_jsonl

    counts = {"revision_right_original_right": 0, "revision_right_original_wrong": 0,
              "revision_wrong_original_right": 0, "revision_wrong_original_wrong": 0}
    for f in sorted((run / "rollouts").glob("step_*.jsonl")):
        rows = read_jsonl(f)
        for original, revision in zip(rows[::2], rows[1::2]):
            if revision.get("kind") == "revision":
                key = (f"revision_{'right' if revision['correct'] else 'wrong'}_"
                       f"original_{'right' if original['correct'] else 'wrong'}")
                counts[key] += 1
    return counts if any(counts.values()) else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", required=True, help="model folder to start from (the demo's SFT model)")
    p.add_argument("--out", required=True)
    p.add_argument("--sft-steps", type=int, default=100)
    p.add_argument("--sft-examples", type=int, default=6000)
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--lr", type=float, default=5e-5, help="RL learning rate (full fine-tuning)")
    p.add_argument("--temperature", type=float, default=0.6, help="RL sampling temperature (paper 0.6)")
    p.add_argument("--kl", type=float, default=0.04, help="k3 KL coefficient to the start model (paper 0.04)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate the first N held-out puzzles (0 = all 600)")
    p.add_argument("--pair-loss", choices=["mean", "max"], default=None,
                   help="also train REA-RL with the released optional pair term (rollout.revision.pair_loss), "
                        "as method rea_rl_pair")
    p.add_argument("--labeler", default=None,
                   help="also train REA-RL with this reflection-model folder as the detector instead of the oracle "
                        "(benchmarks/reflection_model_cpu.py trains one), as method rea_rl_model")
    p.add_argument("--only", nargs="*", default=[], help="run only these stages (sft, start, grpo, grpo_len, rea_rl; eval = evaluate every trained model again, "
                   "e.g. with another --eval-limit; any other word, e.g. report, only redoes the comparison and "
                   "revision_outcomes.json)")
    args = p.parse_args()

    from aha.cli import main as aha
    from aha.runs import write_jsonl
    from aha.tasks import get_task

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task_opts = dict(TASK)
    task = get_task("knights-knaves", **task_opts)
    seconds: dict[str, float] = {}

    def stage(name: str) -> bool:
        return not args.only or name in args.only

    sft_model = out / "sft" / "model"
    if stage("sft"):
        rows = [{"prompt": ex.prompt, "response": overthinking_trace(ex)}
                for ex in list(task.examples("train"))[: args.sft_examples] if ex.meta.get("trace")]
        write_jsonl(out / "overthinking_sft.jsonl", rows)
        t = time.time()
        assert aha(["sft", f"model.path={args.start}", "model.device=cpu", f"data.files=[{out / 'overthinking_sft.jsonl'}]",
                    f"steps={args.sft_steps}", "optim.lr=6e-4", "optim.warmup_steps=10", "val_every=0",
                    "batch_tokens=4096",
                    "data.val_fraction=0", "data.max_length=1024", f"run.out_dir={out / 'sft'}",
                    "run.progress=false"]) == 0
        seconds["sft"] = time.time() - t

    test_opts = ["--task-option", "people=2-3", "--task-option", "count=20000", "--task-option", "fill=true",
                 "--task-option", "test_count=300", "--task-option", "seed=0", "--task-option", "name_pool=8",
                 "--task-option", "quiz_style=plain", "--task-option", "system_prompt=",
                 "--task-option", "trace_style=none"]

    def evaluate(name: str, model: Path) -> None:
        t = time.time()
        assert aha(["eval", "--model", str(model), "--task", "knights-knaves", *test_opts, "--split", "test",
                    "--max-new-tokens", str(args.max_new_tokens), "--device", "cpu", "--no-plots",
                    "--out", str(out / "eval" / name), "--label", name,
                    *(["--limit", str(args.eval_limit)] if args.eval_limit else [])]) == 0
        seconds[f"eval_{name}"] = time.time() - t

    if stage("start") or stage("eval"):
        evaluate("start", sft_model)
    kk = json.dumps({k: v for k, v in TASK.items() if k != "trace_style"} | {"trace_style": "none"})
    common = [f"model.path={sft_model}", "model.device=cpu", "task.name=knights-knaves", f"task.options={kk}",
              f"steps={args.rl_steps}", f"batch.prompts_per_step={args.prompts}", "batch.samples_per_prompt=4",
              "batch.micro_batch_size=32", f"rollout.temperature={args.temperature}", f"rollout.max_new_tokens={args.max_new_tokens}",
              "rollout.stop=[</answer>]", f"algo.kl_coef={args.kl}", "algo.loss_agg=token_mean",
              f"optim.lr={args.lr}", "run.progress=false", "save_rollouts=true"]
    methods = {
        "grpo": ["rewards=[{name: correctness}]"],
        "grpo_len": ["rewards=[{name: correctness}, {name: kimi_length, options: {unit: chars}}]"],
        "rea_rl": ["rewards=[{name: correctness}, {name: refine_length}, "
                   "{name: reflection_density, options: {match: rea_rl, form: code}}]",
                   "rollout.revision.enabled=true", "rollout.revision.labeler=oracle:knights-knaves",
                   "rollout.revision.max_revision_tokens=64",
                   # one line of these short traces is ~10-15 tokens: chunks of about a line, so the
                   # normal cut (the first Result chunk at or after half the chunks) can fall in the tail
                   "rollout.revision.min_tokens=8", "rollout.revision.max_tokens=32"],
    }
    if args.pair_loss:
        methods["rea_rl_pair"] = [*methods["rea_rl"], f"rollout.revision.pair_loss={args.pair_loss}"]
    if args.labeler:
        methods["rea_rl_model"] = [*methods["rea_rl"], f"rollout.revision.labeler={args.labeler}"]
    for name, extra in methods.items():
        if stage(name):
            t = time.time()
            assert aha(["train", *common, *extra, f"run.out_dir={out / name}"]) == 0
            seconds[name] = time.time() - t
        if stage(name) or (stage("eval") and (out / name / "model").is_dir()):
            evaluate(name, out / name / "model")
    (out / "seconds.json").write_text(json.dumps(seconds, indent=2))
    outcomes = {name: revision_outcomes(out / name) for name in ("rea_rl", "rea_rl_pair", "rea_rl_model")
                if (out / name / "rollouts").is_dir()}
    outcomes = {k: v for k, v in outcomes.items() if v}
    if outcomes:
        (out / "revision_outcomes.json").write_text(json.dumps(outcomes, indent=2))
    evals = [str(out / "eval" / n) for n in ("start", "grpo", "grpo_len", "rea_rl", "rea_rl_pair", "rea_rl_model")
             if (out / "eval" / n).is_dir()]
    if len(evals) > 1:
        aha(["compare", *evals, "--out", str(out / "compare"), "--no-plots"])
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
