"""Math word problems and competition problems: GSM8K, MATH-style, AIME, AMC, multiple choice.

Each task reads local files (or a `datasets` name), prompts with `[system, user]` chat messages that
ask for step-by-step reasoning and a `\\boxed{}` final answer, and grades a completion by extracting
its answer (extractors tried in the order of the `extract` option) and comparing it with the
reference (equivalence.py).

    task = get_task("aime", data=["aime_2021_2024.jsonl"])
    ex = next(task.examples("test"))
    task.verify("... so the answer is \\boxed{97}.", ex)   # Verdict(parsed='97', correct=True, ...)

`Verdict.format_ok` means an answer could be extracted; `correct` means it is equivalent to the
reference. A pathological answer that the symbolic check cannot settle within `timeout` seconds is
wrong with error "wrong, timed out".
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from aha.errors import AhaError
from aha.tasks.base import TASKS, Example, Task, Verdict
from aha.tasks.math.equivalence import Equivalence, is_equivalent
from aha.tasks.math.extract import (
    CHOICE_EXTRACTORS,
    check_extractors,
    extract_answer,
    extract_choice,
    last_boxed,
)
from aha.tasks.math.loaders import LETTERS, load_records

# (gold, answer) verdicts a math task remembers (see MathTask.compare)
VERDICT_CACHE_SIZE = 65536

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful problem solver. Work through the problem step by step, checking each step "
    "as you go. When you are done, write the final answer on its own as \\boxed{answer}."
)
CHOICE_SYSTEM_PROMPT = (
    "You are a careful problem solver. Reason about the question step by step and rule out the wrong "
    "options. When you are done, write the letter of the correct option as \\boxed{letter}, e.g. \\boxed{B}."
)

BUCKET_FIELDS = ("level", "subject", "year", "contest")
# answer extractors tried in order when the task's `extract` option is not given
DEFAULT_EXTRACTORS = ("boxed", "answer_tag")
GSM8K_EXTRACTORS = ("boxed", "answer_tag", "hashes")  # GSM8K's own `#### N` as the last resort
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def _bucket(row: dict[str, Any], by: str | None) -> str:
    if by is None or row.get(by) is None:
        return "all"
    value = row[by]
    # MATH's integer levels read "level 3"; a text level (GPQA's "hard graduate") is its own label
    return f"level {value}" if by == "level" and str(value).isdigit() else str(value)


def _bucket_dims(by: Any) -> list[str]:
    """`bucket_by` as a list of fields: None, "level", "level,subject" or ["level", "subject"]."""
    if by is None:
        return []
    items = by.split(",") if isinstance(by, str) else list(by) if isinstance(by, (list, tuple)) else None
    if items is None or any(not isinstance(x, str) for x in items):
        raise AhaError(f"bucket_by must be a field name, a comma-separated list of them, or null; got {by!r}")
    dims = [x.strip() for x in items if x.strip()]
    for dim in dims:
        if dim not in BUCKET_FIELDS:
            raise AhaError(f"bucket_by must name fields among {', '.join(BUCKET_FIELDS)} (e.g. level,subject) "
                           f"or be null, got {by!r}")
    if len(set(dims)) != len(dims):
        raise AhaError(f"bucket_by names a field twice: {by!r}")
    return dims


def _in_holdout(example_id: str, fraction: float, seed: int) -> bool:
    h = hashlib.sha1(f"{seed}:{example_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


@TASKS.register("math")
class MathTask(Task):
    """MATH-style problems: `problem`, `solution` and/or `answer`, `level`, `subject`/`type`.

    data: files (.jsonl/.json/.parquet/.csv/.arrow), dataset folders (save_to_disk, hub snapshots) or
        `datasets` names, read by aha.tasks.datafiles.read_rows. A list serves every split; a dict maps
        split -> files ({"train": [...], "test": [...]}); None loads `default_dataset` (network).
    fields: aha field -> column name in your files, e.g. {"question": "Problem"} (see loaders.ALIASES).
    system_prompt: replaces the default system message; "" leaves the system message out.
    prompt_template: the user message; "{question}" is replaced by the problem text.
    extract: answer extractors tried in order: "boxed", "answer_tag", "hashes" (`#### N`), and
        "last_number" (a lenient fallback, best left off for training rewards).
    timeout: seconds a symbolic equivalence check may run before the answer counts as wrong.
    symbolic: False compares numbers and strings only (no math-verify).
    bucket_by: meta field that names the report bucket: "level", "subject", "year", "contest", or
        None for one bucket "all"; several, comma-separated ("level,subject"), give one table per
        field in the same report (the first names `bucket`, all are in meta["groups"]). Default: the
        task's own (MATH: level, AIME/AMC: year).
    test_fraction: with list data, this share of problems (chosen by a hash of id and seed) forms
        split "test" and the rest split "train"; 0 serves every problem in every split.
    limit: keep only the first `limit` problems of each split.
    dataset_config: the `datasets` configuration name, when loading by name.
    min_rounded_decimals: a decimal answer with at least this many places matches a reference it
        rounds (0.333 for 1/3).
    seed: seed of the test_fraction hold-out.
    """

    name = "math"
    kind = "math"
    default_dataset: tuple[str, str | None] | None = ("HuggingFaceH4/MATH-500", None)
    default_bucket: str | None = "level"

    def __init__(self, data: list[str] | str | dict[str, Any] | None = None, fields: dict[str, str] | None = None,
                 *, system_prompt: str | None = None, prompt_template: str = "{question}",
                 extract: list[str] | tuple[str, ...] | str = DEFAULT_EXTRACTORS, timeout: float = 5.0,
                 symbolic: bool = True, bucket_by: str | None = "default", test_fraction: float = 0.0,
                 limit: int | None = None, dataset_config: str | None = None, min_rounded_decimals: int = 3,
                 seed: int = 0):
        if isinstance(data, str):
            data = [data]
        if data is not None and not isinstance(data, (list, tuple, dict)):
            raise AhaError(f"data must be a file, a list of files or a dict split -> files, got {data!r}")
        self.data = data
        self.fields = dict(fields or {})
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        if "{question}" not in prompt_template:
            raise AhaError("prompt_template must contain {question}")
        self.prompt_template = prompt_template
        self.extract = self._check_extract(extract)
        if timeout <= 0:
            raise AhaError("timeout must be > 0 seconds")
        self.timeout = float(timeout)
        self.symbolic = bool(symbolic)
        self._verdicts: OrderedDict[tuple[str, str, str], Equivalence] = OrderedDict()
        self.bucket_dims = _bucket_dims(self.default_bucket if bucket_by == "default" else bucket_by)
        # the first dimension names `bucket` (what every table groups by); all of them are in meta["groups"]
        self.bucket_by = self.bucket_dims[0] if self.bucket_dims else None
        if not 0.0 <= test_fraction < 1.0:
            raise AhaError("test_fraction must be in [0, 1)")
        self.test_fraction = float(test_fraction)
        self.limit = limit
        self.dataset_config = dataset_config
        self.min_rounded_decimals = int(min_rounded_decimals)
        self.seed = int(seed)
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def _check_extract(self, extract: Any) -> list[str]:
        return check_extractors(extract)

    # ------------------------------------------------------------------------------- examples

    def _sources(self, split: str) -> tuple[list[str], str | None]:
        if self.data is None:
            if self.default_dataset is None:
                raise AhaError(f"task {self.name!r} needs data=[file, ...]")
            name, config = self.default_dataset
            return [name], self.dataset_config or config
        if isinstance(self.data, dict):
            if split not in self.data:
                raise AhaError(f"no data for split {split!r}; data has splits: {', '.join(self.data)}")
            files = self.data[split]
            return ([files] if isinstance(files, str) else list(files)), self.dataset_config
        return list(self.data), self.dataset_config

    def rows(self, split: str = "train") -> list[dict[str, Any]]:
        """The normalised records of a split (see loaders.py for their keys); loaded once."""
        if split not in self._rows:
            sources, config = self._sources(split)
            rows = load_records(sources, self.kind, self.fields, split=split, config=config)
            if self.test_fraction > 0 and not isinstance(self.data, dict):
                want_test = split == "test"
                rows = [r for r in rows if _in_holdout(r["id"], self.test_fraction, self.seed) == want_test]
            if self.limit is not None:
                rows = rows[: self.limit]
            self._rows[split] = rows
        return self._rows[split]

    def examples(self, split: str = "train") -> Iterator[Example]:
        for row in self.rows(split):
            yield self.make_example(row)

    def prompt(self, question: str) -> list[dict[str, str]]:
        """The chat messages for one problem."""
        user = self.prompt_template.replace("{question}", question)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": user}]

    def make_example(self, row: dict[str, Any]) -> Example:
        """An Example from one normalised record."""
        meta: dict[str, Any] = {k: row[k] for k in ("level", "subject", "year", "contest", "number", "url",
                                                    "accepted") if row.get(k) is not None}
        meta["bucket"] = _bucket(row, self.bucket_by)
        if len(self.bucket_dims) > 1:
            meta["groups"] = {dim: _bucket(row, dim) for dim in self.bucket_dims}
        solution = row.get("solution")
        if solution:
            meta["solution"] = solution
            meta["trace"] = self.trace(solution, row["answer"])
        return Example(id=str(row["id"]), prompt=self.prompt(row["question"]), answer=row["answer"], meta=meta)

    def trace(self, solution: str, answer: str) -> str:
        """A reference response for SFT in the format the prompt asks for: the worked solution ending
        in a boxed answer (appended when the solution has none)."""
        text = _CALCULATOR.sub("", solution).strip()
        if last_boxed(text) is None:
            text += f"\n\nThe final answer is \\boxed{{{answer}}}."
        return text

    # ------------------------------------------------------------------------------- verifying

    def verify(self, text: str, example: Example) -> Verdict:
        try:
            return self._verify(text, example)
        except Exception as exc:  # noqa: BLE001 - a verifier never raises on model output
            return Verdict(error=f"verifier error: {type(exc).__name__}: {str(exc)[:100]}")

    def compare(self, gold: Any, pred: str) -> Equivalence:
        """`is_equivalent` with this task's settings, remembered per (gold, answer) for the task's
        lifetime (a training run): a group often repeats an answer, and a pathological one (a tower
        of powers) costs the whole timeout each time it is checked, so a verdict (a timeout included)
        is computed once. The memory holds the newest `VERDICT_CACHE_SIZE` pairs."""
        key = (str(type(gold)), str(gold), pred)
        cache = self._verdicts
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        eq = is_equivalent(gold, pred, timeout=self.timeout, symbolic=self.symbolic,
                           min_rounded_decimals=self.min_rounded_decimals)
        cache[key] = eq
        if len(cache) > VERDICT_CACHE_SIZE:
            cache.popitem(last=False)
        return eq

    def _verify(self, text: str, example: Example) -> Verdict:
        if not isinstance(text, str):
            return Verdict(error="completion is not text")
        found = extract_answer(text, self.extract)
        if found is None:
            return Verdict(error=f"no answer found (looked for: {', '.join(self.extract)})")
        pred, _ = found
        error = None
        # some problems accept several answers (meta["accepted"]); any of them is right
        for gold in example.meta.get("accepted") or [example.answer]:
            eq = self.compare(gold, pred)
            if eq.equal:
                return Verdict(parsed=pred, format_ok=True, correct=True, partial=1.0)
            error = error or eq.error
        reason = f"wrong, {error}" if error else f"wrong: expected {example.answer}"
        return Verdict(parsed=pred, format_ok=True, correct=False, partial=0.0, error=reason)


@TASKS.register("gsm8k")
class GSM8KTask(MathTask):
    """GSM8K-style word problems: `question` and an `answer` text ending in `#### N` (or a plain
    answer plus an optional `solution`). Options as for MathTask, except that `extract` defaults to
    "boxed", "answer_tag", then "hashes": a completion ending in the dataset's own `#### 42` line
    (what models fine-tuned on GSM8K write) is read as a last resort. The bucket defaults to "all"."""

    name = "gsm8k"
    kind = "gsm8k"
    default_dataset = ("openai/gsm8k", "main")
    default_bucket = None

    def __init__(self, data: list[str] | str | dict[str, Any] | None = None, fields: dict[str, str] | None = None,
                 *, extract: list[str] | tuple[str, ...] | str = GSM8K_EXTRACTORS, **options: Any):
        super().__init__(data, fields, extract=extract, **options)


@TASKS.register("aime")
class AIMETask(MathTask):
    """AIME-style problems: `question`/`problem`, an integer `answer` (0-999), `year`. Ids and
    groupings follow the file ("2021-I-1" gives year 2021, contest "AIME I", number 1). Options as
    for MathTask; the bucket defaults to the year."""

    name = "aime"
    kind = "competition"
    default_dataset = ("AI-MO/aimo-validation-aime", None)
    default_bucket = "year"


@TASKS.register("amc")
class AMCTask(MathTask):
    """AMC-style problems: `problem`, a numeric `answer` (e.g. 142.0), and optionally a `url` from
    which year and contest are read ("2022_AMC_12A"). Options as for MathTask; bucket: year."""

    name = "amc"
    kind = "competition"
    default_dataset = ("AI-MO/aimo-validation-amc", None)
    default_bucket = "year"


@TASKS.register("multiple-choice")
class MultipleChoiceTask(MathTask):
    """Multiple-choice questions (A-D, up to J): `question`, `choices` (a list, columns A-D, or GPQA's
    'Correct Answer' + 'Incorrect Answer N' columns, shuffled with a per-problem seed) and `answer`
    (a letter, an index, or the text of the right choice).

    The options are listed under the question as "A) ...". extract: "boxed", "answer_tag", "phrase"
    ("the answer is (B)") and "last_letter" (a letter alone on the last line). Other options as for
    MathTask; bucket defaults to "subject".
    """

    name = "multiple-choice"
    kind = "choice"
    default_dataset = None
    default_bucket = "subject"

    def __init__(self, data: list[str] | str | dict[str, Any] | None = None, fields: dict[str, str] | None = None,
                 *, system_prompt: str | None = None,
                 extract: list[str] | tuple[str, ...] | str = ("boxed", "answer_tag", "phrase"), **options: Any):
        super().__init__(data, fields, system_prompt=CHOICE_SYSTEM_PROMPT if system_prompt is None else system_prompt,
                         extract=extract, **options)

    def _check_extract(self, extract: Any) -> list[str]:
        return check_extractors(extract, CHOICE_EXTRACTORS)

    def make_example(self, row: dict[str, Any]) -> Example:
        choices = row["choices"]
        listing = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))
        ex = super().make_example({**row, "question": f"{row['question']}\n\n{listing}"})
        ex.meta["choices"] = list(choices)
        return ex

    def trace(self, solution: str, answer: str) -> str:
        text = solution.strip()
        return text if last_boxed(text) is not None else text + f"\n\nThe answer is \\boxed{{{answer}}}."

    def _verify(self, text: str, example: Example) -> Verdict:
        if not isinstance(text, str):
            return Verdict(error="completion is not text")
        choices = example.meta.get("choices") or []
        letters = LETTERS[: len(choices)] if choices else "ABCD"
        found = extract_choice(text, self.extract, letters, choices or None)
        if found is None:
            return Verdict(error=f"no option letter found (looked for: {', '.join(self.extract)})")
        letter, _ = found
        if letter == example.answer:
            return Verdict(parsed=letter, format_ok=True, correct=True, partial=1.0)
        return Verdict(parsed=letter, format_ok=True, correct=False, error=f"wrong: expected {example.answer}")
