"""Token costs of an evaluation and REA-RL's token-savings report (seed 004).

Per evaluation (its samples.jsonl records), overall and per bucket (`token_summary`):
    accuracy             share of correct samples
    tokens_mean          mean tokens per response
    tokens_per_correct   all tokens spent / correct responses (the cost of one right answer; None
                         when nothing is correct)
    correct_tokens_mean  mean length of the correct responses
    reflections_mean     reflections per response, counted with REA-RL's released keyword regex
                         (`aha.rewards.reflection.count_rea_rl_reflections` on the reasoning)
    reflections_per_1k   reflections per 1000 response tokens
    reflection_rate      share of responses with at least one reflection

Token budgets (`aha eval --budgets 8192 16384`): each response is also cut to B tokens and judged
again (REA-RL judges at 8k and 16k); the record holds budgets {B: {correct, num_tokens}} and
`budget_summary` gives accuracy and mean tokens at each B.

`token_savings` puts evaluations side by side against the first (the baseline): accuracy, mean
tokens and the token ratio (mean tokens / the baseline's, in percent, as REA-RL's tables), per
bucket and at each budget, plus reflection frequency per bucket (REA-RL: kept on hard problems,
reduced on easy ones).
"""

from __future__ import annotations

from typing import Any

from aha.eval.tables import markdown_table, natural_key
from aha.rewards.reflection import count_rea_rl_reflections, rea_rl_reasoning


def _reflections(record: dict[str, Any]) -> int:
    return count_rea_rl_reflections(rea_rl_reasoning(str(record.get("completion", ""))))


def token_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The token and reflection figures of a set of sample records (see the module docstring)."""
    n = len(records)
    tokens = [int(r.get("num_tokens", 0)) for r in records]
    correct = [bool(r.get("correct")) for r in records]
    refl = [_reflections(r) for r in records]
    right = [t for t, c in zip(tokens, correct) if c]
    total = sum(tokens)
    return {
        "samples": n,
        "accuracy": sum(correct) / n if n else 0.0,
        "tokens_mean": total / n if n else 0.0,
        "tokens_per_correct": total / len(right) if right else None,
        "correct_tokens_mean": sum(right) / len(right) if right else None,
        "reflections_mean": sum(refl) / n if n else 0.0,
        "reflections_per_1k": 1000.0 * sum(refl) / total if total else 0.0,
        "reflection_rate": sum(1 for x in refl if x > 0) / n if n else 0.0,
    }


def budget_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{budget: {accuracy, tokens_mean}} from records re-judged at token budgets (empty if none)."""
    budgets = sorted({b for r in records for b in (r.get("budgets") or {})}, key=int)
    out = {}
    for b in budgets:
        rs = [r["budgets"][b] for r in records if b in (r.get("budgets") or {})]
        out[b] = {"accuracy": sum(bool(x["correct"]) for x in rs) / len(rs),
                  "tokens_mean": sum(int(x["num_tokens"]) for x in rs) / len(rs), "samples": len(rs)}
    return out


def by_bucket(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get("bucket", "all")), []).append(r)
    return {b: groups[b] for b in sorted(groups, key=natural_key)}


def token_savings(evaluations: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The token-savings report of labelled evaluations; the first is the baseline."""
    models = {}
    for label, records in evaluations:
        models[label] = {"all": token_summary(records),
                         "buckets": {b: token_summary(rs) for b, rs in by_bucket(records).items()},
                         "budgets": budget_summary(records)}
    base = models[evaluations[0][0]]

    def ratio(x: float, y: float) -> float | None:
        return 100.0 * x / y if y else None

    for m in models.values():
        m["token_ratio"] = ratio(m["all"]["tokens_mean"], base["all"]["tokens_mean"])
        m["bucket_token_ratio"] = {b: ratio(s["tokens_mean"], base["buckets"][b]["tokens_mean"])
                                   for b, s in m["buckets"].items() if b in base["buckets"]}
        m["budget_token_ratio"] = {b: ratio(s["tokens_mean"], base["budgets"][b]["tokens_mean"])
                                   for b, s in m["budgets"].items() if b in base["budgets"]}
    return {"baseline": evaluations[0][0], "models": models}


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def token_savings_markdown(report: dict[str, Any]) -> str:
    """The token-savings tables: overall, per bucket, per budget, and reflection frequency per bucket."""
    models = report["models"]
    lines = ["## Token savings", "",
             f"Token ratio: mean tokens per response relative to **{report['baseline']}** (= 100). Tokens per "
             "correct: all tokens spent / correct responses.", "",
             markdown_table(["model", "accuracy", "tokens/response", "token ratio", "tokens/correct"],
                            [[label, _f(m["all"]["accuracy"]), _f(m["all"]["tokens_mean"], 1),
                              _f(m["token_ratio"], 1), _f(m["all"]["tokens_per_correct"], 1)]
                             for label, m in models.items()]), ""]
    buckets = list(next(iter(models.values()))["buckets"])
    rows = []
    for b in buckets:
        for label, m in models.items():
            if b in m["buckets"]:
                s = m["buckets"][b]
                rows.append([b, label, _f(s["accuracy"]), _f(s["tokens_mean"], 1),
                             _f(m["bucket_token_ratio"].get(b), 1), _f(s["reflections_mean"], 2),
                             _f(s["reflections_per_1k"], 2), _f(s["reflection_rate"])])
    lines += ["### Per bucket (with reflection frequency, REA-RL's keyword regex)", "",
              markdown_table(["bucket", "model", "accuracy", "tokens/response", "token ratio", "reflections/response",
                              "reflections/1k tokens", "with reflection"], rows), ""]
    budgets = sorted({b for m in models.values() for b in m["budgets"]}, key=int)
    if budgets:
        rows = [[b, label, _f(m["budgets"][b]["accuracy"]), _f(m["budgets"][b]["tokens_mean"], 1),
                 _f(m["budget_token_ratio"].get(b), 1)]
                for b in budgets for label, m in models.items() if b in m["budgets"]]
        lines += ["### Re-judged at token budgets (responses cut to B tokens)", "",
                  markdown_table(["budget", "model", "accuracy", "tokens/response", "token ratio"], rows), ""]
    return "\n".join(lines)
