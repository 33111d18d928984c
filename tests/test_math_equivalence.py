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
    ("2 apples", Fraction(2)),  # a plain word after a space is a unit too (issue 19: "3 bolts")
    ("2apples", None),  # ... but one written against the number must be a known unit ("2x" is not 2)
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


# issue 19: matrices and vectors compare cell by cell; numbers in a base keep their base; plain unit
# words after the final number. (gold, prediction, equivalent?, stage that decides)
_VEC = "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"  # MATH's spelling, spaces around `\\`
_MAT = "\\begin{pmatrix} 1/2 & 3 \\\\ 0 & 1 \\end{pmatrix}"
STRUCTURED_CASES = [
    # ---- column vectors
    (_VEC, "-2", False, "elementwise"),  # a bare first entry is not the vector (was accepted)
    (_VEC, "\\begin{pmatrix} -2 \\\\ -14 \\\\ -8 \\end{pmatrix}", False, "elementwise"),  # wrong last entry (was accepted)
    (_VEC, "\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}", True, "elementwise"),  # no spaces (was rejected)
    (_VEC, "\\begin{bmatrix} -2 \\\\ -14 \\\\ -7 \\end{bmatrix}", True, "elementwise"),  # bmatrix
    (_VEC, "\\left(\\begin{array}{c} -2 \\\\ -14 \\\\ -7 \\end{array}\\right)", True, "elementwise"),  # array in parens
    (_VEC, "\\begin{pmatrix} -\\frac{4}{2} \\\\ -14 \\\\ -7 \\end{pmatrix}", True, "elementwise"),  # \frac entry
    (_VEC, "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\\\ \\end{pmatrix}", True, "elementwise"),  # trailing row break
    (_VEC, "(-2, -14, -7)", True, "elementwise"),  # a tuple for a column vector
    (_VEC, "(-2, -14)", False, "elementwise"),  # a tuple of the wrong length
    (_VEC, "\\begin{pmatrix} -2 & -14 & -7 \\end{pmatrix}", False, "elementwise"),  # row vector: other shape
    ("(-2, -14, -7)", _VEC, True, "elementwise"),  # gold as a tuple, prediction as a vector
    (_VEC, "\\frac{2\\cdot(" + _VEC + ")}{2}", True, "symbolic"),  # arithmetic on a matrix: math-verify
    (_VEC, "2\\cdot" + _VEC, False, "symbolic"),  # ... which also rejects a scaled one
    (_VEC, "\\begin{pmatrix} -2 \\\\[2pt] -14 \\\\ -7 \\end{pmatrix}", True, "elementwise"),  # row spacing arg
    # ---- matrices
    (_MAT, "\\begin{pmatrix}\\frac12&3\\\\0&1\\end{pmatrix}", True, "elementwise"),  # \frac12, no spaces (was rejected)
    (_MAT, "\\begin{bmatrix} \\frac{1}{2} & 3 \\\\ 0 & 1 \\end{bmatrix}", True, "elementwise"),  # bmatrix
    (_MAT, "\\begin{pmatrix} 0.5 & 3 \\\\ 0 & 2 \\end{pmatrix}", False, "elementwise"),  # one wrong cell
    (_MAT, "\\begin{pmatrix} 0.5 & 0 \\\\ 3 & 1 \\end{pmatrix}", False, "elementwise"),  # transposed
    (_MAT, "\\begin{pmatrix} 0.5 & 3 & 0 & 1 \\end{pmatrix}", False, "elementwise"),  # flattened
    ("\\begin{pmatrix} \\sqrt{2} & 0 \\\\ 0 & 1 \\end{pmatrix}",
     "\\begin{pmatrix} \\frac{2}{\\sqrt{2}} & 0 \\\\ 0 & 1 \\end{pmatrix}", True, "elementwise"),  # symbolic cell
    # ---- numbers in a base
    ("52_8", "52_9", False, "base"),  # another base (was accepted)
    ("52_8", "52", False, "base"),  # no base is decimal 52 (was accepted)
    ("52_8", "42", False, "base"),  # the decimal value, not written in the asked base
    ("52_8", "52_{8}", True, "base"),  # braced subscript
    ("52_8", "(52)_8", True, "base"),  # parenthesised digits
    ("52_8", "052_8", True, "base"),  # leading zero
    ("52_8", "52_{\\text{eight}}", True, "base"),  # base as a word
    ("1011_2", "1011_3", False, "base"),  # same digits, other base
    ("A5_{16}", "a5_{16}", True, "base"),  # hex digits in either case
    ("42", "42_{10}", True, "numeric"),  # base ten is a plain number
    ("x_1", "x_1", True, "string"),  # a subscripted variable is not a based number
    # ---- plain unit words after the final number
    ("3", "3 bolts", True, "numeric"),  # GSM8K: unit word without \text (was rejected)
    ("60", "60 instructions", True, "numeric"),  # another word
    ("3", "3 \\text{ bolts}", True, "numeric"),  # the \text form, as before
    ("3", "4 bolts", False, "numeric"),  # a wrong number stays wrong
    ("2", "2x", False, "symbolic"),  # a variable against the number is not a unit
    ("2", "2 pi", False, "symbolic"),  # pi is not a unit
    ("5", "5 or 6", False, "symbolic"),  # an alternative is not a unit
    ("3", "3 times", True, "numeric"),  # "how many times": a trailing word, not multiplication
    ("4", "4 squared", False, "symbolic"),  # a trailing word that changes the value
]


@pytest.mark.parametrize("gold, pred, equal, method", STRUCTURED_CASES)
def test_structured_answers(gold, pred, equal, method):
    result = is_equivalent(gold, pred, timeout=10.0)
    assert (result.equal, result.method) == (equal, method), result


def test_row_break_survives_normalisation():
    # `\\ ` (row break, space) keeps both backslashes; `\ ` (a LaTeX space) is still removed
    assert normalize_answer("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"
    assert normalize_answer("3\\ \\text{cm}") == "3"


def test_matrix_never_raises_on_garbage():
    for junk in ("\\begin{pmatrix}", "\\begin{pmatrix} & \\\\ & \\end{pmatrix}", "\\begin{array}{c}\\end{array}",
                 "\\begin{pmatrix}" + "1&" * 500 + "1\\end{pmatrix}", "(,)", "\\langle 1, 2 \\rangle"):
        assert isinstance(is_equivalent(_VEC, junk, timeout=2.0).equal, bool)
