"""Stopping a training loop at a step boundary on Ctrl-C or SIGTERM.

A checkpoint must hold a state that some step boundary really had. An interrupt in the middle of a
step (after an optimizer update, during the reward's calibration, ...) leaves the live state between
two boundaries, so the loops do not save it: the first Ctrl-C or SIGTERM (what SLURM and other
schedulers send before killing a job) asks the loop to finish the step it is in, write a checkpoint
and stop; a second one stops at once, and the newest checkpoint already on disk stays the one a
resume starts from.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class GracefulStop:
    """Context manager: `requested` names the signal once one arrived (None before).

    Signal handlers can only be installed in the main thread; elsewhere (a notebook's worker thread)
    this does nothing and Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self, log: Any = print):
        self.log = log
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {name}")
        self.requested = name
        self.log(f"{name}: stopping after this step with a checkpoint ({name} again to stop now, keeping the "
                 "newest checkpoint on disk)")
