"""`backtrace trace SCRIPT.py [ARGS]`: run a training script with the tracer on, show one backward call."""
from __future__ import annotations

import sys
from pathlib import Path

import click

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
      torchrun --nproc-per-node 2 -m backtrace trace train.py   (rank 0 prints)

    The script's own error reaches you whole (its traceback, sys.exit's message and exit code,
    130 after Ctrl-C, 143 after SIGTERM), then the call it recorded before it stopped. Under
    torchrun each rank traces its own calls; rank 0 prints and writes the -o files, rank K writes
    them as NAME.rankK.SUFFIX."""
    from ..scripts import launcher_rank, trace_script
    from .options import view_of

    traced = trace_script(script, args, call=call, level=level)
    click.echo(traced.run.end_text(), err=True, nl=False)  # as Python would end the script
    code = traced.run.exit_code
    if traced.trace is None:
        click.echo(f"error: {traced.missing}", err=True)
        sys.exit(code or 1)
    rank = launcher_rank()
    shown = view_of(traced.trace, fmt, module=module)  # checks --module before anything is written
    write_outputs(traced.trace, tuple(_for_rank(o, rank) for o in outputs), None, **drawing)
    if rank == 0:
        show(shown)
        size = traced.trace.meta.get("world_size")
        if size:
            click.echo(f"rank 0 of {size}: each parameter's gradient is the one the optimizer "
                       "steps with (DDP's all-reduced, FSDP's combined over the shards); the "
                       "contributions are this rank's own (meta local_grad)")
    if code:
        sys.exit(code)


def _for_rank(path: str, rank: int) -> str:
    """Rank 0 writes PATH itself, rank K writes NAME.rankK.SUFFIX beside it."""
    if rank == 0:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.rank{rank}{p.suffix}"))

