"""Teacher traces: exact text on a hand-solved puzzle, and final answers equal to the solution everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from aha.tasks.formatting import check_think_answer, last_answer_block
from aha.tasks.knights_knaves.generator import generate_puzzles
from aha.tasks.knights_knaves.render import solution_text_format
from aha.tasks.knights_knaves.traces import make_trace, search
from aha.tasks.knights_knaves.verifier import verify_answer

NAMES = ["Ada", "Ben", "Cyd"]
# Ada: "Ben is a knight"; Ben: "Ada is a knave and Cyd is a knave"; Cyd: "Ada is a knave or Ben is a knight".
# Worked by hand: Ada knight -> Ben knight -> Ben's claim needs Ada knave: impossible. So Ada is a knave ->
# Ben is a knave (Ada lied) -> Ben's claim is false while Ada is a knave, so Cyd is a knight -> Cyd's claim
# holds (Ada is a knave). Unique solution: knave, knave, knight.
STATEMENTS = (("telling-truth", 1), ("and", ("lying", 0), ("lying", 2)),
              ("or", ("lying", 0), ("telling-truth", 1)))
CHECK = "Check: Ada knave, claim false; Ben knave, claim false; Cyd knight, claim true. All claims fit."
ANSWER = "<answer>(1) Ada is a knave\n(2) Ben is a knave\n(3) Cyd is a knight</answer>"


def test_reflective_trace_of_a_hand_solved_puzzle():
    assert make_trace(NAMES, STATEMENTS, "reflective") == "\n".join([
        "<think>Assume Ada is a knight.",
        "Ada's claim is true, so Ben is a knight.",
        "Ben's claim cannot be true, but Ben is a knight: contradiction.",  # Cyd still open: "cannot"
        "Reconsider: Ada is a knave.",
        "Ada's claim is false, so Ben is a knave.",
        "Ben's claim is false, so Cyd is a knight.",
        CHECK + "</think>",
        ANSWER,
    ])


def test_restated_claims_sit_next_to_their_verdicts():
    assert make_trace(NAMES, STATEMENTS, "reflective", restate=True) == "\n".join([
        "<think>Assume Ada is a knight.",
        "Ada says Ben is a knight; it is true, so Ben is a knight.",
        "Ben says Ada is a knave and Cyd is a knave; it cannot be true, but Ben is a knight: contradiction.",
        "Reconsider: Ada is a knave.",
        "Ada says Ben is a knight; it is false, so Ben is a knave.",
        "Ben says Ada is a knave and Cyd is a knave; it is false, so Cyd is a knight.",
        CHECK + "</think>",
        ANSWER,
    ])


def test_direct_trace_keeps_only_the_successful_path():
    assert make_trace(NAMES, STATEMENTS, "direct") == "\n".join([
        "<think>Assume Ada is a knave.",
        "Ada's claim is false, so Ben is a knave.",
        "Ben's claim is false, so Cyd is a knight.",
        CHECK + "</think>",
        ANSWER,
    ])


def test_think_preopened_trace_starts_with_the_reasoning():
    trace = make_trace(NAMES, STATEMENTS, "direct", think_preopened=True)
    assert trace.startswith("Assume Ada is a knave.") and "<think>" not in trace
    assert check_think_answer(trace, think_preopened=True).ok


def test_first_branch_success_has_no_contradiction():
    # Ada: "Ben is a knave"; Ben: "Cyd is a knight"; Cyd: "Ada is a knave and Ben is a knight".
    # Ada knight -> Ben knave -> Cyd knave -> Cyd's claim is false (Ada is a knight): fits.
    statements = (("lying", 1), ("telling-truth", 2), ("and", ("lying", 0), ("telling-truth", 1)))
    result = search(NAMES, statements)
    assert result.solution == [True, False, False] and result.contradictions == 0


def test_backtracking_two_levels():
    # Ada: "Cyd is a knave iff Ben is a knave"; Ben: "Cyd is not a knight"; Cyd: "Ben is a knight or Ben
    # is a knave" (always true, but the local rules only see that once Ben is known). By hand:
    # Ada knight, Ben knight: the iff needs Cyd knight, but Ben then lies -> contradiction;
    # Ada knight, Ben knave: the iff needs Cyd knave, but Ben then tells the truth -> contradiction,
    # so Ben fits neither role under Ada = knight and the search returns to Ada;
    # Ada knave, Ben knight: the iff must be false, so Cyd is a knave who tells the truth -> contradiction;
    # Ada knave, Ben knave: Cyd is a knight; every claim fits.
    statements = (("<=>", ("lying", 2), ("lying", 1)), ("not", ("telling-truth", 2)),
                  ("or", ("telling-truth", 1), ("lying", 1)))
    assert make_trace(NAMES, statements, "reflective").split("\n")[:-4] == [
        "<think>Assume Ada is a knight.",
        "Assume Ben is a knight.",
        "Ada's claim is true, so Cyd is a knight.",
        "Ben's claim is false, but Ben is a knight: contradiction.",
        "Reconsider: Ben is a knave.",
        "Ada's claim is true, so Cyd is a knave.",
        "Ben's claim is true, but Ben is a knave: contradiction.",
        "Neither role works for Ben.",
        "Reconsider: Ada is a knave.",
        "Assume Ben is a knight.",
        "Ada's claim is false, so Cyd is a knave.",
        "Cyd's claim is true, but Cyd is a knave: contradiction.",
        "Reconsider: Ben is a knave.",
        "Ada's claim is false, so Cyd is a knight.",
    ]
    assert search(NAMES, statements).contradictions == 3


def test_a_claim_that_fits_neither_role():
    # Ada: "Ada is a knight" (true of either role); Ben: "Ben is a knave and Ada is a knight".
    # With Ada a knight, Ben as a knight would say something false and Ben as a knave something true:
    # a paradox, so Ada is a knave, and then Ben's claim is false, so Ben is a knave.
    statements = (("telling-truth", 0), ("and", ("lying", 1), ("telling-truth", 0)))
    assert make_trace(["Ada", "Ben"], statements, "reflective").split("\n")[:5] == [
        "<think>Assume Ada is a knight.",
        "Ben's claim fits neither role: contradiction.",
        "Reconsider: Ada is a knave.",
        "Ben's claim is false, so Ben is a knave.",
        "Check: Ada knave, claim false; Ben knave, claim false. All claims fit.</think>",
    ]


@pytest.mark.parametrize("style, restate", [("reflective", False), ("direct", False), ("reflective", True)])
def test_trace_answers_equal_solutions_on_thousands_of_puzzles(style, restate):
    n_checked = n_reflective = 0
    for n in range(2, 9):
        for p in generate_puzzles(n, 300, seed=21):
            trace = make_trace(p.names, p.statements, style, restate=restate)
            assert last_answer_block(trace) == solution_text_format(p.names, list(p.solution))
            verdict = verify_answer(trace, p.names, p.solution)
            assert verdict.correct and verdict.format_ok, (p.id, verdict)
            n_checked += 1
            n_reflective += "contradiction" in trace
    assert n_checked == 2100
    if style == "direct":
        assert n_reflective == 0
    else:
        assert n_reflective > 0.4 * n_checked  # about half the searches hit a wrong first assumption


def test_reflective_lines_are_the_fixed_phrases():
    allowed = ("Assume ", "Reconsider: ", "Neither role works for ", "Check: ")
    for p in generate_puzzles(5, 100, seed=3, depth=3, width=3):
        body = make_trace(p.names, p.statements, "reflective")
        lines = body[len("<think>"):body.index("</think>")].split("\n")
        for line in lines:
            assert line.startswith(allowed) or "'s claim " in line, line
        assert lines[-1].startswith("Check: ")


@pytest.mark.skipif(not list(Path("/work/shared/data/kk").glob("*ppl_test.parquet")), reason="no fixtures")
def test_traces_of_the_public_fixtures_are_correct():
    from aha.tasks.knights_knaves.loader import load_puzzles

    for path in sorted(Path("/work/shared/data/kk").glob("*ppl_test.parquet")):
        for p in load_puzzles(path):
            trace = make_trace(p.names, p.statements, "reflective")
            assert verify_answer(trace, p.names, p.solution).correct


def test_no_trace_without_a_solution():
    assert make_trace(["Ada", "Ben"], (("lying", 0), ("telling-truth", 1))) is None
