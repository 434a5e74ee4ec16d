"""Error types that carry a one-line, user-facing message.

The CLI turns a :class:`UsageError` into one line on stderr and exit code 2; every
other :class:`CompbenchError` that reaches a cell becomes a ``failed`` row, and an
:class:`UnsupportedError` becomes a ``skipped`` row.
"""


class CompbenchError(Exception):
    """Base class: the message is meant for the user, on one line."""


class UsageError(CompbenchError):
    """The user asked for something invalid (bad suite, unknown name, bad option)."""


class DataNotFoundError(CompbenchError):
    """A task's data is not where compbench looked; the message says where that was."""


class UnsupportedError(CompbenchError):
    """Something cannot run here (no CUDA, library lacks a feature); cells are skipped."""
