"""Typed configuration: dataclass trees loaded from a YAML recipe plus dotted command-line overrides.

Every entry point (train, sft, eval, ...) has one dataclass tree. Fields are declared with `option`
so each carries its documentation and, where it matters, its allowed values or range:

    @dataclass
    class RolloutConfig:
        temperature: float = option(1.0, "sampling temperature; 0 is greedy", min=0.0)

`load_config(TrainConfig, "recipes/x.yaml", ["rollout.temperature=0.7"])` reads the recipe, applies
the overrides (values parsed as YAML scalars, so `true`, `3`, `1e-4`, `[a, b]` work), checks every
key and type before anything heavy is loaded, and runs each dataclass's `validate()` for derived
values. Every problem raises `AhaError` naming the dotted key and, for a typo, the closest valid
key ("did you mean rollout.temperature?"). A key that moved is listed in the dataclass's `RENAMED`
class attribute (`{"lr": "optim.lr"}`, relative to that dataclass), and using the old name fails
with "'lr' is now 'optim.lr'".
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from aha.errors import AhaError
from aha.registry import closest

C = TypeVar("C")
_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    choices: list[Any] | None = None,
    registry: Any = None,
    min: float | None = None,
    max: float | None = None,
    factory: Any = _MISSING,
    finite: bool = True,
) -> Any:
    """A documented dataclass field. `choices`, `min` and `max` are checked when a config loads.

    registry: an `aha.registry.Registry` whose names the value must be (or a `module:attribute`
    path it can import); the help lists its names, read from the registry, so it cannot drift.
    finite: a float field (or a list/dict of floats) rejects NaN and +-inf unless this is False
    (NaN passes every `<` comparison, so min/max alone cannot catch it).
    """
    meta = {"help": help, "choices": choices, "registry": registry, "min": min, "max": max, "finite": finite}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        value = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str = "", **defaults: Any) -> Any:
    """A nested config dataclass field whose default is `cls(**defaults)`.

    `defaults` give this section its own defaults (e.g. SFT's learning rate in the shared OptimConfig);
    keys a recipe leaves out keep them."""
    cls(**defaults)  # a misspelt default fails at import, not at the first load
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={"help": help})


# ----------------------------------------------------------------------------- loading


def load_config(cls: type[C], recipe: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build `cls` from a YAML recipe (optional) and `key.sub=value` overrides.

    Raises AhaError for a missing/unparseable recipe, an unknown key, a wrong type or a bad value.
    """
    data: dict[str, Any] = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise AhaError(f"recipe {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise AhaError(f"recipe {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except yaml.YAMLError as exc:
            # one line: the YAML error's own text spans several lines (mark, snippet)
            raise AhaError(f"recipe {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
        except RecursionError:
            raise AhaError(f"recipe {str(path)!r} is nested too deeply to read; a recipe is a flat mapping of "
                           "sections") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise AhaError(f"recipe {str(path)!r} must be a mapping of keys to values, not {type(loaded).__name__}")
        data = loaded
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(cls, data)


def parse_override(item: str) -> tuple[str, Any]:
    """`"a.b=3"` -> `("a.b", 3)`; the value is read as a YAML scalar or flow collection."""
    if "=" not in item:
        raise AhaError(f"override {item!r} must look like key.sub=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise AhaError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set a dotted key in a nested dict (creating intermediate mappings)."""
    key, value = parse_override(item)
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[C], data: Any, prefix: str = "", base: Any = None) -> C:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges.

    base: an instance of `cls` whose values stand in for keys the mapping leaves out (a section's own
    defaults); without it they are the class defaults."""
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AhaError(f"{where} must be a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    renamed = getattr(cls, "RENAMED", {})
    for key in data:
        if key not in known and key in renamed:
            raise AhaError(f"config key {prefix + str(key)!r} is now {prefix + renamed[key]!r}; "
                           "rename it in the recipe or override")
        if key not in known:
            valid = [prefix + k for k in known]
            full_valid = list(all_keys(cls, prefix))
            hint = closest(prefix + str(key), full_valid) or closest(prefix + str(key), valid)
            msg = f"unknown config key {prefix + str(key)!r}"
            if hint:
                msg += f" (did you mean {hint}?)"
            raise AhaError(msg + "; run with --help-config to list every key")
    kwargs = {}
    for name, fld in known.items():
        if name not in data:
            continue
        key = prefix + name
        meta = fld.metadata
        value = _coerce(hints[name], data[name], key, _default(fld), finite=meta.get("finite", True))
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise AhaError(f"{key} must be one of {meta['choices']}, got {_show(value)}")
        if meta.get("registry") is not None:
            try:
                meta["registry"].get(value)
            except AhaError as exc:
                raise AhaError(f"{key}: {exc}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("min") is not None and value < meta["min"]:
                raise AhaError(f"{key} must be >= {meta['min']}, got {value}")
            if meta.get("max") is not None and value > meta["max"]:
                raise AhaError(f"{key} must be <= {meta['max']}, got {value}")
        kwargs[name] = value
    obj = dataclasses.replace(base, **kwargs) if isinstance(base, cls) else cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise AhaError(f"{where}: {exc}") from exc
    return obj


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _default(fld: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for a factory); _MISSING when it has none."""
    if fld.default is not _MISSING:
        return fld.default
    if fld.default_factory is not _MISSING:
        return fld.default_factory()
    return _MISSING


def _coerce(tp: Any, value: Any, key: str, default: Any = _MISSING, finite: bool = True) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, default, finite)
            except AhaError as exc:
                errors.append(str(exc))
        raise AhaError(errors[0] if len(errors) == 1 else f"{key}: {_show(value)} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise AhaError(f"{key} must be one of {list(args)}, got {_show(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".", default if isinstance(default, tp) else None)
    if origin in (list, tuple):
        if isinstance(value, str) and tp is not str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}[{i}]", finite=finite) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise AhaError(f"{key} must be a mapping, got {_show(value)}")
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(inner, v, f"{key}.{k}", finite=finite) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise AhaError(f"{key} must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads "1e3" as a string
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise AhaError(f"{key} must be an integer, got {_show(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)  # YAML reads "1e-4" as a string
            except ValueError:
                pass
        if number is None:
            raise AhaError(f"{key} must be a number, got {_show(value)}")
        if finite and not math.isfinite(number):
            usual = f" (the default is {default})" if isinstance(default, (int, float)) else ""
            raise AhaError(f"{key} must be a finite number, got {number}; set a number{usual}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise AhaError(f"{key} must be a string, got {_show(value)}")
    return value


def check_call_options(func: Any, options: dict[str, Any], key: str, what: str) -> None:
    """Check keyword `options` against `func`'s signature (a class checks its __init__) before it is
    called: an unknown name, or a value that cannot be the parameter's simple annotated type (int,
    float, bool, str, lists of them), raises AhaError naming `key.name`. `what` names the callee in
    messages ("task 'knights-knaves'"). Parameters without an annotation, or with one this loader
    does not know, are left to the callee."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    params = {n: p for n, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    try:
        hints = typing.get_type_hints(func.__init__ if isinstance(func, type) else func)
    except Exception:  # noqa: BLE001 - an annotation this interpreter cannot evaluate: skip type checks
        hints = {}
    def full(name: str) -> str:  # "task.options.count", or "--task-option count" for a command-line flag
        return f"{key} {name}" if key.startswith("-") else f"{key}.{name}"

    for name, value in options.items():
        if name not in params:
            if takes_any:
                continue
            hint = closest(name, list(params))
            msg = f"unknown option {full(name)} of {what}"
            if hint:
                msg += f" (did you mean {full(hint)}?)"
            raise AhaError(msg + f"; its options are: {', '.join(params) or 'none'}")
        tp = hints.get(name)
        if tp is None or value is None:
            continue
        if _simple_type(tp):
            _coerce(tp, value, full(name), finite=False)  # raises "KEY must be an integer, got ..."


def check_finite(value: Any, key: str) -> None:
    """AhaError naming the dotted key of the first NaN or +-inf float inside `value` (free-form options
    such as task.options and rewards[i].options, which no annotation types)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise AhaError(f"{key} must be a finite number, got {value}; set a number")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{key}[{i}]")


def _simple_type(tp: Any) -> bool:
    """Whether `_coerce` can judge a value of annotation `tp` (scalars, lists and unions of them)."""
    if tp in (int, float, bool, str, type(None)):
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return all(_simple_type(a) for a in typing.get_args(tp))
    if origin is list:
        return all(_simple_type(a) for a in typing.get_args(tp))
    return False


# ----------------------------------------------------------------------------- introspection


def all_keys(cls: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config tree (sections and leaves)."""
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        tp = hints[fld.name]
        yield prefix + fld.name
        if dataclasses.is_dataclass(tp):
            yield from all_keys(tp, prefix + fld.name + ".")


def describe(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every leaf of a config tree; used by `--help-config`.

    instance: the section's default value when it has its own defaults (see `section`)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        tp = hints[fld.name]
        default = getattr(instance, fld.name) if instance is not None else _default(fld)
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, prefix + fld.name + ".", default if isinstance(default, tp) else None))
            continue
        if default is _MISSING:
            default = "(required)"
        help_text = fld.metadata.get("help", "")
        if fld.metadata.get("choices"):
            help_text += f" One of: {', '.join(map(str, fld.metadata['choices']))}."
        if fld.metadata.get("registry") is not None:
            help_text += f" One of: {', '.join(fld.metadata['registry'].names())}, or module:function."
        rows.append((prefix + fld.name, _type_name(tp), repr(default), help_text))
    return rows


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def format_help(cls: type) -> str:
    """A plain-text listing of every key with its type, default and documentation."""
    lines = []
    for key, tp, default, help_text in describe(cls):
        lines.append(f"{key} ({tp}, default {default})")
        if help_text:
            lines.append(f"    {help_text}")
    return "\n".join(lines)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------- shared sections


@dataclasses.dataclass
class ModelConfig:
    """Which model to load and where to put it."""

    path: str = option("", "local Hugging Face model folder (a full model or a LoRA adapter folder); "
                       "a hub name works only where a network exists")
    device: str = option("auto", "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'")
    dtype: str = option("auto", "'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'bfloat16' or 'float16'",
                        choices=["auto", "float32", "bfloat16", "float16"])
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")


@dataclasses.dataclass
class LoraConfig:
    """LoRA adapter settings (peft). With LoRA the reference policy is the base with the adapter off."""

    enabled: bool = option(False, "train a LoRA adapter instead of all weights")
    r: int = option(16, "adapter rank", min=1)
    alpha: float = option(32.0, "scaling numerator: the update is scaled by alpha / r", min=0.0)
    dropout: float = option(0.05, "dropout on the adapter input", min=0.0, max=1.0)
    target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "names of the linear modules that get an adapter ('all-linear' for every linear layer)")


@dataclasses.dataclass
class RunConfig:
    """Where a run writes and how it logs."""

    out_dir: str = option("", "run directory; empty means runs/<command>-<date>-<time>")
    seed: int = option(0, "seed for data order, initialisation and sampling")
    log_every: int = option(1, "write a metrics line every N steps", min=1)
    progress: bool = option(True, "show a progress bar when the output is a terminal")
    tensorboard: bool = option(False, "also log scalars to TensorBoard (needs `pip install tensorboard`)")
    wandb_project: str = option("", "also log to this Weights & Biases project (needs `pip install wandb`); "
                                "empty is off")
