"""`backtrace train SCRIPT.py [ARGS]`: run a training script with `watch` on every optimizer it makes."""
from __future__ import annotations

import sys

import click

from ..errors import UsageError


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--dataset-size", type=click.IntRange(1), help="Samples per epoch (with --batch-size).")
@click.option("--batch-size", type=click.IntRange(1), help="Samples per step (with --dataset-size).")
@click.option("--rows", type=click.IntRange(0), default=10, show_default=True,
              help="How many of the last steps the table shows.")
@click.option("--plot", metavar="FILE", help="Write the loss curve to FILE (.svg or .png).")
@click.option("--flow", metavar="FILE", help="Write the per-layer gradient-flow chart to FILE.")
def train(script: str, args: tuple[str, ...], dataset_size: int | None, batch_size: int | None,
          rows: int, plot: str | None, flow: str | None) -> None:
    """Run SCRIPT (with ARGS) and watch every torch.optim optimizer it steps.

    Prints warnings as they happen (gradients not zeroed, NaN/inf, exploding or vanishing
    gradients, a rising loss, dead ReLU layers), then per optimizer: a step table, the last step
    per parameter, a loss curve and a summary. Options go before SCRIPT; everything after it is
    the script's own."""
    from ..training.plots import check_suffix
    from ..training.session import train_script
    from ..training.views import print_report
    from ..render.console import console

    if (dataset_size is None) != (batch_size is None):
        raise UsageError("give --dataset-size and --batch-size together")
    for path in (plot, flow):
        if path:
            check_suffix(path)
    done = train_script(script, args, dataset_size, batch_size, log=_warnings_to_stderr)
    if done.run.error is not None and not isinstance(done.run.error, SystemExit):
        click.echo(done.run.traceback_text(), err=True, nl=False)  # the script's own error, whole
    print_report(console(), done.watches, rows, plot, flow)
    if done.run.exit_code:
        sys.exit(done.run.exit_code)


def _warnings_to_stderr(text: str) -> None:
    """Each Watch's log: warnings go to stderr as they happen (the accounting is in the report)."""
    if text.startswith("warning"):
        click.echo(text, err=True)
