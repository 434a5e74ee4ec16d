"""Reading a suite file: safe YAML (a key given twice is an error), then the schema, with one error line per mistake."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from compbench.common.errors import UsageError
from compbench.config.error_lines import error_lines, show_value
from compbench.config.schema import Suite


class _SuiteLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        first_marks: dict = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                first = first_marks.setdefault(key_node.value, key_node.start_mark)
                if first is not key_node.start_mark:
                    raise yaml.MarkedYAMLError(
                        problem=f"duplicate key {key_node.value!r} (first given at line {first.line + 1})",
                        problem_mark=key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise UsageError(f"suite file {path} {problem}; pass a YAML file such as suites/quick.yaml")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SuiteLoader)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a suite is a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else show_value(raw)
        raise UsageError(
            f"{path}: a suite must be a mapping with keys such as name, tasks, pipelines, backends; got {got}"
        )
    suite = validate_suite(raw, str(path))
    suite._base_dir = path.resolve().parent
    return suite


def validate_suite(raw: dict, source: str) -> Suite:
    """The suite in ``raw``; a UsageError with one line per mistake, each naming ``source`` and the field."""
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise UsageError("\n".join(error_lines(source, exc.errors(), model=Suite))) from None


def suite_yaml(suite: Suite) -> str:
    """The suite as a YAML file that loads back to the same suite (parameters as validated)."""
    return yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
