"""`aha pipeline` and `aha recipes`: the seeds' pipelines and their tiny twins (same stage graph and keys;
the twins run end to end), the dry-run's checks (one clear line per problem class), resuming a killed
pipeline between stages and inside a stage, --only / --from / --force, and the recipes listing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import aha.commands.pipeline as pipeline_module
from aha.cli import main
from aha.commands.pipeline import run_pipeline
from aha.commands.pipeline_spec import format_value, load_pipeline, stage_graph, stage_keys
from aha.config import parse_override
from aha.errors import AhaError
from aha.runs import read_jsonl

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
TINY = RECIPES / "tiny"
# the seeds' pipelines, each with its tiny twin under recipes/tiny/ of the same file name
SEED_PIPELINES = ["seed000_logic_rl_distill.yaml", "seed001_gsm8k_likelihood.yaml",
                  "seed002_grpo_reflection_math.yaml"]
# the var that names the model in each twin
MODEL_VARS = {"seed000_logic_rl_distill.yaml": ["base_7b", "student"], "seed001_gsm8k_likelihood.yaml": ["policy"],
              "seed002_grpo_reflection_math.yaml": ["model"]}

pytestmark = pytest.mark.usefixtures("one_thread")
_RUN_IN_PROCESS = pipeline_module.run_in_process


def _model_sets(name: str, model_dir: Path) -> list[str]:
    return [f"{v}={model_dir}" for v in MODEL_VARS[name]]


# ----------------------------------------------------------------------------- twins


def test_every_seed_pipeline_has_a_twin_with_the_same_stage_graph_and_keys():
    shipped = sorted(p.name for p in RECIPES.glob("seed*.yaml"))
    assert shipped == sorted(SEED_PIPELINES)
    for name in SEED_PIPELINES:
        full, twin = load_pipeline(RECIPES / name), load_pipeline(TINY / name)
        assert stage_graph(full) == stage_graph(twin), name
        full_keys, twin_keys = stage_keys(full), stage_keys(twin)
        assert full_keys == twin_keys, {k: full_keys[k] ^ twin_keys.get(k, set()) for k in full_keys
                                        if full_keys[k] != twin_keys.get(k)}
        # the twin runs on a CPU: nothing in it asks for a GPU backend beyond hf, every stage is small
        assert all(s.command in ("train", "sft", "distill", "eval", "export", "compare", "plot") for s in twin.stages)


def test_seed_graphs_hold_the_published_stages():
    # seed 000: two GRPO phases, distillation, SFT, cold start, four evaluations, the per-size table
    g0 = {name: (cmd, deps) for name, cmd, deps in stage_graph(load_pipeline(RECIPES / SEED_PIPELINES[0]))}
    assert g0["rl7b_phase2"] == ("train", ("rl7b_phase1",))
    assert g0["distill"] == ("distill", ("rl7b_phase2",))
    assert g0["sft_1_5b"] == ("sft", ("distill",))
    assert g0["rl_1_5b_cold"] == ("train", ("sft_1_5b",))
    assert g0["table"][1] == ("eval_base_7b", "eval_cold_1_5b", "eval_distill_1_5b", "eval_grpo_7b", "eval_grpo_7b_step420")
    assert g0["rl7b_phase3"] == ("train", ("rl7b_phase2",))
    p0 = load_pipeline(RECIPES / SEED_PIPELINES[0])
    assert "steps=100" in p0.stage("rl7b_phase1").argv and "steps=280" in p0.stage("rl7b_phase2").argv
    assert len(p0.vars["kk_eval"]) == 7  # 2..8 people
    # seed 001: the correctness baseline and the three likelihood forms
    p1 = load_pipeline(RECIPES / SEED_PIPELINES[1])
    forms = [o for s in p1.stages for o in s.overrides if o.startswith("rewards=")]
    assert [f for f in ("correctness", "relative", "absolute", "hybrid") if any(f in o for o in forms)] == \
        ["correctness", "relative", "absolute", "hybrid"]
    assert all("--reference-perplexity" in s.argv for s in p1.stages if s.command == "eval")
    # seed 002: 4 models x 3 benchmarks at T 0.6, top_p 0.95
    p2 = load_pipeline(RECIPES / SEED_PIPELINES[2])
    evals = [s for s in p2.stages if s.command == "eval"]
    assert len(evals) == 12
    assert all(s.args["temperature"] == 0.6 and s.args["top_p"] == 0.95 for s in evals)
    assert {s.args["task"] for s in evals} == {"math", "multiple-choice", "aime"}


def _placeholders(root: Path, pipeline: Path, model_vars: list[str]) -> None:
    """Empty stand-ins for every model folder and data file a full pipeline expects, under `root`."""
    p = load_pipeline(pipeline)
    for var, value in p.vars.items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or "/" not in item:
                continue
            path = root / item
            if var in model_vars or item.startswith("models/"):
                path.mkdir(parents=True, exist_ok=True)
                (path / "config.json").write_text("{}")
                (path / "model.safetensors").write_bytes(b"")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")


@pytest.mark.parametrize("name", SEED_PIPELINES)
def test_full_pipelines_validate_on_held_out_data(name):
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.sft import SftConfig

    p = load_pipeline(RECIPES / name)
    for s in p.stages:
        if s.command == "train":
            cfg = load_config(TrainConfig, s.recipe, s.overrides)
            data = cfg.task.options["data"]
            train, val = (data["train"], data["test"]) if isinstance(data, dict) else (data, cfg.task.options["test_data"])
            assert cfg.val_every > 0 and train and val and not set(train) & set(val), s.name
        elif s.command == "sft":
            cfg = load_config(SftConfig, s.recipe, s.overrides)
            assert cfg.val_every > 0 and (cfg.data.val_fraction > 0 or cfg.data.val_files), s.name
            assert not set(cfg.data.files) & set(cfg.data.val_files), s.name


@pytest.mark.parametrize("name", SEED_PIPELINES)
def test_full_pipeline_dry_run_passes_with_models_and_data_in_their_places(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AhaError, match="does not exist"):  # nothing in place yet
        run_pipeline(RECIPES / name, dry_run=True)
    _placeholders(tmp_path, RECIPES / name, MODEL_VARS[name])
    run_pipeline(RECIPES / name, dry_run=True)
    out = capsys.readouterr().out
    assert "no problems" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_PIPELINES)
def test_tiny_twin_runs_end_to_end(name, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_pipeline(TINY / name, out, _model_sets(name, tiny_model_dir), in_process=True)
    state = json.loads((out / "pipeline.json").read_text())
    p = load_pipeline(TINY / name, out)
    assert [state["stages"][s.name]["status"] for s in p.stages] == ["done"] * len(p.stages)
    report = (out / "REPORT.md").read_text()
    for s in p.stages:
        assert f"## {s.name} (aha {s.command}): done" in report
    if name.startswith("seed000"):
        # the per-size table: one bucket per number of people, side by side for the four models
        table = (out / "table" / "compare.md").read_text()
        assert "2ppl" in table and "3ppl" in table
        results = json.loads((out / "eval_cold_1_5b" / "results.json").read_text())
        assert set(results["buckets"]) == {"2ppl", "3ppl"}
        assert "reflection_rate" in results["overall"]
        # SFT ran its 2 epochs: the last metrics line is in epoch 2
        assert read_jsonl(out / "sft_1_5b" / "metrics.jsonl")[-1]["epoch"] == 1
        assert "![reward.png](plots_7b/reward.png)" in report
    if name.startswith("seed001"):
        for stage in ("eval_initial", "eval_hybrid"):
            ppl = json.loads((out / stage / "results.json").read_text())["reference_perplexity"]
            assert ppl["problems"] == 2 and math.isfinite(ppl["mean"]) and ppl["mean"] > 1.0
        assert "reference-answer perplexity" in (out / "eval_hybrid" / "results.md").read_text().lower()
    if name.startswith("seed002"):
        for merged in ("merge_sft_grpo", "merge_grpo_only"):
            assert (out / merged / "config.json").is_file() and not (out / merged / "adapter_config.json").exists()
        for bench in ("math500", "gpqa", "aime24"):
            assert (out / f"table_{bench}" / "compare.md").is_file()
    # a rerun skips every stage
    run_pipeline(TINY / name, out, _model_sets(name, tiny_model_dir), in_process=True)
    assert json.loads((out / "pipeline.json").read_text())["stages"] == state["stages"]


# ----------------------------------------------------------------------------- dry-run checks


def _write(tmp_path: Path, stages: list[dict], vars: dict | None = None) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "vars": vars or {}, "stages": stages}, sort_keys=False))
    return path


def _sft(name: str = "sft", **set_: object) -> dict:
    return {"name": name, "command": "sft", "recipe": str(TINY / "math_sft_reasoning.yaml"),
            "set": {"model.path": "${vars.model}", "data.files": [str(TINY / "data" / "reasoning_sft.jsonl")],
                    "epochs": 0, "steps": 4, "checkpoint_every": 1, "val_every": 0, "run.progress": False, **set_}}


def _eval(name: str = "eval", model: str = "${stages.sft.model}", **args: object) -> dict:
    return {"name": name, "command": "eval",
            "args": {"model": model, "task": "math", "data": [str(TINY / "data" / "math500_test.jsonl")],
                     "max_new_tokens": 4, "no_plots": True, **args}}


# each case: the pipeline's stages (and vars), the words the one-line message must hold
DRY_RUN_ERRORS = [
    # a typo in a recipe key, with the closest key named
    ([_sft(**{"optim.lrr": 1e-3})], "unknown config key 'optim.lrr' (did you mean optim.lr?)"),
    # a bad value
    ([_sft(steps=0)], "steps must be >= 1"),
    # a recipe that is not there
    ([{**_sft(), "recipe": "nowhere.yaml"}], "recipe"),
    # a typo in an eval flag
    ([_sft(), _eval(temprature=0.5)], "aha eval has no argument 'temprature' (did you mean temperature?)"),
    # an unknown task option
    ([_sft(), _eval(task_option={"bogus_option": 1})], "bogus_option"),
    # a model folder that does not exist
    ([_sft(), _eval(model="models/missing")], "model folder 'models/missing' does not exist"),
    # a data file that does not exist
    ([_sft(**{"data.files": ["no/such.jsonl"]})], "no/such.jsonl"),
    # a reference to a stage that runs later
    ([_eval(), _sft()], "names stage 'sft', which runs later"),
    # a reference to a stage that does not exist, with a hint
    ([_sft(), _eval(model="${stages.sfft.model}")], "names no stage before it (did you mean sft?)"),
    # an output the stage's command does not make
    ([_sft(), _eval(model="${stages.sft.results}")], "an aha sft stage makes no 'results'; it makes dir, model"),
    # an unknown var
    ([_sft(), _eval(model="${vars.modle}")], "names no var (did you mean vars.model?)"),
    # a path into the run folder that no earlier stage makes
    ([_sft(), _eval(model="${run_dir}/elsewhere/model")], "no earlier stage makes it"),
    # the pipeline manages the output folder
    ([_sft(**{"run.out_dir": "x"})], "managed by the pipeline"),
    ([_sft(), _eval(out="x")], "set by the pipeline"),
    # an unknown command and an unknown stage key
    ([{"name": "a", "command": "trian"}], "command 'trian' is not a pipeline command (did you mean train?)"),
    ([{**_sft(), "sett": {}}], "unknown stage key 'sett' (did you mean set?)"),
    # duplicate stage names
    ([_sft(), _sft()], "stage names must be unique"),
]


@pytest.mark.parametrize("stages,words", DRY_RUN_ERRORS)
def test_dry_run_names_each_problem_in_one_line(stages, words, tmp_path, tiny_model_dir, capsys):
    path = _write(tmp_path, stages, {"model": str(tiny_model_dir)})
    with pytest.raises(AhaError) as exc:
        run_pipeline(path, tmp_path / "run", dry_run=True)
    message = str(exc.value)
    assert words in message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


def test_dry_run_lists_several_problems_and_cli_exit_status(tmp_path, tiny_model_dir, capsys):
    # problems found by checking the stages are all listed (structural ones stop at the first)
    path = _write(tmp_path, [_sft(**{"optim.lrr": 1}), _eval(model="models/missing")], {"model": str(tiny_model_dir)})
    assert main(["pipeline", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "optim.lrr" in err and "models/missing" in err


def test_set_changes_a_var_and_refuses_unknown_ones(tmp_path, tiny_model_dir):
    path = _write(tmp_path, [_sft()], {"model": "models/x"})
    p = load_pipeline(path, tmp_path / "run", [f"model={tiny_model_dir}"])
    assert f"model.path={tiny_model_dir}" in p.stage("sft").argv
    with pytest.raises(AhaError, match="has no var 'modle' \\(did you mean model\\?\\)"):
        load_pipeline(path, tmp_path / "run", ["modle=x"])


# each case: a value, as a pipeline holds it; its override text must read back to the same value
FORMAT_CASES = [
    1e-07,            # PyYAML reads "1e-07" as a string: it must gain a ".0"
    3.0e-6,
    0.5,
    7,
    True,
    None,
    "yes",            # would read as a boolean unquoted
    "1e-4",           # a string that looks like a number
    "",               # the empty string
    "a: b",           # would read as a mapping
    "models/x",       # a plain path stays unquoted
    ["a, b", "c"],    # a comma inside a list item
    {"data": {"train": ["x.jsonl"]}, "people": "2-3"},
    [{"name": "likelihood", "weight": 1.0, "options": {"form": "relative"}}],
]


@pytest.mark.parametrize("value", FORMAT_CASES)
def test_format_value_reads_back(value):
    key, parsed = parse_override(f"k={format_value(value)}")
    assert parsed == value and type(parsed) is type(value)


def test_format_value_keeps_plain_paths_unquoted():
    assert format_value("models/x") == "models/x"
    assert format_value(1e-07) == "1.0e-07"


# ----------------------------------------------------------------------------- resuming, --only, --from


def _two_stage(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return _write(tmp_path, [_sft(), _eval()], {"model": str(tiny_model_dir)})


def _spy(monkeypatch, fail_when=None):
    """Record the stage command lines run in process; `fail_when(command, argv, n)` may raise."""
    calls: list[tuple[str, list[str]]] = []
    real = _RUN_IN_PROCESS

    def spy(command, argv):
        calls.append((command, list(argv)))
        if fail_when is not None:
            fail_when(command, argv, len(calls))
        return real(command, argv)

    monkeypatch.setattr(pipeline_module, "run_in_process", spy)
    return calls


def test_killed_between_stages_resumes_at_the_next_stage(tmp_path, tiny_model_dir, monkeypatch):
    path, out = _two_stage(tmp_path, tiny_model_dir), tmp_path / "run"

    def kill_at_eval(command, argv, n):
        if command == "eval":
            raise KeyboardInterrupt

    calls = _spy(monkeypatch, kill_at_eval)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, out, in_process=True)
    state = json.loads((out / "pipeline.json").read_text())
    assert state["stages"]["sft"]["status"] == "done" and state["stages"]["eval"]["status"] == "interrupted"
    assert "interrupted" in (out / "REPORT.md").read_text()
    calls = _spy(monkeypatch)
    run_pipeline(path, out, in_process=True)
    assert [c for c, _ in calls] == ["eval"]  # the finished sft stage is skipped
    assert json.loads((out / "pipeline.json").read_text())["stages"]["eval"]["status"] == "done"


def test_killed_inside_a_stage_resumes_from_its_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    path, out = _two_stage(tmp_path, tiny_model_dir), tmp_path / "run"
    from aha.runs import MetricsWriter

    real_write = MetricsWriter.write

    def write(self, step, metrics):
        if step == 3 and not getattr(MetricsWriter, "_killed", False):
            MetricsWriter._killed = True
            raise KeyboardInterrupt  # the process dies after step 2's checkpoint, during step 3
        return real_write(self, step, metrics)

    monkeypatch.setattr(MetricsWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, out, in_process=True)
    assert json.loads((out / "pipeline.json").read_text())["stages"]["sft"]["status"] == "interrupted"
    calls = _spy(monkeypatch)
    run_pipeline(path, out, in_process=True)
    assert calls[0][0] == "sft" and calls[0][1][-1] == f"resume={out / 'sft'}"
    assert [r["step"] for r in read_jsonl(out / "sft" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert "resumed from" in (out / "sft" / "run.log").read_text()
    state = json.loads((out / "pipeline.json").read_text())
    assert state["stages"]["sft"]["status"] == "done" and state["stages"]["sft"]["resumed"] is True
    assert state["stages"]["eval"]["status"] == "done"


def test_only_from_and_force(tmp_path, tiny_model_dir, monkeypatch):
    path, out = _two_stage(tmp_path, tiny_model_dir), tmp_path / "run"
    # --from a stage whose input has not been made yet is refused before anything runs
    with pytest.raises(AhaError, match="reads stage 'sft', which has not finished"):
        run_pipeline(path, out, from_stage="eval", in_process=True)
    with pytest.raises(AhaError, match="exclude each other"):
        run_pipeline(path, out, only="sft", from_stage="eval")
    with pytest.raises(AhaError, match="no stage 'evl' .*did you mean eval"):
        run_pipeline(path, out, only="evl")
    calls = _spy(monkeypatch)
    run_pipeline(path, out, only="sft", in_process=True)
    assert [c for c, _ in calls] == ["sft"]
    run_pipeline(path, out, from_stage="eval", in_process=True)
    assert [c for c, _ in calls] == ["sft", "eval"]
    run_pipeline(path, out, only="eval", in_process=True)  # finished: skipped
    assert len(calls) == 2
    run_pipeline(path, out, only="eval", force=True, in_process=True)
    assert [c for c, _ in calls] == ["sft", "eval", "eval"]
    # a stage that started with other settings is not resumed with new ones
    state = json.loads((out / "pipeline.json").read_text())
    state["stages"]["eval"]["status"] = "interrupted"
    state["stages"]["eval"]["argv"] = ["--old"]
    (out / "pipeline.json").write_text(json.dumps(state))
    with pytest.raises(AhaError, match="stage 'eval' started with another command line.*--force --from eval"):
        run_pipeline(path, out, only="eval", in_process=True)
    # a finished stage whose command line changed is not silently reused
    with pytest.raises(AhaError, match="stage .sft. finished earlier with another command line.*--force --from sft"):
        run_pipeline(path, out, ["model=" + str(tiny_model_dir) + "/"], in_process=True)


@pytest.mark.slow
def test_subprocess_stage_runs_and_reports(tmp_path):
    # the default mode: each stage in its own `python -m aha.cli` process (here a cheap plot stage)
    run_dir = tmp_path / "train-run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "reward/total/mean": i / 10}) + "\n"
                                                   for i in range(1, 4)))
    path = _write(tmp_path, [{"name": "plots", "command": "plot", "args": {"run_dir": str(run_dir)}}])
    run_pipeline(path, tmp_path / "run")
    assert (tmp_path / "run" / "plots" / "summary.md").is_file()
    assert "![reward.png](plots/reward.png)" in (tmp_path / "run" / "REPORT.md").read_text()
    # a stage that fails: the pipeline says which, with the exit status, and marks it failed
    (run_dir / "metrics.jsonl").unlink()
    with pytest.raises(AhaError, match="stage 'plots' \\(aha plot\\) exited with status 2"):
        run_pipeline(path, tmp_path / "run", force=True)
    assert json.loads((tmp_path / "run" / "pipeline.json").read_text())["stages"]["plots"]["status"] == "failed"


# ----------------------------------------------------------------------------- aha recipes, help


def test_recipes_lists_every_pipeline_with_seed_and_hardware(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0]: line for line in lines[1:]}
    for name in SEED_PIPELINES:
        assert "pipeline" in by_name[name] and "seed 00" in by_name[name] and "[" in by_name[name]
        assert "tiny twin" in by_name[f"tiny/{name}"]
    assert "seed 000" in by_name["cold_start_grpo_1.5b.yaml"] and "train" in by_name["cold_start_grpo_1.5b.yaml"]
    assert by_name["distill_7b_to_1.5b.yaml"].split()[1] == "distill"
    assert by_name["kk_sft_distill_1.5b.yaml"].split()[1] == "sft"


def test_pipeline_help(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "--help"])
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--only" in out and "--from" in out and "${stages.STAGE.OUTPUT}" in out


@pytest.mark.slow
def test_ctrl_c_stops_a_subprocess_stage_with_a_checkpoint_and_a_rerun_resumes(tmp_path, tiny_model_dir, monkeypatch):
    # the default mode, stopped as a terminal's Ctrl-C would: SIGINT to the whole process group
    import os
    import signal
    import subprocess
    import sys
    import time

    steps = 120  # long enough to be stopped in the middle, short enough to finish on resume
    path = _write(tmp_path, [_sft(steps=steps, checkpoint_every=0)], {"model": str(tiny_model_dir)})
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aha.cli", "pipeline", str(path), "--out", str(out)], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "sft" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (metrics.is_file() and metrics.stat().st_size):
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert "interrupted" in proc.stderr.read().decode()
    state = json.loads((out / "pipeline.json").read_text())
    assert state["stages"]["sft"]["status"] == "interrupted"
    stopped_at = read_jsonl(metrics)[-1]["step"]
    assert 1 <= stopped_at < steps
    assert list((out / "sft" / "checkpoints").glob("step_*"))
    calls = _spy(monkeypatch)
    run_pipeline(path, out, in_process=True)
    assert calls[0][1][-1] == f"resume={out / 'sft'}"
    assert [r["step"] for r in read_jsonl(metrics)] == list(range(1, steps + 1))
    assert json.loads((out / "pipeline.json").read_text())["stages"]["sft"]["status"] == "done"


def test_flag_arguments_become_the_command_line(tmp_path, tiny_model_dir):
    # each args entry as the eval command line: lists after one flag, switches bare, task options repeated,
    # null left to the command's default
    path = _write(tmp_path, [_eval(model=str(tiny_model_dir), stop=[], temperature=0.6, label=None, no_plots=False,
                                   task_option={"bucket_by": "level,subject", "limit": 2})])
    argv = load_pipeline(path, tmp_path / "run").stage("eval").argv
    assert argv == ["--model", str(tiny_model_dir), "--task", "math", "--data", str(TINY / "data" / "math500_test.jsonl"),
                    "--max-new-tokens", "4", "--stop", "--temperature", "0.6",
                    # the value is quoted YAML, as --task-option reads it: a comma stays inside one string
                    "--task-option", 'bucket_by="level,subject"', "--task-option", "limit=2",
                    "--out", str(tmp_path / "run" / "eval")]
    from aha.commands.score import parse_options

    assert parse_options(['bucket_by="level,subject"']) == {"bucket_by": "level,subject"}
