"""The house rules of design.md, checked on the source: each family of code imports only the
families below it, no module import closes a cycle, and reading results never needs torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "compbench"

# Each family and the families it may import (design.md v2, "Imports run one way"). results sits
# below measurement (a cell's rows are built with the row contract) and never imports torch.
BELOW = {
    "common": set(),
    "tasks": {"common"},
    "models": {"common"},
    "config": {"common", "tasks"},
    "cache": {"common", "models"},
    "results": {"common", "config", "tasks"},
    "training": {"common", "config", "tasks", "models", "cache"},
    "backends": {"common", "config", "models"},
    "compressors": {"common", "config", "tasks", "models", "cache", "training"},
    "measurement": {"common", "config", "tasks", "models", "cache", "backends", "results"},
    "execution": {"common", "config", "tasks", "models", "cache", "results", "training", "backends", "compressors",
                  "measurement"},
}
TOP = {"cli", "api", "__main__", "__init__"}        # compbench/cli.py, api.py, ... may use any family
HEAVY = ("torch", "transformers", "onnxruntime", "optimum")


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every compbench import in ``path``, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("compbench")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("compbench"):
            for alias in node.names:      # `from compbench.x import y` may name a submodule y
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in known else node.module))
    return found


def family(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_belongs_to_a_known_family():
    unknown = sorted({family(m) for m in modules()} - set(BELOW) - TOP)
    assert not unknown, f"modules outside the families of design.md: {unknown}"


def upward_imports(found: dict[str, Path]) -> list[str]:
    """``path:line: family imports module (family)`` for each import that runs up the table."""
    known = set(found)
    wrong = []
    for module, path in found.items():
        mine = family(module)
        for line, target in imports_of(path, known):
            theirs = family(target)
            if mine in TOP or theirs == mine:
                continue
            if theirs in TOP or theirs not in BELOW[mine]:
                wrong.append(f"{path.relative_to(path.parents[len(module.split('.')) - 1])}:{line}: "
                             f"{mine} imports {target} ({theirs})")
    return wrong


def test_imports_run_one_way():
    wrong = upward_imports(modules())
    assert not wrong, "imports that run up the table:\n" + "\n".join(wrong)


def test_an_import_up_the_table_is_caught(tmp_path: Path):
    """The rule bites: results importing measurement (which imports torch), or a lazy import inside a function."""
    package = tmp_path / "compbench"
    for name, text in {"results/rows.py": "import json\nfrom compbench.config.cells import Cell\n",
                       "results/report.py": "def f():\n    from compbench.measurement.cell import cell_key\n",
                       "measurement/cell.py": "from compbench import results\n", "results/__init__.py": "",
                       "config/cells.py": ""}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    wrong = upward_imports(modules(package))
    assert len(wrong) == 1 and "results imports compbench.measurement.cell (measurement)" in wrong[0], wrong


def test_no_import_cycles():
    known = set(modules())
    graph = {module: {target for _, target in imports_of(path, known) if target in known and target != module}
             for module, path in modules().items()}
    for module, targets in graph.items():      # importing a.b.c runs a/__init__ and a/b/__init__ first
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        targets.update(p for p in parents if p in known and p != module)
    for module, targets in graph.items():      # but a package's __init__ importing its own submodules is no cycle
        if modules()[module].name == "__init__.py":
            targets -= {target for target in targets if target.startswith(module + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_table_itself_has_no_cycle():
    assert find_cycle({name: set(below) for name, below in BELOW.items()}) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# A finder first on the import path that refuses the heavy libraries: `import torch` raises ImportError.
BLOCK_HEAVY = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               f"        if name.split('.')[0] in {HEAVY!r}:\n"
               "            raise ImportError(f'{name} is blocked in this test')\n"
               "sys.meta_path.insert(0, Block())\n")


def run_blocked(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY + code], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A run folder with rows of two models on two backends (the report tests' hand-made rows)."""
    from result_rows import row

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [row(pipeline, wrong, p50, backend=backend) for backend in ("torch", "onnxruntime")
            for pipeline, wrong, p50 in (("baseline", 40, 20.0), ("int8", 44, 8.0))]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_report_and_cache_ls_run_without_torch(run_folder: Path, tmp_path: Path):
    """`compbench report` and `compbench cache ls` work where torch (transformers, onnxruntime) cannot be imported."""
    cache = tmp_path / "cache"
    (cache / "artifacts").mkdir(parents=True)
    done = run_blocked("from compbench.cli import main\n"
                       f"main(['report', {str(run_folder)!r}, '--format', 'csv'])", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run_id,cell_id") and (run_folder / "report.md").is_file()
    assert "int8" in (run_folder / "report.md").read_text()
    done = run_blocked("from compbench.cli import main\n"
                       f"main(['cache', 'ls', '--cache-dir', {str(cache)!r}])", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "total: 0 artifacts" in done.stdout


def test_reading_rows_through_the_api_imports_no_torch(run_folder: Path, tmp_path: Path):
    done = run_blocked("from compbench import api\n"
                       f"frame = api.read_rows({str(run_folder)!r})\n"
                       "print(len(frame), sorted(set(frame.pipeline)))\n"
                       f"assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n",
                       tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "['baseline',", "'int8']"]
