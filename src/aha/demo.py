"""`aha demo`: seed 000's premise in miniature, offline, on a CPU: traces are scarce, problems with a
verifier are not.

    generate K&K puzzles -> tokenizer + tiny model -> a few timed SFT steps (the run's estimated duration)
    -> SFT on a fixed set of N reflective traces (the "teacher budget"; the solver's traces stand in
       for a teacher's samples) -> evaluate
    -> GRPO from the SFT model on puzzles without traces, scored by the verifier only -> evaluate
    -> control: SFT continued on the same N traces for a step budget equal to GRPO's time -> evaluate
    -> compare (paired on the same held-out puzzles) -> plots -> results.json + REPORT.md

Every budget is a step count, so the untrained, SFT and GRPO numbers do not depend on the machine's
load; the `*_max_seconds` settings only guard against a hang. A stage that stops early (a guard, a
crash, an SFT model at the accuracy floor) makes the run invalid: the demo stops there, says why in
red, writes `"valid": false` and the reason into results.json and the top of REPORT.md, and
`aha demo` exits with 1. Every stage writes its own folder under the output directory, so each can
be inspected (and re-run by hand with the config it saved). `--quick` shrinks every budget so the
whole pipeline runs in a few minutes; it checks plumbing, not quality.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aha.config import load_config, option
from aha.errors import AhaError


@dataclass
class DemoSettings:
    """Budgets and knobs of the demo (what was measured on the way to the defaults:
    docs/demo/SETTINGS.md).

    Budgets are step counts, so a run's numbers do not depend on how busy the machine is; the
    `*_max_seconds` caps only guard against a hang. The control's budget is a step count too:
    `control_steps_per_grpo_step` x `grpo_steps`, the ratio of a GRPO step's time to an SFT step's
    measured on a quiet machine (equal time there, identical steps everywhere). `aha demo --set
    KEY=VALUE` reads overrides with the same loader as every recipe."""

    people: str = option("2-3", "puzzle sizes (people per puzzle) trained and evaluated")
    rl_people: str = option("2-3", "sizes GRPO samples from")
    train_count: int = option(20000, "training puzzles per size (GRPO's pool; SFT sees teacher_budget of them "
                              "with traces)", min=1)
    teacher_budget: int = option(4000, "reflective traces SFT and the control learn from: a fixed, seeded set "
                                 "of training puzzles with the solver's trace (standing in for a teacher's "
                                 "samples); 0 = a trace for every training puzzle but the 200 kept for the "
                                 "validation loss", min=0)
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
    probe_steps: int = option(5, "timed SFT steps (on a throwaway copy) before the run, to estimate its "
                              "duration on this machine; 0 skips the estimate", min=0)
    sft_steps: int = option(1100, "SFT optimizer steps; its warmup and cosine span them", min=1)
    sft_max_seconds: float = option(7200.0, "SFT (and the control) stop here even with steps left: a guard "
                                    "against a hang, which makes the run invalid; not a budget", min=0.0)
    sft_lr: float = option(1.2e-3, "SFT peak learning rate; a higher one stays on the loss plateau longer",
                           min=0.0)
    sft_warmup_steps: int = option(50, "SFT linear warmup steps", min=0)
    sft_batch_tokens: int = option(8192, "tokens per SFT batch (SFT and the control), padding included", min=16)
    min_sft_accuracy: float = option(0.02, "SFT held-out accuracy below this is the floor (the model never "
                                     "left its loss plateau): the run stops there, invalid", min=0.0, max=1.0)
    grpo_steps: int = option(130, "GRPO steps: what fits the 20-minute demo (more steps is the robust lever)",
                             min=1)
    grpo_max_seconds: float = option(3600.0, "GRPO stops here even with steps left: a guard against a hang, "
                                     "which makes the run invalid; not a budget", min=0.0)
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
    continued_sft_lr: float = option(3e-4, "constant learning rate of the control (SFT continued on the same "
                                     "traces)", min=0.0)
    control_steps_per_grpo_step: float = option(4.0, "the control's SFT steps per GRPO step: a GRPO step took "
                                                "as long as 4.0 SFT steps on the quiet 2-core machine (1.89 s "
                                                "and 0.47 s), so the control gets GRPO's time as a step count",
                                                min=0.0)


QUICK = dict(train_count=400, teacher_budget=200, test_count=20, probe_steps=2, sft_steps=40, grpo_steps=4,
             grpo_prompts=4, grpo_samples=4, max_new_tokens=160, eval_max_new_tokens=200, vocab_size=600,
             min_sft_accuracy=0.0)

STAGES = ("untrained", "sft", "sft_continued", "grpo")


# settings that decide the puzzles: a GRPO-only run must use those of the demo it starts from
DATA_KEYS = ("people", "train_count", "fill", "test_count", "depth", "trace_restate", "name_pool", "quiz_style",
             "seed")

# validation traces for the SFT loss curve, drawn outside the teacher's budget (no step depends on them)
VAL_TRACES = 200


class StageStopped(Exception):
    """A stage ended before its budget, or produced a model at the floor: the run is not a result."""


def control_steps(s: DemoSettings) -> int:
    """The control's step budget: GRPO's steps converted at the quiet machine's time ratio."""
    return max(1, round(s.grpo_steps * s.control_steps_per_grpo_step))


def teacher_traces(train_examples: list[Any], budget: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(the teacher's traced examples, validation examples outside them), both in pool order.

    A seeded shuffle of the pool: its first VAL_TRACES examples are the validation set (for the loss
    curve only; no step depends on them), the next `budget` are the teacher's traces (budget 0, or
    more than are left: all the rest)."""
    order = list(range(len(train_examples)))
    random.Random(seed).shuffle(order)
    n_val = min(VAL_TRACES, len(order) // 10)
    rest = order[n_val:]
    chosen = sorted(rest if budget == 0 else rest[:budget])
    return [train_examples[i] for i in chosen], [train_examples[i] for i in sorted(order[:n_val])]


def red(text: str) -> str:
    """`text` in red on a terminal (plain text when stdout is not one, or NO_COLOR is set)."""
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[1;31m{text}\033[0m"
    return text


def steps_done(run_dir: Path) -> int:
    """The last step a run's metrics.jsonl records (0 when none): both trainers write the final step."""
    from aha.runs import read_jsonl

    path = run_dir / "metrics.jsonl"
    rows = read_jsonl(path) if path.is_file() else []
    return max((int(r.get("step", 0)) for r in rows), default=0)


def _check_steps(stage: str, run_dir: Path, budget: int, guard: float) -> int:
    done = steps_done(run_dir)
    if done < budget:
        raise StageStopped(f"{stage} stopped after {done} of its {budget} steps (its {guard:g}s guard, or a "
                           f"stop): its model is not the demo's; free the machine or raise the stage's "
                           f"*_max_seconds and run again")
    return done


def run_demo(out_dir: str | Path, quick: bool = False, settings: DemoSettings | None = None,
             log: Any = print, grpo_from: str | Path | None = None) -> dict[str, Any]:
    """Run every stage; returns the results dict also written to OUT/results.json.

    The dict has `valid`: False (with `reason`) when a stage stopped early, crashed or left SFT at
    the accuracy floor; the stages after it do not run.

    grpo_from: a finished demo's folder. Only the GRPO stage runs, from that demo's SFT model, and is
    compared with that SFT model on the same held-out puzzles (to try GRPO settings without
    repeating SFT); the results hold the stages `sft` and `grpo`."""
    s = settings or DemoSettings()
    if quick:
        s = replace(s, **QUICK)
    source = Path(grpo_from) if grpo_from else None
    if source is not None:
        s = _check_grpo_source(source, s)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AhaError(f"{out} is not empty; choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(s.__dict__, indent=2))
    state: dict[str, Any] = {"results": {}, "seconds": {}, "steps": {}, "estimate": None,
                             "load": {"start": _load()}}
    try:
        if source is not None:
            return _grpo_only(out, source, s, state, log)
        return _full_run(out, s, state, log)
    except StageStopped as exc:
        return _invalid(out, s, state, str(exc), log)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - any crash makes an invalid run with its reason, not a result
        (out / "error.txt").write_text(traceback.format_exc())
        where = state.get("stage", "setup")
        return _invalid(out, s, state, f"{where} crashed: {type(exc).__name__}: {exc} (traceback in "
                        f"{out / 'error.txt'})", log)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _prepare(out: Path, s: DemoSettings, log: Any) -> dict[str, Any]:
    """Puzzles, the teacher's traces and the held-out set, written under OUT/data."""
    from aha.tasks import get_task

    task_options = {"people": s.people, "count": s.train_count, "test_count": s.test_count, "seed": s.seed,
                    "depth": s.depth, "system_prompt": "", "trace_style": "reflective",
                    "trace_restate": s.trace_restate, "name_pool": s.name_pool, "quiz_style": s.quiz_style,
                    "fill": s.fill}
    task = get_task("knights-knaves", **task_options)
    train_examples = list(task.examples("train"))
    test_examples = list(task.examples("test"))
    traced, val = teacher_traces(train_examples, s.teacher_budget, s.seed)
    data_dir = out / "data"
    data_dir.mkdir()
    for name, examples in (("train", train_examples), ("test", test_examples)):
        with open(data_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps({"id": ex.id, "bucket": ex.bucket, "prompt": ex.prompt, "answer": ex.answer,
                                    "trace": ex.meta.get("trace")}) + "\n")
    for name, examples in (("traces", traced), ("val_traces", val)):
        with open(data_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps({"id": ex.id, "bucket": ex.bucket, "prompt": ex.prompt,
                                    "response": str(ex.meta["trace"])}) + "\n")
    counts: dict[str, int] = {}
    for ex in test_examples:
        counts[ex.bucket] = counts.get(ex.bucket, 0) + 1
    traced_counts: dict[str, int] = {}
    for ex in traced:
        traced_counts[ex.bucket] = traced_counts.get(ex.bucket, 0) + 1
    return {"task": task, "task_options": task_options, "test": test_examples, "train_count": len(train_examples),
            "traced": traced_counts, "test_counts": counts, "traces": data_dir / "traces.jsonl",
            "val_traces": data_dir / "val_traces.jsonl" if val else None}


def _evaluator(out: Path, s: DemoSettings, data: dict[str, Any], state: dict[str, Any], log: Any) -> Any:
    from aha.eval.runner import evaluate
    from aha.models import load_model, load_tokenizer
    from aha.rollout.base import SamplingParams

    params = SamplingParams(temperature=0.0, n=1, max_new_tokens=s.eval_max_new_tokens, stop=["</answer>"],
                            seed=s.seed)

    def run_eval(stage: str, model_dir: Path) -> dict[str, Any]:
        t0 = time.time()
        model = load_model(model_dir, device="cpu")
        tokenizer = load_tokenizer(model_dir)
        r = evaluate(model, tokenizer, data["task"], data["test"], params, out / "eval" / stage, batch_prompts=64,
                     label=stage, show_progress=True)
        state["seconds"][f"eval_{stage}"] = time.time() - t0
        state["results"][stage] = _stage_entry(r)
        log(f"      {stage}: accuracy {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
            + " ".join(f"{b} {v['accuracy']:.3f}" for b, v in r["buckets"].items()))
        return r

    return run_eval


def _full_run(out: Path, s: DemoSettings, state: dict[str, Any], log: Any) -> dict[str, Any]:
    import torch

    from aha.models import init_model
    from aha.train.grpo import train
    from aha.train.sft import sft

    seconds, results, steps = state["seconds"], state["results"], state["steps"]
    n_control = control_steps(s)

    # ---------------------------------------------------------------- 1. data
    state["stage"] = "data"
    t = time.time()
    log("[1/9] generating Knights-and-Knaves puzzles and the teacher's traces")
    data = _prepare(out, s, log)
    n_traces = sum(data["traced"].values())
    log(f"      {data['train_count']} train puzzles ({n_traces} with a trace: {data['traced']}), test "
        f"{data['test_counts']}")
    state["data"] = {"train_puzzles": data["train_count"], "traces": data["traced"], "test": data["test_counts"]}
    seconds["data"] = time.time() - t

    # ---------------------------------------------------------------- 2. tokenizer + model
    state["stage"] = "init_model"
    untrained = out / "models" / "untrained"
    t = time.time()
    log(f"[2/9] training a tokenizer and building a '{s.model_size}' Qwen2 model")
    init_model(untrained, size=s.model_size, corpus=data["task"].corpus(4000, s.seed), vocab_size=s.vocab_size,
               seed=s.seed)
    seconds["init_model"] = time.time() - t

    # ---------------------------------------------------------------- 3. duration estimate
    state["stage"] = "estimate"
    if s.probe_steps:
        log(f"[3/9] timing {s.probe_steps} SFT steps to estimate the run on this machine")
        state["estimate"] = est = _estimate(out, s, data, untrained)
        log(f"      {est['sft_step_seconds']:.2f} s per SFT step (load average {est['load']}): the run should "
            f"take about {est['total_seconds'] / 60:.0f} min (SFT {est['sft_seconds'] / 60:.0f}, GRPO "
            f"{est['grpo_seconds'] / 60:.0f}, control {est['control_seconds'] / 60:.0f})")
        if s.sft_max_seconds and est["sft_seconds"] > s.sft_max_seconds:
            # a warning, not a stop: a few steps on a busy machine are a noisy measure, and the guard
            # itself stops the stage (an invalid run) if it really comes to that
            log(red(f"      warning: at this speed SFT would take about {est['sft_seconds']:.0f}s, past its "
                    f"{s.sft_max_seconds:g}s guard (the run would be invalid): raise sft_max_seconds or free "
                    "the machine"))
    else:
        log("[3/9] (no duration estimate: probe_steps=0)")

    run_eval = _evaluator(out, s, data, state, log)
    state["stage"] = "eval_untrained"
    log("[4/9] evaluating the untrained model")
    run_eval("untrained", untrained)
    results["untrained"]["seconds"] = 0.0
    results["untrained"]["steps"] = 0

    # ---------------------------------------------------------------- 4. SFT
    state["stage"] = "sft"
    log(f"[5/9] SFT on the teacher's {n_traces} reflective traces ({s.sft_steps} steps)")
    torch.manual_seed(s.seed)
    t = time.time()
    sft(_sft_config(s, data, untrained, out / "sft"))
    seconds["sft"] = time.time() - t
    steps["sft"] = _check_steps("SFT", out / "sft", s.sft_steps, s.sft_max_seconds)
    sft_model = out / "sft" / "model"
    state["stage"] = "eval_sft"
    r = run_eval("sft", sft_model)
    results["sft"].update(seconds=seconds["sft"], steps=steps["sft"])
    if r["accuracy"] < s.min_sft_accuracy:
        raise StageStopped(f"SFT held-out accuracy {r['accuracy']:.3f} is at the floor (below min_sft_accuracy "
                           f"{s.min_sft_accuracy}): the model never left its loss plateau, and GRPO from it "
                           "would have no reward to learn from; give SFT more steps or traces")

    # ---------------------------------------------------------------- 5. GRPO
    state["stage"] = "grpo"
    log(f"[6/9] GRPO from the SFT model on puzzles without traces, Logic-RL reward ({s.grpo_steps} steps)")
    t = time.time()
    train(_grpo_config(s, data["task_options"], sft_model, out / "grpo"))
    seconds["grpo"] = time.time() - t
    steps["grpo"] = _check_steps("GRPO", out / "grpo", s.grpo_steps, s.grpo_max_seconds)
    state["stage"] = "eval_grpo"
    run_eval("grpo", out / "grpo" / "model")
    results["grpo"].update(seconds=seconds["grpo"], steps=steps["grpo"])

    # ---------------------------------------------------------------- 6. control: SFT continued
    state["stage"] = "sft_continued"
    log(f"[7/9] control: SFT continued on the same traces for {n_control} steps ({s.grpo_steps} GRPO steps x "
        f"{s.control_steps_per_grpo_step}, GRPO's time on a quiet machine)")
    t = time.time()
    sft(_control_config(s, data, sft_model, out / "sft_continued", n_control))
    seconds["sft_continued"] = time.time() - t
    steps["sft_continued"] = _check_steps("the control", out / "sft_continued", n_control, s.sft_max_seconds)
    state["stage"] = "eval_sft_continued"
    run_eval("sft_continued", out / "sft_continued" / "model")
    results["sft_continued"].update(seconds=seconds["sft_continued"], steps=steps["sft_continued"])
    log(f"      wall time here: GRPO {seconds['grpo']:.0f}s, control {seconds['sft_continued']:.0f}s (a GRPO step "
        f"took {_ratio(seconds, steps):.2f} SFT steps' time on this machine now; the setting is "
        f"{s.control_steps_per_grpo_step})")

    # ---------------------------------------------------------------- 7. compare, plots, report
    state["stage"] = "report"
    log("[8/9] comparing stages on the same held-out puzzles")
    state["load"]["end"] = _load()
    summary = {"valid": True, "reason": None, "stages": {k: results[k] for k in STAGES}, "seconds": seconds,
               "steps": steps, "estimate": state["estimate"], "load": state["load"], "data": state["data"],
               "threads": torch.get_num_threads(), "settings": s.__dict__}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    log("[9/9] plots and report")
    summary = write_report(out)
    log(f"done: {out / 'REPORT.md'}")
    return summary


def _ratio(seconds: dict[str, float], steps: dict[str, int]) -> float:
    """How many control (SFT) steps' time one GRPO step took in this run."""
    per_sft = seconds["sft_continued"] / max(steps["sft_continued"], 1)
    return seconds["grpo"] / max(steps["grpo"], 1) / max(per_sft, 1e-9)


def _estimate(out: Path, s: DemoSettings, data: dict[str, Any], untrained: Path) -> dict[str, Any]:
    """Time `probe_steps` SFT steps on a throwaway run and scale them to the run's step budgets.

    GRPO and the control are `control_steps` SFT steps each (that is how the control's budget is
    defined); evaluations, data and model building add about a minute on the quiet machine."""
    from aha.train.sft import sft

    probe = out / "probe"
    probe_data = out / "data" / "probe_traces.jsonl"  # a few batches' worth: encoding all would be slower
    lines = data["traces"].read_text(encoding="utf-8").splitlines(keepends=True)
    probe_data.write_text("".join(lines[:1024]), encoding="utf-8")
    cfg = _sft_config(replace(s, sft_steps=s.probe_steps + 1), {**data, "traces": probe_data, "val_traces": None},
                      untrained, probe)
    cfg.val_every, cfg.max_seconds = 0, 0.0  # a few steps: no guard needed, and it must not cut them
    cfg.run.log_every = 1
    sft(cfg)
    from aha.runs import read_jsonl

    times = [float(r["time"]) for r in read_jsonl(probe / "metrics.jsonl")]
    per_step = (times[-1] - times[0]) / max(len(times) - 1, 1)  # the first step includes loading: left out
    shutil.rmtree(probe, ignore_errors=True)
    probe_data.unlink()
    n_control = control_steps(s)
    sft_s, other_s = per_step * s.sft_steps, per_step * n_control
    return {"sft_step_seconds": per_step, "load": _load(), "sft_seconds": sft_s, "grpo_seconds": other_s,
            "control_seconds": other_s, "total_seconds": sft_s + 2 * other_s + 60.0}


def _invalid(out: Path, s: DemoSettings, state: dict[str, Any], reason: str, log: Any) -> dict[str, Any]:
    """Write results.json and REPORT.md of a run that is not a result, and say why in red."""
    log(red(f"INVALID RUN: {reason}"))
    state["load"]["end"] = _load()
    summary = {"valid": False, "reason": reason, "stages": state["results"], "seconds": state["seconds"],
               "steps": state["steps"], "estimate": state["estimate"], "load": state["load"],
               "data": state.get("data"), "settings": s.__dict__, "verdict": None, "plots": []}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    lines = ["# aha demo: INVALID RUN", "", f"**Not a result: {reason}**", "",
             "The stages below ran before it stopped; none of them is the demo's result.", ""]
    from aha.eval.tables import markdown_table

    rows = [[k, f"{v['accuracy']:.3f}", f"[{v['ci_low']:.3f}, {v['ci_high']:.3f}]", str(v.get("steps", "-"))]
            for k, v in state["results"].items()]
    if rows:
        lines += [markdown_table(["stage", "accuracy", "95% CI", "steps"], rows), ""]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    return summary


def _stage_entry(r: dict[str, Any]) -> dict[str, Any]:
    """A stage's line in results.json, from its evaluation's results dict."""
    return {"accuracy": r["accuracy"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "buckets": {b: v["accuracy"] for b, v in r["buckets"].items()},
            "format_rate": r["overall"].get("format_rate"), "response_length": r["overall"].get("length_mean"),
            "reflection_rate": r["overall"].get("reflection_rate")}


def _sft_config(s: DemoSettings, data: dict[str, Any], model: Path, run_dir: Path) -> Any:
    """The SFT stage's SftConfig: the untrained model on the teacher's traces (data/traces.jsonl)."""
    from aha.train.sft import SftConfig

    return load_config(SftConfig, None, [
        f"model.path={model}", "model.device=cpu", *_trace_files(data),
        f"max_seconds={s.sft_max_seconds}",
        f"steps={s.sft_steps}", f"optim.lr={s.sft_lr}", f"optim.warmup_steps={s.sft_warmup_steps}",
        f"batch_tokens={s.sft_batch_tokens}", "val_every=100",
        f"run.out_dir={run_dir}", f"run.seed={s.seed}", "run.log_every=5", "run.progress=false"])


def _trace_files(data: dict[str, Any]) -> list[str]:
    """The SFT overrides naming the teacher's traces and the validation traces (JSON lists: any path)."""
    val = [f"data.val_files={json.dumps([str(data['val_traces'])])}"] if data["val_traces"] else []
    return [f"data.files={json.dumps([str(data['traces'])])}", *val]


def _control_config(s: DemoSettings, data: dict[str, Any], sft_model: Path, run_dir: Path, steps: int) -> Any:
    """The control's SftConfig: SFT continued from the SFT model on the same traces for `steps`
    (GRPO's time as a step count) at a constant learning rate; batches in another seeded order."""
    from aha.train.sft import SftConfig

    return load_config(SftConfig, None, [
        f"model.path={sft_model}", "model.device=cpu", *_trace_files(data),
        f"max_seconds={s.sft_max_seconds}", f"steps={steps}", f"optim.lr={s.continued_sft_lr}",
        "optim.warmup_steps=0", "optim.schedule=constant", f"batch_tokens={s.sft_batch_tokens}", "val_every=100",
        f"run.out_dir={run_dir}", f"run.seed={s.seed + 1}", "run.log_every=5", "run.progress=false"])


def _grpo_config(s: DemoSettings, task_options: dict[str, Any], sft_model: Path, run_dir: Path) -> Any:
    """The GRPO stage's TrainConfig: from the SFT model, Logic-RL reward, the demo's settings; the
    puzzles come without traces (trace_style none): the verifier is all GRPO gets."""
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


def _check_grpo_source(source: Path, s: DemoSettings) -> DemoSettings:
    """A GRPO-only run needs the demo's SFT model and evaluation, and the same puzzles; it takes the
    source's teacher budget (the SFT model it starts from was trained on it)."""
    for need in ("settings.json", "sft/model", "eval/sft/samples.jsonl", "eval/sft/results.json"):
        if not (source / need).exists():
            raise AhaError(f"{source} has no {need}: --grpo-from takes the folder of a finished aha demo")
    saved = json.loads((source / "settings.json").read_text())
    differ = [k for k in DATA_KEYS if k in saved and saved[k] != getattr(s, k)]
    if differ:
        raise AhaError(f"{source} was made with other puzzle settings ({', '.join(differ)}); "
                       "use the same --set values for them as that demo")
    done = source / "results.json"
    if done.is_file() and json.loads(done.read_text()).get("valid") is False:
        raise AhaError(f"{source} is an invalid demo run (see its REPORT.md): its SFT model is not a result to "
                       "start GRPO from")
    return replace(s, teacher_budget=int(saved.get("teacher_budget", 0)))


def _grpo_only(out: Path, source: Path, s: DemoSettings, state: dict[str, Any], log: Any) -> dict[str, Any]:
    """GRPO from `source`'s SFT model, evaluated and compared with it (see run_demo's grpo_from)."""
    from aha.eval.compare import compare, compare_markdown, load_eval
    from aha.train.grpo import train

    seconds, results, steps = state["seconds"], state["results"], state["steps"]
    state["stage"] = "data"
    log("[1/3] generating Knights-and-Knaves puzzles")
    data = _prepare(out, s, log)
    run_eval = _evaluator(out, s, data, state, log)
    results["sft"] = {**_stage_entry(json.loads((source / "eval" / "sft" / "results.json").read_text())),
                      "source": str(source)}
    state["stage"] = "grpo"
    log(f"[2/3] GRPO from {source / 'sft' / 'model'} ({s.grpo_steps} steps)")
    t = time.time()
    train(_grpo_config(s, data["task_options"], source / "sft" / "model", out / "grpo"))
    seconds["grpo"] = time.time() - t
    steps["grpo"] = _check_steps("GRPO", out / "grpo", s.grpo_steps, s.grpo_max_seconds)
    state["stage"] = "eval_grpo"
    run_eval("grpo", out / "grpo" / "model")
    results["grpo"].update(seconds=seconds["grpo"], steps=steps["grpo"])
    state["stage"] = "compare"
    log("[3/3] comparing with the SFT model on the same held-out puzzles")
    report = compare([load_eval(source / "eval" / "sft"), load_eval(out / "eval" / "grpo")])
    (out / "compare.md").write_text(compare_markdown(report))
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    diff = report["vs_baseline"][report["labels"][1]]["all"]
    verdict = {"grpo_minus_sft": diff["difference"], "grpo_minus_sft_ci": [diff["ci_low"], diff["ci_high"]],
               "grpo_above_sft": diff["ci_low"] > 0}
    state["load"]["end"] = _load()
    summary = {"valid": True, "reason": None, "stages": results, "seconds": seconds, "steps": steps,
               "load": state["load"], "settings": s.__dict__, "verdict": verdict, "grpo_from": str(source)}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    log(f"GRPO minus SFT: {diff['difference']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]")
    return summary


# ----------------------------------------------------------------------------- the report

# (label in the report, stage) of the paired comparisons: (baseline, other)
PAIRS = (("GRPO minus SFT", "sft", "grpo"), ("GRPO minus the control", "sft_continued", "grpo"),
         ("control minus SFT", "sft", "sft_continued"), ("SFT minus untrained", "untrained", "sft"))


def write_report(out: str | Path) -> dict[str, Any]:
    """Paired comparisons, training curves, results.json's verdict and REPORT.md of a finished full
    demo folder (its results.json and eval/ folders; a run written by an earlier version of the
    demo is re-rendered the same way). Returns the updated results."""
    from aha.eval.compare import compare, compare_markdown, load_eval

    out = Path(out)
    summary = json.loads((out / "results.json").read_text())
    evals = {stage: load_eval(out / "eval" / stage) for stage in STAGES}
    report = compare([evals["sft"], evals["untrained"], evals["sft_continued"], evals["grpo"]])
    (out / "compare.md").write_text(compare_markdown(report))
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    paired = {}
    for label, base, other in PAIRS:
        r = compare([evals[base], evals[other]])
        e = r["vs_baseline"][r["labels"][1]]
        paired[label] = {"baseline": base, "stage": other, **{k: e["all"][k] for k in (
            "difference", "ci_low", "ci_high", "new_abilities", "regressions")},
            "buckets": {b: v["difference"] for b, v in e.items() if b != "all"}}
    summary["paired"] = paired
    summary["verdict"] = _verdict(paired)
    summary["plots"] = _plots(out)
    summary["samples"] = _samples_with_reflection(out)
    summary.setdefault("valid", True)
    summary.setdefault("reason", None)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "REPORT.md").write_text(_report_markdown(summary, report["buckets"]))
    return summary


def _verdict(paired: dict[str, Any]) -> dict[str, Any]:
    """Did GRPO beat SFT, and the control, by more than the paired interval?"""
    g_sft, g_ctl = paired["GRPO minus SFT"], paired["GRPO minus the control"]
    ctl, sft = paired["control minus SFT"], paired["SFT minus untrained"]
    return {
        "sft_above_untrained": sft["ci_low"] > 0,
        "grpo_above_sft": g_sft["ci_low"] > 0,
        "grpo_minus_sft": g_sft["difference"], "grpo_minus_sft_ci": [g_sft["ci_low"], g_sft["ci_high"]],
        "sft_continued_minus_sft": ctl["difference"], "sft_continued_minus_sft_ci": [ctl["ci_low"], ctl["ci_high"]],
        "grpo_minus_control": g_ctl["difference"], "grpo_minus_control_ci": [g_ctl["ci_low"], g_ctl["ci_high"]],
        "grpo_above_control": g_ctl["ci_low"] > 0,
    }


# the GRPO curves the report shows (report.plots' figure specs, by name)
GRPO_CURVES = ("reward", "accuracy", "response_length", "kl")


def _plots(out: Path) -> list[str]:
    """The training curves under OUT/plots: GRPO's reward, accuracy, response length and KL to the
    SFT model, and the SFT loss with the control continuing it (steps after SFT's)."""
    from aha.report.plots import SPECS, load_metrics, plot_keys, plot_metrics

    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    made: list[Path] = []
    grpo_metrics = out / "grpo" / "metrics.jsonl"
    if grpo_metrics.is_file():
        rows = load_metrics(grpo_metrics)
        specs = [spec for name in GRPO_CURVES for spec in SPECS if spec.name == name]
        for path in plot_metrics(rows, plots_dir, specs=specs):
            made.append(path.rename(plots_dir / f"grpo_{path.name}"))
    loss_rows: list[dict[str, Any]] = []
    sft_steps = 0
    for stage, label in (("sft", "SFT"), ("sft_continued", "control")):
        path = out / stage / "metrics.jsonl"
        if not path.is_file():
            continue
        rows = load_metrics(path)
        for r in rows:
            loss_rows.append({"step": r["step"] + sft_steps, **{f"{label} {k}": r[k] for k in ("train/loss", "val/loss")
                                                               if k in r}})
        sft_steps = max((r["step"] for r in rows), default=0)
    keys = [f"{label} {k}" for label in ("SFT", "control") for k in ("train/loss", "val/loss")]
    loss = plot_keys(sorted(loss_rows, key=lambda r: r["step"]), keys, plots_dir / "sft_loss.png",
                     "SFT loss on the teacher's traces (val: traces outside the budget), then the control",
                     "loss per response token")
    if loss is not None:
        made.append(loss)
    return [str(p.relative_to(out)) for p in made]


def _samples_with_reflection(out: Path, n: int = 2) -> list[dict[str, Any]]:
    """Up to `n` correct GRPO answers on held-out puzzles whose reasoning reflects (one per size
    first, the longest of each)."""
    from aha.runs import read_jsonl

    path = out / "eval" / "grpo" / "samples.jsonl"
    if not path.is_file():
        return []
    rows = [r for r in read_jsonl(path) if r.get("correct") and (r.get("reflections") or 0) > 0]
    rows.sort(key=lambda r: (-len(r.get("completion", "")), str(r.get("id"))))
    picked: list[dict[str, Any]] = []
    for r in rows:  # the longest of each size, then the next longest overall
        if r.get("bucket") not in {p.get("bucket") for p in picked}:
            picked.append(r)
    picked += [r for r in rows if r not in picked]
    return [{k: r.get(k) for k in ("id", "bucket", "completion", "reflections")} for r in picked[:n]]


STAGE_NAMES = {"untrained": "untrained", "sft": "SFT", "grpo": "SFT + GRPO", "sft_continued": "control (SFT continued)"}


def stage_rows(summary: dict[str, Any], buckets: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the stage table (REPORT.md and the terminal)."""
    st = summary["stages"]
    header = ["stage", "steps", "accuracy", "95% CI", *buckets, "format", "reflection rate", "mean length",
              "train seconds"]
    rows = []
    for k in ("untrained", "sft", "grpo", "sft_continued"):
        if k not in st:
            continue
        e = st[k]
        rows.append([STAGE_NAMES[k], str(e.get("steps", "-")), f"{e['accuracy']:.3f}",
                     f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]",
                     *(f"{e['buckets'].get(b, float('nan')):.3f}" for b in buckets), _num(e.get("format_rate"), 3),
                     _num(e.get("reflection_rate"), 3), _num(e.get("response_length"), 0),
                     f"{e.get('seconds') or 0:.0f}"])
    return header, rows


def paired_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["paired on the held-out puzzles", "difference", "95% CI", "puzzles gained / lost", "above 0"]
    rows = [[label, f"{e['difference']:+.3f}", f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]",
             f"{e['new_abilities']} / {e['regressions']}", "yes" if e["ci_low"] > 0 else "no"]
            for label, e in summary["paired"].items()]
    return header, rows


def _num(v: Any, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _budget_words(summary: dict[str, Any]) -> str:
    data = summary.get("data") or {}
    n = sum((data.get("traces") or {}).values())
    return f"{n:,} reflective traces" if n else "the teacher's traces"


def _report_markdown(summary: dict[str, Any], buckets: list[str]) -> str:
    from aha.eval.tables import markdown_table

    s = summary["settings"]
    data = summary.get("data") or {}
    secs = summary.get("seconds") or {}
    load = summary.get("load") or {}
    est = summary.get("estimate") or {}
    n_test = sum((data.get("test") or {}).values())
    lines = [
        "# aha demo: what GRPO adds when the teacher's traces are scarce", "",
        f"A Qwen2 model with random weights ('{s['model_size']}') learns Knights-and-Knaves puzzles. **Stage 1**: SFT "
        f"on a fixed set of {_budget_words(summary)} (`teacher_budget={s.get('teacher_budget', 0)}`; the "
        "task's solver writes them, standing in for samples a teacher model would give) for "
        f"{s['sft_steps']} steps. **Stage 2**: GRPO from the SFT model on the "
        f"{data.get('train_puzzles', 0):,} training puzzles without traces, scored by the verifier only "
        f"(Logic-RL reward), {s['grpo_steps']} steps of {s['grpo_prompts']} prompts x {s['grpo_samples']} samples. "
        f"**Control**: SFT continued on the same traces for {summary['steps'].get('sft_continued', '-')} steps "
        f"(GRPO's steps x {s.get('control_steps_per_grpo_step', '-')}, GRPO's time on a quiet 2-core machine), "
        f"more epochs of what the teacher gave. Every stage: greedy decoding on the same {n_test} held-out "
        "puzzles; 95% bootstrap intervals over puzzles, differences paired on the same puzzles.", "",
        markdown_table(*stage_rows(summary, buckets)), "",
        markdown_table(*paired_rows(summary)), ""]
    total = sum(v for v in secs.values())
    threads = f", {summary['threads']} torch threads" if summary.get("threads") else ""
    timing = (f"Whole run {total / 60:.1f} min (load average {load.get('start')} at the start, "
              f"{load.get('end')} at the end{threads})")
    if est:
        timing += (f"; the timed SFT steps estimated {est['total_seconds'] / 60:.0f} min "
                   f"({est['sft_step_seconds']:.2f} s per SFT step)")
    lines += [timing + ". Budgets are step counts: a rerun gives the same untrained, SFT, GRPO and control "
              "rows on any load (at the same torch threads); only the seconds change.", "",
              "Full comparison with the puzzles gained and lost per size: [compare.md](compare.md).", "",
              "## Training curves", ""]
    lines += [f"![{p}]({p})" for p in summary.get("plots", []) if p.endswith(".png")]
    samples = summary.get("samples") or []
    if samples:
        lines += ["", "## Sample outputs with reflection (GRPO model, held-out puzzles)", ""]
        for r in samples:
            lines += [f"`{r['id']}` ({r['bucket']}, correct, {r['reflections']} reflection"
                      f"{'s' if r['reflections'] != 1 else ''}):", "", "```", r["completion"], "```", ""]
    lines += ["", "Settings: `settings.json`; every stage's config is in its folder (`sft/config.yaml`, "
              "`grpo/config.yaml`, `sft_continued/config.yaml`); the traces are `data/traces.jsonl`."]
    return "\n".join(lines) + "\n"


def terminal_summary(summary: dict[str, Any]) -> str:
    """The stage table and the paired differences, as `aha demo` prints them at the end."""
    from aha.eval.tables import markdown_table

    buckets = sorted({b for e in summary["stages"].values() for b in e.get("buckets", {})})
    parts = [markdown_table(*stage_rows(summary, buckets))]
    if summary.get("paired"):
        parts.append(markdown_table(*paired_rows(summary)))
    return "\n\n".join(parts)
