"""`backtrace train SCRIPT.py [ARGS]`: run a training script with `watch` on every optimizer it makes."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import patches
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
    from ..scripts import run_script
    from ..training.plots import check_suffix
    from .output import console

    if (dataset_size is None) != (batch_size is None):
        raise UsageError("give --dataset-size and --batch-size together")
    for path in (plot, flow):
        if path:
            check_suffix(path)
    session = Session(Path(script).resolve(), dataset_size, batch_size)
    session.start()
    try:
        run = run_script(script, args)
    finally:
        session.stop()
    if run.error is not None and not isinstance(run.error, SystemExit):
        click.echo(run.traceback_text(), err=True, nl=False)  # the script's own error, whole
    report(console(), session, rows, plot, flow)
    if run.exit_code:
        sys.exit(run.exit_code)


class Session:
    """Global optimizer-step hooks that give each optimizer its own Watch on its first step."""

    def __init__(self, script: Path, dataset_size: int | None, batch_size: int | None) -> None:
        self.script, self.dataset_size, self.batch_size = script, dataset_size, batch_size
        self.watches: dict[int, object] = {}
        self.order: list = []
        self.last_loss: float | None = None
        self._handles: list = []

    def start(self) -> None:
        from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                           register_optimizer_step_pre_hook)

        self._handles = [register_optimizer_step_pre_hook(self._pre),
                         register_optimizer_step_post_hook(self._post)]
        # Before a watch exists (the first step) the loss is caught here.
        self._handles.append(patches.patch("Tensor.backward", self._capture_loss))

    def _capture_loss(self, call, tensor, *args, **kwargs):
        if tensor.numel() == 1:
            self.last_loss = float(tensor.detach())
        return call(tensor, *args, **kwargs)

    def stop(self) -> None:
        for w in self.order:
            w.detach()
        for h in self._handles:
            h.remove()

    def _pre(self, optimizer, args, kwargs) -> None:
        from ..training.watch import Watch

        w = self.watches.get(id(optimizer))
        if w is None:
            model = find_model(optimizer)
            w = Watch(model, optimizer, self.dataset_size, self.batch_size, hook_optimizer=False,
                      log=lambda text: click.echo(text, err=True) if text.startswith("warning") else None)
            w.attach()
            w._pending_loss = self.last_loss
            self.watches[id(optimizer)] = w
            self.order.append(w)
        w.before_step()

    def _post(self, optimizer, args, kwargs) -> None:
        w = self.watches.get(id(optimizer))
        if w is not None:
            w.after_step()


def find_model(optimizer):
    """The nn.Module that holds the optimizer's parameters, looked up in the script's frames (so
    parameters get their layer names); None when there is none."""
    import torch

    wanted = {id(p) for g in optimizer.param_groups for p in g["params"]}
    best, best_key = None, None
    frame = sys._getframe(1)
    seen: set[int] = set()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            candidates = [value]
            if not isinstance(value, torch.nn.Module) and hasattr(value, "__dict__"):
                candidates += list(getattr(value, "__dict__", {}).values())  # e.g. a trainer's model
            for m in candidates:
                if isinstance(m, torch.nn.Module) and id(m) not in seen:
                    seen.add(id(m))
                    have = {id(p) for p in m.parameters()}
                    covered = len(wanted & have)
                    key = (covered, -len(have))  # cover the most, with the fewest extras
                    if covered and (best_key is None or key > best_key):
                        best, best_key = m, key
        frame = frame.f_back
    return best


def report(out, session: Session, rows: int, plot: str | None, flow: str | None) -> None:
    """Per optimizer: step table, last step per parameter, loss curve, summary; then the charts."""
    if not session.order:
        out.print("the script made no optimizer step (backtrace train watches torch.optim "
                  "optimizers)")
        return
    many = len(session.order) > 1
    for i, w in enumerate(session.order, start=1):
        name = type(w.optimizer).__name__
        model = type(w.model).__name__ if w.model is not None and not isinstance(w.model, list) \
            else "its parameters"
        out.print(f"\noptimizer {i}: {name} on {model}, {len(w.steps)} steps", highlight=False)
        if rows and w.steps:
            out.print(w.table(last=rows))
            out.print(w.layer_table())
        out.print(w.loss_curve(), highlight=False)
        out.print(w.summary(), highlight=False)
        for path, draw in ((plot, w.plot), (flow, w.plot_gradient_flow)):
            if path and w.steps:
                target = Path(path)
                if many:
                    target = target.with_name(f"{target.stem}-{i}{target.suffix}")
                draw(str(target))
                out.print(f"chart written to {target}")
