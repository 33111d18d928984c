"""`aha demo`: seed 000's pipeline in miniature, offline, on a CPU.

    generate K&K puzzles -> tokenizer + tiny model -> SFT on reflective solver traces -> evaluate
    -> GRPO from the SFT model (Logic-RL reward) -> evaluate
    -> control: SFT continued for the same wall time as GRPO -> evaluate
    -> compare (paired on the same held-out puzzles) -> plots -> results.json + REPORT.md

Every stage writes its own folder under the output directory, so each can be inspected (and
re-run by hand with the config it saved). `--quick` shrinks every budget so the whole pipeline
runs in a few minutes; it checks plumbing, not quality.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aha.config import load_config, option
from aha.errors import AhaError


@dataclass
class DemoSettings:
    """Budgets and knobs of the demo (the full defaults are the ones the README's result used; what
    was measured on the way to them: docs/demo/SETTINGS.md).

    Budgets are step counts, so a run's numbers do not depend on how busy the machine is; the
    `*_max_seconds` caps only guard a much slower machine. The control's budget is GRPO's measured
    wall time (the comparison the demo makes is at equal time). `aha demo --set KEY=VALUE` reads
    overrides with the same loader as every recipe."""

    people: str = option("2-3", "puzzle sizes (people per puzzle) trained and evaluated")
    rl_people: str = option("2-3", "sizes GRPO samples from")
    train_count: int = option(20000, "training puzzles per size", min=1)
    fill: bool = option(True, "repeat the scarce 2-person statement sets under fresh names up to train_count, "
                        "so both sizes train equally")
    test_count: int = option(300, "held-out puzzles per size", min=1)
    depth: int = option(2, "statement nesting depth of the generated puzzles", min=1)
    trace_restate: bool = option(False, "write each claim out again in the solver traces (off: compact traces "
                                 "train faster)")
    name_pool: int = option(8, "draw names from the first N of the pool (shorter, more repetitive prompts)",
                            min=0)
    quiz_style: str = option("plain", "'plain' (\"A says that ...\" sentences only) gives shorter prompts than "
                             "'full'.", choices=["plain", "full"])
    seed: int = option(0, "seed for data, model and sampling (also `aha demo --seed`)")
    model_size: str = option("nano", "size of the from-scratch Qwen2 (an `aha init-model --size` name)")
    vocab_size: int = option(1000, "tokenizer vocabulary, trained on the puzzles", min=16)
    sft_steps: int = option(1100, "SFT optimizer steps; its warmup and cosine span them", min=1)
    sft_max_seconds: float = option(900.0, "SFT stops here even with steps left (a guard, not a budget)",
                                    min=0.0)
    sft_lr: float = option(1.2e-3, "SFT peak learning rate; a higher one stays on the loss plateau longer",
                           min=0.0)
    sft_warmup_steps: int = option(50, "SFT linear warmup steps", min=0)
    sft_batch_tokens: int = option(8192, "tokens per SFT batch (SFT and the control), padding included", min=16)
    grpo_steps: int = option(130, "GRPO steps: what fits the 20-minute demo (more steps is the robust lever)",
                             min=1)
    grpo_max_seconds: float = option(600.0, "GRPO stops here even with steps left (a guard, not a budget)",
                                     min=0.0)
    grpo_lr: float = option(2e-4, "GRPO learning rate; a higher one drifts further from the SFT model", min=0.0)
    grpo_prompts: int = option(16, "prompts per GRPO step; at equal samples, more steps of fewer prompts won",
                               min=1)
    grpo_samples: int = option(8, "samples per prompt: the group each advantage is normalised in", min=1)
    grpo_micro_batch: int = option(32, "rollouts per forward/backward (capped at prompts x samples); speed only",
                                   min=1)
    grpo_temperature: float = option(1.0, "sampling temperature of the GRPO rollouts", min=0.0)
    grpo_iterations: int = option(1, "updates per batch of rollouts", min=1)
    grpo_kl_coef: float = option(0.1, "k3 KL penalty to the SFT model in the loss: anchors GRPO to what SFT "
                                 "learned", min=0.0)
    max_new_tokens: int = option(256, "response budget of a GRPO rollout", min=1)
    eval_max_new_tokens: int = option(320, "response budget of the greedy evaluation", min=1)
    continued_sft_lr: float = option(3e-4, "constant learning rate of the control (SFT continued for GRPO's "
                                     "wall time)", min=0.0)


QUICK = dict(train_count=400, test_count=20, sft_steps=40, grpo_steps=4, grpo_prompts=4, grpo_samples=4,
             max_new_tokens=160, eval_max_new_tokens=200, vocab_size=600)

STAGES = ("untrained", "sft", "sft_continued", "grpo")


# settings that decide the puzzles: a GRPO-only run must use those of the demo it starts from
DATA_KEYS = ("people", "train_count", "fill", "test_count", "depth", "trace_restate", "name_pool", "quiz_style",
             "seed")


def run_demo(out_dir: str | Path, quick: bool = False, settings: DemoSettings | None = None,
             log: Any = print, grpo_from: str | Path | None = None) -> dict[str, Any]:
    """Run every stage; returns the results dict also written to OUT/results.json.

    grpo_from: a finished demo's folder. Only the GRPO stage runs, from that demo's SFT model, and is
    compared with that SFT model on the same held-out puzzles (to try GRPO settings without
    repeating SFT); the results hold the stages `sft` and `grpo`."""
    import torch

    from aha.eval.runner import evaluate
    from aha.models import init_model, load_model, load_tokenizer
    from aha.rollout.base import SamplingParams
    from aha.tasks import get_task
    from aha.train.grpo import train
    from aha.train.sft import sft

    s = settings or DemoSettings()
    if quick:
        s = replace(s, **QUICK)
    source = Path(grpo_from) if grpo_from else None
    if source is not None:
        _check_grpo_source(source, s)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AhaError(f"{out} is not empty; choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(s.__dict__, indent=2))
    seconds: dict[str, float] = {}
    task_options = {"people": s.people, "count": s.train_count, "test_count": s.test_count, "seed": s.seed,
                    "depth": s.depth, "system_prompt": "", "trace_style": "reflective",
                    "trace_restate": s.trace_restate, "name_pool": s.name_pool, "quiz_style": s.quiz_style,
                    "fill": s.fill}

    # ---------------------------------------------------------------- 1. data
    t = time.time()
    log("[1/8] generating Knights-and-Knaves puzzles")
    task = get_task("knights-knaves", **task_options)
    train_examples = list(task.examples("train"))
    test_examples = list(task.examples("test"))
    data_dir = out / "data"
    data_dir.mkdir()
    for name, examples in (("train", train_examples), ("test", test_examples)):
        with open(data_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps({"id": ex.id, "bucket": ex.bucket, "prompt": ex.prompt, "answer": ex.answer,
                                    "trace": ex.meta.get("trace")}) + "\n")
    counts = {}
    for ex in test_examples:
        counts[ex.bucket] = counts.get(ex.bucket, 0) + 1
    log(f"      {len(train_examples)} train puzzles, test {counts}")
    seconds["data"] = time.time() - t

    # ---------------------------------------------------------------- 2. tokenizer + model
    untrained = out / "models" / "untrained"
    if source is None:  # a GRPO-only run starts from the source demo's SFT model
        t = time.time()
        log(f"[2/8] training a tokenizer and building a '{s.model_size}' Qwen2 model")
        init_model(untrained, size=s.model_size, corpus=task.corpus(4000, s.seed), vocab_size=s.vocab_size,
                   seed=s.seed)
        seconds["init_model"] = time.time() - t

    params = SamplingParams(temperature=0.0, n=1, max_new_tokens=s.eval_max_new_tokens, stop=["</answer>"],
                            seed=s.seed)
    results: dict[str, Any] = {}

    def run_eval(stage: str, model_dir: Path) -> None:
        t0 = time.time()
        model = load_model(model_dir, device="cpu")
        tokenizer = load_tokenizer(model_dir)
        r = evaluate(model, tokenizer, task, test_examples, params, out / "eval" / stage, batch_prompts=64,
                     label=stage, show_progress=True)
        seconds[f"eval_{stage}"] = time.time() - t0
        results[stage] = _stage_entry(r)
        log(f"      {stage}: accuracy {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            + " ".join(f"{b} {v['accuracy']:.3f}" for b, v in r["buckets"].items()))

    if source is not None:
        return _grpo_only(out, source, s, task_options, run_eval, results, seconds, log)

    log("[3/8] evaluating the untrained model")
    run_eval("untrained", untrained)
    results["untrained"]["seconds"] = 0.0

    # ---------------------------------------------------------------- 3. SFT
    log(f"[4/8] SFT on reflective solver traces ({s.sft_steps} steps)")
    torch.manual_seed(s.seed)
    t = time.time()
    sft(_sft_config(s, task_options, untrained, out / "sft"))
    seconds["sft"] = time.time() - t
    sft_model = out / "sft" / "model"
    run_eval("sft", sft_model)
    results["sft"]["seconds"] = seconds["sft"]

    # ---------------------------------------------------------------- 4. GRPO
    log(f"[5/8] GRPO from the SFT model with the Logic-RL reward ({s.grpo_steps} steps)")
    grpo_cfg = _grpo_config(s, task_options, sft_model, out / "grpo")
    t = time.time()
    train(grpo_cfg)
    seconds["grpo"] = time.time() - t
    run_eval("grpo", out / "grpo" / "model")
    results["grpo"]["seconds"] = seconds["grpo"]

    # ---------------------------------------------------------------- 5. control: SFT continued
    log(f"[6/8] control: SFT continued for the GRPO stage's wall time ({seconds['grpo']:.0f}s)")
    t = time.time()
    sft(_control_config(s, task_options, sft_model, out / "sft_continued", seconds["grpo"]))
    seconds["sft_continued"] = time.time() - t
    run_eval("sft_continued", out / "sft_continued" / "model")
    results["sft_continued"]["seconds"] = seconds["sft_continued"]

    # ---------------------------------------------------------------- 6. compare, plots, report
    log("[7/8] comparing stages on the same held-out puzzles")
    from aha.eval.compare import compare, compare_markdown, load_eval

    evals = {stage: load_eval(out / "eval" / stage) for stage in ("sft", "untrained", "sft_continued", "grpo")}
    report = compare(list(evals.values()))
    (out / "compare.md").write_text(compare_markdown(report))
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    # GRPO against the control, paired on the same puzzles (the table above pairs each with SFT)
    head_to_head = compare([evals["sft_continued"], evals["grpo"]])
    log("[8/8] plots and report")
    plots = _plots(out)
    verdict = _verdict(report, head_to_head)
    summary = {"stages": {k: results[k] for k in STAGES}, "seconds": seconds, "settings": s.__dict__,
               "verdict": verdict, "plots": plots}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "REPORT.md").write_text(_report_markdown(out, summary, report))
    log(f"done: {out / 'REPORT.md'}")
    return summary


def _stage_entry(r: dict[str, Any]) -> dict[str, Any]:
    """A stage's line in results.json, from its evaluation's results dict."""
    return {"accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "buckets": {b: v["accuracy"] for b, v in r["buckets"].items()},
            "format_rate": r["overall"].get("format_rate"), "response_length": r["overall"].get("length_mean"),
            "reflection_rate": r["overall"].get("reflection_rate")}


def _sft_config(s: DemoSettings, task_options: dict[str, Any], model: Path, run_dir: Path) -> Any:
    """The SFT stage's SftConfig: the untrained model on the reflective solver traces."""
    from aha.train.sft import SftConfig

    return load_config(SftConfig, None, [
        f"model.path={model}", "model.device=cpu", "data.task=knights-knaves",
        f"data.task_options={json.dumps(task_options)}", f"max_seconds={s.sft_max_seconds}",
        f"steps={s.sft_steps}", f"optim.lr={s.sft_lr}", f"optim.warmup_steps={s.sft_warmup_steps}",
        f"batch_tokens={s.sft_batch_tokens}", "val_every=100",
        f"run.out_dir={run_dir}", f"run.seed={s.seed}", "run.log_every=5", "run.progress=false"])


def _control_config(s: DemoSettings, task_options: dict[str, Any], sft_model: Path, run_dir: Path,
                    seconds: float) -> Any:
    """The control's SftConfig: SFT continued from the SFT model on fresh puzzles for `seconds` (GRPO's
    wall time) at a constant learning rate; the step budget is out of reach, so the time cap ends it."""
    from aha.train.sft import SftConfig

    return load_config(SftConfig, None, [
        f"model.path={sft_model}", "model.device=cpu", "data.task=knights-knaves",
        f"data.task_options={json.dumps({**task_options, 'seed': s.seed + 1})}",
        f"max_seconds={seconds}", "steps=1000000", f"optim.lr={s.continued_sft_lr}", "optim.warmup_steps=0",
        "optim.schedule=constant", f"batch_tokens={s.sft_batch_tokens}", "val_every=0",
        f"run.out_dir={run_dir}", f"run.seed={s.seed + 1}", "run.log_every=5", "run.progress=false"])


def _grpo_config(s: DemoSettings, task_options: dict[str, Any], sft_model: Path, run_dir: Path) -> Any:
    """The GRPO stage's TrainConfig: from the SFT model, Logic-RL reward, the demo's settings."""
    from aha.train.config import TrainConfig

    rl_options = {**task_options, "people": s.rl_people, "trace_style": "none"}
    return load_config(TrainConfig, None, [
        f"model.path={sft_model}", "model.device=cpu", "task.name=knights-knaves",
        f"task.options={json.dumps(rl_options)}", "rewards=[{name: logic_rl, weight: 1.0}]",
        f"rollout.temperature={s.grpo_temperature}", f"rollout.max_new_tokens={s.max_new_tokens}",
        "algo.advantage=grpo", "algo.loss_agg=token_mean", "algo.clip_high=0.28",
        f"algo.num_iterations={s.grpo_iterations}", f"batch.prompts_per_step={s.grpo_prompts}",
        f"batch.samples_per_prompt={s.grpo_samples}",
        f"batch.micro_batch_size={min(s.grpo_micro_batch, s.grpo_prompts * s.grpo_samples)}",
        f"algo.kl_coef={s.grpo_kl_coef}",
        f"optim.lr={s.grpo_lr}", f"steps={s.grpo_steps}", f"max_seconds={s.grpo_max_seconds}",
        f"run.out_dir={run_dir}",
        f"run.seed={s.seed}", "run.progress=false"])


def _check_grpo_source(source: Path, s: DemoSettings) -> None:
    """A GRPO-only run needs the demo's SFT model and evaluation, and the same puzzles."""
    for need in ("settings.json", "sft/model", "eval/sft/samples.jsonl", "eval/sft/results.json"):
        if not (source / need).exists():
            raise AhaError(f"{source} has no {need}: --grpo-from takes the folder of a finished aha demo")
    saved = json.loads((source / "settings.json").read_text())
    differ = [k for k in DATA_KEYS if k in saved and saved[k] != getattr(s, k)]
    if differ:
        raise AhaError(f"{source} was made with other puzzle settings ({', '.join(differ)}); "
                       "use the same --set values for them as that demo")


def _grpo_only(out: Path, source: Path, s: DemoSettings, task_options: dict[str, Any], run_eval: Any,
               results: dict[str, Any], seconds: dict[str, float], log: Any) -> dict[str, Any]:
    """GRPO from `source`'s SFT model, evaluated and compared with it (see run_demo's grpo_from)."""
    from aha.eval.compare import compare, compare_markdown, load_eval
    from aha.train.grpo import train

    results["sft"] = {**_stage_entry(json.loads((source / "eval" / "sft" / "results.json").read_text())),
                      "source": str(source)}
    log(f"[2/3] GRPO from {source / 'sft' / 'model'} ({s.grpo_steps} steps)")
    t = time.time()
    train(_grpo_config(s, task_options, source / "sft" / "model", out / "grpo"))
    seconds["grpo"] = time.time() - t
    run_eval("grpo", out / "grpo" / "model")
    results["grpo"]["seconds"] = seconds["grpo"]
    log("[3/3] comparing with the SFT model on the same held-out puzzles")
    report = compare([load_eval(source / "eval" / "sft"), load_eval(out / "eval" / "grpo")])
    (out / "compare.md").write_text(compare_markdown(report))
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    diff = report["vs_baseline"][report["labels"][1]]["all"]
    verdict = {"grpo_minus_sft": diff["difference"], "grpo_minus_sft_ci": [diff["ci_low"], diff["ci_high"]],
               "grpo_above_sft": diff["ci_low"] > 0}
    summary = {"stages": results, "seconds": seconds, "settings": s.__dict__, "verdict": verdict,
               "grpo_from": str(source)}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    log(f"GRPO minus SFT: {diff['difference']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]")
    return summary


def _plots(out: Path) -> list[str]:
    from aha.report.plots import plot_run

    made: list[str] = []
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    for stage in ("sft", "grpo"):
        try:
            files, _ = plot_run(out / stage)
        except Exception as exc:  # noqa: BLE001 - a plot must not sink the report
            made.append(f"{stage}: plotting failed ({exc})")
            continue
        for f in files or []:
            f = Path(f)
            if f.suffix == ".png":
                dest = plots_dir / f"{stage}_{f.name}"
                shutil.copy(f, dest)
                made.append(str(dest.relative_to(out)))
    return made


def _verdict(report: dict[str, Any], head_to_head: dict[str, Any]) -> dict[str, Any]:
    """Did GRPO beat SFT, and the same-time SFT control, by more than the paired interval?

    report: the comparison with SFT as baseline; head_to_head: the control as baseline, GRPO second."""
    vs = report["vs_baseline"]
    labels = report["labels"]
    sft_label, untrained_label, cont_label, grpo_label = labels
    grpo = vs[grpo_label]["all"]
    untrained = vs[untrained_label]["all"]
    cont = vs[cont_label]["all"]
    over_control = head_to_head["vs_baseline"][head_to_head["labels"][1]]["all"]
    return {
        "sft_above_untrained": untrained["ci_high"] < 0,
        "grpo_above_sft": grpo["ci_low"] > 0,
        "grpo_minus_sft": grpo["difference"], "grpo_minus_sft_ci": [grpo["ci_low"], grpo["ci_high"]],
        "sft_continued_minus_sft": cont["difference"], "sft_continued_minus_sft_ci": [cont["ci_low"], cont["ci_high"]],
        "grpo_minus_control": over_control["difference"],
        "grpo_minus_control_ci": [over_control["ci_low"], over_control["ci_high"]],
        "grpo_above_control": over_control["ci_low"] > 0,
    }


def _samples_with_reflection(out: Path, n: int = 2) -> list[dict[str, Any]]:
    from aha.runs import read_jsonl

    path = out / "eval" / "grpo" / "samples.jsonl"
    if not path.is_file():
        return []
    rows = [r for r in read_jsonl(path) if r.get("correct") and "contradiction" in r.get("completion", "")]
    rows.sort(key=lambda r: (r.get("bucket", ""), -len(r.get("completion", ""))))
    return rows[-n:] if rows else []


def _report_markdown(out: Path, summary: dict[str, Any], report: dict[str, Any]) -> str:
    from aha.eval.tables import accuracy_table, markdown_table

    st = summary["stages"]
    v = summary["verdict"]
    rows = [[k, f"{st[k]['accuracy']:.3f}", f"[{st[k]['ci_low']:.3f}, {st[k]['ci_high']:.3f}]",
             *(f"{st[k]['buckets'].get(b, float('nan')):.3f}" for b in report["buckets"]),
             f"{(st[k].get('format_rate') or 0):.3f}", f"{(st[k].get('response_length') or 0):.0f}",
             f"{st[k]['seconds']:.0f}"] for k in STAGES]
    lines = [
        "# aha demo: reflection elicited from scratch on a CPU", "",
        "Knights-and-Knaves puzzles; a Qwen2 model with random weights learns from the task's reflective solver "
        "traces (SFT), then GRPO with the Logic-RL reward; a control continues SFT for the same wall time as "
        "GRPO. Greedy decoding on held-out puzzles; intervals are 95% bootstrap over puzzles.", "",
        markdown_table(["stage", "accuracy", "95% CI", *report["buckets"], "format", "mean length", "train seconds"],
                       rows), "",
        "## Paired differences (baseline: SFT)", "",
        accuracy_table(report["accuracy"], buckets=report["buckets"], digits=3), "",
        f"- SFT above untrained (interval excludes 0): **{v['sft_above_untrained']}**",
        f"- GRPO minus SFT: {v['grpo_minus_sft']:+.3f} [{v['grpo_minus_sft_ci'][0]:+.3f}, "
        f"{v['grpo_minus_sft_ci'][1]:+.3f}]; above SFT by more than the interval: **{v['grpo_above_sft']}**",
        f"- SFT continued minus SFT: {v['sft_continued_minus_sft']:+.3f} [{v['sft_continued_minus_sft_ci'][0]:+.3f}, "
        f"{v['sft_continued_minus_sft_ci'][1]:+.3f}]",
        f"- GRPO minus SFT continued (the same-time control), paired: {v['grpo_minus_control']:+.3f} "
        f"[{v['grpo_minus_control_ci'][0]:+.3f}, {v['grpo_minus_control_ci'][1]:+.3f}]; above the control by more "
        f"than the interval: **{v['grpo_above_control']}**", "",
        "Full comparison with new abilities and regressions: [compare.md](compare.md).", "",
        "## Plots", ""]
    lines += [f"![{p}]({p})" for p in summary["plots"] if p.endswith(".png")]
    samples = _samples_with_reflection(out)
    if samples:
        lines += ["", "## Sample outputs with reflection (GRPO model, held-out puzzles)", ""]
        for r in samples:
            lines += [f"`{r['id']}` ({r['bucket']}, correct):", "", "```", r["completion"], "```", ""]
    lines += ["", "Settings: `settings.json`; every stage's config is in its folder (`sft/config.yaml`, "
              "`grpo/config.yaml`, ...)."]
    return "\n".join(lines) + "\n"
