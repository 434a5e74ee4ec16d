"""The modules of a package that some of its modules import, read from the source (no module is imported): what a
cache key must cover when it stands for the code that made a result.
"""

from __future__ import annotations

import ast
from pathlib import Path


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package in the folder ``root`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(Path(root).rglob("*.py")):
        parts = (Path(root).name, *path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_closure(root: Path, entries: tuple[str, ...]) -> dict[str, Path]:
    """The modules of the package in ``root`` that importing ``entries`` runs, by dotted name: each entry, what it
    imports (at module level or inside a function, absolute or relative), what those import, and so on, with
    every package whose ``__init__`` an import runs on the way."""
    known = package_modules(root)
    unknown = [entry for entry in entries if entry not in known]
    if unknown:
        raise ValueError(f"not modules of {root}: {', '.join(unknown)}")
    found: set[str] = set()
    pending = list(entries)
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.add(module)
        pending += _with_packages(_imports_of(module, known), known)
    return {module: known[module] for module in sorted(found)}


def _imports_of(module: str, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module``'s import statements name."""
    path = known[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:      # relative: from the package, one level up for each dot after the first
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)    # `from package import submodule`
    return {name for name in names if name in known}


def _with_packages(modules: set[str], known: dict[str, Path]) -> list[str]:
    """``modules`` and every package above each (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    found = set()
    for module in modules:
        parts = module.split(".")
        found.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return sorted(name for name in found if name in known)
