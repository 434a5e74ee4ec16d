"""A name -> class registry fed by built-ins and by Python entry points.

Compressors and backends both use it: built-ins register with the decorator,
third-party packages declare an entry point in the group (for example
``compbench.compressors``) whose value is the class.
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from compbench.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by their ``name`` attribute; entry points are loaded on first use."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._classes: dict[str, type[T]] = {}
        self._origins: dict[str, str] = {}
        self._plugins_loaded = False
        self.plugin_errors: dict[str, str] = {}

    def register(self, cls: type[T], origin: str = "built-in") -> type[T]:
        """Register ``cls`` under ``cls.name``; usable as a class decorator."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls!r} needs a non-empty class attribute 'name' to be a {self.kind}")
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"{self.kind} name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        self._classes[name] = cls
        self._origins[name] = origin
        return cls

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            try:
                cls = ep.load()
                self.register(cls, origin=f"plugin {ep.value}")
            except Exception as exc:  # a broken plugin must not take the tool down
                self.plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._classes)

    def origin(self, name: str) -> str:
        self._load_plugins()
        return self._origins[name]

    def get(self, name: str) -> type[T]:
        self._load_plugins()
        try:
            return self._classes[name]
        except KeyError:
            raise UsageError(unknown_name_message(self.kind, name, self.names())) from None

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._classes


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """``unknown backend 'trch'; valid: onnxruntime, torch (did you mean 'torch'?)``."""
    message = f"unknown {kind} {name!r}; valid: {', '.join(valid) if valid else '(none registered)'}"
    close = difflib.get_close_matches(str(name), valid, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message
