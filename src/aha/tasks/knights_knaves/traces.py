"""Teacher traces: the solver's backtracking search written out as short, formulaic reasoning.

The search is a depth-first search with constraint propagation, in the order a person would work:

1. Propagate. Person s's constraint is "s is a knight iff s's claim is true". Two local rules fire:
   - s's role is known: the claim must have that truth value; people mentioned in the claim whose
     role is then forced are derived ("Ada's claim is true, so Ben is a knave.");
   - s's role is unknown but everyone else in the claim is known: the claim's value fixes s's role
     ("Ben's claim is false, so Ben is a knave.").
   A constraint that cannot hold any more is a contradiction ("Cyd's claim is false, but Cyd is a
   knight: contradiction."). Contradictions are checked before new derivations, so a wrong branch
   is abandoned as soon as one is visible.
2. Branch on the first person (in quiz order) whose role is still open: knight first, then knave.
   After a contradiction the search reconsiders the latest open choice ("Reconsider: Ada is a
   knave."); when both roles of a person fail it says so and goes back one more level.
3. When everyone has a role, check every claim against the full assignment and answer.

Styles:
- "reflective": the whole search, wrong assumptions, contradictions and reconsiderations included.
- "direct": only the successful path (the assumptions that stood and their derivations).

Every line is one fixed phrase with names and roles filled in; claims are referred to by speaker
("Ada's claim"), never restated, because trace length is what a small model pays for (see
reference/demo_feasibility.md). Truth tables over all assignments (see `logic`) do the set algebra:
the rules only decide which inferences are written down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aha.tasks.knights_knaves import render
from aha.tasks.knights_knaves.logic import Statement, constraint_table, full_mask, knight_masks, people_in
from aha.tasks.knights_knaves.render import role_word

TRACE_STYLES = ("reflective", "direct")

# The fixed phrases (kept here together so that a reflection counter or a test can refer to them).
ASSUME = "Assume {x} is a {role}."
DERIVE = "{s}'s claim is {value}, so {facts}."
CONTRA_IS = "{s}'s claim is {value}, but {s} is a {role}: contradiction."
CONTRA_CANNOT = "{s}'s claim cannot be {value}, but {s} is a {role}: contradiction."
CONTRA_NEITHER = "{s}'s claim fits neither role: contradiction."
RECONSIDER = "Reconsider: {x} is a {role}."
# with restated claims, "{s}'s claim" becomes "{s} says {claim}" so the claim sits next to its verdict
SAYS = "{s} says {claim};"
NEITHER_ROLE = "Neither role works for {x}."
CHECK = "Check: {items}. All claims fit."


def _tf(value: bool) -> str:
    return "true" if value else "false"


@dataclass
class _Event:
    kind: str  # assume | derive | contradiction | reconsider | neither
    path: tuple[tuple[int, bool], ...]  # the open choices when the event happened
    text: str
    choice: tuple[int, bool] | None = None  # for assume/reconsider: the choice it makes


@dataclass
class SearchResult:
    """solution: roles found (None if the statements have no consistent assignment);
    events: the search, in order; final_path: the choices on the successful branch;
    contradictions: how many contradictions the reflective trace shows."""

    solution: list[bool] | None
    events: list[_Event] = field(default_factory=list)
    final_path: tuple[tuple[int, bool], ...] = ()

    @property
    def contradictions(self) -> int:
        return sum(e.kind == "contradiction" for e in self.events)


class _Search:
    def __init__(self, names: tuple[str, ...] | list[str],
                 statements: tuple[Statement, ...] | list[Statement], restate: bool = False):
        self.names = list(names)
        self.restate = restate
        self.claims = [render.statement_text(st, self.names) for st in statements]
        self.n = n = len(statements)
        self.full = full_mask(n)
        self.knight = knight_masks(n)
        self.constraints = [constraint_table(i, s, n) for i, s in enumerate(statements)]
        self.claim_people = [sorted(people_in(s)) for s in statements]
        self.events: list[_Event] = []

    def _role_mask(self, person: int, knight: bool) -> int:
        return self.knight[person] if knight else self.knight[person] ^ self.full

    def _emit(self, kind: str, path: tuple, text: str, choice: tuple[int, bool] | None = None,
              speaker: int | None = None) -> None:
        if self.restate and speaker is not None:
            # "Ada's claim is true, so ..." -> "Ada says Ben is a knave; it is true, so ..."
            name = self.names[speaker]
            text = text.replace(f"{name}'s claim", SAYS.format(s=name, claim=self.claims[speaker]) + " it", 1)
        self.events.append(_Event(kind, path, text, choice))

    def propagate(self, roles: list[bool | None], allowed: int, path: tuple) -> int | None:
        """Apply the two rules until nothing changes; returns the narrowed assignment set, or None
        after writing a contradiction. `roles` is updated in place."""
        names = self.names
        while True:
            for s in range(self.n):
                if self.constraints[s] & allowed:
                    continue
                others_known = all(roles[v] is not None for v in self.claim_people[s] if v != s)
                if roles[s] is not None:
                    value = bool(roles[s])
                    template = CONTRA_IS if others_known else CONTRA_CANNOT
                    shown = not value if others_known else value
                    self._emit("contradiction", path, template.format(s=names[s], value=_tf(shown),
                                                                      role=role_word(value)), speaker=s)
                    return None
                if others_known:
                    self._emit("contradiction", path, CONTRA_NEITHER.format(s=names[s]), speaker=s)
                    return None
            progressed = False
            for s in range(self.n):
                compat = self.constraints[s] & allowed
                if roles[s] is not None:
                    candidates = [v for v in self.claim_people[s] if roles[v] is None]
                elif all(roles[v] is not None for v in self.claim_people[s] if v != s):
                    candidates = [s]
                else:
                    continue
                facts = []
                for v in candidates:
                    if not compat & self.knight[v]:
                        facts.append((v, False))
                    elif not compat & (self.knight[v] ^ self.full):
                        facts.append((v, True))
                if not facts:
                    continue
                for v, knight in facts:
                    roles[v] = knight
                    allowed &= self._role_mask(v, knight)
                text = " and ".join(f"{names[v]} is a {role_word(k)}" for v, k in facts)
                self._emit("derive", path, DERIVE.format(s=names[s], value=_tf(bool(roles[s])), facts=text),
                           speaker=s)
                progressed = True
                break
            if not progressed:
                return allowed

    def dfs(self, roles: list[bool | None], allowed: int, path: tuple) -> tuple[list[bool], tuple] | None:
        narrowed = self.propagate(roles, allowed, path)
        if narrowed is None:
            return None
        open_people = [i for i, r in enumerate(roles) if r is None]
        if not open_people:
            return [bool(r) for r in roles], path
        x = open_people[0]
        for knight in (True, False):
            template = ASSUME if knight else RECONSIDER
            self._emit("assume" if knight else "reconsider", path,
                       template.format(x=self.names[x], role=role_word(knight)), (x, knight))
            branch = list(roles)
            branch[x] = knight
            found = self.dfs(branch, narrowed & self._role_mask(x, knight), path + ((x, knight),))
            if found is not None:
                return found
        self._emit("neither", path, NEITHER_ROLE.format(x=self.names[x]))
        return None


def search(names: tuple[str, ...] | list[str],
           statements: tuple[Statement, ...] | list[Statement], restate: bool = False) -> SearchResult:
    """Run the traced search (see the module docstring); `restate` writes each claim out where it
    is used."""
    run = _Search(names, statements, restate)
    found = run.dfs([None] * run.n, run.full, ())
    if found is None:
        return SearchResult(None, run.events)
    solution, path = found
    return SearchResult(solution, run.events, path)


def _on_path(path: tuple, final: tuple) -> bool:
    return final[:len(path)] == path


def think_lines(names: tuple[str, ...] | list[str], result: SearchResult, style: str) -> list[str]:
    """The reasoning lines of a trace in `style` ("reflective" or "direct")."""
    if style not in TRACE_STYLES:
        raise ValueError(f"unknown trace style {style!r}; use one of {', '.join(TRACE_STYLES)}")
    lines: list[str] = []
    for e in result.events:
        if style == "reflective":
            lines.append(e.text)
            continue
        # direct: only events whose branch is on the successful path, and only choices that stood
        if e.kind in ("assume", "reconsider"):
            if e.choice is not None and _on_path(e.path + (e.choice,), result.final_path):
                x, knight = e.choice
                lines.append(ASSUME.format(x=names[x], role=role_word(knight)))
        elif e.kind == "derive" and _on_path(e.path, result.final_path):
            lines.append(e.text)
    assert result.solution is not None
    items = "; ".join(f"{name} {role_word(k)}, claim {_tf(k)}" for name, k in zip(names, result.solution))
    lines.append(CHECK.format(items=items))
    return lines


def make_trace(names: tuple[str, ...] | list[str], statements: tuple[Statement, ...] | list[Statement],
               style: str = "reflective", think_preopened: bool = False, restate: bool = False) -> str | None:
    """The teacher response `<think>...</think>\\n<answer>...</answer>` for a puzzle.

    names, statements: the puzzle (statements[i] said by names[i]).
    style: "reflective" (the full search) or "direct" (the successful path only).
    think_preopened: the prompt already ends with `<think>`, so the response starts with the reasoning.
    restate: write each claim out where a line uses it ("Ada says Ben is a knave; it is true, so ...")
        instead of referring to it by speaker: every inference then reads nearby text, at about 27%
        more tokens (3 people). In the CPU demo's 9-minute SFT budget it did not help a 1M model.
    Returns None when the statements have no consistent assignment. With several solutions the trace
    ends in the first one the search finds.
    """
    result = search(names, statements, restate)
    if result.solution is None:
        return None
    body = "\n".join(think_lines(names, result, style))
    answer = render.solution_text_format(names, result.solution)
    return f"{'' if think_preopened else '<think>'}{body}</think>\n<answer>{answer}</answer>"
