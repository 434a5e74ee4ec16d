"""A name -> class registry fed by built-ins and by Python entry points.

Compressors, backends and executors use it. Built-ins are named as ``"module:Class"`` and
imported only when first asked for, so a command that needs none of them (``compbench report``)
imports none of their libraries; third-party packages declare an entry point in the group
(for example ``compbench.compressors``) whose value is the class.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from compbench.common.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by their ``name`` attribute: built-ins imported on first use, entry points on first lookup."""

    def __init__(self, kind: str, entry_point_group: str, base: type | str | None = None,
                 builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._base = base                               # a class, or "module:Class" resolved when first needed
        self.entry_point_group = entry_point_group
        self._builtins = dict(builtins or {})          # name -> "module:Class"
        self._classes: dict[str, type[T]] = {}
        self._origins: dict[str, str] = {}
        self._plugins_loaded = False
        self.plugin_errors: dict[str, str] = {}

    @property
    def base(self) -> type | None:
        if isinstance(self._base, str):
            self._base = load_object(self._base)
        return self._base

    def register(self, cls: type[T], origin: str = "built-in") -> type[T]:
        """Register ``cls`` under ``cls.name``; usable as a class decorator."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls!r} needs a non-empty class attribute 'name' to be a {self.kind}")
        base = self.base
        if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{cls!r} is not a subclass of {base.__module__}.{base.__qualname__}")
        known = self._classes.get(name)
        builtin = self._builtins.get(name)
        if (known is not None and known is not cls) or (builtin is not None and builtin != object_path(cls)):
            taken = object_path(known) if known is not None else builtin
            raise ValueError(f"{self.kind} name {name!r} is taken by {taken}")
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
                self.plugin_errors[ep.name] = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, for messages

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted({*self._builtins, *self._classes})

    def origin(self, name: str) -> str:
        self._load_plugins()
        return self._origins.get(name, "built-in")

    def get(self, name: str) -> type[T]:
        if name not in self._classes and name in self._builtins:
            self.register(load_object(self._builtins[name]))
        self._load_plugins()
        try:
            return self._classes[name]
        except KeyError:
            raise UsageError(self.unknown_name_message(name)) from None

    def builtin_modules(self) -> list[str]:
        """The modules that hold the built-in classes (imported on first use, so no import statement names them)."""
        return sorted({path.partition(":")[0] for path in self._builtins.values()})

    def load_all(self) -> None:
        """Import every class now (a fork server does, so no job pays for it); an import that fails
        is left to the lookup that needs it, which reports it."""
        for name in self.names():
            try:
                self.get(name)
            except Exception:
                pass

    def unknown_name_message(self, name: str) -> str:
        """Why ``name`` is not here: the valid names, a likely fix, and a plugin's load error if it has one."""
        message = unknown_name_message(self.kind, name, self.names())
        if not self._classes and not self._builtins:
            message += f" (plugins add them through the entry-point group {self.entry_point_group!r})"
        if name in self.plugin_errors:
            message += f"; plugin {name!r} failed to load: {self.plugin_errors[name]}"
        return message

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._builtins or name in self._classes


def load_object(path: str):
    """The object named by ``"package.module:Name"``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def object_path(obj) -> str:
    """``"package.module:Name"`` of a class (the inverse of ``load_object``)."""
    return f"{obj.__module__}:{obj.__qualname__}"


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
