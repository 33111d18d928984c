"""Is the model's answer the reference answer? Numbers exactly, expressions through math-verify.

`is_equivalent(gold, pred)` works in three stages, cheapest first:

1. normalise both strings (box, `$`, `\\left`, spacing commands, `\\dfrac`, degrees, percent and
   currency signs, `{,}`, units in `\\text{}`, trailing period);
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
    method: which stage decided: "numeric", "string", "symbolic" or "none" (nothing to compare).
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

# units a model may write after a number without \text{}, e.g. "12 cm^2", "5 dollars"
UNIT_WORDS = frozenset((
    "cm mm km m meter meters metre metres centimeter centimeters kilometer kilometers inch inches in ft feet "
    "foot yard yards yd mile miles mi mph kg g gram grams kilogram kilograms pound pounds lb lbs oz ounce "
    "ounces l liter liters litre litres ml gallon gallons cup cups s sec second seconds min minute minutes "
    "h hr hrs hour hours day days week weeks month months year years dollar dollars cent cents euro euros "
    "unit units square sq cubic degree degrees deg percent point points people student students"
).split())
# words after a number, each optionally with "." or a power; words are separated by spaces, so the
# match is unambiguous (an alternation of overlapping unit names would backtrack exponentially)
_UNIT_TAIL = re.compile(r"^(.*?\d)\s*([A-Za-z]+(?:\.|\^\{?[23]\}?)?(?:\s+[A-Za-z]+(?:\.|\^\{?[23]\}?)?)*)$")
_UNIT_MARKS = re.compile(r"[.^{}23]")


def _strip_units(s: str) -> str:
    m = _UNIT_TAIL.match(s)
    if m and all(_UNIT_MARKS.sub("", w).lower() in UNIT_WORDS for w in m.group(2).split()):
        return m.group(1)
    return s


def normalize_answer(text: str) -> str:
    """A canonical string form of an answer: what the numeric and string stages compare.

    Removes one enclosing box, math delimiters, `\\left`/`\\right`, LaTeX spacing commands, degree
    marks, percent and currency signs, a trailing `\\text{unit}`, and a trailing period; turns
    `\\dfrac`/`\\tfrac` into `\\frac`, `{,}` into `,`, common Unicode symbols into LaTeX, and unwraps
    the remaining `\\text{...}`. Never raises.
    """
    if not isinstance(text, str):
        return ""
    s = unbox(text)
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
    return s


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
