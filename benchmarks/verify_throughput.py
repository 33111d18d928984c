"""Seconds per 1,000 completions verified, for each task (the figure issue 19 asks for).

    python benchmarks/verify_throughput.py                       # this tree
    PYTHONPATH=/tmp/aha_before/src python benchmarks/verify_throughput.py   # another tree

Each task gets --count completions over its examples, cycling through a fixed mix of forms: the
reference boxed, an equivalent spelling, a wrong answer, a completion with no answer, and one form
that needs the symbolic check (math tasks). Real AIME/AMC/K&K files from /work/shared/data are used
when present; GSM8K, MATH-style and multiple-choice examples are built in memory. One warm-up pass
(starting the symbolic worker) is not timed. Results are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SHARED = Path("/work/shared/data")


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _math_forms(answer: str) -> list[str]:
    return [f"The answer is \\boxed{{{answer}}}.", f"<answer>{answer}</answer>", "So \\boxed{123456789}.",
            "I do not know.", f"\\boxed{{\\frac{{2\\cdot({answer})}}{{2}}}}"]


def _tasks(tmp: Path):
    from aha.tasks import get_task

    gsm = [{"question": f"q{i}", "answer": f"work\n#### {i * 7}"} for i in range(50)]
    math_rows = [{"problem": f"p{i}", "answer": a, "level": 1 + i % 5, "type": "Algebra"}
                 for i, a in enumerate(["\\frac{1}{2}", "2\\sqrt{2}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                                        "(1, 2)", "x^2+1", "52_8", "\\pi", "[0, 1)"] * 5)]
    mc = [{"question": f"q{i}", "choices": ["alpha", "beta", "gamma", "delta"], "answer": "ABCD"[i % 4]}
          for i in range(40)]
    out = {
        "gsm8k": get_task("gsm8k", data=[_write(tmp / "g.jsonl", gsm)]),
        "math": get_task("math", data=[_write(tmp / "m.jsonl", math_rows)]),
        "multiple-choice": get_task("multiple-choice", data=[_write(tmp / "mc.jsonl", mc)]),
        "arithmetic": get_task("arithmetic"),
    }
    if (SHARED / "math" / "aime_2021_2024.jsonl").is_file():
        out["aime"] = get_task("aime", data=[str(SHARED / "math" / "aime_2021_2024.jsonl")])
        out["amc"] = get_task("amc", data=[str(SHARED / "math" / "amc.jsonl")])
    if (SHARED / "kk" / "5ppl_test.parquet").is_file():
        out["knights-knaves"] = get_task("knights-knaves", data=[str(SHARED / "kk" / "5ppl_test.parquet")])
    return out


def _completions(name: str, examples: list, count: int) -> list[tuple[str, object]]:
    pairs = []
    for i in range(count):
        ex = examples[i % len(examples)]
        k = i // len(examples)  # each pass over the examples uses the next form
        if name == "knights-knaves":
            forms = [f"<think>ok</think><answer>{ex.answer}</answer>",
                     f"<think>ok</think><answer>{ex.answer.replace('knight', 'KNAVE')}</answer>",
                     "<answer>nothing</answer>", "no answer"]
        elif name == "multiple-choice":
            forms = [f"\\boxed{{{ex.answer}}}", "The answer is (A).", "\\boxed{gamma}", "unsure"]
        else:
            forms = _math_forms(str(ex.answer))
            if name == "gsm8k":
                forms.append(f"so\n#### {ex.answer}")
        pairs.append((forms[(k + i) % len(forms)], ex))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="completions per task (default 1000)")
    parser.add_argument("--tasks", nargs="*", default=None, help="only these tasks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = _tasks(Path(tmp))
        print("| task | completions | seconds | seconds per 1,000 | correct |")
        print("|---|---:|---:|---:|---:|")
        for name, task in tasks.items():
            if args.tasks and name not in args.tasks:
                continue
            examples = list(task.examples("test"))
            pairs = _completions(name, examples, args.count)
            for text, ex in pairs[:20]:  # warm-up: worker start, imports
                task.verify(text, ex)
            t0 = time.perf_counter()
            correct = sum(bool(task.verify(text, ex).correct) for text, ex in pairs)
            seconds = time.perf_counter() - t0
            print(f"| {name} | {len(pairs)} | {seconds:.2f} | {seconds / len(pairs) * 1000:.2f} | {correct} |")


if __name__ == "__main__":
    main()
