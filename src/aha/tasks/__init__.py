"""Tasks: examples plus verifiers. Importing this package registers the built-in tasks."""

import aha.tasks.knights_knaves  # noqa: F401  (registers "knights-knaves")
from aha.tasks.base import TASKS, Example, Task, Verdict, get_task

__all__ = ["TASKS", "Example", "Task", "Verdict", "get_task"]
import aha.tasks.math  # noqa: E402,F401  (registers gsm8k, math, aime, amc, multiple-choice, arithmetic)
