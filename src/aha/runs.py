"""Run directories, the metrics log, the human log and progress display.

Every command invocation that trains or evaluates writes one run directory:

    RUN_DIR/
      config.yaml      the fully resolved configuration
      metrics.jsonl    one JSON object per step, flushed as it is written
      run.log          the human log (what was printed, with times)
      checkpoints/     resumable checkpoints (safetensors + optimizer + RNG state)
      rollouts/        every sampled completion with its rewards and advantage
      eval/            evaluation results (json + markdown)
      plots/           PNG plots
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aha.errors import AhaError

SUBDIRS = ("checkpoints", "rollouts", "eval", "plots")


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    """runs/<command>-<YYYYmmdd-HHMMSS>, with a numeric suffix if that exists already."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _jsonable(value: Any) -> Any:
    """Numbers from torch/numpy become Python floats; NaN and inf become null (valid JSON)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def append_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Append records to a JSONL file, flushed and fsynced: nothing is lost if the run dies next."""
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(_jsonable(record), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSONL file with `records` atomically: they go to a temporary file in the same folder,
    which is fsynced and renamed over `path`, so a kill at any moment leaves the old file or the new
    one, never a truncated mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(_jsonable(record), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL log; a bad line raises AhaError naming the file and line. A torn last line
    (a run killed mid-write) is skipped."""
    from aha.jsonl import iter_json_objects

    return [rec for _, rec in iter_json_objects(path, allow_torn_tail=True)]


def truncate_metrics(path: str | Path, last_step: int) -> float:
    """Drop the metrics lines written after `last_step` (a resumed run redoes those steps), and a torn
    last line. The file is rewritten through a temporary file and `os.replace`, so a kill at any moment
    leaves either the old file or the new one. Returns the `time` of the last line kept (0.0 if none),
    for a resumed run's clock to continue from."""
    path = Path(path)
    if not path.is_file():
        return 0.0
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    write_jsonl(path, rows)
    times = [r["time"] for r in rows if isinstance(r.get("time"), (int, float))]
    return float(times[-1]) if times else 0.0


class MetricsWriter:
    """Writes `metrics.jsonl`: one object per step with "step", "time" (seconds since start) and the
    figures given. Optionally mirrors scalars to TensorBoard."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, wandb_project: str = "",
                 run_name: str = "", config: dict[str, Any] | None = None):
        self.path = Path(path)
        self.start = time.time()
        self._tb = None
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as exc:
                raise AhaError("Weights & Biases logging needs the wandb package: pip install wandb "
                               "(or leave run.wandb_project empty)") from exc
            self._wandb = wandb.init(project=wandb_project, name=run_name or None, config=config or {})
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise AhaError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from exc
            self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"step": step, "time": round(time.time() - self.start, 3), **metrics}
        append_jsonl(self.path, [record])
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)
        return record

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class RunDir:
    """A run directory with its metrics writer and human log.

    `RunDir.create(out_dir, command)` makes a new one (refusing to overwrite a directory that
    already holds a run unless `resume=True`).
    """

    def __init__(self, path: Path, tensorboard: bool = False, wandb_project: str = ""):
        self.path = path
        for name in SUBDIRS:
            (path / name).mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsWriter(path / "metrics.jsonl", path / "tensorboard" if tensorboard else None,
                                     wandb_project=wandb_project, run_name=path.name)
        self.log = _make_logger(path / "run.log")

    @classmethod
    def create(cls, out_dir: str | Path | None, command: str, resume: bool = False,
               tensorboard: bool = False, wandb_project: str = "") -> RunDir:
        path = Path(out_dir) if out_dir else default_run_dir(command)
        if path.exists() and not resume and (path / "metrics.jsonl").exists():
            raise AhaError(f"{path} already holds a run; choose another output folder or resume it")
        fresh = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            if fresh:
                _CREATED.append(path)  # see remove_unstarted_runs
            return cls(path, tensorboard=tensorboard, wandb_project=wandb_project)
        except OSError as exc:
            raise AhaError(f"cannot write the run folder {path}: {exc.strerror or exc}; choose another output "
                           "folder (run.out_dir) or fix its permissions") from None

    def write_config(self, cfg: Any) -> Path:
        from aha.config import save_config

        out = self.path / "config.yaml"
        save_config(cfg, out)
        return out

    def subdir(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p


# run folders this process created (RunDir.create), for remove_unstarted_runs
_CREATED: list[Path] = []


@contextmanager
def remove_unstarted_runs() -> Iterator[None]:
    """When the block raises (a bad model folder, a missing file, Ctrl-C while loading), remove the run
    folders it created that hold no metrics line and no checkpoint yet: a failed start leaves no empty
    runs/train-<date> behind. A folder that existed before, or that holds results, is kept."""
    first = len(_CREATED)
    try:
        yield
    except BaseException:
        for path in _CREATED[first:]:
            metrics = path / "metrics.jsonl"
            if (metrics.is_file() and metrics.stat().st_size) or any((path / "checkpoints").glob("step_*")):
                continue
            _close_logger(path / "run.log")
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        del _CREATED[first:]


def _close_logger(path: Path) -> None:
    logger = logging.getLogger(f"aha.run.{path}")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def _make_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"aha.run.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(file_handler)
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
    return logger


class Progress:
    """A progress bar with ETA and live figures on a terminal; silent when output is redirected.

    Use `update(advance, **figures)`; figures (e.g. reward=0.41) show beside the bar.
    """

    def __init__(self, total: int | None, description: str, enabled: bool = True):
        self.total = total
        self.description = description
        self._bar = None
        self._task = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[figures]}"),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, figures="")

    def update(self, advance: int = 1, **figures: Any) -> None:
        if self._bar is None:
            return
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        self._bar.update(self._task, advance=advance, figures=text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def progress(total: int | None, description: str, enabled: bool = True) -> Iterator[Progress]:
    bar = Progress(total, description, enabled)
    try:
        yield bar
    finally:
        bar.close()
