"""`aha score`: grade completions produced elsewhere against a task's reference answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aha.errors import AhaError

HELP = "score completions produced elsewhere against a task's reference answers"
DESCRIPTION = """Grade a JSONL file of completions ({"id": ..., "completion": ...} per line, several
lines per id allowed) with a task's verifier, against the examples of a data file, and print
accuracy, strict accuracy (correct and well formed), format rate and mean partial credit per bucket
and overall.

The task is built as get_task(TASK, data=[FILE, ...], **options), so any task that reads data files
works; --task-option passes further task options (values are YAML scalars). Data may be .jsonl,
.json, .parquet, .csv or .arrow files, Dataset.save_to_disk folders or hub-cache snapshot folders.

Math tasks (gsm8k, math, aime, amc, multiple-choice) take, among others:
  extract=[boxed,answer_tag]   answer extractors tried in order: boxed, answer_tag, hashes (a final
                               '#### N' line), last_number; gsm8k's default is [boxed,answer_tag,hashes]
                               (GSM8K's own format last), the others' [boxed,answer_tag];
                               multiple-choice: boxed, answer_tag, phrase, last_letter (default the
                               first three)
  bucket_by=level,subject      report fields (level, subject, year, contest); several give one
                               table per field in the same report, and with --report a combined
                               table of the first two (level x subject) and a regression of
                               per-problem accuracy on them; null gives one bucket

example:  aha score --task knights-knaves --data kk_test.jsonl --completions outputs.jsonl --out scores.json
          aha score --task knights-knaves --data test.parquet --completions out.jsonl \\
                    --task-option think_preopened=true"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="registered task name (e.g. knights-knaves) or module:Class")
    p.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="data file(s) holding the examples")
    p.add_argument("--completions", required=True, metavar="FILE",
                   help="JSONL with id and completion per line")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write {summary, samples} as JSON (per-sample verdicts included)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write results.json and results.md (pass@k, per-bucket table, reflection "
                        "statistics) into DIR, as `aha eval` does, and its figures into DIR/plots (pass@k "
                        "curves, per-problem pass@1 histogram)")
    p.add_argument("--split", default="test",
                   help="split of the task to read the examples from; also the split read from a data "
                        "folder with several (default test)")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra task option, repeatable (e.g. think_preopened=true)")


def parse_options(items: list[str]) -> dict[str, object]:
    """KEY=VALUE strings -> options, values parsed as YAML scalars ("true", "3", "[a, b]")."""
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AhaError(f"--task-option {item!r} must look like KEY=VALUE")
        try:
            # an empty value is the empty string (e.g. system_prompt= drops the system message)
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    from aha.commands.recipe_args import check_output_path
    from aha.eval.scoring import format_summary, read_completions, score_samples
    from aha.tasks import get_task

    if args.out:
        check_output_path(args.out, "--out", folder=False)
    if args.report:
        check_output_path(args.report, "--report", folder=True)
    options = parse_options(args.task_option)
    samples = read_completions(args.completions)  # cheap checks before building the task
    from aha.train.config import check_task_options

    check_task_options(args.task, {"data": list(args.data), **options}, "--task-option")
    try:
        task = get_task(args.task, data=list(args.data), **options)
    except TypeError as exc:
        raise AhaError(f"task {args.task!r} does not accept these options: {exc}") from exc
    examples = list(task.examples(args.split))
    if not examples:
        raise AhaError(f"task {args.task!r} has no examples in split {args.split!r} "
                       f"of {', '.join(args.data)}")
    records, summary = score_samples(task, examples, samples)
    print(format_summary(summary))
    if args.out:
        from aha.commands.recipe_args import write_text_atomic

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"task": args.task, "data": list(args.data), "completions": str(args.completions),
               "summary": summary, "samples": records}
        text = json.dumps(doc, ensure_ascii=False, indent=1)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # a lone surrogate in a completion ("\ud800" in its JSON) has no UTF-8 form: write every
            # non-ASCII character as a \u escape instead, which reads back to the same strings
            text = json.dumps(doc, ensure_ascii=True, indent=1)
        write_text_atomic(out, text)
        print(f"wrote {out}")
    if args.report:
        from aha.eval.runner import build_results, write_results
        from aha.rewards.reflection import count_report_reflections

        texts = [smp.text for smp in samples]
        for rec, text in zip(records, texts):
            rec["completion"] = text
            rec["reflections"] = count_report_reflections(text)
        report_dir = Path(args.report)
        report_dir.mkdir(parents=True, exist_ok=True)
        results = build_results(records, {"source": str(args.completions), "task": args.task}, label=args.task)
        write_results(results, report_dir)
        from aha.report.eval_plots import plot_eval

        plot_eval(results, report_dir / "plots")
        print(f"wrote {report_dir / 'results.md'}")
    return 0
