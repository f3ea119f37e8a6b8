"""Running a user's script as ``python SCRIPT.py ARGS`` would, inside backtrace's process.

The script ends the way Python would end it (its traceback, `sys.exit`'s message and status, 130
after Ctrl-C, 143 after SIGTERM), but backtrace's process lives on to show what was recorded: a
script's exception, exit and interrupt are returned in a ScriptRun, never raised.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .files import sigterm_raises

INTERRUPTED = 128 + signal.SIGINT  # the status a shell reports for a process stopped by Ctrl-C
TERMINATED = 128 + signal.SIGTERM


class ScriptTerminated(BaseException):
    """Raised in the script's frames when SIGTERM arrives, so its `finally` blocks run."""


@dataclass
class ScriptRun:
    """How a script ended: its exit code as Python would give it, and the exception if any."""

    path: Path
    exit_code: int = 0
    error: BaseException | None = None  # what ended it: an exception, or a non-zero SystemExit

    @property
    def interrupted(self) -> str | None:
        """'Ctrl-C' or 'SIGTERM' when a signal stopped the script, else None."""
        if isinstance(self.error, KeyboardInterrupt):
            return "Ctrl-C"
        return "SIGTERM" if isinstance(self.error, ScriptTerminated) else None

    def traceback_text(self) -> str:
        """The script's traceback as Python prints it, from the script's own frames down."""
        err = self.error
        if err is None or isinstance(err, (SystemExit, ScriptTerminated)):
            return ""
        tb = err.__traceback__
        script = str(self.path)
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next  # runpy's frames and ours are not the user's
        return "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))

    def end_text(self) -> str:
        """What Python itself prints to stderr as the script ends: the traceback of an uncaught
        exception (Ctrl-C's too), the message of `sys.exit("message")`; nothing otherwise."""
        err = self.error
        if isinstance(err, SystemExit):
            code = err.code
            return "" if code is None or isinstance(code, int) else f"{code}\n"
        return self.traceback_text()


def exit_code(exc: SystemExit) -> int:
    """The status `sys.exit(code)` gives the shell: None is 0, a number itself, anything else 1."""
    if exc.code is None:
        return 0
    return int(exc.code) if isinstance(exc.code, int) else 1


def run_script(script: str | Path, args: tuple[str, ...] | list[str] = ()) -> ScriptRun:
    """Run `script` as __main__ with `args` as its sys.argv[1:] and its folder first on sys.path;
    both are restored after. Whatever ends the script (an exception, sys.exit, Ctrl-C, SIGTERM) is
    returned in the ScriptRun with the exit code Python would give, never raised."""
    path = Path(script).resolve()
    if not path.is_file():
        raise UsageError(f"no such script: {script}")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(path.parent))
    run = ScriptRun(path)
    try:
        with sigterm_raises(ScriptTerminated):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        run.exit_code = exit_code(exc)
        if run.exit_code:
            run.error = exc
    except KeyboardInterrupt as exc:
        run.exit_code, run.error = INTERRUPTED, exc
    except ScriptTerminated as exc:
        run.exit_code, run.error = TERMINATED, exc
    except Exception as exc:  # the script's own error: the caller reports it after what was recorded
        run.exit_code, run.error = 1, exc
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return run


def launcher_rank() -> int:
    """This process's rank under torchrun (its RANK variable); 0 when not launched that way."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class ScriptTrace:
    """One backward call of a script, traced (None when the script made too few), and how the
    script ended."""

    trace: Any  # backtrace.traces.Trace, or None
    run: ScriptRun
    calls: int  # backward calls the script made (traced or not)
    missing: str = ""  # why there is no trace, when there is none


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


def describe_end(run: ScriptRun) -> str:
    """How a script stopped, in a few words: 'exit code 3', 'ValueError: bad shape', 'Ctrl-C'."""
    exc = run.error
    if exc is None:
        return "exit code 0"
    if run.interrupted:
        return run.interrupted
    if isinstance(exc, SystemExit):
        return f"exit code {run.exit_code}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def trace_script(script: str | Path, args: tuple[str, ...] | list[str] = (), call: int = 1,
                 level: str = "stats") -> ScriptTrace:
    """Run `script` with the tracer on and return the trace of its `call`-th backward call (later
    calls run untraced), with how the script ended. When it made fewer calls, `trace` is None and
    `missing` says how many it made; a script that ran to its end and made too few is an error."""
    from .errors import BacktraceError
    from .tracer import trace as tracer

    with tracer(level=level, stop_after=call) as t:
        run = run_script(script, args)
    if isinstance(run.error, BacktraceError):
        raise run.error
    traced = next((tr for tr in t.traces if tr.meta.get("call") == call), None)
    if traced is not None:
        return ScriptTrace(traced, run, t.calls)
    missing = _untraced(script, t, call)
    if run.error is None:
        nothing = " (nothing to trace)" if t.calls == 0 and not t.other_threads else ""
        raise BacktraceError(missing + nothing)
    return ScriptTrace(None, run, t.calls, f"{missing} before it stopped ({describe_end(run)})")


def _untraced(script: str | Path, t: Any, call: int) -> str:
    """Why the script's `call`-th backward call has no trace, in one line."""
    if t.calls >= call:  # it ran, but recording it failed
        error = next((e for e in t.errors if e.startswith(f"backward call {call}:")), "")
        return (f"{script}'s {_ordinal(call)} backward call ran but could not be traced "
                f"({error.partition(': ')[2] or 'unknown error'})")
    n, calls = t.other_threads, f"backward call{'s' * (t.calls != 1)}"
    if t.calls == 0 and n:
        return (f"{script} made its {n} backward call{'s' * (n > 1)} in other threads; only the "
                f"main thread is traced (use backtrace.trace(...) inside that thread)")
    if t.calls == 0:
        return f"{script} made no backward call"
    elsewhere = f" in its main thread ({n} more in other threads, not traced)" if n else ""
    return f"{script} made {t.calls} {calls}{elsewhere}; --call {call} asks for the {_ordinal(call)}"
