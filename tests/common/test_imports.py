"""The import closure that stands for the measuring code in cell keys, on a package written here: every way a module
can be imported counts (absolute, ``from package import module``, relative, inside a function), with the packages
an import runs on the way; what nothing imports stays out."""

from __future__ import annotations

from pathlib import Path

import pytest

from compbench.common.imports import imported_closure

PACKAGE = {
    "__init__.py": "",
    "entry.py": "import os\nfrom pkg.a import helper\nfrom . import b\n\n\ndef later():\n"
                "    import pkg.deep.c\n    from .deep.nested import e\n",
    "a.py": "def helper():\n    from .shared import VALUE\n",
    "b.py": "import json\n",
    "shared.py": "VALUE = 1\n",
    "unused.py": "import pkg.b\n",
    "deep/__init__.py": "from pkg.deep import d\n",
    "deep/c.py": "",
    "deep/d.py": "",
    "deep/nested/__init__.py": "",
    "deep/nested/e.py": "from ... import b\n",
    "deep/nested/f.py": "",
}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    for name, text in PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_closure_follows_every_kind_of_import(package: Path):
    closure = imported_closure(package, ("pkg.entry",))
    assert sorted(closure) == ["pkg", "pkg.a", "pkg.b", "pkg.deep", "pkg.deep.c", "pkg.deep.d", "pkg.deep.nested",
                               "pkg.deep.nested.e", "pkg.entry", "pkg.shared"]
    assert closure["pkg.deep"] == package / "deep" / "__init__.py"


def test_an_unknown_entry_is_named(package: Path):
    with pytest.raises(ValueError, match="pkg.nowhere"):
        imported_closure(package, ("pkg.nowhere",))
