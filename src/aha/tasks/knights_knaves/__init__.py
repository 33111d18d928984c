"""Knights and Knaves: statement logic and exact solver, generator, English rendering, teacher traces,
file loader, strict verifier, and the "knights-knaves" task.

Importing this package registers the task.
"""

from aha.tasks.knights_knaves.puzzle import Puzzle
from aha.tasks.knights_knaves.task import SYSTEM_PROMPT, KnightsKnavesTask

__all__ = ["SYSTEM_PROMPT", "KnightsKnavesTask", "Puzzle"]
