"""`backtrace nan`: run a user's script with the tracer on and stop at the first backward call
whose gradients (or output value) hold an inf or NaN, with the report of `Trace.nonfinite()`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scripts import ScriptRun, run_script


class _Found(BaseException):
    """Raised out of the script's backward call to stop it (not an Exception: a script's own
    `except Exception` does not swallow it)."""


@dataclass
class Scan:
    """How a scanned script went: the report of the first non-finite call (None if none)."""

    report: Any  # backtrace.nonfinite.NonFinite | None
    calls: int  # backward calls the script made, the stopping one included
    run: ScriptRun


def scan_script(script: str | Path, args: tuple[str, ...] | list[str] = (),
                level: str = "stats") -> Scan:
    """Run `script` with `args` under the tracer; stop at the first backward call that made a
    non-finite gradient or output value (every call is checked: one transfer of its statistics)."""
    from .tracer import trace as tracer

    found: list[Any] = []

    def check(t: Any) -> None:
        if t.last_nonfinite():
            report = t.trace.nonfinite()
            if report is not None:
                found.append(report)
                raise _Found()

    with tracer(level=level, max_traces=1, after_call=check) as t:
        try:
            run = run_script(script, args)
        except _Found:
            run = ScriptRun(Path(script).resolve())
    return Scan(found[0] if found else None, t.calls, run)
