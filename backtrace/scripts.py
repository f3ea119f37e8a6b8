"""Running a user's script as ``python SCRIPT.py ARGS`` would, inside backtrace's process."""
from __future__ import annotations

import runpy
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError


@dataclass
class ScriptRun:
    """How a script ended: its exit code as Python would give it, and the exception if any."""

    path: Path
    exit_code: int = 0
    error: BaseException | None = None  # what ended it: an exception, or a non-zero SystemExit

    def traceback_text(self) -> str:
        """The script's traceback as Python prints it, from the script's own frames down."""
        err = self.error
        if err is None or isinstance(err, SystemExit):
            return ""
        tb = err.__traceback__
        script = str(self.path)
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next  # runpy's frames and ours are not the user's
        return "".join(traceback.format_exception(type(err), err, tb or err.__traceback__))


def exit_code(exc: SystemExit) -> int:
    """The status `sys.exit(code)` gives the shell: None is 0, a number itself, anything else 1."""
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_script(script: str | Path, args: tuple[str, ...] | list[str] = ()) -> ScriptRun:
    """Run `script` as __main__ with `args` as its sys.argv[1:] and its folder first on sys.path;
    both are restored after. Exceptions of the script are returned, not raised (Ctrl-C is raised)."""
    path = Path(script).resolve()
    if not path.is_file():
        raise UsageError(f"no such script: {script}")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(path.parent))
    run = ScriptRun(path)
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        run.exit_code = exit_code(exc)
        if run.exit_code:
            run.error = exc
    except Exception as exc:  # the script's own error: the caller reports it after what was recorded
        run.exit_code, run.error = 1, exc
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return run


@dataclass
class ScriptTrace:
    """One backward call of a script, traced, and how the script ended."""

    trace: Any  # backtrace.traces.Trace
    run: ScriptRun
    calls: int  # backward calls the script made (traced or not)


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


def describe_end(exc: BaseException) -> str:
    """How a script stopped, in a few words: 'exit code 3', 'ValueError: bad shape'."""
    if isinstance(exc, SystemExit):
        return f"exit code {exc.code}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def trace_script(script: str | Path, args: tuple[str, ...] | list[str] = (), call: int = 1,
                 level: str = "stats") -> ScriptTrace:
    """Run `script` with the tracer on and return the trace of its `call`-th backward call (later
    calls run untraced); a BacktraceError says how many calls it made when there are fewer."""
    from .errors import BacktraceError
    from .tracer import trace as tracer

    with tracer(level=level, stop_after=call) as t:
        run = run_script(script, args)
    if isinstance(run.error, BacktraceError):
        raise run.error
    traced = next((tr for tr in t.traces if tr.meta.get("call") == call), None)
    if traced is None:
        raise BacktraceError(_untraced(script, t, call, run))
    return ScriptTrace(traced, run, t.calls)


def _untraced(script: str | Path, t: Any, call: int, run: ScriptRun) -> str:
    """Why the script's `call`-th backward call has no trace, in one line."""
    why = f"; it stopped with {describe_end(run.error)}" if run.error is not None else ""
    if t.calls >= call:  # it ran, but recording it failed
        error = next((e for e in t.errors if e.startswith(f"backward call {call}:")), "")
        return (f"{script}'s {_ordinal(call)} backward call ran but could not be traced "
                f"({error.partition(': ')[2] or 'unknown error'}){why}")
    n, calls = t.other_threads, f"backward call{'s' * (t.calls != 1)}"
    if t.calls == 0 and n:
        return (f"{script} made its {n} backward call{'s' * (n > 1)} in other threads; only the "
                f"main thread is traced (use backtrace.trace(...) inside that thread){why}")
    if t.calls == 0:
        return f"{script} made no backward call{why} (nothing to trace)"
    elsewhere = f" in its main thread ({n} more in other threads, not traced)" if n else ""
    return (f"{script} made {t.calls} {calls}{elsewhere}; "
            f"--call {call} asks for the {_ordinal(call)}{why}")
