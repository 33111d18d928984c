"""`aha data gsm8k|math|aime|amc|multiple-choice`: convert a public copy of a dataset into aha's jsonl.

    aha data gsm8k --from gsm8k_test.jsonl --out data/gsm8k_test.jsonl
    aha data gsm8k --from ~/.cache/huggingface/hub/datasets--openai--gsm8k --config main --split test \
        --out data/gsm8k_test.jsonl
    aha data math --from MATH-500.parquet --out data/math500.jsonl --field question=problem
    aha data aime --from aime.jsonl --out data/aime.jsonl --field answer=Answer
    aha data multiple-choice --from gpqa_diamond.csv --out data/gpqa.jsonl

The output has one problem per line with `id`, `question`, `answer` and, where the input has them,
`solution`, `level`, `subject`, `year`, `contest`, `number`, `url` and (multiple choice) `choices`
(see aha.tasks.math.loaders);
the math tasks read it back with their default field names.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

HELP = "convert a GSM8K / MATH / AIME / AMC / multiple-choice dataset into aha's jsonl"

# `aha data NAME` -> record kind in aha.tasks.math.loaders
KINDS = {"gsm8k": "gsm8k", "math": "math", "aime": "competition", "amc": "competition",
         "multiple-choice": "choice"}
_HELPS = {"gsm8k": "convert a GSM8K file or dataset into aha's jsonl",
          "math": "convert a MATH-style file or dataset into aha's jsonl",
          "aime": "convert an AIME file or dataset into aha's jsonl",
          "amc": "convert an AMC file or dataset into aha's jsonl",
          "multiple-choice": "convert a multiple-choice file or dataset (GPQA csv, MMLU, ...) into aha's jsonl"}
SOURCES = (".jsonl, .json, .parquet, .csv or .arrow file, a Dataset.save_to_disk folder, a Hugging Face "
           "hub-cache snapshot folder, or a `datasets` name (needs the network)")


_LABELS = {"gsm8k": "a GSM8K-style file (question, answer ending in '#### N')",
           "math": "a MATH-style file (problem, solution and/or answer, level, type/subject)",
           "aime": "an AIME-style file (question, integer answer, year; year, contest and number are also "
                   "read from ids like 2021-I-1 or 2024_AIME_I_Problems/Problem_3)",
           "amc": "an AMC-style file (problem, numeric answer, url)",
           "multiple-choice": "a multiple-choice file (question; options as a `choices` list, columns A-D, or "
                              "GPQA's 'Correct Answer' and 'Incorrect Answer 1-3' columns; answer as a letter, "
                              "an index or the option's text)"}
_EPILOG = {"multiple-choice": "GPQA's options are shuffled with a per-question seed, and its level sentences "
                              "are shortened to labels such as 'hard graduate'.",
           "gsm8k": "The gsm8k task reads a completion's answer from \\boxed{}, then <answer>, then a final "
                    "'#### N' line (GSM8K's own format); change the order with --task-option extract=[...]."}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = f"Convert {_LABELS[name]} into aha's jsonl. " + _EPILOG.get(name, "")
    parser.add_argument("--from", dest="source", required=True, nargs="+", metavar="SOURCE",
                        help=f"input(s): a {SOURCES}")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN",
                        help="read field NAME (question, answer, solution, level, subject, year, id, ...) "
                             "from column COLUMN; repeatable")
    parser.add_argument("--split", default="train",
                        help="split to read from a source with several (a saved DatasetDict, a snapshot folder, "
                             "a `datasets` name); a single file is read whole (default train)")
    parser.add_argument("--config", default=None,
                        help="`datasets` configuration of a snapshot folder or name (e.g. main for gsm8k)")
    parser.set_defaults(math_data_kind=KINDS[name], math_data_name=name)


def parse_fields(items: list[str]) -> dict[str, str]:
    """`["question=Problem", ...]` -> {"question": "Problem"}."""
    from aha.errors import AhaError

    fields = {}
    for item in items:
        key, sep, column = item.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise AhaError(f"--field expects NAME=COLUMN, got {item!r}")
        fields[key.strip()] = column.strip()
    return fields


def run(args: argparse.Namespace) -> int:
    from aha.tasks.math.loaders import iter_jsonl, load_records

    rows = load_records(list(args.source), args.math_data_kind, parse_fields(args.field), split=args.split,
                        config=args.config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for line in iter_jsonl(rows):
            f.write(line + "\n")
    groups = []
    for key in ("level", "subject", "year", "contest"):
        counts = Counter(r[key] for r in rows if key in r)
        if counts:
            groups.append(f"{key}: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items(), key=str)))
    print(f"wrote {len(rows)} {args.math_data_name} problems to {out}")
    for g in groups:
        print(f"  {g}")
    return 0
