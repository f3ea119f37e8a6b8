"""`backtrace trace SCRIPT.py [ARGS]`: run a training script with the tracer on, show one backward call."""
from __future__ import annotations

import click

from ..errors import BacktraceError
from .options import drawing_options, format_option, output_option, show, write_outputs


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--call", "call", type=click.IntRange(1), default=1, show_default=True,
              help="Which backward call to show (1 = the first).")
@click.option("--module", "module", default=None, metavar="PREFIX",
              help="Only nodes inside this module path, e.g. encoder.layers.0.")
@click.option("--level", type=click.Choice(["stats", "full"]), default="stats", show_default=True,
              help="stats: shape, norm, mean, max |x| per tensor; full: every tensor.")
@format_option
@output_option
@drawing_options
def trace(script: str, args: tuple[str, ...], call: int, module: str | None, level: str,
          fmt: str | None, outputs: tuple[str, ...], **drawing) -> None:
    """Run SCRIPT with backtrace's tracer on and print the per-node backward table of one
    backward call: op, module, upstream gradient, each input's local derivative and contribution.

    \b
    Options go before SCRIPT; everything after it is passed to the script:
      backtrace trace --call 2 train.py --epochs 1
      backtrace trace -o model.json -o model.svg train.py
    """
    from ..scripts import describe_end, trace_script
    from .options import view_of

    traced = trace_script(script, args, call=call, level=level)
    shown = view_of(traced.trace, fmt, module=module)  # checks --module before anything is written
    write_outputs(traced.trace, outputs, None, **drawing)
    show(shown)
    if traced.run.error is not None:
        raise BacktraceError(f"{script} stopped with {describe_end(traced.run.error)} "
                             "(after the traced call)")
