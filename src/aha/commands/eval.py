"""`aha eval`: sample a model n times per problem and report accuracy, pass@k and per-bucket tables."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from aha.errors import AhaError

HELP = "evaluate a model: n samples per problem, pass@k with bootstrap intervals, per-bucket tables"
DESCRIPTION = """Evaluate a model folder (full model or LoRA adapter) on a task's data files.

examples:
  aha eval --model runs/train-X/model --task knights-knaves --data kk/3ppl_test.parquet kk/5ppl_test.parquet
  aha eval --model models/m --task aime --data aime_2021_2024.jsonl --n 16 --temperature 0.6 --top-p 0.95
  aha eval --model models/m --task knights-knaves --task-option people=2-3 --task-option count=300

Writes --out DIR (default runs/eval-<date>-<time>): samples.jsonl, results.json and results.md.
results.json "tokens": tokens per response and per correct answer, reflection frequency (REA-RL's
keyword regex); with --budgets B ..., "budgets": accuracy and tokens with responses cut to B tokens.
results.json holds pass@k at k = 1, 2, 4, ..., n with bootstrap intervals and the full curve
pass_at_k_curve {k: value} for every k = 1 .. n (overall, per bucket, per bucket_by field: only n
is sampled, every smaller k is the unbiased estimate), the per-problem pass@1 histogram, and with
bucket_by=level,subject a combined level x subject table ("cross") and seed 003's regression of
per-problem pass@1 on the level number and one coefficient per subject ("regression"; both also
in results.md). Figures go to DIR/plots:
pass_at_k_curve.png, pass_at_k_buckets.png, pass_at_k_<field>.png, pass1_histogram.png.
Interrupted? Run the same command again: problems already sampled are kept."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model or adapter folder")
    p.add_argument("--task", default="knights-knaves", help="registered task name or module:Class")
    p.add_argument("--data", nargs="*", default=None, metavar="FILE", help="data files (else the task generates)")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra task option, repeatable (e.g. think_preopened=true)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most this many problems (0 = all)")
    p.add_argument("--n", type=int, default=1, help="samples per problem (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus threshold (default 1.0 = off)")
    p.add_argument("--top-k", type=int, default=0, help="top-k filter (default 0 = off)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="cap on new tokens (default 1024)")
    p.add_argument("--stop", nargs="*", default=["</answer>"], help="stop strings (default </answer>)")
    p.add_argument("--batch-prompts", type=int, default=32, help="problems per generation call (default 32)")
    p.add_argument("--backend", default="engine", choices=["engine", "hf"], help="generation backend")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--label", default="", help="name of this model in tables (default: the model folder)")
    p.add_argument("--reference-perplexity", action="store_true",
                   help="also report the perplexity of each reference answer after the prompt and the model's "
                        "first sampled reasoning, and without the reasoning (seed 001's metric; results.json "
                        "\"reference_perplexity\")")
    p.add_argument("--perplexity-model", default=None, metavar="DIR",
                   help="score that perplexity with this frozen model instead of the evaluated one")
    p.add_argument("--budgets", type=int, nargs="*", default=[], metavar="TOKENS",
                   help="also cut every response to each of these token counts and judge it again (REA-RL: "
                        "--budgets 8192 16384); results.json 'budgets' and the token-savings table of aha compare")
    p.add_argument("--no-plots", action="store_true",
                   help="skip the PNG figures in DIR/plots (pass@k curves overall and per bucket, "
                        "per-problem pass@1 histogram)")


def run(args: argparse.Namespace) -> int:
    from aha.commands.recipe_args import check_output_path
    from aha.commands.score import parse_options
    from aha.eval.runner import evaluate
    from aha.models import load_model, load_tokenizer, require_chat_template
    from aha.rollout.base import SamplingParams
    from aha.runs import default_run_dir
    from aha.tasks import get_task
    from aha.train.config import MAX_NEW_TOKENS

    if args.n < 1:
        raise AhaError("--n must be at least 1")
    if args.limit < 0:
        raise AhaError(f"--limit must be >= 0 (0 = every problem), got {args.limit}")
    if args.batch_prompts < 1:
        raise AhaError(f"--batch-prompts must be at least 1, got {args.batch_prompts}")
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS:
        raise AhaError(f"--max-new-tokens must be in [1, {MAX_NEW_TOKENS}], got {args.max_new_tokens}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise AhaError(f"--temperature must be a finite number >= 0 (0 = greedy), got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:  # NaN fails this too
        raise AhaError(f"--top-p must be in (0, 1] (1 = off), got {args.top_p}")
    if args.top_k < 0:
        raise AhaError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if any(not s for s in args.stop):
        raise AhaError("--stop has an empty string, which would end every completion at once; remove it")
    if any(b < 1 for b in args.budgets):
        raise AhaError(f"--budgets must be positive token counts, got {args.budgets}")
    if args.out:
        check_output_path(args.out, "--out", folder=True)
    if args.temperature == 0 and args.n > 1:
        raise AhaError("greedy decoding (--temperature 0) gives n identical samples; set --temperature > 0")
    options = parse_options(args.task_option)
    if args.data:
        options["data"] = list(args.data)
    from aha.train.config import check_task_options

    check_task_options(args.task, options, "--task-option")
    try:
        task = get_task(args.task, **options)
    except TypeError as exc:
        raise AhaError(f"task {args.task!r} does not accept these options: {exc}") from exc
    examples = list(task.examples(args.split))
    if args.limit:
        examples = examples[: args.limit]
    if not examples:
        raise AhaError(f"task {args.task!r} has no examples in split {args.split!r}")
    tokenizer = load_tokenizer(args.model)
    require_chat_template(tokenizer, args.model)  # before the weights load
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_new_tokens=args.max_new_tokens, n=args.n, stop=list(args.stop), seed=args.seed)
    out = Path(args.out) if args.out else default_run_dir("eval")
    results = evaluate(model, tokenizer, task, examples, params, out, batch_prompts=args.batch_prompts,
                       backend=args.backend, label=args.label or Path(args.model).name,
                       budgets=sorted(set(args.budgets)) or None)
    if args.reference_perplexity:
        add_reference_perplexity(args, model, tokenizer, task, examples, results, out)
    print((out / "results.md").read_text())
    if not args.no_plots:
        from aha.report.eval_plots import plot_eval

        for path in plot_eval(results, out / "plots"):
            print(path)
    print(f"wrote {out}")
    del results
    return 0


def add_reference_perplexity(args: argparse.Namespace, model: object, tokenizer: object, task: object,
                             examples: list, results: dict, out: Path) -> None:
    """results.json "reference_perplexity" and a results.md section (aha.eval.perplexity)."""
    import json

    from aha.eval.perplexity import perplexity_markdown, reference_perplexity_summary
    from aha.tasks.base import preopens_think

    scorer, scorer_tok = model, tokenizer
    if args.perplexity_model:
        from aha.models import load_model, load_tokenizer

        scorer_tok = load_tokenizer(args.perplexity_model)
        scorer = load_model(args.perplexity_model, device=args.device, dtype=args.dtype)
    summary = reference_perplexity_summary(scorer, scorer_tok, examples, out / "samples.jsonl",
                                           think_preopened=preopens_think(task))
    summary["scorer"] = args.perplexity_model or "the evaluated model"
    results["reference_perplexity"] = summary
    data = json.loads((out / "results.json").read_text())
    data["reference_perplexity"] = summary
    (out / "results.json").write_text(json.dumps(data, indent=2))
    with open(out / "results.md", "a", encoding="utf-8") as f:
        f.write(perplexity_markdown(summary))
