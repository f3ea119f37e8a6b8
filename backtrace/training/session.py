"""`backtrace train`'s library half: run an unmodified training script with a Watch on every
torch.optim optimizer it steps. Global optimizer-step hooks give each optimizer its own Watch on
its first step, on the model found in the script's frames. torch loads when a session starts."""
from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import patches
from ..scripts import ScriptRun, run_script


class Session:
    """Global optimizer-step hooks that give each optimizer its own Watch on its first step (or
    on the first `GradScaler.step` of it, which may skip the optimizer's own step)."""

    def __init__(self, dataset_size: int | None = None, batch_size: int | None = None,
                 log: Callable[[str], Any] | None = None, window: int | None = None) -> None:
        self.dataset_size, self.batch_size, self.log = dataset_size, batch_size, log
        self.window = window
        self.watches: dict[int, Any] = {}  # id(optimizer) -> its Watch
        self.order: list = []  # the watches, in the order their optimizers first stepped
        self.last_loss: float | None = None
        self._handles: list = []

    def start(self) -> None:
        """Install the global optimizer-step hooks, the GradScaler hook and the loss capture."""
        from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                           register_optimizer_step_pre_hook)

        self._handles = [register_optimizer_step_pre_hook(self._pre),
                         register_optimizer_step_post_hook(self._post)]
        # Before a watch exists (the first step) the loss is caught here.
        self._handles.append(patches.patch("Tensor.backward", self._capture_loss))
        self._handles.append(patches.patch("GradScaler.step", self._scaler_step))

    def _capture_loss(self, call, tensor, *args, **kwargs):
        if tensor.numel() == 1:
            self.last_loss = tensor.detach().reshape(()).clone()
        return call(tensor, *args, **kwargs)

    def stop(self) -> None:
        """Detach every watch and remove the hooks; the records stay."""
        for w in self.order:
            w.detach()
        for h in self._handles:
            h.remove()

    def watch_of(self, optimizer: Any) -> Any:
        """The optimizer's Watch, made (on the model found in the script's frames) on first use."""
        from .watch import Watch

        w = self.watches.get(id(optimizer))
        if w is None:
            model = find_model(optimizer)
            options = {} if self.window is None else {"window": self.window}
            w = Watch(model, optimizer, self.dataset_size, self.batch_size, hook_optimizer=False,
                      log=self.log, **options)
            w.attach()
            w.began_after_backward()
            if self.last_loss is not None:  # the first step's loss, caught before the watch existed
                w._step.catch_loss(self.last_loss)
            self.watches[id(optimizer)] = w
            self.order.append(w)
        return w

    def _scaler_step(self, call, scaler, optimizer, *args, **kwargs):
        return self.watch_of(optimizer).scaler_step(call, scaler, optimizer, *args, **kwargs)

    def _pre(self, optimizer, args, kwargs) -> None:
        self.watch_of(optimizer).before_step()

    def _post(self, optimizer, args, kwargs) -> None:
        w = self.watches.get(id(optimizer))
        if w is not None:
            w.after_step()


def find_model(optimizer: Any) -> Any:
    """The nn.Module that holds the optimizer's parameters, looked up in the script's frames (so
    parameters get their layer names); None when there is none."""
    import torch

    wanted = {id(p) for g in optimizer.param_groups for p in g["params"]}
    best, best_key = None, None
    frame = sys._getframe(1)
    seen: set[int] = set()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, types.ModuleType):
                continue  # an imported module: its attributes are not the script's model
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


@dataclass
class Training:
    """A watched script run: one Watch per optimizer (in the order they first stepped), and how
    the script ended."""

    watches: list
    run: ScriptRun


def train_script(script: str | Path, args: tuple[str, ...] | list[str] = (),
                 dataset_size: int | None = None, batch_size: int | None = None,
                 log: Callable[[str], Any] | None = None, window: int | None = None) -> Training:
    """Run SCRIPT with ARGS and watch every optimizer it steps; `log` gets each Watch's lines;
    `window`: detailed steps each Watch keeps (default: watch's)."""
    session = Session(dataset_size, batch_size, log, window)
    session.start()
    try:
        run = run_script(script, args)
    finally:
        session.stop()
    return Training(session.order, run)
