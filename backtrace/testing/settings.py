"""What backtrace.testing does beyond its arguments: whether goldens are rewritten and who hears of
each Trace it makes. The pytest plugin sets both through `configure`; so can any test.

    with configure(update_goldens=True):
        assert_trace_matches(trace, "tests/golden/name.json")  # writes the golden
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import UsageError
from ..traces import Trace


@dataclass(frozen=True)
class Settings:
    """The settings backtrace.testing follows now (see `configure`)."""

    # assert_trace_matches (re)writes goldens instead of comparing (BACKTRACE_UPDATE=1 does too).
    update_goldens: bool = False
    # Called with every Trace assert_grads and explain_function make: the pytest fixture records
    # them so that a failing test's report shows the last one.
    on_trace: Callable[[Trace], None] | None = None


_current = Settings()


def current_settings() -> Settings:
    """The settings in force."""
    return _current


@contextmanager
def configure(**changes: Any) -> Iterator[Settings]:
    """Change some settings inside the block; each is put back as it was after, even on error."""
    global _current
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise UsageError(f"no testing setting {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(sorted(known))}")
    # Only the changed fields are put back, so blocks that set different settings (the plugin's
    # session and its fixture) may end in any order.
    previous = {name: getattr(_current, name) for name in changes}
    _current = replace(_current, **changes)
    try:
        yield _current
    finally:
        _current = replace(_current, **previous)


def recorded(trace: Trace) -> Trace:
    """The trace, after passing it to the `on_trace` setting (if any)."""
    if _current.on_trace is not None:
        _current.on_trace(trace)
    return trace
