"""Every shipped recipe loads, and its rewards and task options are valid, before any model loads."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from aha.config import load_config
from aha.rewards.compose import check_reward_specs
from aha.tasks.base import TASKS
from aha.train.config import TrainConfig
from aha.train.distill import DistillConfig
from aha.train.sft import SftConfig

# single-command recipes; pipelines (a `stages:` list) are checked in test_pipeline.py
RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").glob("*.yaml")
                 if "stages" not in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_is_valid(path):
    import aha.tasks  # noqa: F401

    raw = yaml.safe_load(path.read_text())
    cls = DistillConfig if "teacher" in raw else TrainConfig if "rewards" in raw or "rollout" in raw else SftConfig
    cfg = load_config(cls, path)
    if cls is TrainConfig:
        check_reward_specs(cfg.rewards, policy_path=cfg.model.path)
        name, options = cfg.task.name, cfg.task.options
    elif cls is DistillConfig:
        name, options = cfg.task, cfg.task_options
    else:
        name, options = cfg.data.task, cfg.data.task_options
    if name:
        params = inspect.signature(TASKS.get(name)).parameters
        assert set(options) <= set(params), f"unknown task options {set(options) - set(params)}"


def test_there_are_recipes():
    assert len(RECIPES) >= 5
