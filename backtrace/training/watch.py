"""`backtrace.watch`: what a real PyTorch training loop does at each optimizer step, and what goes wrong.

    with backtrace.watch(model, optimizer, dataset_size=1000, batch_size=100) as w:
        for xb, yb in batches:
            optimizer.zero_grad(); loss = loss_fn(model(xb), yb); loss.backward(); optimizer.step()
    print(w.summary())

At every step it records the step, epoch and batch, the loss (the scalar `.backward()` was called on,
or one given with `w.loss(...)`), each parameter's gradient norm as backward produced it and as the
optimizer stepped with it (after clipping; unscaled under AMP's GradScaler), its share of exact
zeros, update norm and update/weight ratio, and the optimizer's state (Adam's exp_avg, exp_avg_sq).
Every figure is computed on the tensors' device and read with one transfer per step. The last
`window` steps are kept in detail, every step in running summaries (bounded memory however long the
run). It warns, naming the layer and the step (checks.py); across the ranks of a torch.distributed
job it compares the ranks (ranks.py). Without an optimizer (a hand-written update under
`torch.no_grad()`), call `w.step(loss)` after each update.

This module holds the hooks; the measuring of a step is in stepping.py, the records in records.py,
the tables, summary and charts in views.py and heatmap.py. It imports torch; `import backtrace`
does not load it until `backtrace.watch` is used.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .. import patches
from ..errors import UsageError
from . import measure, stepping, views
from .activations import Activations
from .params import named_parameters
from .checks import CLIP_FACTOR, EXPLODE, RISE, VANISH
from .ranks import World
from .records import Finding, ParamRecord, StepRecord, Summary, TrainingWarning
from .records import window as step_window

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import RenderableType
    from rich.table import Table

__all__ = ["Finding", "ParamRecord", "StepRecord", "TrainingWarning", "Watch", "named_parameters",
           "watch"]

WINDOW = 1000  # detailed step records kept by default (each step is also in the running summary)


class Watch:
    """Records a training loop step by step; use as a context manager or call attach()/detach()."""

    def __init__(self, model: Any, optimizer: Any = None, dataset_size: int | None = None,
                 batch_size: int | None = None, *, log: Callable[[str], Any] | None = None,
                 capture_loss: bool = True, explode: float = EXPLODE, vanish: float = VANISH,
                 rise: int = RISE, clip_factor: float = CLIP_FACTOR, hook_optimizer: bool = True,
                 window: int | None = WINDOW, ranks: bool | None = None,
                 ranks_every: int = 1) -> None:
        if (dataset_size is None) != (batch_size is None):
            raise UsageError("give dataset_size and batch_size together (or neither)")
        if batch_size is not None and (batch_size < 1 or dataset_size < 1):
            raise UsageError("dataset_size and batch_size must be positive")
        for name, n in (("window", window), ("ranks_every", ranks_every)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise UsageError(f"{name} must be a positive integer{' or None' * (name == 'window')}"
                                 f", got {n!r}")
        self.model, self.optimizer = model, optimizer
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.log, self.capture_loss = log, capture_loss
        self.explode, self.vanish, self.rise = explode, vanish, rise
        self.clip_factor = clip_factor
        self.hook_optimizer = hook_optimizer
        self.params, self.layer_of, self.layer_kind = named_parameters(model, optimizer)
        self.sharded = {name: measure.sharded(p) for name, p in self.params.items()}  # FSDP2
        self.window = window
        self.steps = step_window(window)  # the last `window` StepRecords
        self.summary_data = Summary()
        self.warnings: list[Finding] = []
        self.counts: dict[tuple[str, str], int] = {}  # (kind, layer) -> steps it was found at
        self.check_state: dict[str, Any] = {}  # what checks remember between steps, by kind
        self.ranks_wanted, self.ranks_every = ranks, ranks_every
        self.world: World | None = None
        self.activations = Activations(model) if isinstance(model, torch.nn.Module) else None
        self._last_found: dict[tuple[str, str], int] = {}
        self._handles: list[Any] = []
        self._snapshot: dict[str, torch.Tensor] = {}
        self._accum_version: dict[str, int] = {}
        self._step = stepping.Pending()  # what this step measured so far, on the device
        self._backward_depth = 0
        self._scale: float | None = None
        self._attached = False

    # ------------------------------------------------------------------ accounting
    @property
    def step_count(self) -> int:
        """Steps recorded so far, also those the window let go."""
        return self.summary_data.steps

    @property
    def rank(self) -> int:
        """This process's rank (0 outside torch.distributed)."""
        return self.world.rank if self.world is not None else 0

    @property
    def world_size(self) -> int:
        """How many ranks the job has (1 outside torch.distributed)."""
        return self.world.size if self.world is not None else 1

    @property
    def steps_per_epoch(self) -> int | None:
        """ceil(dataset_size / batch_size): the last batch may be smaller."""
        if self.batch_size is None:
            return None
        return -(-self.dataset_size // self.batch_size)

    @property
    def accounting(self) -> str | None:
        """'1000 samples, batch 100 -> 10 steps per epoch' with what that means."""
        return views.accounting(self)

    # ------------------------------------------------------------------ hooks
    def attach(self) -> Watch:
        """Start watching: parameter, activation, optimizer and GradScaler hooks, the loss capture."""
        if self._attached:
            return self
        self._attached = True
        if self.ranks_wanted is not False:
            self.world = World.current()
        for name, p in self.params.items():
            self._snapshot[name] = measure.local(p).detach().clone()
            self._accum_version[name] = p._version
            self._handles.append(p.register_hook(self._before_accumulate(name, p)))
            self._handles.append(p.register_post_accumulate_grad_hook(self._after_accumulate(name)))
        if self.activations is not None:
            self.activations.attach()
            self._handles.append(self.activations)
        if self.optimizer is not None and self.hook_optimizer:
            self._handles.append(self.optimizer.register_step_pre_hook(
                lambda opt, args, kwargs: self.before_step()))
            self._handles.append(self.optimizer.register_step_post_hook(
                lambda opt, args, kwargs: self.after_step()))
            self._handles.append(patches.patch("GradScaler.step", self._around_scaler))
        for target in ("Tensor.backward", "autograd.backward"):
            self._handles.append(patches.patch(target, self._around_backward))
        if self.accounting and self.log:
            self.log(self.accounting)
        return self

    def detach(self) -> None:
        """Stop watching; the records stay."""
        if not self._attached:
            return
        self._attached = False
        for h in reversed(self._handles):
            h.remove()
        self._handles.clear()

    def __enter__(self) -> Watch:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _around_backward(self, call: Callable, *args: Any, **kwargs: Any) -> Any:
        """Around every backward call: catch the loss, then (outermost call only) measure the
        gradients backward produced, after DDP's all-reduce and before any clipping."""
        self._backward_depth += 1
        try:
            if self._backward_depth == 1 and self.capture_loss:
                roots = args[0] if args else kwargs.get("tensors", kwargs.get("self"))
                if isinstance(roots, torch.Tensor) and roots.numel() == 1:
                    self._step.catch_loss(roots)
            result = call(*args, **kwargs)
        finally:
            self._backward_depth -= 1
        if self._backward_depth == 0:
            self._step.after_backward(self.params)
        return result

    def _around_scaler(self, call: Callable, scaler: Any, optimizer: Any, *args: Any,
                       **kwargs: Any) -> Any:
        if optimizer is not self.optimizer:
            return call(scaler, optimizer, *args, **kwargs)
        return self.scaler_step(call, scaler, optimizer, *args, **kwargs)

    def scaler_step(self, call: Callable, scaler: Any, optimizer: Any, *args: Any,
                    **kwargs: Any) -> Any:
        """Run `scaler.step(optimizer)` (as `call`) knowing its scale: the gradients backward
        produced are divided by it, and a step the scaler skips (inf/NaN) is recorded as skipped."""
        self._scale = float(scaler.get_scale()) if scaler.is_enabled() else None
        before = self.step_count
        try:
            result = call(scaler, optimizer, *args, **kwargs)
        finally:
            if self.step_count == before and self._attached:
                self._record(self._current_lr(), skipped=True)
            self._scale = None
        return result

    def _before_accumulate(self, name: str, p: torch.Tensor):
        def hook(grad: torch.Tensor) -> None:
            # The weights changed since a gradient was last added, yet .grad still holds one:
            # backward is about to add the new gradient to it (read with the step's transfer).
            if p._version != self._accum_version[name] and p.grad is not None:
                self._step.stale[name] = p.grad.detach().ne(0).any()
        return hook

    def _after_accumulate(self, name: str):
        def hook(p: torch.Tensor) -> None:
            self._accum_version[name] = p._version
            if self.world is not None:  # this rank's own gradient, before DDP all-reduces it
                self._step.local[name] = measure.norm(p.grad)
        return hook

    # ------------------------------------------------------------------ steps
    def before_step(self) -> None:
        """Called just before optimizer.step(): the gradients it is about to step with."""
        self._step.before_step(self.params, self._ranks_now())

    def after_step(self) -> None:
        """Called just after optimizer.step()."""
        self._record(self._current_lr())

    def step(self, loss: Any = None) -> StepRecord:
        """Record one hand-written update (call it after the update); `loss` is optional."""
        if loss is not None:
            self.loss(loss)
        return self._record(None)

    def began_after_backward(self) -> None:
        """Say that this step's backward ran before the watch was attached (backtrace train
        attaches at the first optimizer step): its gradients as backward produced them are
        unknown, and the first step shows none rather than the clipped ones."""
        self._step.late = True

    def loss(self, value: Any) -> None:
        """Give the loss of the current step (before or after its update)."""
        value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if self.steps and self._step.untouched():
            self.steps[-1].loss = value  # logged after the step it belongs to
            self.summary_data.add_loss(self.steps[-1].step, value)
            self._check_loss(self.steps[-1])
        else:
            self._step.loss = value

    def weight_norm(self, name: str) -> float:
        """The norm of a parameter's weights now (of this rank's shard, for sharded ones)."""
        return float(measure.norm(self.params[name]))

    def _current_lr(self) -> float | None:
        if self.optimizer is None:
            return None
        lr = self.optimizer.param_groups[0].get("lr")
        return float(lr) if lr is not None else None

    def _ranks_now(self) -> bool:
        """Whether this step's figures are exchanged across the ranks."""
        if self.world is None:
            return False
        return any(self.sharded.values()) or (self.step_count + 1) % self.ranks_every == 0 or self.step_count == 0

    def _record(self, lr: float | None, skipped: bool = False) -> StepRecord:
        pending, self._step = self._step, stepping.Pending()
        record, extras = stepping.record(self, pending, lr, skipped, self._scale,
                                         self._ranks_now())
        self.steps.append(record)
        stepping.check(self, record, extras)
        return record

    # ------------------------------------------------------------------ checks
    def report(self, finding: Finding | None) -> None:
        """Keep a finding (once per kind and layer; counts keeps at how many steps it happened)
        and say it: to `log`, or through Python's warnings as a TrainingWarning."""
        if finding is None:
            return
        key = (finding.kind, finding.layer)
        if self._last_found.get(key) == finding.step:
            return  # a layer's weight and bias share one finding per step
        self._last_found[key] = finding.step
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] > 1:
            return
        self.warnings.append(finding)
        if self.log is not None:
            self.log(f"warning: {finding.message}")
        else:
            import warnings

            warnings.warn(TrainingWarning(finding.message), stacklevel=_user_level())

    def _check_loss(self, r: StepRecord) -> None:
        stepping.check_loss(self, r)

    @property
    def activation_sites(self) -> dict[str, Any]:
        """Activation call site -> what it is (op, module, functional or a module of its own)."""
        return self.activations.sites if self.activations is not None else {}

    # ------------------------------------------------------------------ views (views.py)
    @property
    def losses(self) -> list[float | None]:
        """The loss of every step in the window (None where none was recorded)."""
        return [s.loss for s in self.steps]

    def table(self, last: int | None = None, boxed: bool = False) -> Table:
        """A rich Table: step, epoch, batch, loss, lr, gradient norms, largest update/weight ratio."""
        return views.steps_table(self, last, boxed)

    def layer_table(self, step: int = -1, boxed: bool = False) -> Table:
        """A rich Table of one step, per parameter: gradient, update, ratio, optimizer state."""
        return views.layer_table(self, step, boxed)

    def ranks_table(self, last: int | None = None, boxed: bool = False) -> Table:
        """A rich Table: each rank's loss and local gradient norm, side by side, per step."""
        return views.ranks_table(self, last, boxed)

    def heatmap(self, metric: str = "rms", width: int | None = None) -> RenderableType:
        """The layer × step heatmap of one metric (rms, grad, ratio or zeros) for the terminal."""
        from .heatmap import terminal_heatmap

        return terminal_heatmap(self, metric, width)

    def loss_curve(self, width: int = 60, height: int = 8) -> str:
        """The loss per step as plain text, over the whole run."""
        return views.loss_curve(self, width, height)

    def summary(self) -> str:
        """Accounting, steps and epochs seen, and every warning with how often it happened."""
        return views.summary(self)

    def loss_figure(self) -> Figure:
        """A matplotlib Figure of the loss per step."""
        return views.loss_figure(self)

    def gradient_flow_figure(self) -> Figure:
        """A matplotlib Figure: per-layer gradient norm and update/weight ratio at each step."""
        return views.gradient_flow_figure(self)

    def heatmap_figure(self) -> Figure:
        """A matplotlib Figure: layer × step heatmaps of gradient RMS, update/weight, zeros."""
        from .heatmap import heatmap_figure

        return heatmap_figure(self)

    def explore(self, path: str, trace: Any, **options: Any) -> Any:
        """Write the HTML explorer page of `trace` (a trace of the watched model) with these
        layer × step heatmaps in its Training tab; options as for backtrace.export."""
        from .explore import explore

        return explore(self, path, trace, **options)

    def plot(self, path: str) -> None:
        """Write the loss curve to an .svg/.png file."""
        from .plots import save

        save(self.loss_figure(), path)

    def plot_gradient_flow(self, path: str) -> None:
        """Write the per-layer gradient-flow chart to an .svg/.png file."""
        from .plots import save

        save(self.gradient_flow_figure(), path)

    def plot_heatmap(self, path: str) -> None:
        """Write the layer × step heatmaps to an .svg/.png/.pdf file."""
        from .plots import save

        save(self.heatmap_figure(), path)


def _user_level() -> int:
    """The stacklevel of the user's frame (the line that stepped), past backtrace's and torch's."""
    frame, level = sys._getframe(2), 2  # the caller of report()
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("backtrace.", "torch.")):
        frame, level = frame.f_back, level + 1
    return level


def watch(model: Any, optimizer: Any = None, dataset_size: int | None = None,
          batch_size: int | None = None, **options: Any) -> Watch:
    """Watch a training loop; use `with backtrace.watch(model, optimizer, ...) as w:`.

    `model`: an nn.Module (DDP- or FSDP2-wrapped too), a dict of tensors, an object holding
    tensors or a list of tensors. Options: log (a function that receives the accounting line and
    each warning; without it warnings go through Python's warnings module as TrainingWarning),
    capture_loss (record the scalar `.backward()` is called on, default True), window (detailed
    step records kept, default 1000; None keeps all), explode, vanish, rise, clip_factor (warning
    thresholds), ranks (compare the ranks of a torch.distributed job: None = when there are
    several, False = never) and ranks_every (every N steps; sharded parameters need every step)."""
    return Watch(model, optimizer, dataset_size, batch_size, **options)
