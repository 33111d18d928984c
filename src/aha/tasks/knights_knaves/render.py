"""English text of puzzles and answers, in aha's own wording.

The quiz text follows the shape of the public K&K quizzes (an island of knights and knaves, a list
of the people met, one statement per person in a randomly chosen speech template, a closing
question) but the sentences and templates are our own. The answer uses the public numbered format
`(1) Name is a knight`, one line per person in the order the quiz introduces them.
"""

from __future__ import annotations

from aha.tasks.knights_knaves.logic import LEAVES, Statement

# Short, distinct given names that are not common English words (so a name never reads as part of a
# sentence and a verifier's word-boundary match cannot confuse them with the puzzle's wording).
NAMES = (
    "Ada", "Ben", "Cara", "Dan", "Eve", "Finn", "Gus", "Hal", "Ivy", "Jon", "Kim", "Leo", "Max", "Ned",
    "Olga", "Pam", "Quinn", "Rex", "Sam", "Tia", "Uma", "Vic", "Wes", "Xena", "Yuri", "Zoe", "Abe", "Bea",
    "Cyd", "Dina", "Eli", "Flo", "Gil", "Hana", "Ian", "Jana", "Kai", "Lena", "Milo", "Nia", "Otto", "Pia",
    "Raj", "Suki", "Ted", "Vera", "Wyn", "Zed",
)

# {n}: speaker; {c}: statement starting lower-case; {C}: the same, capitalised.
SPEECH_TEMPLATES = (
    "{n} says that {c}.",
    "{n} claims that {c}.",
    "{n} tells you that {c}.",
    '{n} states: "{C}."',
    '"{C}," says {n}.',
    "According to {n}, {c}.",
    "{n} insists that {c}.",
    '{n} declares: "{C}."',
)

INTRO = ("On this island every inhabitant is either a knight, who always tells the truth, "
         "or a knave, who always lies.")
QUESTION = "Who is a knight and who is a knave?"

ROLE = {True: "knight", False: "knave"}


def role_word(knight: bool) -> str:
    return ROLE[bool(knight)]


def join_names(names: list[str] | tuple[str, ...]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def statement_text(stmt: Statement, names: list[str] | tuple[str, ...], nested: bool = False) -> str:
    """English for a statement tree.

    nested: the statement is an operand of another operator; compound operands are then put in
        parentheses so that deeper trees read unambiguously ("(A is a knight or B is a knave) and ...").
    """
    op = stmt[0]
    if op == "telling-truth":
        return f"{names[stmt[1]]} is a knight"
    if op == "lying":
        return f"{names[stmt[1]]} is a knave"
    if op == "not":
        sub = stmt[1]
        if sub[0] in LEAVES:
            return f"{names[sub[1]]} is not a {'knight' if sub[0] == 'telling-truth' else 'knave'}"
        text = f"it is false that {statement_text(sub, names, nested=True)}"
    elif op in ("and", "or"):
        text = f" {op} ".join(statement_text(s, names, nested=True) for s in stmt[1:])
    elif op == "->":
        text = f"if {statement_text(stmt[1], names, True)} then {statement_text(stmt[2], names, True)}"
    elif op == "<=>":
        text = f"{statement_text(stmt[1], names, True)} if and only if {statement_text(stmt[2], names, True)}"
    else:
        raise ValueError(f"unknown operator {op!r}")
    return f"({text})" if nested else text


def speech(template: int, name: str, content: str) -> str:
    """One statement in speech template number `template` (modulo the number of templates)."""
    cap = content[:1].upper() + content[1:]
    return SPEECH_TEMPLATES[template % len(SPEECH_TEMPLATES)].format(n=name, c=content, C=cap)


def quiz_text(names: list[str] | tuple[str, ...], statements: tuple[Statement, ...] | list[Statement],
              templates: list[int]) -> str:
    """The full puzzle text.

    names: the people in order of introduction; statements[i] is said by names[i].
    templates: one speech-template number per person.
    """
    parts = [INTRO, f"You meet {len(names)} inhabitants: {join_names(names)}."]
    for i, stmt in enumerate(statements):
        parts.append(speech(templates[i], names[i], statement_text(stmt, names)))
    parts.append(QUESTION)
    return " ".join(parts)


def plain_quiz_text(names: list[str] | tuple[str, ...], statements: tuple[Statement, ...] | list[Statement]) -> str:
    """The puzzle without the island introduction and with one speech form: "Ada says that Ben is a
    knave. Ben says that ..." (shorter prompts for very small models)."""
    return " ".join(speech(0, name, statement_text(stmt, names)) for name, stmt in zip(names, statements))


def solution_text(names: list[str] | tuple[str, ...], solution: list[bool]) -> str:
    """'A is a knight, B is a knave, and C is a knight.' (the public `solution_text` shape)."""
    parts = [f"{name} is a {role_word(k)}" for name, k in zip(names, solution)]
    if len(parts) == 1:
        return parts[0] + "."
    return ", ".join(parts[:-1]) + ", and " + parts[-1] + "."


def solution_text_format(names: list[str] | tuple[str, ...], solution: list[bool]) -> str:
    """'(1) A is a knight\\n(2) B is a knave' (the public `solution_text_format`, the answer format)."""
    lines = (f"({i + 1}) {name} is a {role_word(k)}" for i, (name, k) in enumerate(zip(names, solution)))
    return "\n".join(lines)
