"""`aha demo --quick` runs every stage and leaves every artefact (plumbing, not a quality bar)."""

from __future__ import annotations

import json

from aha.cli import main


def test_quick_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for stage in ("untrained", "sft", "sft_continued", "grpo"):
        entry = results["stages"][stage]
        assert {"accuracy", "ci_low", "ci_high", "buckets", "seconds"} <= set(entry), stage
        assert set(entry["buckets"]) == {"2ppl", "3ppl"}
        assert (out / "eval" / stage / "results.json").is_file()
    for path in ["REPORT.md", "compare.md", "settings.json", "data/train.jsonl", "data/test.jsonl",
                 "sft/model/model.safetensors", "grpo/model/model.safetensors", "grpo/metrics.jsonl",
                 "sft_continued/model/model.safetensors"]:
        assert (out / path).is_file(), path
    pngs = list((out / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert results["seconds"]["sft_continued"] > 0
    assert "GRPO minus SFT" in (out / "REPORT.md").read_text()
    assert "grpo" in capsys.readouterr().out
