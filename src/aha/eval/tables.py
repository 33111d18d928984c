"""Markdown tables from per-sample evaluation records.

A record is one sampled completion as the evaluator and trainer write it (JSONL), e.g.
`{"id": "kk-3-17", "bucket": "3ppl", "completion": "...", "num_tokens": 412, "correct": true,
"format_ok": true, "finish_reason": "stop"}`. Only the keys a table needs must be present.

`accuracy_table` lays rows out like the seeds' result tables: `| Model | Avg | 2ppl | 3ppl | ... |`
with Avg the *unweighted* mean of the bucket columns (every bucket counts once, whatever its size).
`stats_table` gives format rate, response length (mean / median / p90) and, given a function that
counts reflection phrases in a text, reflection statistics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Record = Mapping[str, Any]
MISSING = "–"


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically: "2ppl" < "10ppl", "level 9" < "level 10"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", str(text)) if part)


def by_bucket(records: Iterable[Record], bucket_key: str = "bucket") -> dict[str, list[Record]]:
    """Records grouped by `record[bucket_key]` (missing -> "all"), buckets in natural order."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(str(r.get(bucket_key, "all")), []).append(r)
    return {k: groups[k] for k in sorted(groups, key=natural_key)}


def problem_accuracy(records: Iterable[Record], id_key: str = "id", correct_key: str = "correct") -> float:
    """Accuracy as the mean over problems of each problem's share of correct samples (pass@1
    averaged over n samples per problem). Records without `id_key` count as separate problems.
    NaN when there are no records."""
    per: dict[Any, list[float]] = {}
    for i, r in enumerate(records):
        key = r.get(id_key, ("__record__", i))
        per.setdefault(key, []).append(float(bool(r.get(correct_key))))
    if not per:
        return float("nan")
    return float(np.mean([np.mean(v) for v in per.values()]))


def bucket_accuracy(records: Iterable[Record], bucket_key: str = "bucket", id_key: str = "id",
                    correct_key: str = "correct") -> dict[str, float]:
    """{bucket: `problem_accuracy` of its records}, buckets in natural order."""
    return {b: problem_accuracy(rs, id_key, correct_key) for b, rs in by_bucket(records, bucket_key).items()}


def unweighted_average(values: Iterable[float]) -> float:
    """Mean of the finite values (each bucket counts once); NaN if none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table. `align` holds "l" or "r" per column (default: first left,
    the rest right). Cells are padded so the source is readable too."""
    align = list(align) if align else ["l"] + ["r"] * (len(header) - 1)
    widths = [max(3, len(str(h)), *(len(str(row[i])) for row in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        out = [str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def _fmt(value: float | None, digits: int, percent: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value * 100:.{max(digits - 2, 0)}f}" if percent else f"{value:.{digits}f}"


def accuracy_table(
    rows: Mapping[str, Mapping[str, float] | Sequence[Record]],
    buckets: Sequence[str] | None = None,
    digits: int = 2,
    percent: bool = False,
    bold_best: bool = False,
    name_header: str = "Model",
    avg_label: str = "Avg",
    bucket_key: str = "bucket",
) -> str:
    """Per-bucket accuracy table, one row per model/run, laid out as in the seeds:

        | Model | Avg | 2ppl | 3ppl | ... |

    Args:
        rows: {row name: {bucket: accuracy}} or {row name: list of per-sample records}; records
            are reduced with `bucket_accuracy` (per-problem mean, then mean over problems).
        buckets: column order; default every bucket seen, in natural order.
        digits: decimals of fractions (2 as in the seeds: 0.94); with `percent`, the values are
            shown x100 with digits - 2 decimals (0.9412 -> "94" for digits 2, "94.1" for 3).
        bold_best: bold the highest value of each column (as the seeds bold their best rows).
        name_header, avg_label: header texts.
        bucket_key: record key of the bucket, when rows hold records.

    Avg is the unweighted mean of the row's bucket values over the table's columns (missing
    buckets are skipped and shown as "–").
    """
    values: dict[str, dict[str, float]] = {}
    for name, data in rows.items():
        if isinstance(data, Mapping):
            values[name] = {str(k): float(v) for k, v in data.items()}
        else:
            values[name] = bucket_accuracy(data, bucket_key=bucket_key)
    if buckets is None:
        seen = {b for v in values.values() for b in v}
        buckets = sorted(seen, key=natural_key)
    buckets = [str(b) for b in buckets]
    table: list[list[float]] = []
    for name in values:
        cells = [values[name].get(b, float("nan")) for b in buckets]
        table.append([unweighted_average(cells), *cells])
    best = [max((row[j] for row in table if math.isfinite(row[j])), default=None)
            for j in range(len(buckets) + 1)]
    out_rows = []
    for name, row in zip(values, table):
        cells = []
        for j, v in enumerate(row):
            text = _fmt(v, digits, percent)
            if bold_best and best[j] is not None and math.isfinite(v) and _fmt(v, digits, percent) == \
                    _fmt(best[j], digits, percent):
                text = f"**{text}**"
            cells.append(text)
        out_rows.append([name, *cells])
    return markdown_table([name_header, avg_label, *buckets], out_rows)


# ----------------------------------------------------------------------------- response statistics


def _length(r: Record, length_key: str) -> float | None:
    value = r.get(length_key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def response_stats(
    records: Sequence[Record],
    reflection_counter: Callable[[str], int] | None = None,
    text_key: str = "completion",
    length_key: str = "num_tokens",
    id_key: str = "id",
) -> dict[str, float]:
    """Summary figures of a set of sampled responses.

    Returns a dict with:
        samples, problems: counts (problems = distinct `id_key` values, or samples without ids).
        accuracy: share of correct samples; format_rate: share with `format_ok`.
        length_mean, length_median, length_p90: of `length_key` (tokens); p90 by numpy's default
            linear interpolation between order statistics.
        truncated_share: share with finish_reason "length" (only if any record has finish_reason).
        With `reflection_counter` (text -> number of reflections, e.g. a phrase counter):
            reflection_rate (share of responses with >= 1), reflections_mean (per response),
            reflections_per_1k_tokens (total reflections / total tokens x 1000),
            accuracy_with_reflection, accuracy_without_reflection (NaN where a side is empty).
    All figures are NaN when there are no records.
    """
    n = len(records)
    nan = float("nan")
    correct = np.array([bool(r.get("correct")) for r in records], dtype=np.float64)
    lengths = np.array([x for x in (_length(r, length_key) for r in records) if x is not None], dtype=np.float64)
    ids = {r.get(id_key, ("__record__", i)) for i, r in enumerate(records)}
    out: dict[str, float] = {
        "samples": float(n),
        "problems": float(len(ids)),
        "accuracy": float(correct.mean()) if n else nan,
        "format_rate": float(np.mean([bool(r.get("format_ok")) for r in records])) if n else nan,
        "length_mean": float(lengths.mean()) if lengths.size else nan,
        "length_median": float(np.median(lengths)) if lengths.size else nan,
        "length_p90": float(np.percentile(lengths, 90)) if lengths.size else nan,
    }
    if any("finish_reason" in r for r in records):
        out["truncated_share"] = float(np.mean([r.get("finish_reason") == "length" for r in records]))
    if reflection_counter is not None:
        counts = np.array([int(reflection_counter(str(r.get(text_key) or ""))) for r in records], dtype=np.float64)
        has = counts > 0
        out["reflection_rate"] = float(has.mean()) if n else nan
        out["reflections_mean"] = float(counts.mean()) if n else nan
        out["reflections_per_1k_tokens"] = float(counts.sum() / lengths.sum() * 1000) if lengths.sum() > 0 else nan
        out["accuracy_with_reflection"] = float(correct[has].mean()) if has.any() else nan
        out["accuracy_without_reflection"] = float(correct[~has].mean()) if (~has).any() else nan
    return out


# column label, stats key, kind ("count", "frac", "num")
_STAT_COLUMNS = [
    ("n", "samples", "count"),
    ("acc", "accuracy", "frac"),
    ("format", "format_rate", "frac"),
    ("len mean", "length_mean", "num"),
    ("len median", "length_median", "num"),
    ("len p90", "length_p90", "num"),
    ("truncated", "truncated_share", "frac"),
    ("reflect rate", "reflection_rate", "frac"),
    ("reflect/resp", "reflections_mean", "num2"),
    ("reflect/1k tok", "reflections_per_1k_tokens", "num2"),
    ("acc w/ reflect", "accuracy_with_reflection", "frac"),
    ("acc w/o reflect", "accuracy_without_reflection", "frac"),
]


def stats_table(
    groups: Mapping[str, Sequence[Record]],
    reflection_counter: Callable[[str], int] | None = None,
    digits: int = 2,
    name_header: str = "Group",
    text_key: str = "completion",
    length_key: str = "num_tokens",
) -> str:
    """One row of `response_stats` per group (e.g. per model, or `by_bucket(records)` plus an "all"
    row). Columns that no group has (truncated share without finish reasons, reflection columns
    without a counter) are left out. Fractions use `digits` decimals, lengths 1 decimal."""
    stats = {name: response_stats(rs, reflection_counter, text_key=text_key, length_key=length_key)
             for name, rs in groups.items()}
    columns = [c for c in _STAT_COLUMNS if any(c[1] in s for s in stats.values())]
    rows = []
    for name, s in stats.items():
        cells = [name]
        for _, key, kind in columns:
            v = s.get(key, float("nan"))
            if kind == "count":
                cells.append(MISSING if not math.isfinite(v) else str(int(v)))
            elif kind == "frac":
                cells.append(_fmt(v, digits))
            elif kind == "num2":
                cells.append(_fmt(v, 2))
            else:
                cells.append(_fmt(v, 1))
        rows.append(cells)
    return markdown_table([name_header, *(c[0] for c in columns)], rows)
