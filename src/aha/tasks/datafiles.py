"""Reading data sources into rows: one function, `read_rows`, for every task and command.

A source is one of:

- a `.jsonl` / `.ndjson` file: read by aha.jsonl, so an error names the line (and a string holding
  U+2028 stays one record);
- a `.json` file: a list of records, or an object holding one under "data", "examples" or "rows";
- a `.parquet`, `.csv` or `.arrow` file, read with the `datasets` library;
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with
  `datasets.load_from_disk`);
- a Hugging Face hub-cache snapshot folder (`.../datasets--org--name/snapshots/<hash>`, or the
  `datasets--org--name` folder itself, whose newest snapshot is used) or any folder of data files:
  read offline with `datasets.load_dataset(folder, config)`;
- otherwise a `datasets` hub name (needs the network or a warm cache).

A source with several splits serves the requested one (an error lists those it has); a source with
one split, and every single file, serves every split. Every failure is an AhaError naming the source.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.errors import AhaError
from aha.jsonl import iter_json_objects, read_text

JSONL_SUFFIXES = (".jsonl", ".ndjson")
DATASETS_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
FILE_SUFFIXES = (*JSONL_SUFFIXES, ".json", *DATASETS_SUFFIXES)


@dataclass
class RawRecord:
    """One row as read from a source, with where it came from (for error messages)."""

    data: dict[str, Any]
    source: str
    position: int  # 1-based line of a jsonl file, or record number elsewhere
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.source}, {self.unit} {self.position}"


def is_local_path(name: str) -> bool:
    """True when `name` names a file or folder (it exists, has a data-file suffix, or looks like a path)."""
    p = Path(name).expanduser()
    return p.exists() or name.lower().endswith(FILE_SUFFIXES) or name.startswith(("/", ".", "~"))


def read_rows(source: str | Path, split: str = "train", config: str | None = None) -> list[RawRecord]:
    """Every row of `source` for `split` (see the module docstring for what a source can be).

    config: the `datasets` configuration (e.g. "main" for GSM8K), for hub names and snapshot folders.
    """
    name = str(source)
    if not is_local_path(name):
        return _read_hub(name, split, config)
    p = Path(name).expanduser()
    if p.is_dir():
        return _read_folder(p, name, split, config)
    if not p.is_file():
        raise AhaError(f"data file {name!r} does not exist")
    suffix = p.suffix.lower()
    if suffix in DATASETS_SUFFIXES:
        return _read_with_datasets(p, name, DATASETS_SUFFIXES[suffix])
    if suffix == ".json":
        return _read_json(p, name)
    # jsonl (also for unknown suffixes: the most common format)
    return [RawRecord(r, name, lineno, "line") for lineno, r in iter_json_objects(name)]


# ------------------------------------------------------------------------------------ helpers


def _datasets():
    try:
        import datasets
    except ImportError as exc:  # a declared dependency; only a broken install lacks it
        raise AhaError("the `datasets` package is missing: pip install datasets") from exc
    return datasets


@contextmanager
def _quiet(datasets: Any) -> Iterator[None]:
    """No progress bars or info logs from `datasets` while aha reads a source (restored after)."""
    verbosity = datasets.logging.get_verbosity()
    bars_on = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_on:
            datasets.enable_progress_bars()


def _rows(dataset: Any, source: str) -> list[RawRecord]:
    return [RawRecord(dict(r), source, i + 1, "row") for i, r in enumerate(dataset)]


def _pick_split(loaded: Any, source: str, split: str) -> Any:
    """One split of a DatasetDict (a single split serves every request)."""
    if split in loaded:
        return loaded[split]
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    raise AhaError(f"{source}: no split {split!r}; it has: {', '.join(loaded)} (choose one with --split)")


def _read_json(p: Path, name: str) -> list[RawRecord]:
    try:
        loaded = json.loads(read_text(p))
    except json.JSONDecodeError as exc:
        raise AhaError(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise AhaError(f"{name}: JSON nested too deeply to read; expected a list of flat records") from None
    if isinstance(loaded, dict):
        lists = [v for k, v in loaded.items() if k in ("data", "examples", "rows") and isinstance(v, list)]
        if not lists:
            raise AhaError(f"{name}: expected a list of records, or an object with a 'data' list")
        loaded = lists[0]
    if not isinstance(loaded, list):
        raise AhaError(f"{name}: expected a list of records")
    out = []
    for i, r in enumerate(loaded):
        if not isinstance(r, dict):
            raise AhaError(f"{name}, record {i + 1}: expected an object, got {type(r).__name__}")
        out.append(RawRecord(r, name, i + 1, "record"))
    return out


def _read_with_datasets(p: Path, name: str, builder: str) -> list[RawRecord]:
    datasets = _datasets()
    try:
        with _quiet(datasets):
            if builder == "arrow":
                dataset = datasets.Dataset.from_file(str(p))
            elif builder == "csv":
                # every column as text: "080" and "1.50" are answers and option texts, not numbers
                features = datasets.Features({c: datasets.Value("string") for c in _csv_header(p)})
                dataset = datasets.load_dataset("csv", data_files=str(p), split="train", features=features,
                                                keep_default_na=False)
            else:
                dataset = datasets.load_dataset(builder, data_files=str(p), split="train")
    except AhaError:
        raise
    except ValueError as exc:
        if "corresponds to no data" in str(exc):
            return []  # a header and no rows: an empty file, reported by the caller
        raise AhaError(f"{name}: cannot read {builder} ({type(exc).__name__}: {_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise AhaError(f"{name}: cannot read {builder} ({type(exc).__name__}: {_one_line(exc)})") from None
    return _rows(dataset, name)


def _csv_header(p: Path) -> list[str]:
    with open(p, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise AhaError(f"{p}: empty CSV file (expected a header row of column names)")
    return header


def _snapshot(p: Path) -> Path:
    """The newest snapshot of a hub-cache `datasets--org--name` folder; other folders unchanged."""
    snapshots = p / "snapshots"
    if snapshots.is_dir():
        found = sorted((s for s in snapshots.iterdir() if s.is_dir()), key=lambda s: s.stat().st_mtime)
        if found:
            return found[-1]
    return p


def _read_folder(p: Path, name: str, split: str, config: str | None) -> list[RawRecord]:
    datasets = _datasets()
    if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
        try:
            with _quiet(datasets):
                loaded = datasets.load_from_disk(str(p))
        except Exception as exc:  # noqa: BLE001
            raise AhaError(f"{name}: cannot read this saved dataset ({type(exc).__name__}: {_one_line(exc)})") from None
        if isinstance(loaded, datasets.DatasetDict):
            return _rows(_pick_split(loaded, name, split), f"{name}[{split}]")
        return _rows(loaded, name)
    folder = _snapshot(p)
    try:
        with _quiet(datasets):
            loaded = datasets.load_dataset(str(folder), config)
    except Exception as exc:  # noqa: BLE001 - no data files, several configs, bad files...
        raise AhaError(f"{name}: cannot read this folder as a dataset ({type(exc).__name__}: {_one_line(exc)}); "
                       "pass a save_to_disk folder, a hub snapshot folder (with --config if it has several), "
                       "or a data file") from None
    return _rows(_pick_split(loaded, name, split), f"{name}[{split}]")


def _read_hub(name: str, split: str, config: str | None) -> list[RawRecord]:
    datasets = _datasets()
    try:
        with _quiet(datasets):
            loaded = datasets.load_dataset(name, config)
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, gated...
        raise AhaError(f"{name!r} is not a local file and could not be loaded with datasets "
                       f"({type(exc).__name__}: {_one_line(exc)}); pass a local data file or dataset folder") from None
    return _rows(_pick_split(loaded, repr(name), split), f"{name}[{split}]")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text[:limit]
