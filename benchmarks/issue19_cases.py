"""The cases of issue 19 and the verdict aha gives each: run it against two source trees to compare.

    python benchmarks/issue19_cases.py --json after.json
    PYTHONPATH=/tmp/aha_before/src python benchmarks/issue19_cases.py --json before.json
    python benchmarks/issue19_cases.py --table before.json after.json   # markdown for docs/

A verdict is "accepted" / "rejected" for an answer, "read" / "error: ..." for a file, or the
extracted letter / bucket labels. No network; files are made in a temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import tempfile
from pathlib import Path

VEC = "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"
MAT = "\\begin{pmatrix} 1/2 & 3 \\\\ 0 & 1 \\end{pmatrix}"

# (item, task, gold, completion, what is right)
ANSWERS = [
    (1, "math", VEC, "\\boxed{-2}", "rejected"),
    (1, "math", VEC, "\\boxed{\\begin{pmatrix} -2 \\\\ -14 \\\\ -8 \\end{pmatrix}}", "rejected"),
    (1, "math", VEC, "\\boxed{\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}}", "accepted"),
    (1, "math", VEC, "\\boxed{\\begin{bmatrix} -2 \\\\ -14 \\\\ -7 \\end{bmatrix}}", "accepted"),
    (1, "math", VEC, "\\boxed{\\left(\\begin{array}{c} -2 \\\\ -14 \\\\ -7 \\end{array}\\right)}", "accepted"),
    (1, "math", VEC, "\\boxed{(-2, -14, -7)}", "accepted"),
    (1, "math", MAT, "\\boxed{\\begin{pmatrix}\\frac12&3\\\\0&1\\end{pmatrix}}", "accepted"),
    (1, "math", MAT, "\\boxed{\\begin{pmatrix} 0.5 & 3 \\\\ 0 & 2 \\end{pmatrix}}", "rejected"),
    (2, "math", "52_8", "\\boxed{52_9}", "rejected"),
    (2, "math", "52_8", "\\boxed{52}", "rejected"),
    (2, "math", "52_8", "\\boxed{52_{8}}", "accepted"),
    (2, "math", "1011_2", "\\boxed{1011_3}", "rejected"),
    (3, "gsm8k", "72", "48 + 24 = 72\n#### 72", "accepted"),
    (3, "gsm8k", "72", "48 + 24 = 72\n#### 71", "rejected"),
    (4, "gsm8k", "3", "\\boxed{3 bolts}", "accepted"),
    (4, "gsm8k", "60", "\\boxed{60 instructions}", "accepted"),
    (4, "gsm8k", "2", "\\boxed{2x}", "rejected"),
]

MC_CHOICES = ["BB BB", "Bb Bb", "(A) and (B) both", "none"]
# (item, boxed text, right letter)
CHOICES = [
    (5, "Bb Bb", "B"),
    (5, "(A) and (B) both", "C"),
    (5, "BB BB", "A"),
]


def _answer_verdicts(tmp: Path) -> list[dict]:
    from aha.tasks import get_task
    from aha.tasks.base import Example

    out = []
    tasks = {name: get_task(name, data=[]) for name in ("math", "gsm8k")}
    for item, name, gold, completion, right in ANSWERS:
        verdict = tasks[name].verify(completion, Example(id="x", prompt=[], answer=gold, meta={}))
        got = "accepted" if verdict.correct else "rejected"
        out.append({"item": item, "case": f"{name}: gold `{gold}`, answer `{completion}`", "right": right,
                    "got": got})
    task = get_task("multiple-choice", data=[])
    for item, boxed, letter in CHOICES:
        ex = Example(id="x", prompt=[], answer=letter, meta={"choices": MC_CHOICES})
        verdict = task.verify(f"\\boxed{{{boxed}}}", ex)
        out.append({"item": item, "case": f"multiple-choice: options {MC_CHOICES}, answer `\\boxed{{{boxed}}}`",
                    "right": letter, "got": verdict.parsed or "none"})
    return out


def _try(fn) -> str:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the verdict is the error
        message = re.sub(r"/[\w/.-]*/tmp\w+/", "", str(exc).splitlines()[0])  # the temporary folder's name
        return f"error: {message[:80]}"


def _file_verdicts(tmp: Path) -> list[dict]:
    from aha.tasks import get_task

    out = []
    # 6: aha's own output holding U+2028
    src = tmp / "g.jsonl"
    src.write_text(json.dumps({"question": "Tom has\u20283 apples.", "answer": "#### 3"}, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    out.append({"item": 6, "case": "gsm8k jsonl with U+2028 inside a string", "right": "read",
                "got": _try(lambda: "read" if len(list(get_task("gsm8k", data=[str(src)]).examples("test"))) == 1
                            else "wrong rows")})
    # 7: GPQA as csv
    gpqa = tmp / "gpqa.csv"
    with open(gpqa, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
                    "High-level domain", "Writer's Difficulty Estimate", "Record ID"])
        w.writerow(["Which?", "Bb Bb", "BB BB", "bb bb", "BB bb", "Biology",
                    "Hard graduate level (could be a question on a hard graduate exam for PhD students in the domain)",
                    "rec1"])

    def read_gpqa() -> str:
        ex = next(get_task("multiple-choice", data=[str(gpqa)], bucket_by="level").examples("test"))
        return f"read, bucket '{ex.bucket}'"

    out.append({"item": 7, "case": "GPQA .csv as multiple-choice data, bucketed by level", "right": "read, short label",
                "got": _try(read_gpqa)})
    # 8: AIME ids
    aime = tmp / "aime.jsonl"
    aime.write_text("".join(json.dumps({"id": f"{y}_AIME_I_Problems/Problem_1", "problem": f"q{y}", "answer": "1"})
                            + "\n" for y in (2023, 2024)), encoding="utf-8")
    out.append({"item": 8, "case": "AIME ids `2024_AIME_I_Problems/Problem_1`: year buckets", "right": "2023, 2024",
                "got": _try(lambda: ", ".join(sorted({e.bucket for e in get_task(
                    "aime", data=[str(aime)]).examples("test")})))})
    # 9: a save_to_disk folder with splits
    import datasets

    folder = tmp / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"problem": ["a"], "answer": ["1"]}),
                          "test": datasets.Dataset.from_dict({"problem": ["b", "c"], "answer": ["2", "3"]})}
                         ).save_to_disk(str(folder))
    out.append({"item": 9, "case": "Dataset.save_to_disk folder, split test", "right": "2 problems",
                "got": _try(lambda: f"{len(list(get_task('math', data=[str(folder)]).examples('test')))} problems")})
    return out


def _report_verdicts() -> list[dict]:
    from aha.eval.runner import build_results, results_markdown
    from aha.eval.scoring import format_summary, summarize

    records = [{"id": f"p{p}", "bucket": "level 1", "sample": k, "correct": k == 0, "format_ok": True,
                "partial": 0.0, "completion": "x"} for p, n in enumerate((4, 4, 2)) for k in range(n)]
    headline = results_markdown(build_results(records, {"source": "out.jsonl", "task": "math"})).split("\n")[2]
    rows = [{"item": 10, "case": "`aha score --report` headline, 4/4/2 samples per problem",
             "right": "no invented settings; sample counts", "got": headline.split(". Accuracy")[0]}]
    recs = [{"id": str(i), "bucket": b, "correct": True, "format_ok": True, "partial": 1.0}
            for i, b in enumerate(["Algebra", "Counting & Probability"])]
    lines = [ln for ln in format_summary(summarize(recs)).splitlines() if not ln.startswith(("-", "bucket mean"))]
    rows.append({"item": 10, "case": "text table with a 22-character bucket name", "right": "aligned",
                 "got": "aligned" if len({len(ln) for ln in lines}) == 1 else "misaligned"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write this tree's verdicts to this file")
    parser.add_argument("--table", nargs=2, metavar=("BEFORE", "AFTER"), help="print a markdown table of two runs")
    args = parser.parse_args()
    if args.table:
        before, after = (json.loads(Path(p).read_text()) for p in args.table)
        print("| item | case | right | before | after |")
        print("|---|---|---|---|---|")
        for b, a in zip(before, after):
            case = a["case"].replace("|", "\\|").replace("\n", "\\n")
            print(f"| {a['item']} | {case} | {a['right']} | {b['got']} | {a['got']} |")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = _answer_verdicts(Path(tmp)) + _file_verdicts(Path(tmp)) + _report_verdicts()
    text = json.dumps(rows, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
