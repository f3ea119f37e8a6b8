"""`backtrace nan SCRIPT.py [ARGS]`: stop a script at its first inf or NaN gradient, explained."""
from __future__ import annotations

import shutil

import click

from ..errors import BacktraceError


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--level", type=click.Choice(["stats", "full"]), default="stats", show_default=True,
              help="stats: statistics per tensor (cheap); full: every tensor kept.")
def nan(script: str, args: tuple[str, ...], level: str) -> None:
    """Run SCRIPT with backtrace's tracer on and stop at the first backward call that produced
    an inf or NaN gradient (or loss): print the node that made it, the line of your code that
    created that node, the cause (0 × inf, finite × inf, overflow, ...) and a fix; exit 1.
    Exit 0 when every backward call stays finite.

    \b
    Options go before SCRIPT; everything after it is passed to the script:
      backtrace nan train.py --epochs 3
      backtrace nan --level full train.py
    """
    from ..nanscan import scan_script
    from ..nonfinite import lines
    from ..scripts import describe_end
    from ..tracer.sources import short

    done = scan_script(script, args, level=level)
    if done.report is not None:
        for line in lines(done.report, short, width=shutil.get_terminal_size((100, 24)).columns):
            click.echo(line)
        raise SystemExit(1)
    if done.run.error is not None:
        if not isinstance(done.run.error, SystemExit):
            click.echo(done.run.traceback_text(), err=True, nl=False)  # the script's own error
        raise BacktraceError(f"{script} stopped with {describe_end(done.run)} after "
                             f"{done.calls} finite backward call{'s' * (done.calls != 1)}")
    none = " (the script made none)" if done.calls == 0 else ""
    click.echo(f"no non-finite value in {done.calls} backward call"
               f"{'s' * (done.calls != 1)}{none}")
