"""Pipelines: reading a PIPELINE.yaml, resolving its references and checking every stage before anything loads.

A pipeline is an ordered list of stages, each one of aha's commands:

    name: seed000_logic_rl              # default folder runs/<name>
    seed: "000"                         # what `aha recipes` lists: seed, what it reproduces, hardware
    reproduces: "..."
    hardware: "..."
    vars:                               # settings a user changes with --set NAME=VALUE
      base_model: models/Qwen2.5-7B-Instruct-1M
    stages:
      - name: rl                        # letters, digits, _ and -; the stage's folder under the run dir
        command: train                  # train | sft | distill  (recipe commands)
        recipe: ../logic_rl_grpo_7b.yaml   # relative to this file
        set: {model.path: "${vars.base_model}", steps: 100}   # overrides, as key=value on the command line
      - name: eval
        command: eval                   # eval | export | compare | plot  (flag commands)
        args: {model: "${stages.rl.model}", task: knights-knaves, data: [a.parquet, b.parquet]}

References (anywhere in a value, also inside strings): ${vars.NAME}, ${stages.STAGE.OUTPUT} (an
earlier stage's output, see OUTPUTS), ${run_dir} (the pipeline's run folder) and ${pipeline_dir}
(the folder of the pipeline file, for data shipped next to it). Each stage's output folder is set by
the pipeline (run.out_dir or --out), never by the stage.

Everything here is cheap: no model or data set is loaded, so `aha pipeline --dry-run` can check a
pipeline for a 7B model on a laptop.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aha.errors import AhaError
from aha.registry import closest

# stage command -> module under aha.commands
STAGE_COMMANDS = {"train": "train", "sft": "sft", "distill": "distill", "eval": "eval", "export": "export",
                  "compare": "compare", "plot": "plot"}
# commands that take `RECIPE key=value ...` (the others take flags)
RECIPE_COMMANDS = ("train", "sft", "distill")
# what a stage of each command leaves in its folder, by the name a reference uses ("" = the folder)
OUTPUTS: dict[str, dict[str, str]] = {
    "train": {"dir": "", "model": "model", "metrics": "metrics.jsonl"},
    "sft": {"dir": "", "model": "model", "metrics": "metrics.jsonl"},
    "distill": {"dir": "", "data": "sft.jsonl", "report": "report.md"},
    "eval": {"dir": "", "results": "results.json", "samples": "samples.jsonl", "report": "results.md"},
    "export": {"dir": "", "model": ""},
    "compare": {"dir": "", "report": "compare.md", "results": "compare.json"},
    "plot": {"dir": "", "report": "summary.md"},
}
PIPELINE_KEYS = ("name", "seed", "reproduces", "hardware", "results", "notes", "vars", "stages")
STAGE_KEYS = ("name", "command", "recipe", "set", "args", "notes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_REF = re.compile(r"\$\{([^}]*)\}")


@dataclass
class Stage:
    """One resolved stage: what runs, where, and which earlier stages it reads."""

    name: str
    command: str
    dir: Path
    argv: list[str]                       # the command's arguments (after `aha COMMAND`)
    recipe: Path | None = None
    overrides: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)

    def output(self, key: str) -> Path:
        rel = OUTPUTS[self.command][key]
        return self.dir / rel if rel else self.dir

    def shell(self) -> str:
        """The equivalent command line, quoted for a POSIX shell."""
        import shlex

        return " ".join(["aha", self.command, *map(shlex.quote, self.argv)])


@dataclass
class Pipeline:
    path: Path
    name: str
    meta: dict[str, Any]
    vars: dict[str, Any]
    run_dir: Path
    stages: list[Stage]
    raw: dict[str, Any]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        hint = closest(name, [s.name for s in self.stages])
        raise AhaError(f"no stage {name!r} in {self.path}" + (f" (did you mean {hint}?)" if hint else "")
                       + f"; its stages: {', '.join(s.name for s in self.stages)}")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are AhaErrors (one line) instead of a usage message and exit."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise AhaError(message)


def command_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"aha.commands.{STAGE_COMMANDS[command]}")
    p = _Parser(prog=f"aha {command}", add_help=False)
    module.add_arguments(p)
    return p


# ----------------------------------------------------------------------------- reading


def read_pipeline_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AhaError(f"pipeline {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise AhaError(f"pipeline {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise AhaError(f"pipeline {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or "stages" not in data:
        raise AhaError(f"{path} is not a pipeline: it needs a `stages:` list (a single-command recipe runs with "
                       "`aha train|sft|distill RECIPE`)")
    for key in data:
        if key not in PIPELINE_KEYS:
            hint = closest(str(key), list(PIPELINE_KEYS))
            raise AhaError(f"{path}: unknown pipeline key {key!r}" + (f" (did you mean {hint}?)" if hint else "")
                           + f"; a pipeline has {', '.join(PIPELINE_KEYS)}")
    if not isinstance(data["stages"], list) or not data["stages"]:
        raise AhaError(f"{path}: `stages` must be a non-empty list of stages")
    if not isinstance(data.get("vars") or {}, dict):
        raise AhaError(f"{path}: `vars` must be a mapping NAME: value")
    return data


def parse_var_overrides(items: list[str], known: dict[str, Any], where: Path) -> dict[str, Any]:
    """`--set NAME=VALUE` items -> {NAME: value}; values read as YAML scalars; NAME must be a var."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if name.startswith("vars."):
            name = name[len("vars."):]
        if not sep or not name:
            raise AhaError(f"--set {item!r} must look like NAME=VALUE")
        if name not in known:
            hint = closest(name, list(known))
            raise AhaError(f"--set {name}: {where} has no var {name!r}" + (f" (did you mean {hint}?)" if hint else "")
                           + (f"; its vars: {', '.join(known)}" if known else "; it has no vars"))
        try:
            out[name] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[name] = raw
    return out


# ----------------------------------------------------------------------------- values on a command line


def format_value(value: Any) -> str:
    """A value as the text of a `key=value` override that reads back (YAML) to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exp = text.partition("e")
        if e and "." not in mantissa:  # PyYAML reads 1e-07 as a string; 1.0e-07 is a float
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, str):
        try:
            if value and yaml.safe_load(value) == value and value.strip() == value and "," not in value:
                return value
        except yaml.YAMLError:
            pass
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{format_value(str(k))}: {format_value(v)}" for k, v in value.items()) + "}"
    raise AhaError(f"a value of type {type(value).__name__} ({value!r}) cannot be passed to a command")


def flag_argv(command: str, args: dict[str, Any], where: str) -> list[str]:
    """A flag command's `args` mapping as its command line: `{model: m, data: [a, b], no_plots: true,
    task_option: {k: v}}` -> `--model m --data a b --no-plots --task-option k=v`; positional
    arguments (compare's evals, plot's run_dir, export's source) by their names."""
    parser = command_parser(command)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    positional: list[str] = []
    optional: list[str] = []
    for key, value in args.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None or dest in ("out",):
            if dest == "out":
                raise AhaError(f"{where}: args.out is set by the pipeline (each stage writes its own folder); "
                               "remove it")
            hint = closest(dest, list(actions))
            raise AhaError(f"{where}: aha {command} has no argument {key!r}" + (f" (did you mean {hint}?)" if hint
                                                                                  else "")
                           + f"; it takes {', '.join(sorted(actions))}")
        if value is None:
            continue  # null: the command's default
        values = value if isinstance(value, (list, tuple)) else [value]
        if not action.option_strings:
            positional += [str(v) for v in values]
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise AhaError(f"{where}: args.{key} is a switch: true or false, got {value!r}")
            optional += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            items = [f"{k}={format_value(v)}" for k, v in value.items()] if isinstance(value, dict) else \
                [str(v) for v in values]
            for item in items:
                optional += [flag, item]
        elif action.nargs in ("*", "+"):
            optional += [flag, *[str(v) for v in values]]
        else:
            if isinstance(value, (list, tuple, dict)):
                raise AhaError(f"{where}: args.{key} takes one value, got {value!r}")
            optional += [flag, str(value)]
    return positional + optional


# ----------------------------------------------------------------------------- resolving


def _substitute(value: Any, lookup: Any) -> Any:
    """Replace every ${...} in strings inside `value` (lists and mappings included) by lookup(ref)."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole:
            return lookup(whole.group(1).strip())
        return _REF.sub(lambda m: str(lookup(m.group(1).strip())), value)
    if isinstance(value, list):
        return [_substitute(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, lookup) for k, v in value.items()}
    return value


def load_pipeline(path: str | Path, out: str | Path | None = None, var_items: list[str] | None = None) -> Pipeline:
    """Read and resolve a pipeline: stage names, commands, references, command lines. Raises AhaError
    (one line) for the first structural problem; `check_pipeline` then checks the recipes and files."""
    path = Path(path)
    raw = read_pipeline_file(path)
    name = str(raw.get("name") or path.stem)
    if not _NAME.match(name):
        raise AhaError(f"{path}: pipeline name {name!r} must be letters, digits, _ and - (it names the run folder)")
    run_dir = Path(out) if out else Path("runs") / name
    pipeline_dir = path.parent
    declared = dict(raw.get("vars") or {})
    declared.update(parse_var_overrides(var_items or [], declared, path))

    def base_lookup(ref: str, where: str) -> Any:
        if ref == "run_dir":
            return str(run_dir)
        if ref == "pipeline_dir":
            return str(pipeline_dir)
        raise AhaError(f"{where}: ${{{ref}}} is not a reference aha knows; use ${{vars.NAME}}, "
                       "${stages.STAGE.OUTPUT}, ${run_dir} or ${pipeline_dir}")

    variables: dict[str, Any] = {}
    for key, value in declared.items():
        def var_lookup(ref: str, key: str = key) -> Any:
            if ref.startswith("vars."):
                other = ref[len("vars."):]
                if other not in variables:
                    raise AhaError(f"{path}: vars.{key} uses ${{{ref}}}, which is not a var defined above it")
                return variables[other]
            return base_lookup(ref, f"{path}: vars.{key}")
        variables[str(key)] = _substitute(value, var_lookup)

    stages: list[Stage] = []
    seen: set[str] = set()
    for i, spec in enumerate(raw["stages"]):
        where = f"{path}: stages[{i}]"
        if not isinstance(spec, dict):
            raise AhaError(f"{where} must be a mapping with name, command and recipe/set or args")
        for key in spec:
            if key not in STAGE_KEYS:
                hint = closest(str(key), list(STAGE_KEYS))
                raise AhaError(f"{where}: unknown stage key {key!r}" + (f" (did you mean {hint}?)" if hint else "")
                               + f"; a stage has {', '.join(STAGE_KEYS)}")
        sname = spec.get("name")
        if not isinstance(sname, str) or not _NAME.match(sname):
            raise AhaError(f"{where}: name {sname!r} must be letters, digits, _ and - (it names the stage's folder)")
        if sname in seen:
            raise AhaError(f"{where}: a stage named {sname!r} comes earlier; stage names must be unique")
        where = f"stage {sname!r}"
        command = spec.get("command")
        if command not in STAGE_COMMANDS:
            hint = closest(str(command), list(STAGE_COMMANDS))
            raise AhaError(f"{where}: command {command!r} is not a pipeline command" + (f" (did you mean {hint}?)" if
                                                                                         hint else "")
                           + f"; use one of {', '.join(STAGE_COMMANDS)}")
        deps: list[str] = []

        def lookup(ref: str, where: str = where, deps: list[str] = deps, i: int = i) -> Any:
            if ref.startswith("vars."):
                var = ref[len("vars."):]
                if var not in variables:
                    hint = closest(var, list(variables))
                    raise AhaError(f"{where}: ${{{ref}}} names no var" + (f" (did you mean vars.{hint}?)" if hint else "")
                                   + (f"; the pipeline's vars: {', '.join(variables)}" if variables else
                                      "; the pipeline has no vars"))
                return variables[var]
            if ref.startswith("stages."):
                parts = ref.split(".")
                if len(parts) != 3:
                    raise AhaError(f"{where}: ${{{ref}}} must look like ${{stages.STAGE.OUTPUT}}")
                _, other, key = parts
                earlier = {s.name: s for s in stages}
                if other not in earlier:
                    later = [s.get("name") for s in raw["stages"][i:] if isinstance(s, dict)]
                    if other in later:
                        raise AhaError(f"{where}: ${{{ref}}} names stage {other!r}, which runs later (or is this "
                                       "stage); a stage can only read the outputs of stages before it")
                    hint = closest(other, list(earlier))
                    raise AhaError(f"{where}: ${{{ref}}} names no stage before it" + (f" (did you mean {hint}?)" if
                                                                                    hint else ""))
                made = OUTPUTS[earlier[other].command]
                if key not in made:
                    raise AhaError(f"{where}: ${{{ref}}}: an aha {earlier[other].command} stage makes no {key!r}; "
                                   f"it makes {', '.join(made)}")
                if other not in deps:
                    deps.append(other)
                return str(earlier[other].output(key))
            return base_lookup(ref, where)

        stage_dir = run_dir / sname
        if command in RECIPE_COMMANDS:
            if "args" in spec:
                raise AhaError(f"{where}: aha {command} takes a recipe and `set` overrides, not `args`")
            recipe = spec.get("recipe")
            recipe_path = None
            if recipe is not None:
                recipe = _substitute(recipe, lookup)
                if not isinstance(recipe, str):
                    raise AhaError(f"{where}: recipe must be a file name, got {recipe!r}")
                recipe_path = Path(recipe) if Path(recipe).is_absolute() else pipeline_dir / recipe
            sets = spec.get("set") or {}
            if not isinstance(sets, dict):
                raise AhaError(f"{where}: `set` must be a mapping of dotted keys to values")
            overrides = []
            for key, value in sets.items():
                if str(key) in ("run.out_dir", "resume") or (str(key) == "run" and isinstance(value, dict)
                                                            and "out_dir" in value):
                    raise AhaError(f"{where}: set.{key} is managed by the pipeline (the stage's folder and its "
                                   "resume); remove it")
                overrides.append(f"{key}={format_value(_substitute(value, lookup))}")
            argv = ([str(recipe_path)] if recipe_path else []) + overrides + [f"run.out_dir={stage_dir}"]
            stage = Stage(sname, command, stage_dir, argv, recipe=recipe_path, overrides=overrides, deps=deps)
        else:
            if "recipe" in spec or "set" in spec:
                raise AhaError(f"{where}: aha {command} takes `args` (its flags by name), not a recipe or `set`")
            args = spec.get("args") or {}
            if not isinstance(args, dict):
                raise AhaError(f"{where}: `args` must be a mapping of argument names to values")
            args = _substitute(args, lookup)
            argv = flag_argv(command, args, where) + ["--out", str(stage_dir)]
            if command == "export":
                argv.append("--force")  # the stage's folder belongs to the pipeline (a resumed export rewrites it)
            stage = Stage(sname, command, stage_dir, argv, args=args, deps=deps)
        stages.append(stage)
        seen.add(sname)
    meta = {k: raw[k] for k in ("seed", "reproduces", "hardware", "results", "notes") if k in raw}
    return Pipeline(path, name, meta, variables, run_dir, stages, raw)


# ----------------------------------------------------------------------------- checking (no models loaded)


def _flat_paths(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _flat_paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _flat_paths(v)]
    return []


def stage_inputs(stage: Stage) -> list[tuple[str, str, str]]:
    """(key, path, kind) of every file or folder the stage reads; kind: model | data | folder.
    Loads the stage's config (recipe commands) or parses its flags: typos and bad values fail here."""
    out: list[tuple[str, str, str]] = []
    if stage.command in RECIPE_COMMANDS:
        from aha.config import load_config

        cls = _config_class(stage.command)
        cfg = load_config(cls, stage.recipe, [*stage.overrides, f"run.out_dir={stage.dir}"])
        if stage.command == "train":
            out.append(("model.path", cfg.model.path, "model"))
            for k in ("data", "test_data"):
                out += [(f"task.options.{k}", p, "data") for p in _flat_paths(cfg.task.options.get(k))]
            for j, spec in enumerate(cfg.rewards):
                if spec.options.get("model"):
                    out.append((f"rewards[{j}].options.model", str(spec.options["model"]), "model"))
        elif stage.command == "sft":
            out.append(("model.path", cfg.model.path, "model"))
            out += [("data.files", p, "data") for p in cfg.data.files]
            out += [("data.val_files", p, "data") for p in cfg.data.val_files]
            if cfg.data.task:
                out += [(f"data.task_options.{k}", p, "data")
                        for k in ("data", "test_data") for p in _flat_paths(cfg.data.task_options.get(k))]
        else:
            if cfg.teacher.kind == "model":
                out.append(("teacher.model.path", cfg.teacher.model.path, "model"))
            out += [(f"task_options.{k}", p, "data")
                    for k in ("data", "test_data") for p in _flat_paths(cfg.task_options.get(k))]
        return out
    args = command_parser(stage.command).parse_args(stage.argv)
    if stage.command == "eval":
        from aha.commands.score import parse_options
        from aha.train.config import check_task_options

        options = parse_options(args.task_option)
        if args.data:
            options["data"] = list(args.data)
        check_task_options(args.task, options, "args.task_option")
        out.append(("args.model", args.model, "model"))
        out += [("args.data", p, "data") for p in args.data or []]
        if getattr(args, "perplexity_model", None):
            out.append(("args.perplexity_model", args.perplexity_model, "model"))
    elif stage.command == "export":
        out.append(("args.source", args.source, "folder"))
    elif stage.command == "compare":
        out += [("args.evals", p, "folder") for p in args.evals]
    elif stage.command == "plot":
        out.append(("args.run_dir", args.run_dir, "folder"))
        out += [("args.results", item.partition("=")[2] or item, "data") for item in args.results]
    return out


def _config_class(command: str) -> type:
    if command == "train":
        from aha.train.config import TrainConfig

        return TrainConfig
    if command == "sft":
        from aha.train.sft import SftConfig

        return SftConfig
    from aha.train.distill import DistillConfig

    return DistillConfig


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_pipeline(p: Pipeline, selected: list[Stage] | None = None) -> list[str]:
    """Every problem of the selected stages (default: all), one line each: config keys and values,
    recipe files, model folders and data files that must exist before the run, and paths into the run
    folder that no earlier stage makes. Nothing is loaded or written."""
    from aha.models import check_model_folder
    from aha.tasks.datafiles import is_local_path

    problems: list[str] = []
    for stage in selected or p.stages:
        where = f"stage {stage.name!r} (aha {stage.command})"
        if stage.recipe is not None and not stage.recipe.is_file():
            problems.append(f"{where}: recipe {str(stage.recipe)!r} does not exist")
            continue
        try:
            inputs = stage_inputs(stage)
        except AhaError as exc:
            problems.append(f"{where}: {exc}")
            continue
        index = p.stages.index(stage)
        earlier = p.stages[:index]
        for key, path, kind in inputs:
            if not path:
                problems.append(f"{where}: {key} is empty; set it in the stage or its recipe")
                continue
            target = Path(path)
            if _inside(target, p.run_dir):
                makers = [s for s in earlier if _inside(target, s.dir)]
                if not makers:
                    later = [s.name for s in p.stages[index:] if _inside(target, s.dir)]
                    problems.append(f"{where}: {key} {path!r} lies in the run folder, but no earlier stage makes it"
                                    + (f" (stage {later[0]!r} runs later)" if later else "")
                                    + "; name an earlier stage's output as ${stages.STAGE.OUTPUT}")
                continue
            var = next((v for v, val in p.vars.items() if isinstance(val, str) and val and path.startswith(val)), None)
            fix = f" (set it with --set {var}=PATH)" if var else ""
            if kind == "model":
                # strict: "models/Qwen2.5-7B" reads like a hub name too, but a pipeline's models are
                # local folders (a hub download in the middle of a run is what the check is for)
                try:
                    check_model_folder(path)
                except AhaError as exc:
                    problems.append(f"{where}: {key}: {exc}; put the model there{fix}")
            elif kind == "data":
                if is_local_path(path) and not target.exists():
                    problems.append(f"{where}: {key}: data file {path!r} does not exist; put it there{fix}")
            elif not target.exists():
                problems.append(f"{where}: {key}: {path!r} does not exist{fix}")
    return _merge_repeats(problems)


def _merge_repeats(problems: list[str]) -> list[str]:
    """One line per distinct problem: the same missing file in four stages is one line naming them."""
    merged: dict[str, list[str]] = {}
    for line in problems:
        head, sep, rest = line.partition("): ")
        if not sep or not head.startswith("stage "):
            merged.setdefault(line, [])
            continue
        merged.setdefault(rest, []).append(head + ")")
    out = []
    for rest, heads in merged.items():
        if not heads:
            out.append(rest)
        elif len(heads) == 1:
            out.append(f"{heads[0]}: {rest}")
        else:
            out.append(f"{heads[0]} and {len(heads) - 1} more ({', '.join(h.split(chr(39))[1] for h in heads[1:])}): "
                       f"{rest}")
    return out


def stage_graph(p: Pipeline) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, command, the stages it reads), in order: the shape two pipelines must share to be twins."""
    return [(s.name, s.command, tuple(sorted(s.deps))) for s in p.stages]


def _flat_keys(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return {prefix.rstrip(".")} if prefix else set()
    out: set[str] = set()
    for k, v in data.items():
        key = f"{prefix}{k}"
        # task options and reward lists are leaves: their contents are sizes and paths
        out |= _flat_keys(v, key + ".") if isinstance(v, dict) and v and not key.endswith("options") else {key}
    return out


def stage_keys(p: Pipeline) -> dict[str, set[str]]:
    """Per stage, the setting names it fixes: its recipe's keys (dotted) plus its overrides, or its
    args; vars under the name "vars". Twins must agree on these; values (sizes, paths, steps) differ."""
    out: dict[str, set[str]] = {"vars": set(p.vars)}
    for s in p.stages:
        keys: set[str] = set()
        if s.recipe is not None:
            loaded = yaml.safe_load(s.recipe.read_text(encoding="utf-8")) or {}
            keys |= _flat_keys(loaded)
        keys |= {o.partition("=")[0] for o in s.overrides}
        keys |= {f"args.{k}" for k in s.args}
        out[s.name] = keys
    return out
