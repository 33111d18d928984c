"""`aha data gsm8k|math|aime|amc`: convert a public copy of a math dataset into aha's jsonl.

    aha data gsm8k --from gsm8k_test.jsonl --out data/gsm8k_test.jsonl
    aha data math --from MATH-500.parquet --out data/math500.jsonl --field question=problem
    aha data aime --from aime.jsonl --out data/aime.jsonl --field answer=Answer

The output has one problem per line with `id`, `question`, `answer` and, where the input has them,
`solution`, `level`, `subject`, `year`, `contest`, `number` and `url` (see aha.tasks.math.loaders);
the math tasks read it back with their default field names.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

HELP = "convert a GSM8K / MATH / AIME / AMC file (jsonl, json, parquet) into aha's jsonl"

# `aha data NAME` -> record kind in aha.tasks.math.loaders
KINDS = {"gsm8k": "gsm8k", "math": "math", "aime": "competition", "amc": "competition"}


_LABELS = {"gsm8k": "a GSM8K-style file (question, answer ending in '#### N')",
           "math": "a MATH-style file (problem, solution and/or answer, level, type/subject)",
           "aime": "an AIME-style file (question, integer answer, year)",
           "amc": "an AMC-style file (problem, numeric answer, url)"}


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = f"Convert {_LABELS[name]} into aha's jsonl."
    parser.add_argument("--from", dest="source", required=True, nargs="+", metavar="FILE",
                        help="input file(s) (.jsonl, .json, .parquet) or a `datasets` name (needs the network)")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN",
                        help="read field NAME (question, answer, solution, level, subject, year, id, ...) "
                             "from column COLUMN; repeatable")
    parser.add_argument("--split", default="train", help="split to read from a `datasets` name (default train)")
    parser.add_argument("--config", default=None, help="`datasets` configuration name (e.g. main for gsm8k)")
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
