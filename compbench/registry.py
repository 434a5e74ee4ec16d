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

    def __init__(self, kind: str, entry_point_group: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
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
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a subclass of {self.base.__module__}.{self.base.__qualname__}")
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
                dist = f" from {ep.dist.name} {ep.dist.version}" if ep.dist else ""
                self.register(cls, origin=f"plugin {ep.value}{dist}")
            except Exception as exc:  # a broken plugin must not take the tool down
                self.plugin_errors[ep.name] = " ".join(f"{type(exc).__name__}: {exc}".split())   # one line, for messages

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
            raise UsageError(self.unknown_name_message(name)) from None

    def unknown_name_message(self, name: str) -> str:
        """Why ``name`` is not here: the valid names, a likely fix, and a plugin's load error if it has one."""
        message = unknown_name_message(self.kind, name, self.names())
        if not self._classes:
            message += f" (plugins add them through the entry-point group {self.entry_point_group!r})"
        if name in self.plugin_errors:
            message += f"; plugin {name!r} failed to load: {self.plugin_errors[name]}"
        return message

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._classes


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """``unknown backend 'trch'; valid: onnxruntime, torch (did you mean 'torch'?)``."""
    message = f"unknown {kind} {name!r}; " + (f"valid: {', '.join(valid)}" if valid else f"there are no {kind}s yet")
    close = closest_name(name, valid)
    if close:
        message += f" (did you mean {close!r}?)"
    return message


def closest_name(name: str, valid: list[str]) -> str | None:
    """The valid name that ``name`` most likely misspells, if any."""
    close = difflib.get_close_matches(str(name).strip().lower(), valid, n=1)
    return close[0] if close else None
