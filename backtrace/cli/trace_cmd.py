"""`backtrace trace SCRIPT.py [ARGS]`: run a training script with the tracer on, print one backward call."""
from __future__ import annotations

import click

from ..errors import BacktraceError, UsageError


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--call", "call", type=click.IntRange(1), default=1, show_default=True,
              help="Which backward call to show (1 = the first).")
@click.option("--module", "module", default=None, metavar="PREFIX",
              help="Only nodes inside this module path, e.g. encoder.layers.0.")
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Also save the trace as JSON (schema backtrace.trace/1).")
@click.option("--level", type=click.Choice(["stats", "full"]), default="stats", show_default=True,
              help="stats: shape, norm, mean, max |x| per tensor; full: every tensor.")
@click.option("--format", "fmt", type=click.Choice(["table", "plain", "markdown"]), default=None,
              help="table on a terminal, plain otherwise.")
def trace(script: str, args: tuple[str, ...], call: int, module: str | None,
          json_path: str | None, level: str, fmt: str | None) -> None:
    """Run SCRIPT with backtrace's tracer on and print the per-node backward table of one
    backward call: op, module, upstream gradient, each input's local derivative and contribution.

    \b
    Options go before SCRIPT; everything after it is passed to the script:
      backtrace trace --call 2 train.py --epochs 1
    """
    from ..files import write_atomic
    from ..scripts import run_script
    from ..render.torch_table import TorchTraceView
    from ..tracer import trace as tracer
    from .output import console, is_terminal

    with tracer(level=level, stop_after=call) as t:
        run = run_script(script, args)
    if isinstance(run.error, BacktraceError):
        raise run.error
    failure = run.error
    if len(t.traces) < call:
        made = t.calls
        why = f"; it stopped with {_describe(failure)}" if failure is not None else ""
        if made == 0:
            raise BacktraceError(f"{script} made no backward call{why} (nothing to trace)")
        raise BacktraceError(f"{script} made {made} backward call{'s' * (made > 1)}; --call {call} "
                             f"asks for the {_ordinal(call)}{why}")
    chosen = t.traces[call - 1]
    if module is not None and not any(
            n.meta.get("module", "") == module or n.meta.get("module", "").startswith(module + ".")
            for n in chosen.nodes):
        modules = sorted({n.meta.get("module", "") for n in chosen.nodes} - {""})
        raise UsageError(f"no node in module {module!r} (modules: {', '.join(modules) or 'none'})")
    if json_path:
        write_atomic(json_path, chosen.to_json() + "\n")
    fmt = fmt or ("table" if is_terminal() else "plain")
    console().print(TorchTraceView(chosen, fmt, module))
    if failure is not None:
        raise BacktraceError(f"{script} stopped with {_describe(failure)} (after the traced call)")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"exit code {exc.code}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
