"""Scoring completions against a task's examples: per-sample records and per-bucket summaries.

Task-agnostic: every judgement comes from `task.verify`. Used by `aha score` (completions produced
elsewhere) and meant for the evaluation command (completions sampled by aha).

Completion files are JSONL, one object per completion: `{"id": EXAMPLE_ID, "completion": TEXT}`
(`text` or `response` are accepted for the text); several lines may share an id (n samples per
problem).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.jsonl import iter_json_objects
from aha.tasks.base import Example, Task, Verdict

TEXT_KEYS = ("completion", "text", "response")


@dataclass
class Sample:
    """One completion to score.

    id: the example it answers; text: the assistant's reply; where: "FILE, line N" when read from a file
    (for error messages); extra: other fields of the line, copied into the record.
    """

    id: str
    text: str
    where: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def read_completions(path: str | Path) -> list[Sample]:
    """Samples from a JSONL file; AhaError naming the line for bad JSON or missing fields, and for an
    empty file."""
    path = Path(path)
    if not path.is_file():
        raise AhaError(f"completions file {str(path)!r} does not exist")
    out: list[Sample] = []
    for i, rec in iter_json_objects(path):
        where = f"{path}, line {i}"
        if "id" not in rec or isinstance(rec["id"], (dict, list)) or rec["id"] is None:
            raise AhaError(f"{where}: missing field 'id'")
        key = next((k for k in TEXT_KEYS if k in rec), None)
        if key is None:
            raise AhaError(f"{where}: missing field 'completion' (or 'text' / 'response')")
        if not isinstance(rec[key], str):
            raise AhaError(f"{where}: field {key!r} must be a string")
        extra = {k: v for k, v in rec.items() if k != "id" and k != key}
        out.append(Sample(str(rec["id"]), rec[key], where, extra))
    if not out:
        raise AhaError(f"{path}: the completions file is empty")
    return out


def _verify(task: Task, text: str, example: Example) -> Verdict:
    try:
        return task.verify(text, example)
    except Exception as exc:  # noqa: BLE001 - a faulty verifier marks the sample wrong, not the run dead
        return Verdict(error=f"verifier error: {type(exc).__name__}")


def score_samples(task: Task, examples: Iterable[Example] | Mapping[str, Example],
                  samples: Iterable[Sample]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Verify every sample against its example.

    task: supplies `verify`.
    examples: the examples (or a mapping id -> example) the samples refer to.
    samples: completions; an id that is not among the examples raises AhaError naming the sample's line.
    Returns (records, summary): one record per sample (id, bucket, sample number within its id,
    correct, format_ok, partial, parsed, error, num_chars, plus the sample's extra fields) and the
    summary of `summarize`.
    """
    by_id = dict(examples) if isinstance(examples, Mapping) else {ex.id: ex for ex in examples}
    records: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for s in samples:
        example = by_id.get(s.id)
        if example is None:
            where = f"{s.where}: " if s.where else ""
            raise AhaError(f"{where}unknown id {s.id!r}: not an example of the data ({len(by_id)} examples)")
        verdict = _verify(task, s.text, example)
        k = counts.get(s.id, 0)
        counts[s.id] = k + 1
        rec = {"id": s.id, "bucket": example.bucket, "sample": k, **verdict.to_dict(),
               "num_chars": len(s.text)}
        if isinstance(example.meta.get("groups"), dict):
            rec["groups"] = dict(example.meta["groups"])  # bucket_by=level,subject: one label per field
        for key, value in s.extra.items():
            rec.setdefault(key, value)
        records.append(rec)
    return records, summarize(records)


def _natural_key(text: str) -> list[Any]:
    """'2ppl' < '10ppl' < 'all': numbers compare as numbers."""
    parts = [p for p in re.split(r"(\d+)", text) if p]
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def _stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    d = max(n, 1)
    return {
        "n": n,
        "problems": len({r["id"] for r in records}),
        "accuracy": sum(bool(r["correct"]) for r in records) / d,
        "strict_accuracy": sum(bool(r["correct"]) and bool(r["format_ok"]) for r in records) / d,
        "format_rate": sum(bool(r["format_ok"]) for r in records) / d,
        "partial": sum(float(r["partial"]) for r in records) / d,
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-bucket and overall figures of scored records.

    Returns {"buckets": {bucket: stats}, "overall": stats, "bucket_mean_accuracy": float}, where stats
    holds n (samples), problems (distinct ids), accuracy (fraction correct), strict_accuracy (correct
    and well formed), format_rate and partial (mean partial credit); buckets are in natural order
    ("2ppl" before "10ppl"); bucket_mean_accuracy is the unweighted mean over buckets (the "Avg"
    column of the K&K tables).
    """
    buckets = _grouped(records, lambda r: r["bucket"])
    mean = sum(s["accuracy"] for s in buckets.values()) / len(buckets) if buckets else 0.0
    out = {"buckets": buckets, "overall": _stats(records), "bucket_mean_accuracy": mean}
    dims = list(dict.fromkeys(d for r in records if isinstance(r.get("groups"), dict) for d in r["groups"]))
    if len(dims) > 1:
        out["by"] = {d: _grouped(records, lambda r, d=d: (r.get("groups") or {}).get(d, "all")) for d in dims}
    return out


def _grouped(records: list[dict[str, Any]], label: Any) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(label(r)), []).append(r)
    return {b: _stats(groups[b]) for b in sorted(groups, key=_natural_key)}


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per bucket, then the overall row and the bucket mean; with several
    bucket fields (`summary["by"]`), one such block per field. The first column is as wide as the
    longest bucket name, so long names keep the columns aligned."""
    dims = summary.get("by") or {"bucket": summary["buckets"]}
    names = [n for groups in dims.values() for n in groups] + list(dims) + ["overall", "bucket mean"]
    width = max(12, *(len(str(n)) for n in names))
    blocks = []
    for dim, groups in dims.items():
        header = (f"{dim:<{width}} {'n':>7} {'accuracy':>9} {'strict':>7} {'format':>7} {'partial':>8}")
        lines = [header, "-" * len(header)]

        def row(name: str, s: dict[str, Any]) -> str:
            return (f"{name:<{width}} {s['n']:>7} {s['accuracy']:>9.3f} {s['strict_accuracy']:>7.3f} "
                    f"{s['format_rate']:>7.3f} {s['partial']:>8.3f}")

        for name, s in groups.items():
            lines.append(row(name, s))
        lines.append("-" * len(header))
        lines.append(row("overall", summary["overall"]))
        if len(groups) > 1:
            mean = sum(s["accuracy"] for s in groups.values()) / len(groups)
            lines.append(f"{'bucket mean':<{width}} {'':>7} {mean:>9.3f}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
