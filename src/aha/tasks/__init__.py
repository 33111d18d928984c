"""Tasks: examples plus verifiers. Importing this package registers the built-in tasks."""

from aha.tasks.base import TASKS, Example, Task, Verdict, get_task

__all__ = ["TASKS", "Example", "Task", "Verdict", "get_task"]
