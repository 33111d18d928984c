"""Is the model's answer the reference answer? Numbers exactly, expressions through math-verify.

`is_equivalent(gold, pred)` works in three stages, cheapest first:

1. normalise both strings (box, `$`, `\\left`, spacing commands, `\\dfrac`, degrees, percent and
   currency signs, `{,}`, units in `\\text{}`, trailing period), keeping row breaks `\\\\`;
   a matrix or vector (`pmatrix`, `bmatrix`, `array`, ...) is compared cell by cell, each cell by
   these same stages, and matches only the same shape (or a tuple, for a vector): method
   "elementwise"; a number in a base (`52_8`) matches only the same value in the same base: "base";
2. if both are plain numbers (integers, decimals, thousands groups, `a/b`, `\\frac{a}{b}`,
   `1.5e3`), compare them as exact rationals in this process: `0.5 == \\frac12`, `3.0 == 3`; a decimal
   with at least 3 places also matches a value it correctly rounds (`0.333` for `1/3`); a percentage
   matches both its number and its fraction (`50\\%` is 50 and 0.5);
   otherwise, if the canonical strings are equal (`\\text{(C)}` vs `(C)`), they are equivalent;
3. anything else goes to math-verify (gold first: its `verify` is asymmetric) in a worker process
   with a hard deadline (see timeout.py); a pathological input returns "wrong, timed out".

Model output is never `eval`ed; numbers are parsed with regular expressions and `fractions`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from aha.tasks.math.extract import unbox
from aha.tasks.math.timeout import TimedOut, WorkerError, call_with_timeout

# an answer longer than this is not even normalised (a final answer is never this long), and one
# longer than MAX_SYMBOLIC_CHARS after normalisation is not handed to sympy
MAX_ANSWER_CHARS = 2000
MAX_SYMBOLIC_CHARS = 500
# nor answers nested deeper than this (or than twice the reference): math-verify's LaTeX parser takes
# time exponential in the nesting depth (20 nested \frac take 40 s), and no final answer needs it
MAX_NESTING = 12


@dataclass(frozen=True)
class Equivalence:
    """Outcome of one comparison.

    equal: the answers are equivalent.
    method: which stage decided: "numeric", "base", "elementwise", "string", "symbolic" or "none"
        (nothing to compare).
    error: why no real comparison happened ("timed out", "empty answer", "checker error: ..."); None
        when the comparison ran (whatever its outcome).
    """

    equal: bool
    method: str
    error: str | None = None


# ------------------------------------------------------------------------------- normalisation

_UNICODE = {"−": "-", "–": "-", "π": "\\pi ", "∞": "\\infty ", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ",
            "√": "\\sqrt ", "°": "", "≤": "\\le ", "≥": "\\ge ", "\u00a0": " ", "\u2009": " "}
_DROP = re.compile(
    r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\displaystyle|\\[Bb]ig{1,2}[lr]?(?![a-zA-Z])"
    r"|\^\{?\\circ\}?|\\circ|\\degree|\\!|\\,|\\;|\\:|\\ |\\q?quad(?![a-zA-Z])|\\thinspace|\\enspace|~"
)
_TEXT_CMD = r"\\(?:text|textrm|textnormal|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*"
_TRAILING_TEXT_UNIT = re.compile(r"^(.*[\d}.])\s*" + _TEXT_CMD + r"\{\s*[^{}]*\}(?:\^\{?[23]\}?)?$")
_TEXT_GROUP = re.compile(_TEXT_CMD + r"\{([^{}]*)\}")
_WS = re.compile(r"\s+")

# units a model may write right after a number without \text{} or a space, e.g. "12cm", "5kg"
UNIT_WORDS = frozenset((
    "cm mm km m meter meters metre metres centimeter centimeters kilometer kilometers inch inches in ft feet "
    "foot yard yards yd mile miles mi mph kg g gram grams kilogram kilograms pound pounds lb lbs oz ounce "
    "ounces l liter liters litre litres ml gallon gallons cup cups s sec second seconds min minute minutes "
    "h hr hrs hour hours day days week weeks month months year years dollar dollars cent cents euro euros "
    "unit units square sq cubic degree degrees deg percent point points people student students"
).split())
# after a space, any plain word counts as a unit ("3 bolts", "60 instructions", "3 times"), except
# these, which after the final number still change its value or meaning ("2 pi", "3 i" as 3i,
# "4 squared", "5 or more", "10 to the 5th")
NOT_UNITS = frozenset((
    "pi i e x y z n k sqrt root infinity inf squared cubed factorial or and to mod modulo not no"
).split())
MAX_UNIT_WORDS = 4
# words after a number, each optionally with "." or a power; words are separated by spaces, so the
# match is unambiguous (an alternation of overlapping unit names would backtrack exponentially)
_WORD = r"[A-Za-z]+(?:['-][A-Za-z]+)*(?:\.|\^\{?[23]\}?)?"
_UNIT_TAIL = re.compile(r"^(.*?\d)(\s*)(" + _WORD + r"(?:\s+" + _WORD + r")*)$")
_UNIT_MARKS = re.compile(r"[.^{}23]")


def _strip_units(s: str) -> str:
    """`s` without trailing unit words after its final number: "12 cm^2" and "3 bolts" -> the number.

    Words written against the number ("12cm") must be known units, so "2x" and "5i" keep their
    variable; after a space any plain words do, except NOT_UNITS ("2 pi", "5 or 6").
    """
    m = _UNIT_TAIL.match(s)
    if not m:
        return s
    words = [_UNIT_MARKS.sub("", w).lower() for w in m.group(3).split()]
    if len(words) > MAX_UNIT_WORDS or any(w in NOT_UNITS for w in words):
        return s
    if not m.group(2) and words[0] not in UNIT_WORDS:
        return s
    return m.group(1)


# LaTeX's row break `\\` (optionally with a spacing argument `\\[2pt]`): replaced by this character
# while the clean-up runs, so that the `\ ` (backslash-space) and `\[` rules below never take its
# second backslash (`-2 \\ -14` must not become `-2 \-14`), and put back at the end
_ROW_BREAK = re.compile(r"\\\\(?:\s*\[\s*-?[\d.]{1,6}\s*(?:pt|em|ex|mm|cm|in|bp|mu)\s*\])?")
_ROW_TOKEN = "\x00"


def normalize_answer(text: str) -> str:
    """A canonical string form of an answer: what the numeric and string stages compare.

    Removes one enclosing box, math delimiters, `\\left`/`\\right`, LaTeX spacing commands, degree
    marks, percent and currency signs, a trailing `\\text{unit}`, and a trailing period; turns
    `\\dfrac`/`\\tfrac` into `\\frac`, `{,}` into `,`, common Unicode symbols into LaTeX, and unwraps
    the remaining `\\text{...}`. Never raises.
    """
    if not isinstance(text, str):
        return ""
    s = _ROW_BREAK.sub(_ROW_TOKEN, unbox(text).replace(_ROW_TOKEN, ""))
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DROP.sub("", s)
    s = s.replace("\\%", "").replace("%", "").replace("{,}", ",")
    s = _WS.sub(" ", s).strip()
    m = _TRAILING_TEXT_UNIT.match(s)
    if m:
        s = m.group(1).strip()
    s = _TEXT_GROUP.sub(lambda g: g.group(1), s)
    s = _WS.sub(" ", s).strip()
    while s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s.replace(_ROW_TOKEN, "\\\\")


# ----------------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Number:
    """A parsed numeric answer: its exact value, and its count of decimal places when it was written
    as a decimal (`0.333` -> 3), else None."""

    value: Fraction
    decimals: int | None = None


_DEC = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIGNED_DEC = r"[-+]?" + _DEC
_RE_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_RE_DEC = re.compile(_DEC)
_RE_SCI = re.compile(r"(" + _DEC + r")(?:[eE]|\\times10\^|\\cdot10\^|\*10\^|\*\*10\^)\{?([-+]?\d{1,3})\}?")
_RE_FRAC = re.compile(r"\\frac(?:\{(" + _SIGNED_DEC + r")\}|(\d))(?:\{(" + _SIGNED_DEC + r")\}|(\d))")
_RE_SLASH = re.compile(r"(" + _SIGNED_DEC + r")/(" + _SIGNED_DEC + r")")
_RE_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?\w{1,3}\}?)?=")


def _unsigned(s: str) -> Number | None:
    if _RE_THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _RE_DEC.fullmatch(s):
        decimals = len(s.split(".")[1]) if "." in s else None
        return Number(Fraction(s.rstrip(".") or "0"), decimals or None)
    m = _RE_SCI.fullmatch(s)
    if m:
        return Number(Fraction(m.group(1).rstrip(".") or "0") * Fraction(10) ** int(m.group(2)))
    m = _RE_FRAC.fullmatch(s)
    if m:
        num, den = Fraction(m.group(1) or m.group(2)), Fraction(m.group(3) or m.group(4))
        return Number(num / den) if den != 0 else None
    m = _RE_SLASH.fullmatch(s)
    if m:
        num, den = Fraction(m.group(1)), Fraction(m.group(2))
        return Number(num / den) if den != 0 else None
    return None


def parse_number(text: str, normalized: bool = False) -> Number | None:
    """The exact value of a plain numeric answer, or None when the answer is not a plain number.

    Accepts an optional sign, thousands separators (`1,234,567`), decimals, `a/b`, `\\frac{a}{b}`,
    `\\frac12`, scientific notation (`1.5e3`, `1.5\\times10^{3}`), a leading `x =`, and trailing unit
    words. text: the raw answer (normalised first unless `normalized`).
    """
    s = text if normalized else normalize_answer(text)
    if not s or len(s) > 100:
        return None
    s = _strip_units(s).replace(" ", "").replace("{}", "")
    m = _RE_ASSIGN.match(s)
    if m:
        s = s[m.end():]
    sign = 1
    while s[:1] in ("-", "+"):
        if s[0] == "-":
            sign = -sign
        s = s[1:]
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    if not s:
        return None
    try:
        number = _unsigned(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    if number is None:
        return None
    return Number(sign * number.value, number.decimals)


def numbers_equal(gold: Number, pred: Number, min_rounded_decimals: int = 3) -> bool:
    """Exact rational equality, or one side is a decimal with at least `min_rounded_decimals` places
    that the other side's value rounds to (`0.333` vs 1/3, `0.6667` vs 2/3, but not `0.33`, `0.666`)."""
    if gold.value == pred.value:
        return True
    for rounded, exact in ((pred, gold), (gold, pred)):
        k = rounded.decimals
        if k is not None and k >= min_rounded_decimals and abs(rounded.value - exact.value) <= Fraction(1, 2 * 10**k):
            return True
    return False


# ------------------------------------------------------------------------------------ strings

_WORDS = re.compile(r"[A-Za-z][A-Za-z ]+")


def _canonical(s: str) -> str:
    return s.replace(" ", "").replace("\\{", "{").replace("\\}", "}")


def strings_equal(gold: str, pred: str) -> bool:
    """Same canonical string (spaces ignored); plain words (e.g. names) are compared case-insensitively."""
    if _canonical(gold) == _canonical(pred):
        return True
    return bool(_WORDS.fullmatch(gold) and _WORDS.fullmatch(pred) and gold.lower() == pred.lower())


# ------------------------------------------------------------------------------ numbers in a base

_BASE_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen".split())}
# `52_8`, `52_{8}`, `(52)_8`, `1011_{two}` (after normalisation has unwrapped `\text{}` and spaces)
_RE_BASED = re.compile(r"\(?([0-9A-Za-z]{1,40})\)?_\{?\(?([0-9]{1,2}|[a-z]{3,9})\)?\}?")


@dataclass(frozen=True)
class Based:
    """A whole number written in an explicit base: its value and the base (2-36)."""

    value: int
    base: int


def parse_based(text: str, normalized: bool = False) -> Based | None:
    """`52_8` -> Based(42, 8); None when `text` is not digits with a subscript base.

    The digits must be valid in the base and include a decimal digit, or be upper-case letters in a
    base above 10 (`A5_{16}`), so that variables with subscripts (`x_1`, `a_{12}`) are not numbers.
    """
    s = (text if normalized else normalize_answer(text)).replace(" ", "")
    m = _RE_BASED.fullmatch(s)
    if not m:
        return None
    digits, base_text = m.group(1), m.group(2)
    base = int(base_text) if base_text.isdigit() else _BASE_WORDS.get(base_text, 0)
    if not 2 <= base <= 36:
        return None
    if not any(c.isdigit() for c in digits) and not (base > 10 and digits.isupper()):
        return None
    try:
        return Based(int(digits, base), base)
    except ValueError:  # a digit too large for the base: `52_2`
        return None


def _compare_based(g: str, p: str) -> Equivalence | None:
    """The verdict when either side is a number in an explicit base other than 10, else None.

    The base is part of the answer: `52_8` equals `052_8` and `52_{\text{eight}}`, not `52` (that is
    decimal), `42` (the right value, but not written in base 8 as asked) or `52_9`. A base-10
    subscript is a plain decimal number.
    """
    gb, pb = parse_based(g, normalized=True), parse_based(p, normalized=True)
    if gb is not None and gb.base == 10:
        gb = None
    if pb is not None and pb.base == 10:
        pb = None
    if gb is None and pb is None:
        return None
    return Equivalence(gb is not None and pb is not None and gb == pb, "base")


def _strip_base_ten(s: str) -> str:
    """`42_{10}` -> `42`; anything else unchanged."""
    b = parse_based(s, normalized=True)
    if b is not None and b.base == 10:
        return str(b.value)
    return s


# ------------------------------------------------------------------------- matrices and vectors

_ENV = re.compile(r"\\begin\{(pmatrix|bmatrix|Bmatrix|matrix|smallmatrix|array)\}")
_ARRAY_SPEC = re.compile(r"^\s*\{[clr|\s]*\}")
MAX_CELLS = 100


def _top_level_split(text: str, sep: str) -> list[str]:
    """`text` split at `sep` where it is outside every {} () [] group (escaped braces are literal)."""
    parts, depth, start, i, n = [], 0, 0, 0, len(text)
    while i < n:
        if text.startswith(sep, i) and depth == 0:
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        c = text[i]
        if c == "\\" and text[i + 1:i + 2] in ("{", "}"):
            i += 2
            continue
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth = max(0, depth - 1)
        i += 1
    parts.append(text[start:])
    return parts


def parse_matrix(text: str, normalized: bool = False) -> list[list[str]] | None:
    """The cells of a matrix or vector answer, row by row; None when `text` is not one.

    Reads `\\begin{pmatrix}...\\end{pmatrix}` and the bmatrix, Bmatrix, matrix, smallmatrix and
    array environments (an array's column spec is skipped), optionally inside `(...)` or `[...]`,
    with rows split at `\\\\` and cells at `&`.
    """
    s = (text if normalized else normalize_answer(text)).strip()
    if s[:1] in "([" and s[-1:] in ")]" and s.count("\\begin{") == 1:
        s = s[1:-1].strip()
    m = _ENV.match(s)
    if not m:
        return None
    end = "\\end{" + m.group(1) + "}"
    if not s.endswith(end) or s.count("\\begin{") != 1:
        return None
    body = s[m.end():len(s) - len(end)]
    if m.group(1) == "array":
        body = _ARRAY_SPEC.sub("", body, count=1)
    body = body.replace("\\hline", "")
    rows = [[cell.strip() for cell in _top_level_split(row, "&")] for row in _top_level_split(body, "\\\\")]
    while rows and all(not c for c in rows[-1]):
        rows.pop()  # a trailing `\\` before `\end`
    if not rows or any(not c for row in rows for c in row) or sum(len(r) for r in rows) > MAX_CELLS:
        return None
    return rows


def parse_tuple(text: str, normalized: bool = False) -> list[str] | None:
    """The entries of `(a, b, ...)` or `\\langle a, b \\rangle` (two or more); else None."""
    s = (text if normalized else normalize_answer(text)).strip()
    if s.startswith("\\langle") and s.endswith("\\rangle"):
        inner = s[len("\\langle"):-len("\\rangle")]
    elif s.startswith("(") and s.endswith(")") and not _closes_early(s):  # not `(1)+(2)`
        inner = s[1:-1]
    else:
        return None
    parts = [p.strip() for p in _top_level_split(inner, ",")]
    if len(parts) < 2 or any(not p for p in parts) or len(parts) > MAX_CELLS:
        return None
    return parts


def _closes_early(s: str) -> bool:
    """True when the bracket opening `s` is closed before its last character."""
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i != len(s) - 1
    return False


def _compare_matrices(g: str, p: str, **options) -> Equivalence | None:
    """Element-wise verdict when either side is a matrix or vector environment, else None.

    Shapes must agree; a tuple `(a, b, c)` also matches a column or row vector with those entries,
    and anything else without a matrix (a bare number) matches no matrix; an expression built of
    matrices is left to the symbolic stage (None). Every cell is compared with is_equivalent (numbers exactly, the rest symbolically) under one
    shared deadline.
    """
    gm, pm = parse_matrix(g, normalized=True), parse_matrix(p, normalized=True)
    if gm is None and pm is None:
        return None
    if gm is not None and pm is not None:
        if [len(r) for r in gm] != [len(r) for r in pm]:
            return Equivalence(False, "elementwise")
        pairs = [(a, b) for grow, prow in zip(gm, pm) for a, b in zip(grow, prow)]
    else:
        # one side is a matrix, the other may be a tuple: it matches a vector of the same entries
        matrix = gm if gm is not None else pm
        other = p if gm is not None else g
        tup = parse_tuple(other, normalized=True)
        if tup is None and "\\begin{" in other:
            return None  # an expression of matrices (`2 \cdot M / 2`): for the symbolic stage
        if tup is None or not _is_vector(matrix) or len(tup) != _size(matrix):
            return Equivalence(False, "elementwise")
        cells = [c for row in matrix for c in row]
        pairs = list(zip(cells, tup)) if gm is not None else list(zip(tup, cells))
    return _compare_cells(pairs, **options)


def _is_vector(rows: list[list[str]]) -> bool:
    return len(rows) == 1 or all(len(r) == 1 for r in rows)


def _size(rows: list[list[str]]) -> int:
    return sum(len(r) for r in rows)


def _compare_cells(pairs: list[tuple[str, str]], *, timeout: float, symbolic: bool,
                   min_rounded_decimals: int) -> Equivalence:
    deadline = time.monotonic() + timeout
    for gold_cell, pred_cell in pairs:
        left = deadline - time.monotonic()
        if left <= 0:
            return Equivalence(False, "elementwise", "timed out")
        eq = is_equivalent(gold_cell, pred_cell, timeout=left, symbolic=symbolic,
                           min_rounded_decimals=min_rounded_decimals)
        if not eq.equal:
            return Equivalence(False, "elementwise", eq.error)
    return Equivalence(True, "elementwise")


# ----------------------------------------------------------------------------------- symbolic

_SYMBOLIC_FN = "aha.tasks.math.equivalence:symbolic_check"


def is_equivalent(gold: str, pred: str, *, timeout: float = 5.0, symbolic: bool = True,
                  min_rounded_decimals: int = 3) -> Equivalence:
    """Compare a reference answer with a model's answer (see the module docstring). Never raises.

    gold: the reference answer (LaTeX or plain; a number may be given as int/float).
    pred: the answer extracted from the completion.
    timeout: seconds the symbolic check may take before the answer counts as wrong ("timed out").
    symbolic: False skips math-verify (numbers and strings only).
    """
    gold_s = _as_text(gold)
    pred_s = _as_text(pred)
    if len(pred_s) > MAX_ANSWER_CHARS:
        return Equivalence(False, "none", "answer too long to compare")
    g, p = normalize_answer(gold_s), normalize_answer(pred_s)
    if not p:
        return Equivalence(False, "none", "empty answer")
    if not g:
        return Equivalence(False, "none", "empty reference answer")
    structured = _compare_matrices(g, p, timeout=timeout, symbolic=symbolic,
                                   min_rounded_decimals=min_rounded_decimals)
    if structured is not None:
        return structured
    based = _compare_based(g, p)
    if based is not None:
        return based
    g, p = _strip_base_ten(g), _strip_base_ten(p)
    gn, pn = parse_number(g, normalized=True), parse_number(p, normalized=True)
    if gn is not None and pn is not None:
        equal = numbers_equal(gn, pn, min_rounded_decimals)
        # a percent sign was stripped from one side only: "50\%" is also 0.5
        if not equal and ("%" in gold_s) != ("%" in pred_s):
            pct, other = (gn, pn) if "%" in gold_s else (pn, gn)
            equal = numbers_equal(Number(pct.value / 100), other, min_rounded_decimals)
        return Equivalence(equal, "numeric")
    if strings_equal(g, p):
        return Equivalence(True, "string")
    if not symbolic:
        return Equivalence(False, "string")
    if len(p) > MAX_SYMBOLIC_CHARS:
        return Equivalence(False, "none", "answer too long to compare")
    if nesting_depth(p) > max(MAX_NESTING, 2 * nesting_depth(g)):
        return Equivalence(False, "none", "answer nested too deeply to compare")
    try:
        equal = call_with_timeout(_SYMBOLIC_FN, g, p, timeout=timeout)
    except TimedOut:
        return Equivalence(False, "symbolic", "timed out")
    except WorkerError as exc:
        return Equivalence(False, "symbolic", f"checker error: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001 - e.g. the worker cannot be started on this platform
        return Equivalence(False, "symbolic", f"checker unavailable: {type(exc).__name__}: {exc}"[:300])
    return Equivalence(bool(equal), "symbolic")


def nesting_depth(text: str) -> int:
    """Deepest nesting of (), [] and {} brackets in `text` (unbalanced brackets are tolerated)."""
    depth = deepest = 0
    for c in text:
        if c in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]}":
            depth = max(0, depth - 1)
    return deepest


def _as_text(x: object) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bool) or x is None:
        return ""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


# -------------------------------------------------------- runs inside the worker process only


def _extraction_config():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify.parser import NormalizationConfig

    # The box has priority. Unlike math-verify's reward recommendation we repair malformed operators
    # (`\sqrt3`, `\frac12`): MATH's own reference answers are written that way.
    latex = LatexExtractionConfig(
        boxed_match_priority=0,
        normalization_config=NormalizationConfig(basic_latex=True, units=True, malformed_operators=True,
                                                 nits=True, boxed="all", equations=False),
    )
    return [latex, ExprExtractionConfig()]


@lru_cache(maxsize=1)
def _config():
    return _extraction_config()


@lru_cache(maxsize=4096)
def _parse(answer: str) -> list:
    from math_verify import parse

    # our own timeout (the worker's deadline) replaces math-verify's SIGALRM one
    return parse("\\boxed{" + answer + "}", extraction_config=_config(), parsing_timeout=None)


def symbolic_check(gold: str, pred: str) -> bool:
    """math-verify's verdict on two normalised answers (gold first). Runs in a worker process."""
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def warm_up() -> None:
    """Import sympy and math-verify and build the parser once, before the worker reports ready."""
    import logging

    # math-verify warns on every call that its timeout is off: that is deliberate here
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # touch the sympy paths real answers take (roots, pi, powers, intervals, sets, polynomials), so
    # their one-time imports happen now and not inside a caller's deadline
    for gold, pred in (("\\frac{1}{2}", "0.5"), ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"), ("2\\pi", "6.28"),
                       ("(1,2)", "\\{1,2\\}"), ("[1,2)", "(1,2]"), ("x^2+1", "(x+1)^2"), ("97", "\\sqrt{98^2}"),
                       ("e^{2}", "2^{10}"), ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)")):
        symbolic_check(gold, pred)
    _parse.cache_clear()
