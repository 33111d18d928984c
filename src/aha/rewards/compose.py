"""Weighted composition of rewards, with start-up checks of the recipe's reward list.

    total_i = sum_k weight_k * r_k(i)        a None r_k(i) (reward not applicable) contributes 0

A recipe lists its rewards as `RewardSpec`s (name, weight, options). `check_reward_specs` validates
them before anything heavy loads: unknown names list the valid ones, unknown option keywords list
the reward's options (read from its signature), and a reward may add its own value checks through
a `check_options(**options)` attribute.

A reward that raises (other than `AhaError`, a user-fixable problem that stops the run with its
message) is a bug in that reward, but one bug must not end a long run: the composer logs a warning
the first time, scores that component 0 for the whole batch and counts the entries it replaced in
`reward/<name>/errors`. Entries that are not finite numbers are replaced by 0 and counted the same
way; a reward may also return a plain list of scores instead of a `RewardOutput`.

Metrics of one call (component statistics use the raw, unweighted scores of applicable entries;
std is the population std):
    reward/<name>/mean, reward/<name>/std    over entries where the reward applied (left out if none)
    reward/<name>/applicable                 fraction of entries with a score
    reward/<name>/errors                     entries scored 0 because of a reward error
    reward/<name>/seconds                    time spent in the reward
    reward/<name>/<key>                      every metric the reward returned
    reward/total/mean, reward/total/std      over the weighted totals

Stateful rewards (objects with `state_dict()` / `load_state_dict()`, such as reflection_density's
calibration) get their own instance per recipe entry when they offer `fresh()`, and their state is
saved and restored with the composer's. When a recipe names the same reward twice, the second
component is called `<name>_2`, and so on.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aha.config import option
from aha.errors import AhaError
from aha.rewards.base import REWARDS, RewardBatch, RewardOutput

log = logging.getLogger("aha.rewards")


@dataclass
class RewardSpec:
    """One reward term of the total."""

    name: str = option("correctness", "registered reward name (see aha.rewards) or module:function")
    weight: float = option(1.0, "multiplier of this reward in the total")
    options: dict[str, Any] = option({}, "keyword options passed to the reward function")


def _fields(spec: Any) -> tuple[Any, Any, Any]:
    """(name, weight, options) of a RewardSpec, any object with those attributes, or a mapping."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "weight", "options"}
        if unknown:
            raise AhaError(f"reward entry {dict(spec)!r} has unknown keys {sorted(unknown)}; "
                           "valid keys: name, weight, options")
        return spec.get("name"), spec.get("weight", 1.0), spec.get("options", {})
    return getattr(spec, "name", None), getattr(spec, "weight", 1.0), getattr(spec, "options", {})


def reward_options(fn: Any) -> tuple[list[str], list[str], bool]:
    """(option names, required option names, accepts any keyword) of a reward, from its signature.

    The first parameter (the batch) is not an option.
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [], [], True
    params = params[1:]
    names, required, var_kw = [], [], False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return names, required, var_kw


def _resolved(fn: Any, options: dict[str, Any], policy_path: str | None) -> dict[str, Any]:
    opts = dict(options)
    if getattr(fn, "accepts_policy_path", False) and opts.get("model") is None and policy_path:
        opts["model"] = str(policy_path)
    return opts


def check_reward_specs(specs: Iterable[Any], policy_path: str | None = None) -> None:
    """Validate a recipe's reward list cheaply; raise AhaError naming the problem and the valid choices.

    specs: RewardSpec-like entries (name, weight, options) or mappings with those keys.
    policy_path: the policy's model folder, passed to rewards that accept it (likelihood's scorer).
    """
    import aha.rewards  # noqa: F401  (registers the built-in rewards)

    specs = list(specs)
    if not specs:
        raise AhaError(f"no rewards listed; valid names: {', '.join(REWARDS.names())}")
    for k, spec in enumerate(specs):
        name, weight, options = _fields(spec)
        where = f"rewards[{k}]"
        if not isinstance(name, str) or not name:
            raise AhaError(f"{where}: name must be a reward name; valid names: {', '.join(REWARDS.names())}")
        fn = REWARDS.get(name)  # AhaError listing the valid names
        if not callable(fn):
            raise AhaError(f"{where}: {name!r} is not callable")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise AhaError(f"{where} ({name}): weight must be a finite number, got {weight!r}")
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise AhaError(f"{where} ({name}): options must be a mapping of keyword to value, "
                           f"got {type(options).__name__}")
        valid, required, any_kw = reward_options(fn)
        if not any_kw:
            for key in options:
                if key not in valid:
                    raise AhaError(f"{where}: reward {name!r} has no option {key!r}; valid options: "
                                   f"{', '.join(valid) if valid else '(none)'}")
        opts = _resolved(fn, dict(options), policy_path)
        missing = [r for r in required if r not in opts]
        if missing:
            raise AhaError(f"{where}: reward {name!r} needs option(s) {', '.join(missing)}")
        check = getattr(fn, "check_options", None)
        if callable(check):
            try:
                check(**opts)
            except (TypeError, ValueError) as exc:
                raise AhaError(f"{where}: bad option value for reward {name!r}: {exc}") from exc


@dataclass
class _Entry:
    label: str
    name: str
    fn: Any
    weight: float
    options: dict[str, Any]
    errors: int = 0
    warned: bool = False


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RewardComposer:
    """The weighted sum of a recipe's rewards, checked at construction and callable once per batch.

    specs: RewardSpec-like entries (see `check_reward_specs`).
    policy_path: the policy's model folder, the default scorer of rewards that accept it.
    """

    def __init__(self, specs: Iterable[Any], policy_path: str | None = None):
        specs = list(specs)
        check_reward_specs(specs, policy_path)
        self.entries: list[_Entry] = []
        seen: dict[str, int] = {}
        for spec in specs:
            name, weight, options = _fields(spec)
            fn = REWARDS.get(name)
            if hasattr(fn, "fresh"):
                fn = fn.fresh()
            seen[name] = seen.get(name, 0) + 1
            label = name if seen[name] == 1 else f"{name}_{seen[name]}"
            self.entries.append(_Entry(label, name, fn, float(weight), _resolved(fn, dict(options or {}),
                                                                                 policy_path)))

    @property
    def names(self) -> list[str]:
        """Component names, in recipe order."""
        return [e.label for e in self.entries]

    def _run(self, entry: _Entry, batch: RewardBatch) -> tuple[list[float | None], dict[str, float], int]:
        """(scores, the reward's metrics, entries replaced by 0) for one component."""
        n = len(batch)
        try:
            out = entry.fn(batch, **entry.options)
            if isinstance(out, RewardOutput):
                raw, extra = list(out.scores), dict(out.metrics)
            elif isinstance(out, (list, tuple)):
                raw, extra = list(out), {}
            else:
                raise TypeError(f"returned {type(out).__name__}, expected RewardOutput")
            if len(raw) != n:
                raise ValueError(f"returned {len(raw)} scores for {n} completions")
        except AhaError:
            raise
        except Exception as exc:  # a bug in one reward must not end the run
            self._warn(entry, f"{type(exc).__name__}: {exc}")
            return [0.0] * n, {}, n
        scores: list[float | None] = []
        bad = 0
        for value in raw:
            if value is None:
                scores.append(None)
            elif _finite(value):
                scores.append(float(value))
            else:
                bad += 1
                scores.append(0.0)
        if bad:
            self._warn(entry, f"{bad} score(s) were not finite numbers")
        metrics = {k: float(v) for k, v in extra.items() if _finite(v)}
        return scores, metrics, bad

    def _warn(self, entry: _Entry, message: str) -> None:
        if not entry.warned:
            entry.warned = True
            log.warning(f"reward {entry.label!r} failed ({message}); it scores 0 where it failed "
                        f"(counted in reward/{entry.label}/errors; later failures are not logged)")

    def __call__(self, batch: RewardBatch) -> tuple[list[float], dict[str, list[float | None]], dict[str, float]]:
        """Score a batch: (weighted totals, raw scores per component, metrics)."""
        n = len(batch)
        totals = [0.0] * n
        components: dict[str, list[float | None]] = {}
        metrics: dict[str, float] = {}
        for entry in self.entries:
            t0 = time.perf_counter()
            scores, extra, errors = self._run(entry, batch)
            seconds = time.perf_counter() - t0
            entry.errors += errors
            components[entry.label] = scores
            for i, s in enumerate(scores):
                if s is not None:
                    totals[i] += entry.weight * s
            prefix = f"reward/{entry.label}/"
            applied = [s for s in scores if s is not None]
            if applied:
                metrics[prefix + "mean"] = sum(applied) / len(applied)
                metrics[prefix + "std"] = _std(applied)
            metrics[prefix + "applicable"] = len(applied) / n if n else 0.0
            metrics[prefix + "errors"] = float(errors)
            metrics[prefix + "seconds"] = seconds
            for key, value in extra.items():
                metrics.setdefault(prefix + key, value)
        if n:
            metrics["reward/total/mean"] = sum(totals) / n
            metrics["reward/total/std"] = _std(totals)
        return totals, components, metrics

    def state_dict(self) -> dict[str, Any]:
        """State of the stateful components, by component name."""
        return {e.label: e.fn.state_dict() for e in self.entries if hasattr(e.fn, "state_dict")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (components missing from `state` keep their state)."""
        for e in self.entries:
            if e.label in state and hasattr(e.fn, "load_state_dict"):
                e.fn.load_state_dict(state[e.label])


def compose_rewards(specs: Iterable[Any], batch: RewardBatch, policy_path: str | None = None
                    ) -> tuple[list[float], dict[str, list[float | None]], dict[str, float]]:
    """One-shot composition: (weighted totals, raw scores per component, metrics) for one batch.

    specs: RewardSpec-like entries; batch: the completions to score; policy_path: see RewardComposer.
    Stateful rewards start fresh on every call (reflection_density then only calibrates unless
    given `d_q`); a training loop keeps one `RewardComposer` instead.
    """
    return RewardComposer(specs, policy_path)(batch)
