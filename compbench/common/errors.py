"""Error types that carry a one-line, user-facing message, and the record of a job's failures.

The CLI turns a :class:`UsageError` into one line on stderr and exit code 2; every
other :class:`CompbenchError` that reaches a cell becomes a ``failed`` row, and an
:class:`UnsupportedError` becomes a ``skipped`` row.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field


class CompbenchError(Exception):
    """Base class: the message is meant for the user, on one line."""


class UsageError(CompbenchError):
    """The user asked for something invalid (bad suite, unknown name, bad option)."""


class DataNotFoundError(CompbenchError):
    """A task's data is not where compbench looked; the message says where that was."""


class UnreadableArtifactError(CompbenchError):
    """A built model's file cannot be read (cut off, damaged, not its format); the message names the file."""


class UnsupportedError(CompbenchError):
    """Something cannot run here (no CUDA, library lacks a feature); cells are skipped."""


@dataclass
class Failures:
    """What went wrong while doing a job: one-line reasons for rows, full tracebacks for errors.log."""

    tracebacks: list[str] = field(default_factory=list)

    def describe(self, where: str, exc: BaseException) -> str:
        reason = f"{type(exc).__name__}: {exc}".strip()
        self.tracebacks.append(f"--- {where}\n{traceback.format_exc()}")
        return reason
