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
@click.option("--window", type=click.IntRange(1), default=None,
              help="Steps kept in detail per optimizer (default 1000; every step is in the "
                   "running summaries, the loss curve and the heatmap).")
@click.option("--plot", metavar="FILE", help="Write the loss curve to FILE (.svg, .png or .pdf).")
@click.option("--flow", metavar="FILE", help="Write the per-layer gradient-flow chart to FILE.")
@click.option("--heatmap", metavar="FILE",
              help="Write the layer × step heatmaps (gradient RMS, update/weight, zeros) to FILE.")
def train(script: str, args: tuple[str, ...], dataset_size: int | None, batch_size: int | None,
          rows: int, window: int | None, plot: str | None, flow: str | None,
          heatmap: str | None) -> None:
    """Run SCRIPT (with ARGS) and watch every torch.optim optimizer it steps.

    Prints warnings as they happen (gradients not zeroed, NaN/inf, exploding or vanishing
    gradients, clipping that hides them, steps GradScaler skipped, a rising loss, dead ReLU or
    GELU units, ranks that differ), then per optimizer: a step table, the last step per
    parameter, a layer × step heatmap, a loss curve and a summary.

    \b
    Options go before SCRIPT; everything after it is the script's own:
      backtrace train train.py --epochs 3
      backtrace train --dataset-size 1000 --batch-size 100 train.py
      backtrace train --heatmap layers.png --window 5000 train.py
      torchrun --nproc-per-node 2 -m backtrace train train.py   (rank 0 prints the report)

    The script's own error reaches you whole (its traceback, sys.exit's message and exit code),
    then the report of what was recorded; Ctrl-C and SIGTERM stop the script and print the
    report too (exit 130, 143)."""
    from ..render.console import console
    from ..scripts import launcher_rank
    from ..training.plots import check_suffix
    from ..training.session import train_script
    from ..training.views import print_report

    if (dataset_size is None) != (batch_size is None):
        raise UsageError("give --dataset-size and --batch-size together")
    charts = {"plot": plot, "flow": flow, "heatmap": heatmap}
    for path in charts.values():
        if path:
            check_suffix(path)
    rank = launcher_rank()
    done = train_script(script, args, dataset_size, batch_size,
                        log=_warnings_to_stderr if rank == 0 else _quiet, window=window)
    click.echo(done.run.end_text(), err=True, nl=False)  # as Python would end the script
    if rank == 0:  # under torchrun, rank 0 holds every rank's figures; the others stay quiet
        if done.run.interrupted:
            click.echo(f"stopped by {done.run.interrupted}: the report of what was recorded",
                       err=True)
        print_report(console(), done.watches, rows, charts)
    if done.run.exit_code:
        sys.exit(done.run.exit_code)


def _warnings_to_stderr(text: str) -> None:
    """Each Watch's log: warnings go to stderr as they happen (the accounting is in the report)."""
    if text.startswith("warning"):
        click.echo(text, err=True)


def _quiet(text: str) -> None:
    """Ranks other than 0 say nothing: rank 0 reports the job."""
