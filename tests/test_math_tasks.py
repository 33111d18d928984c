"""The math tasks end to end: real AIME/AMC fixtures, GSM8K/MATH/multiple-choice files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aha.cli import main
from aha.errors import AhaError
from aha.tasks import TASKS, get_task
from aha.tasks.base import Example

DATA = Path("/work/shared/data/math")
AIME = DATA / "aime_2021_2024.jsonl"
AMC = DATA / "amc.jsonl"
needs_fixtures = pytest.mark.skipif(not (AIME.is_file() and AMC.is_file()), reason="math fixtures not present")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_tasks_are_registered():
    for name in ("gsm8k", "math", "aime", "amc", "multiple-choice", "arithmetic"):
        assert name in TASKS


@needs_fixtures
def test_aime_fixture_loads_with_groupings():
    task = get_task("aime", data=[str(AIME)])
    examples = list(task.examples("test"))
    assert len(examples) == 103
    first = examples[0]
    assert first.id == "2021-I-1" and first.answer == "97"
    assert first.meta == {"year": 2021, "contest": "AIME I", "number": 1, "bucket": "2021"}
    assert [m["role"] for m in first.prompt] == ["system", "user"]
    assert "\\boxed" in first.prompt[0]["content"] and first.prompt[1]["content"].startswith("Zou and Chou")
    assert sorted({e.bucket for e in examples}) == ["2021", "2022", "2023", "2024"]
    # bucket by another grouping
    contests = {e.bucket for e in get_task("aime", data=[str(AIME)], bucket_by="contest").examples("test")}
    assert contests == {"AIME I", "AIME II"}


def _equivalent_forms(n: int) -> list[str]:
    # the same integer written the ways a model might box it
    forms = [f"\\boxed{{{n}}}", f"\\boxed{{{n}.0}}", f"$\\boxed{{ {n} }}$", f"<answer>{n}</answer>",
             f"\\boxed{{\\frac{{{2 * n}}}{{2}}}}", f"\\boxed{{{n:,}}}", f"\\boxed{{x = {n}}}"]
    root = f"\\sqrt{{{n * n}}}"  # needs the symbolic check
    forms.append(f"\\boxed{{{root}}}" if n >= 0 else f"\\boxed{{-{root}}}")
    return forms


@needs_fixtures
@pytest.mark.parametrize("name, path", [("aime", AIME), ("amc", AMC)])
def test_every_fixture_answer_verifies_and_its_neighbour_does_not(name, path):
    task = get_task(name, data=[str(path)], timeout=10.0)
    examples = list(task.examples("test"))
    assert len(examples) == (103 if name == "aime" else 83)
    for ex in examples:
        accepted = [int(a) for a in ex.meta.get("accepted", [ex.answer])]
        for n in accepted:
            for form in _equivalent_forms(n):
                verdict = task.verify(f"Reasoning... so the answer is {form}", ex)
                assert verdict.correct, (ex.id, form, verdict)
        neighbour = max(accepted) + 1
        for form in (f"\\boxed{{{neighbour}}}", f"\\boxed{{\\sqrt{{{neighbour * neighbour}}}}}"):
            verdict = task.verify(f"so the answer is {form}", ex)
            assert not verdict.correct and verdict.format_ok, (ex.id, form, verdict)


@needs_fixtures
def test_amc_fixture_groupings():
    task = get_task("amc", data=[str(AMC)])
    examples = list(task.examples("test"))
    assert examples[0].answer == "142"  # stored as 142.0
    assert {e.bucket for e in examples} == {"2022", "2023"}
    assert {e.meta["contest"] for e in examples} == {"AMC 12A", "AMC 12B"}


@needs_fixtures
def test_aime_two_accepted_answers():
    task = get_task("aime", data=[str(AIME)])
    ex = next(e for e in task.examples("test") if e.id == "2022-II-8")
    assert ex.meta["accepted"] == ["080", "081"]
    assert task.verify("\\boxed{80}", ex).correct and task.verify("\\boxed{081}", ex).correct
    assert not task.verify("\\boxed{82}", ex).correct


GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
]

GSM8K_VERDICTS = [
    # (completion, extract option, correct, format_ok) for the reference 72
    ("48 + 24 = 72, so \\boxed{72}", ["boxed", "answer_tag"], True, True),  # boxed
    ("<think>48+24</think><answer>72</answer>", ["boxed", "answer_tag"], True, True),  # answer tag
    ("<think>48+24</think><answer>72</answer>", ["boxed"], False, False),  # seed 003: only boxes count
    ("she sold 72 clips", ["boxed", "answer_tag"], False, False),  # no fallback by default
    ("she sold 72 clips", ["boxed", "answer_tag", "last_number"], True, True),  # lenient fallback
    ("\\boxed{72.00}", ["boxed"], True, True),  # float-looking integer
    ("\\boxed{\\$72}", ["boxed"], True, True),  # currency
    ("\\boxed{71}", ["boxed"], False, True),  # wrong but well formed
    ("\\boxed{}", ["boxed"], False, False),  # empty box
]


@pytest.mark.parametrize("completion, extract, correct, format_ok", GSM8K_VERDICTS)
def test_gsm8k_verdicts(tmp_path, completion, extract, correct, format_ok):
    task = get_task("gsm8k", data=[write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)], extract=extract)
    ex = next(task.examples("train"))
    verdict = task.verify(completion, ex)
    assert (verdict.correct, verdict.format_ok) == (correct, format_ok), verdict
    assert verdict.partial == (1.0 if correct else 0.0)


def test_gsm8k_example_and_trace(tmp_path):
    task = get_task("gsm8k", data=[write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)])
    ex = list(task.examples("train"))[1]
    assert ex.answer == "10" and ex.bucket == "all"
    # the SFT trace is the worked solution without calculator notes, ending in the boxed answer
    assert ex.meta["trace"] == ("Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10."
                                "\n\nThe final answer is \\boxed{10}.")
    assert task.verify(ex.meta["trace"], ex).correct
    wrong = task.verify("\\boxed{11}", ex)
    assert (wrong.parsed, wrong.error) == ("11", "wrong: expected 10")


MATH_ROWS = [
    {"problem": f"Problem {i}", "solution": f"So the answer is $\\boxed{{{i}}}$.", "level": f"Level {1 + i % 5}",
     "type": ["Algebra", "Geometry"][i % 2]}
    for i in range(40)
]


def test_math_buckets_holdout_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", MATH_ROWS)
    task = get_task("math", data=[path], test_fraction=0.25, seed=3)
    train = list(task.examples("train"))
    test = list(task.examples("test"))
    # the hold-out is a disjoint, deterministic split of all problems
    assert len(train) + len(test) == 40 and 4 <= len(test) <= 18
    assert not {e.id for e in train} & {e.id for e in test}
    assert [e.id for e in get_task("math", data=[path], test_fraction=0.25, seed=3).examples("test")] == \
        [e.id for e in test]
    assert {e.bucket for e in train + test} == {f"level {k}" for k in range(1, 6)}
    by_subject = get_task("math", data=[path], bucket_by="subject", limit=3)
    assert [e.bucket for e in by_subject.examples("train")] == ["Algebra", "Geometry", "Algebra"]
    # MATH solutions already end in a box: the trace is the solution itself
    ex = next(task.examples("train"))
    assert ex.meta["trace"] == ex.meta["solution"] and task.verify(ex.meta["trace"], ex).correct


def test_split_dict_and_options_are_checked(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", MATH_ROWS[:2])
    task = get_task("math", data={"train": path, "test": [path]})
    assert len(list(task.examples("test"))) == 2
    with pytest.raises(AhaError, match="no data for split 'validation'"):
        list(task.examples("validation"))
    with pytest.raises(AhaError, match="unknown answer extractor"):
        get_task("math", data=[path], extract=["boxed", "guess"])
    with pytest.raises(AhaError, match="bucket_by"):
        get_task("math", data=[path], bucket_by="colour")
    with pytest.raises(AhaError, match="prompt_template"):
        get_task("math", data=[path], prompt_template="no placeholder")


def test_prompt_options(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", MATH_ROWS[:1])
    task = get_task("math", data=[path], system_prompt="", prompt_template="Solve: {question}")
    # braces in the question are not format fields
    ex = task.make_example({"id": "x", "question": "Is {1,2} a set?", "answer": "yes"})
    assert ex.prompt == [{"role": "user", "content": "Solve: Is {1,2} a set?"}]


def test_verify_never_raises():
    task = get_task("math", data=[])
    ex = Example(id="x", prompt=[], answer="\\frac{1}{2}", meta={})
    for junk in (None, 42, "", "\\boxed{" * 1000, "\x00\\boxed{\x00}"):
        verdict = task.verify(junk, ex)  # type: ignore[arg-type]
        assert not verdict.correct and verdict.error


MC_ROWS = [
    {"question": "Which number is prime?", "choices": ["4", "6", "7", "8"], "answer": "C", "subject": "arithmetic"},
]

MC_VERDICTS = [
    # (completion, correct, format_ok)
    ("7 has no divisors but 1 and itself, so \\boxed{C}", True, True),  # boxed letter
    ("The answer is (C).", True, True),  # phrasing
    ("Answer: B", False, True),  # wrong letter
    ("\\boxed{7}", True, True),  # the option's text in the box maps to its letter
    ("I am not sure.", False, False),  # no letter at all
]


@pytest.mark.parametrize("completion, correct, format_ok", MC_VERDICTS)
def test_multiple_choice(tmp_path, completion, correct, format_ok):
    task = get_task("multiple-choice", data=[write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)])
    ex = next(task.examples("test"))
    assert ex.answer == "C" and ex.bucket == "arithmetic"
    assert ex.prompt[1]["content"] == "Which number is prime?\n\nA) 4\nB) 6\nC) 7\nD) 8"
    verdict = task.verify(completion, ex)
    assert (verdict.correct, verdict.format_ok) == (correct, format_ok), verdict


@needs_fixtures
def test_cli_converts_and_the_task_reads_it_back(tmp_path, capsys):
    out = tmp_path / "aime.jsonl"
    assert main(["data", "aime", "--from", str(AIME), "--out", str(out)]) == 0
    assert "wrote 103 aime problems" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"id": "2021-I-1", "question": rows[0]["question"], "answer": "97", "year": 2021,
                       "number": 1, "contest": "AIME I"}
    original = [(e.id, e.answer, e.bucket) for e in get_task("aime", data=[str(AIME)]).examples("test")]
    assert [(e.id, e.answer, e.bucket) for e in get_task("aime", data=[str(out)]).examples("test")] == original


def test_cli_field_mapping_and_errors(tmp_path, capsys):
    src = write_jsonl(tmp_path / "own.jsonl", [{"Problem": "2+2?", "Solution": "It is $\\boxed{4}$.", "Lvl": 2}])
    out = tmp_path / "out.jsonl"
    argv = ["data", "math", "--from", src, "--out", str(out), "--field", "question=Problem",
            "--field", "solution=Solution", "--field", "level=Lvl"]
    assert main(argv) == 0
    row = json.loads(out.read_text())
    assert (row["question"], row["answer"], row["level"]) == ("2+2?", "4", 2)
    # a bad mapping is a one-line error, not a traceback
    assert main(["data", "math", "--from", src, "--out", str(out), "--field", "question"]) == 2
    assert "--field expects NAME=COLUMN" in capsys.readouterr().err
    assert main(["data", "gsm8k", "--from", src, "--out", str(out)]) == 2
    assert "own.jsonl, line 1: field 'question' is missing" in capsys.readouterr().err


GSM8K_DEFAULT_VERDICTS = [
    # (completion, correct, format_ok) for the reference 72, with the task's default extractors
    ("48 + 24 = 72\n#### 72", True, True),  # GSM8K's own answer line (was: no answer found)
    ("She sold 72 clips.\n#### 72 clips", True, True),  # the answer line with a unit word
    ("48 + 24 = 72\n#### 71", False, True),  # a wrong answer line is still wrong
    ("so \\boxed{72}\n#### 71", True, True),  # the box comes first, `####` is the last resort
    ("<answer>71</answer>\n#### 72", False, True),  # ... and so does the answer tag
    ("she sold 72 clips", False, False),  # still no last-number fallback
]


@pytest.mark.parametrize("completion, correct, format_ok", GSM8K_DEFAULT_VERDICTS)
def test_gsm8k_default_extractors_read_the_native_format(tmp_path, completion, correct, format_ok):
    task = get_task("gsm8k", data=[write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)])
    assert task.extract == ["boxed", "answer_tag", "hashes"]
    verdict = task.verify(completion, next(task.examples("train")))
    assert (verdict.correct, verdict.format_ok) == (correct, format_ok), verdict


def test_other_math_tasks_keep_their_defaults(tmp_path):
    # only GSM8K has a native `####` convention
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "1+1?", "answer": "2"}])
    assert get_task("math", data=[path]).extract == ["boxed", "answer_tag"]


MC_TEXT_CHOICES = ["BB BB", "Bb Bb", "(A) and (B) both", "The mitochondria"]
MC_TEXT_VERDICTS = [
    # (boxed answer, letter it names) with the options above
    ("Bb Bb", "B"),  # genotype: case is significant (was read as A, `BB BB`)
    ("BB BB", "A"),  # the exact option
    ("bb bb", None),  # no option has this genotype
    ("(A) and (B) both", "C"),  # an option text starting with "(A)" (was read as the letter A)
    ("the mitochondria", "D"),  # prose option, only the first letter's case differs
    ("(A)", "A"),  # a letter alone is still a letter
    ("B) Bb Bb", "B"),  # a letter heading the option text
    ("D.", "D"),  # letter with a period
]


@pytest.mark.parametrize("boxed, letter", MC_TEXT_VERDICTS)
def test_choice_text_matching(boxed, letter):
    from aha.tasks.math.extract import extract_choice

    found = extract_choice(f"so \\boxed{{{boxed}}}", letters="ABCD", choices=MC_TEXT_CHOICES)
    assert (found[0] if found else None) == letter


def test_a_repeated_pathological_answer_is_checked_once(monkeypatch):
    # eight identical \boxed{10^{10^{10}}} cost 41 s: each was re-verified up to the timeout. The task
    # remembers (gold, answer) verdicts, timeouts included, for its lifetime
    import aha.tasks.math.tasks as tasks_module
    from aha.tasks.math.equivalence import Equivalence

    calls = []

    def slow_timeout(gold, pred, **kw):
        calls.append((gold, pred))
        return Equivalence(False, "symbolic", "timed out")

    monkeypatch.setattr(tasks_module, "is_equivalent", slow_timeout)
    task = get_task("math", data={"test": []})
    ex = Example(id="p", prompt=[], answer="5")
    verdicts = [task.verify("so \\boxed{10^{10^{10}}}", ex) for _ in range(8)]
    assert len(calls) == 1 and all(v.error == "wrong, timed out" for v in verdicts)
    task.verify("\\boxed{7}", ex)  # another answer is a new comparison
    assert len(calls) == 2
