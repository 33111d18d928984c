"""`aha pipeline PIPELINE.yaml`: run a multi-stage experiment (train, sft, distill, eval, export, compare, plot).

The pipeline format and its checks live in aha.commands.pipeline_spec; this module runs the stages,
keeps RUN_DIR/pipeline.json (each stage's status and command line) and writes RUN_DIR/REPORT.md.

How a stage runs. By default each stage is its own process (`python -m aha.cli COMMAND ...`), for
isolation: a stage's models, CUDA memory and caches (the likelihood reward keeps its scorer LM loaded
for the process's life) are gone when it ends, so a 7B teacher does not sit in GPU memory while a
1.5B student trains; an out-of-memory kill or a crash in one stage leaves the pipeline able to report
it and resume; and Ctrl-C reaches the stage as it would on its own (the terminal sends SIGINT to the
whole process group): train and sft finish the step, checkpoint and exit 130, the pipeline waits for
that, marks the stage interrupted and stops. `--in-process` runs the stages as function calls in
this process instead, which saves the seconds each new Python process spends importing torch and
transformers: the tiny CPU twins and the tests use it; between stages it collects garbage, clears the
likelihood scorer cache and empties the CUDA cache.

Resuming. A finished stage (status done with the same command line) is skipped. A stage that
started but did not finish continues through its command's own resume: train and sft with
resume=STAGE_DIR (from the newest checkpoint), eval by keeping the problems already sampled, export by
writing again; distill, which has no resume, starts its stage again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from aha.commands.pipeline_spec import Pipeline, Stage, check_pipeline, load_pipeline
from aha.errors import AhaError

HELP = "run a multi-stage experiment (train, sft, distill, eval, export, compare, plot) from one YAML file"
DESCRIPTION = """Run the stages of a pipeline in order, each in its own folder RUN_DIR/<stage>.

examples:
  aha pipeline recipes/seed000_logic_rl_distill.yaml --dry-run     # resolve and check every stage, run nothing
  aha pipeline recipes/seed000_logic_rl_distill.yaml --out runs/seed000
  aha pipeline recipes/seed000_logic_rl_distill.yaml --out runs/seed000 --from distill
  aha pipeline recipes/seed001_gsm8k_likelihood.yaml --set base_model=models/Qwen2.5-0.5B
  aha pipeline recipes/tiny/seed000_logic_rl_distill.yaml --set model=models/aha-tiny --in-process

A pipeline file lists `stages`, each with a `name`, a `command` (train, sft, distill: a `recipe`
and `set` overrides; eval, export, compare, plot: `args`, their flags by name) and values that may
name an earlier stage's output: ${stages.STAGE.OUTPUT} (train/sft: model, dir, metrics; distill:
data, report; eval: results, samples, report, dir; export: model; compare/plot: report, dir), a var
${vars.NAME} (change one with --set NAME=VALUE), ${run_dir} or ${pipeline_dir}.

Rerun the same command to resume: finished stages are skipped, an unfinished train or sft stage
continues from its newest checkpoint, an eval keeps the problems already sampled. Every run first
checks every stage (config keys and values, recipe files, model folders, data files, references to
outputs no earlier stage makes) before anything loads. RUN_DIR/REPORT.md gathers each stage's result
and links its plots; RUN_DIR/pipeline.json records each stage's status and command line."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", metavar="PIPELINE.yaml", help="the pipeline file")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run folder (default runs/<pipeline name>)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="change one of the pipeline's vars (repeatable), e.g. --set base_model=models/Qwen2.5-7B")
    p.add_argument("--only", default=None, metavar="STAGE", help="run this stage alone (the stages it reads must "
                   "have finished)")
    p.add_argument("--from", dest="from_stage", default=None, metavar="STAGE",
                   help="run this stage and every later one")
    p.add_argument("--dry-run", action="store_true", help="print the resolved stages and their command lines, "
                   "check them all, run nothing")
    p.add_argument("--force", action="store_true", help="run the selected stages again from scratch, finished or "
                   "not (their folders are removed first)")
    p.add_argument("--in-process", action="store_true", help="run the stages inside this process (faster start; "
                   "default: one process per stage, see `aha pipeline` in the README)")


# ----------------------------------------------------------------------------- state


def _state_path(p: Pipeline) -> Path:
    return p.run_dir / "pipeline.json"


def read_state(p: Pipeline) -> dict[str, Any]:
    path = _state_path(p)
    if not path.is_file():
        return {"stages": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AhaError(f"{path} is not readable JSON; remove it to start the pipeline's bookkeeping again (finished "
                       "stages then rerun)") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise AhaError(f"{path} is not an aha pipeline state file; use another --out")
    return state


def write_state(p: Pipeline, state: dict[str, Any]) -> None:
    from aha.commands.recipe_args import write_text_atomic

    p.run_dir.mkdir(parents=True, exist_ok=True)
    state["pipeline"] = str(p.path)
    state["vars"] = p.vars
    write_text_atomic(_state_path(p), json.dumps(state, indent=1))


def select(p: Pipeline, only: str | None, from_stage: str | None) -> list[Stage]:
    if only and from_stage:
        raise AhaError("--only and --from exclude each other; give one")
    if only:
        return [p.stage(only)]
    if from_stage:
        return p.stages[p.stages.index(p.stage(from_stage)):]
    return list(p.stages)


def stage_status(state: dict[str, Any], stage: Stage) -> str:
    """done | changed (finished with another command line) | partial (started) | pending."""
    rec = state["stages"].get(stage.name)
    if rec is None:
        return "partial" if stage.dir.exists() and any(stage.dir.iterdir()) else "pending"
    if rec.get("status") == "done":
        return "done" if rec.get("argv") == stage.argv else "changed"
    return "partial"


# ----------------------------------------------------------------------------- running one stage


def resume_argv(stage: Stage) -> list[str]:
    """The command line that continues a stage that started but did not finish (see the module docstring)."""
    if stage.command in ("train", "sft"):
        if (stage.dir / "config.yaml").is_file():
            return [*stage.argv, f"resume={stage.dir}"]
        _clear(stage)  # stopped before it wrote its config: nothing to keep
    elif stage.command == "distill":
        _clear(stage)
    return list(stage.argv)


def _clear(stage: Stage) -> None:
    if stage.dir.exists():
        shutil.rmtree(stage.dir)


def run_in_process(command: str, argv: list[str]) -> int:
    import importlib

    from aha.commands.pipeline_spec import STAGE_COMMANDS, command_parser

    module = importlib.import_module(f"aha.commands.{STAGE_COMMANDS[command]}")
    args = command_parser(command).parse_args(argv)  # a bad argument is an AhaError here, not an exit
    args.command = command
    try:
        return int(module.run(args) or 0)
    finally:
        _release_memory()


def _release_memory() -> None:
    """What a stage process would free when it ends: cached scorer models, Python garbage, CUDA cache."""
    import gc

    likelihood = sys.modules.get("aha.rewards.likelihood")
    cache = getattr(likelihood, "_SCORERS", None)
    if isinstance(cache, dict):
        cache.clear()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_subprocess(command: str, argv: list[str]) -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "aha.cli", command, *argv])
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # the stage got the same Ctrl-C (same process group) and is checkpointing: wait for it; a
            # second Ctrl-C reaches it too and stops it at once
            continue


def run_stage(p: Pipeline, stage: Stage, state: dict[str, Any], in_process: bool) -> None:
    status = stage_status(state, stage)
    argv = resume_argv(stage) if status == "partial" else list(stage.argv)
    if status == "pending" and stage.dir.exists():
        _clear(stage)  # an empty leftover folder
    started = time.time()
    state["stages"][stage.name] = {"status": "running", "command": stage.command, "argv": stage.argv,
                                   "dir": str(stage.dir), "started": started,
                                   "resumed": status == "partial"}
    write_state(p, state)
    print(f"\n== stage {stage.name} (aha {stage.command})" + (" resumed" if status == "partial" else ""),
          flush=True)
    rec = state["stages"][stage.name]
    try:
        if in_process:
            code = run_in_process(stage.command, argv)
        else:
            code = run_subprocess(stage.command, argv)
    except KeyboardInterrupt:
        rec.update(status="interrupted", seconds=round(time.time() - started, 1))
        write_state(p, state)
        raise
    except AhaError as exc:
        rec.update(status="failed", seconds=round(time.time() - started, 1), error=str(exc))
        write_state(p, state)
        raise AhaError(f"stage {stage.name!r} (aha {stage.command}) failed: {exc}") from None
    except Exception as exc:  # a bug or a crash inside the stage: recorded, then shown with its traceback
        rec.update(status="failed", seconds=round(time.time() - started, 1), error=f"{type(exc).__name__}: {exc}")
        write_state(p, state)
        raise
    rec["seconds"] = round(time.time() - started, 1)
    if code == 130:
        rec["status"] = "interrupted"
        write_state(p, state)
        raise KeyboardInterrupt
    if code != 0:
        rec["status"] = "failed"
        write_state(p, state)
        raise AhaError(f"stage {stage.name!r} (aha {stage.command}) exited with status {code} (its message is "
                       "above); fix it and run the same command again to resume")
    rec.update(status="done", finished=time.time())
    write_state(p, state)


# ----------------------------------------------------------------------------- the command


def print_plan(p: Pipeline, stages: list[Stage], state: dict[str, Any]) -> None:
    print(f"pipeline {p.name} ({p.path}) -> {p.run_dir}")
    if p.vars:
        print("vars: " + ", ".join(f"{k}={v}" for k, v in p.vars.items()))
    for i, s in enumerate(p.stages, 1):
        mark = "" if s in stages else "   (not selected)"
        print(f"[{i}] {s.name}: {stage_status(state, s)}{mark}"
              + (f"  reads {', '.join(s.deps)}" if s.deps else ""))
        print(f"    {s.shell()}")


def run_pipeline(path: str | Path, out: str | Path | None = None, var_items: list[str] | None = None,
                 only: str | None = None, from_stage: str | None = None, dry_run: bool = False,
                 force: bool = False, in_process: bool = False) -> Path:
    """Check, then run, the pipeline's selected stages; returns the run folder (see the module docstring)."""
    p = load_pipeline(path, out, var_items)
    stages = select(p, only, from_stage)
    state = read_state(p)
    if state.get("pipeline") and Path(state["pipeline"]).resolve() != p.path.resolve():
        raise AhaError(f"{p.run_dir} holds a run of {state['pipeline']}, not {p.path}; choose another --out")
    if dry_run:
        print_plan(p, stages, state)
    problems = check_pipeline(p, stages)
    if not problems:
        problems = _check_inputs_ready(p, stages, state, dry_run)
    if problems:
        if len(problems) == 1:
            raise AhaError(problems[0])
        raise AhaError(f"{len(problems)} problems in {p.path}:\n  " + "\n  ".join(problems))
    if dry_run:
        print(f"checked {len(stages)} stage(s): no problems")
        return p.run_dir
    for stage in stages:
        status = stage_status(state, stage)
        if status != "pending" and force:
            _clear(stage)
            state["stages"].pop(stage.name, None)
            status = "pending"
        rec = state["stages"].get(stage.name)
        if status == "partial" and rec is not None and rec.get("argv") != stage.argv:
            raise AhaError(f"stage {stage.name!r} started with another command line (the pipeline or its vars "
                           f"changed), so it cannot resume; start it again with --force --from {stage.name}, or "
                           "restore the settings it started with")
        if status == "done":
            print(f"== stage {stage.name}: finished earlier, skipped")
            continue
        if status == "changed":
            raise AhaError(f"stage {stage.name!r} finished earlier with another command line (the pipeline or its "
                           f"vars changed); run it again with --force --from {stage.name}, or use another --out")
        try:
            run_stage(p, stage, state, in_process)
        finally:
            write_report(p, state)
    write_report(p, state)
    print(f"\nreport: {p.run_dir / 'REPORT.md'}")
    return p.run_dir


def _check_inputs_ready(p: Pipeline, stages: list[Stage], state: dict[str, Any], dry_run: bool) -> list[str]:
    """With --only/--from, the stages read from earlier stages that are not selected: those must have
    finished (a dry run only notes it)."""
    problems = []
    chosen = {s.name for s in stages}
    for s in stages:
        for dep in s.deps:
            if dep in chosen:
                continue
            if stage_status(state, p.stage(dep)) != "done":
                msg = (f"stage {s.name!r} reads stage {dep!r}, which has not finished in {p.run_dir}; run "
                       f"--from {dep} (or without --only/--from)")
                if dry_run:
                    print(f"note: {msg}")
                else:
                    problems.append(msg)
    return problems


def run(args: argparse.Namespace) -> int:
    run_pipeline(args.pipeline, args.out, args.set, args.only, args.from_stage, args.dry_run, args.force,
                 args.in_process)
    return 0


def write_report(p: Pipeline, state: dict[str, Any]) -> Path:
    from aha.commands.pipeline_report import pipeline_report
    from aha.commands.recipe_args import write_text_atomic

    p.run_dir.mkdir(parents=True, exist_ok=True)
    out = p.run_dir / "REPORT.md"
    write_text_atomic(out, pipeline_report(p, state))
    return out

