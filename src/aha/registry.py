"""Name -> object registries for tasks, rewards, advantage estimators and policy losses.

Registering a second object under a taken name raises (as verl's registries do); looking up an
unknown name raises an error that lists the valid names and suggests the closest one.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from aha.errors import AhaError

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str | None:
    """The closest string to `name` among `choices`, or None when nothing is close."""
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return found[0] if found else None


class Registry(Generic[T]):
    """A named collection of objects of one kind (e.g. "reward")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REWARDS.register("format")`."""

        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as `name`, or one imported from a `module:attribute` path."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module_name, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise AhaError(f"cannot import {self.kind} {name!r}: {exc}") from exc
        hint = closest(name, self.names())
        msg = f"unknown {self.kind} {name!r}"
        if hint:
            msg += f" (did you mean {hint!r}?)"
        msg += f"; valid names: {', '.join(self.names())}"
        raise AhaError(msg)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
