"""A suite's mistakes as one line each: the file, the field's path, what is wrong and what would be valid.

pydantic's errors are turned into ``suites/x.yaml: teacher.batchsize: unknown field 'batchsize';
valid: ... (did you mean 'batch_size'?)``; a compressor's or backend's own settings model reports
through :class:`ParamsError`, so its lines name the field inside the step too.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel

from compbench.common.fields import show_value
from compbench.common.registry import closest_name, unknown_name_message


class FieldError(ValueError):
    """A validator's complaint about a field *below* the one it validates; ``loc`` is relative to it."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc


class ParamsError(ValueError):
    """A plugin's settings (a compressor's ``params``, a backend's ``options``) failed their model:
    pydantic's errors, relative to that field."""

    def __init__(self, model: type[BaseModel], errors: list[dict], field: str = "params") -> None:
        super().__init__(f"invalid {field} for {model.__name__}")
        self.model, self.errors, self.field = model, errors, field


def error_lines(source: str, errors: list[dict], model: type[BaseModel], prefix: tuple = ()) -> list[str]:
    """One line per mistake in pydantic's ``errors`` for ``model`` (which sits at ``prefix`` in the file)."""
    misspelt = _misspelt_fields(errors, model)
    lines = []
    for error in errors:
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, ParamsError):
            lines += error_lines(source, nested.errors, nested.model, (*prefix, *error["loc"], nested.field))
        elif not (error["type"] == "missing" and tuple(error["loc"]) in misspelt):   # said by the unknown key's line
            lines.append(format_error(source, error, model, prefix))
    return lines


def _misspelt_fields(errors: list[dict], model: type[BaseModel]) -> set[tuple]:
    """Locations of fields that an unknown key beside them looks like a misspelling of."""
    found = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            holder = _model_at(model, list(error["loc"][:-1]))
            close = closest_name(str(error["loc"][-1]), list(holder.model_fields)) if holder else None
            if close:
                found.add((*error["loc"][:-1], close))
    return found


# The tags of tagged unions (a suite's task: a GLUE name or a mapping): pydantic puts them in an error's
# location, where the user wrote no such key.
UNION_TAGS = ("glue-task", "task-from-files", "language-modeling")


def format_error(source: str, error: dict, model: type[BaseModel], prefix: tuple = ()) -> str:
    """One line, e.g. ``suites/x.yaml: teacher.batchsize: unknown field 'batchsize'; valid: ...
    (did you mean 'batch_size'?)``."""
    location = [part for part in error["loc"] if part not in UNION_TAGS]
    kind = error["type"]
    if kind == "value_error":
        problem = error["ctx"]["error"]
        location += getattr(problem, "loc", ())
        message = str(problem)
    elif kind == "extra_forbidden":
        holder = _model_at(model, location[:-1])
        message = unknown_name_message("field", str(location[-1]), sorted(holder.model_fields) if holder else [])
    else:
        message = _describe(error, model, location)
    where = field_path([*prefix, *location])
    line = f"{where}: {message}" if where else message
    return f"{source}: {line}".replace("\n", " ")


# What a value must be, by pydantic error type (the rest use pydantic's own wording).
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "int_parsing_size": "a whole number within +-9.2e18",   # a float too large for an int (1.0e+23)
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(error: dict, model: type[BaseModel], location: list) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    field = _field_at(model, location)
    about = f" ({field.description})" if field is not None and field.description else ""
    if kind == "missing":
        return f"missing required field{about}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"must not be empty{about}"
    if kind == "string_pattern_mismatch":
        return f"not allowed{about}; got {show_value(error.get('input'))}"
    if kind in _EXPECTED:
        expected = f"must be {_EXPECTED[kind]}"
        holder = _model_at(model, location)
        if expected.endswith("mapping") and holder is not None:
            expected += f" with keys from: {', '.join(sorted(holder.model_fields))}"
    else:
        expected = error["msg"].replace("Input should be", "must be")
    return f"{expected}; got {show_value(error.get('input'))}"


def field_path(location: list) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _field_at(model: type[BaseModel], location: list):
    """The pydantic FieldInfo of the field at ``location`` below ``model`` (list indexes ignored), or None."""
    names = [part for part in location if isinstance(part, str)]
    holder = _model_at(model, names[:-1]) if names else None
    return holder.model_fields.get(names[-1]) if holder is not None else None


def _model_at(model: type[BaseModel], location: list) -> type[BaseModel] | None:
    """The pydantic model of the value at ``location`` below ``model`` (for listing valid keys), or None."""
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _models_in(field.annotation)
        if not inner:
            return None
        model = inner[0]
    return model


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold, through lists, unions and ``Annotated``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
