"""Answer equivalence: normalisation, exact numbers, strings, and math-verify in a worker process."""

from __future__ import annotations

from fractions import Fraction

import pytest

from aha.tasks.math.equivalence import (
    Number,
    is_equivalent,
    normalize_answer,
    numbers_equal,
    parse_number,
)

# (gold, prediction, equivalent?, stage that decides)
EQUIVALENCE_CASES = [
    # ---- integers, signs, separators, currency, percent
    ("72", "72", True, "numeric"),  # identical
    ("72", "72.0", True, "numeric"),  # trailing .0
    ("72", "72.00", True, "numeric"),  # several trailing zeros
    ("1000", "1,000", True, "numeric"),  # thousands separator
    ("1234567", "1,234,567", True, "numeric"),  # several separators
    ("1000", "1{,}000", True, "numeric"),  # LaTeX-escaped separator
    ("1000", "1\\,000", True, "numeric"),  # thin space as separator
    ("5", "\\$5", True, "numeric"),  # dollar sign
    ("18", "$18.00", True, "numeric"),  # dollars and cents, math-mode `$` dropped
    ("50", "50\\%", True, "numeric"),  # percent sign (LaTeX)
    ("50", "50%", True, "numeric"),  # percent sign (plain)
    ("10\\%", "0.1", True, "numeric"),  # a percentage is also its fraction
    ("0.1", "10%", True, "numeric"),  # ... on either side
    ("10\\%", "0.2", False, "numeric"),  # but not any number
    ("-4", "-4", True, "numeric"),  # negative
    ("-4", "−4", True, "numeric"),  # Unicode minus
    ("-4", "4", False, "numeric"),  # a lost sign is wrong
    ("080", "80", True, "numeric"),  # AIME's leading zeros
    ("72", "73", False, "numeric"),  # neighbour value
    ("5", "x = 5", True, "numeric"),  # a variable assignment
    # ---- fractions and decimals
    ("\\frac{1}{2}", "0.5", True, "numeric"),  # exact decimal of a fraction
    ("\\frac{1}{2}", "\\dfrac{1}{2}", True, "numeric"),  # \dfrac
    ("\\frac{1}{2}", "\\tfrac12", True, "numeric"),  # \tfrac with digit arguments
    ("\\frac12", "1/2", True, "numeric"),  # a/b
    ("-\\frac{3}{4}", "\\frac{-3}{4}", True, "numeric"),  # sign inside or outside
    ("\\frac{2}{4}", "\\frac{1}{2}", True, "numeric"),  # unreduced fraction
    ("\\frac{1}{3}", "0.333", True, "numeric"),  # 3 places, correctly rounded
    ("\\frac{2}{3}", "0.6667", True, "numeric"),  # 4 places, rounded up
    ("\\frac{1}{3}", "0.33", False, "numeric"),  # 2 places are too coarse
    ("\\frac{2}{3}", "0.666", False, "numeric"),  # truncated, not rounded
    ("0.125", "0.13", False, "numeric"),  # a terminating decimal must match exactly
    ("1500", "1.5\\times10^{3}", True, "numeric"),  # scientific notation (LaTeX)
    ("1500", "1.5e3", True, "numeric"),  # scientific notation (plain)
    # ---- units, text, spacing commands
    ("10", "10\\text{ cm}", True, "numeric"),  # unit in \text
    ("10", "10 \\text{cm}^2", True, "numeric"),  # squared unit
    ("12", "12 inches", True, "numeric"),  # unit word without \text
    ("90", "90^\\circ", True, "numeric"),  # degrees
    ("3", "\\, 3 \\;", True, "numeric"),  # spacing commands around a number
    ("\\text{Evelyn}", "Evelyn", True, "string"),  # text answer, unwrapped
    ("\\text{Evelyn}", "evelyn", True, "string"),  # names compare case-insensitively
    ("\\text{(C)}", "(C)", True, "string"),  # lettered answer in text
    ("(-\\infty, 5]", "\\left(-\\infty,5\\right]", True, "string"),  # \left/\right and spaces
    # ---- symbolic (math-verify in the worker)
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", True, "symbolic"),  # roots, two spellings
    ("\\frac{\\sqrt3}{2}", "\\frac{1}{2}\\sqrt{3}", True, "symbolic"),  # MATH's `\sqrt3` shorthand
    ("2\\sqrt{2}", "\\sqrt{8}", True, "symbolic"),  # simplified root
    ("2\\sqrt{2}", "\\sqrt{6}", False, "symbolic"),  # a different root
    ("2\\pi", "2 \\pi", True, "string"),  # pi, spacing only
    ("\\frac{\\pi}{2}", "\\pi/2", True, "symbolic"),  # pi over two
    ("\\pi", "3", False, "symbolic"),  # pi is not 3
    ("[1, 2)", "[1,2)", True, "string"),  # interval, spacing only
    ("[1, 2)", "(1, 2]", False, "symbolic"),  # other endpoints open
    ("(-\\infty, 3]", "(-\\infty, 3)", False, "symbolic"),  # closed vs open end
    ("(1, 2)", "(2, 1)", False, "symbolic"),  # ordered pair: order matters
    ("(3, -1)", "\\left( 3, -1 \\right)", True, "string"),  # ordered pair with \left( \right)
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", True, "symbolic"),  # sets: order does not matter
    ("x^2 + 2x + 1", "(x+1)^2", True, "symbolic"),  # polynomial identity
    ("2x + 3", "3 + 2x", True, "symbolic"),  # commuted terms
    ("2x + 3", "2x + 4", False, "symbolic"),  # different polynomial
    ("\\frac{1}{2}", "\\frac{1}{\\sqrt{4}}", True, "symbolic"),  # needs simplification
    ("\\$1.50", "1.5", True, "numeric"),  # currency with cents vs plain decimal
    # ---- degenerate inputs
    ("5", "", False, "none"),  # empty answer
    ("5", "   ", False, "none"),  # blank answer
    ("", "5", False, "none"),  # empty reference
    ("5", "5" * 3000, False, "none"),  # absurdly long answer: refused before any parsing
]


@pytest.mark.parametrize("gold, pred, equal, method", EQUIVALENCE_CASES)
def test_is_equivalent(gold, pred, equal, method):
    result = is_equivalent(gold, pred, timeout=10.0)
    assert result.equal is equal, result
    assert result.method == method, result


def test_symbolic_can_be_switched_off():
    # without math-verify only numbers and strings compare: a root spelled two ways is not equal
    result = is_equivalent("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", symbolic=False)
    assert (result.equal, result.method) == (False, "string")


def test_non_string_gold():
    # AMC files store answers as floats: 142.0 is the integer 142
    assert is_equivalent(142.0, "142").equal  # type: ignore[arg-type]
    assert is_equivalent(3, "3.0").equal  # type: ignore[arg-type]


NORMALIZE_CASES = [
    # (raw answer, normalised form)
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),  # box removed, \dfrac -> \frac
    ("$\\left( 1, 2 \\right)$", "( 1, 2 )"),  # delimiters and \left/\right removed
    ("10\\text{ cm}", "10"),  # trailing unit dropped
    ("\\text{Monday}", "Monday"),  # text unwrapped
    ("45^{\\circ}", "45"),  # degree mark
    ("42.", "42"),  # sentence period
    ("1{,}000", "1,000"),  # LaTeX separator
    ("3\\quad", "3"),  # \quad
    ("π", "\\pi"),  # Unicode pi
]


@pytest.mark.parametrize("raw, expected", NORMALIZE_CASES)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


PARSE_CASES = [
    # (answer, exact value or None when it is not a plain number)
    ("1,234", Fraction(1234)),  # separators
    ("-0.25", Fraction(-1, 4)),  # negative decimal
    (".5", Fraction(1, 2)),  # no leading zero
    ("\\frac{-6}{4}", Fraction(-3, 2)),  # signed numerator, reduced
    ("2/0", None),  # division by zero is not a number
    ("1,23", None),  # not a thousands grouping (could be a list)
    ("2^{10}", None),  # a power is left to the symbolic stage
    ("1e999999999", None),  # exponent too large to build: never evaluated
    ("9" * 200, None),  # absurdly long: left to the (time-bounded) symbolic stage
    ("1" + "m" * 60 + "x", None),  # hostile unit-like tail: rejected in linear time
    ("12 square feet", Fraction(12)),  # several unit words
    ("2 apples", None),  # not a unit: not a plain number
]


@pytest.mark.parametrize("text, value", PARSE_CASES)
def test_parse_number(text, value):
    parsed = parse_number(text)
    assert (parsed.value if parsed else None) == value


def test_rounding_rule_is_symmetric():
    # a rounded decimal may be on either side; it must have at least 3 places
    third = Number(Fraction(1, 3))
    assert numbers_equal(Number(Fraction(333, 1000), 3), third)
    assert numbers_equal(third, Number(Fraction(333, 1000), 3))
    assert not numbers_equal(third, Number(Fraction(333, 1000), 3), min_rounded_decimals=4)
    # against an integer a decimal must be exact: 2.0004 is not 2
    assert not numbers_equal(Number(Fraction(2)), Number(Fraction(20004, 10000), 4))
