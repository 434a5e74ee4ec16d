"""Field types and value wording shared by the suite schema (config) and the task settings (tasks): an integer
bounded on both sides that refuses a bool and names its range, and a value shown as the suite's author wrote it."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

MAX_ROWS = 1_000_000_000            # data.limit_train / limit_eval / a task's limit: rows of a split


def show_value(value: Any) -> str:
    """A value as the suite's author wrote it (YAML words), kept short."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_out_of_range(low: int, high: int):
    """Before pydantic's own int check: a bool is not a count, and a float out of range (``1.0e+23``) is refused
    with the range rather than pydantic's 'exceeded maximum size'."""
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer; got {show_value(value)}")
        if isinstance(value, float) and math.isfinite(value):
            if value > high:
                raise ValueError(f"must be less than or equal to {high}; got {value:g}")
            if value < low:
                raise ValueError(f"must be greater than or equal to {low}; got {value:g}")
        return value
    return check


def bounded_int(low: int, high: int) -> Any:
    """An int field type that takes ``low`` .. ``high`` (a float that is a whole number in range too)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_refuse_out_of_range(low, high))]
