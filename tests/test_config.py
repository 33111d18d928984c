"""Config: recipe + overrides resolve as documented; typos and bad values give clear messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from aha.config import (
    LoraConfig,
    ModelConfig,
    format_help,
    load_config,
    option,
    parse_override,
    save_config,
    section,
)
from aha.errors import AhaError


@dataclass
class Rollout:
    temperature: float = option(1.0, "sampling temperature", min=0.0)
    max_new_tokens: int = option(256, "cap on new tokens", min=1)
    stop: list[str] = option([], "stop strings")


@dataclass
class Reward:
    name: str = option("format", "reward name")
    weight: float = option(1.0, "weight")


@dataclass
class Demo:
    model: ModelConfig = section(ModelConfig)
    lora: LoraConfig = section(LoraConfig)
    rollout: Rollout = section(Rollout)
    algo: str = option("grpo", "estimator", choices=["grpo", "rloo"])
    rewards: list[Reward] = field(default_factory=list)
    lr: float = option(1e-5, "learning rate", min=0.0)
    prompts_per_step: int = option(8, "prompts per step", min=1)
    samples_per_prompt: int = option(8, "samples per prompt", min=1)
    micro_batch: int = option(16, "micro batch", min=1)

    def validate(self) -> None:
        if (self.prompts_per_step * self.samples_per_prompt) % self.micro_batch:
            raise ValueError(
                f"rollouts per step ({self.prompts_per_step * self.samples_per_prompt}) must be divisible by "
                f"micro_batch ({self.micro_batch})"
            )


@dataclass
class Optim:
    lr: float = option(1e-5, "peak learning rate", min=0.0)
    warmup_steps: int = option(0, "warmup", min=0)
    beta2: float = option(0.999, "AdamW beta2")


def write(tmp_path, text):
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_defaults_without_recipe():
    cfg = load_config(Demo)
    assert cfg.rollout.temperature == 1.0 and cfg.algo == "grpo" and cfg.lora.r == 16


def test_recipe_then_overrides(tmp_path):
    recipe = write(tmp_path, "rollout:\n  temperature: 0.7\nlr: 1e-4\nrewards:\n  - {name: logic_rl, weight: 2}\n")
    cfg = load_config(Demo, recipe, ["rollout.max_new_tokens=64", "lora.enabled=true", "rollout.stop=[</answer>]"])
    assert cfg.rollout.temperature == 0.7  # from the recipe
    assert cfg.lr == 1e-4  # YAML reads 1e-4 as a string; coerced to float
    assert cfg.rollout.max_new_tokens == 64  # override
    assert cfg.lora.enabled is True
    assert cfg.rollout.stop == ["</answer>"]
    assert cfg.rewards == [Reward("logic_rl", 2.0)]


def test_override_beats_recipe(tmp_path):
    recipe = write(tmp_path, "rollout:\n  temperature: 0.7\n")
    assert load_config(Demo, recipe, ["rollout.temperature=0.3"]).rollout.temperature == 0.3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.temprature=0.5"], "did you mean rollout.temperature?"),  # typo in a leaf
        (["rolout.temperature=0.5"], "did you mean rollout"),  # typo in a section
        (["rollout.temperature=hot"], "rollout.temperature must be a number"),  # wrong type
        (["rollout.temperature=-1"], "rollout.temperature must be >= 0.0"),  # out of range
        (["rollout.max_new_tokens=1.5"], "rollout.max_new_tokens must be an integer"),  # not an int
        (["algo=ppo"], "algo must be one of ['grpo', 'rloo']"),  # not a choice
        (["lora.enabled=maybe"], "lora.enabled must be true or false"),  # not a bool
        (["micro_batch=5"], "must be divisible by micro_batch (5)"),  # derived value check
        (["noequals"], "must look like key.sub=value"),  # malformed override
        (["rewards=[{name: x, wieght: 1}]"], "unknown config key 'rewards[0].wieght'"),  # typo in a list item
    ],
)
def test_bad_input_is_named(overrides, message):
    with pytest.raises(AhaError) as err:
        load_config(Demo, None, overrides)
    assert message in str(err.value)


def test_recipe_errors(tmp_path):
    with pytest.raises(AhaError, match="does not exist"):
        load_config(Demo, tmp_path / "missing.yaml")
    with pytest.raises(AhaError, match="not valid YAML"):
        load_config(Demo, write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(AhaError, match="must be a mapping"):
        load_config(Demo, write(tmp_path, "- 1\n- 2\n"))


def test_parse_override_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("path=") == ("path", "")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Demo, None, ["rollout.temperature=0.5", "rewards=[{name: a, weight: 0.5}]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(Demo, tmp_path / "config.yaml")
    assert again == cfg


def test_help_lists_every_key_with_its_doc():
    text = format_help(Demo)
    assert "rollout.temperature (float, default 1.0)" in text
    assert "sampling temperature" in text
    assert "lora.target_modules" in text
    assert "One of: grpo, rloo" in text


@dataclass
class Moved:
    """A config whose `lr` and `warmup` moved into a section with its own defaults."""

    RENAMED: ClassVar[dict[str, str]] = {"lr": "optim.lr", "warmup": "optim.warmup_steps"}

    optim: Optim = section(Optim, "optimizer", lr=1e-3, warmup_steps=50)
    steps: int = option(10, "steps")


def test_a_renamed_key_names_its_new_place(tmp_path):
    with pytest.raises(AhaError) as err:
        load_config(Moved, None, ["lr=3e-3"])
    assert "'lr' is now 'optim.lr'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AhaError, match="'warmup' is now 'optim.warmup_steps'"):
        load_config(Moved, write(tmp_path, "steps: 5\nwarmup: 3\n"))
    with pytest.raises(AhaError, match="did you mean steps"):  # an unknown key that never existed: the usual hint
        load_config(Moved, None, ["stepz=3"])


def test_a_section_keeps_its_own_defaults_for_keys_left_out(tmp_path):
    assert load_config(Moved).optim == Optim(lr=1e-3, warmup_steps=50)
    # setting one key of the section keeps the section's other defaults, not the class's
    assert load_config(Moved, None, ["optim.lr=2e-3"]).optim == Optim(lr=2e-3, warmup_steps=50, beta2=0.999)
    assert load_config(Moved, write(tmp_path, "optim: {warmup_steps: 0}\n")).optim == Optim(lr=1e-3, warmup_steps=0)
    assert Optim().lr == 1e-5  # the shared class is untouched
    text = format_help(Moved)
    assert "optim.lr (float, default 0.001)" in text and "optim.warmup_steps (int, default 50)" in text
    with pytest.raises(TypeError):
        section(Optim, "a misspelt default", lr_rate=1.0)
