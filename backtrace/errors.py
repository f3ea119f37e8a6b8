"""Every error backtrace raises on purpose; the CLI maps each to one line and an exit code."""
from __future__ import annotations


class BacktraceError(Exception):
    """Base class: a computation or I/O problem (exit code 1)."""

    exit_code = 1


class UsageError(BacktraceError):
    """The user asked for something malformed (exit code 2)."""

    exit_code = 2


class FormulaSyntaxError(UsageError):
    """A formula does not parse; carries the column so the CLI can draw a caret."""

    def __init__(self, message: str, source: str = "", column: int | None = None) -> None:
        self.message, self.source, self.column = message, source, column
        where = f" at column {column + 1}" if column is not None else ""
        super().__init__(f"{message}{where}")

    def caret(self) -> str:
        """The offending line of the formula with a caret under the column."""
        if self.column is None or not self.source:
            return ""
        start = self.source.rfind("\n", 0, self.column) + 1
        end = self.source.find("\n", self.column)
        line = self.source[start : end if end >= 0 else len(self.source)]
        return f"  {line}\n  {' ' * (self.column - start)}^"


class MissingValueError(UsageError):
    """An input variable has no value, or its value is not a number."""


class LimitError(UsageError):
    """The input is larger than a configured limit (formula length, nesting depth, node count)."""


class DomainError(BacktraceError):
    """A node cannot be evaluated (log of a negative, division by zero, overflow, NaN)."""


def reason(exc: Exception, op: str) -> str:
    """Why an op failed on a number, in a few words."""
    if isinstance(exc, ValueError):
        return f"outside the domain of {op}"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, OverflowError):
        return "overflow"
    return str(exc)


class TraceFormatError(BacktraceError):
    """A trace file is malformed or of a schema this version cannot read."""


class TraceMismatchError(UsageError):
    """Two traces cannot be compared: different models or engines (exit code 2, as diff's)."""


class RenderError(BacktraceError):
    """Graphviz failed, was not found, or took too long."""


class NothingToTraceError(BacktraceError, RuntimeError):
    """A backward call inside the tracer has nothing to differentiate (e.g. under torch.no_grad)."""
