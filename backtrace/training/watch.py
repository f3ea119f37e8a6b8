"""`backtrace.watch`: what a real PyTorch training loop does at each optimizer step, and what goes wrong.

    with backtrace.watch(model, optimizer, dataset_size=1000, batch_size=100) as w:
        for xb, yb in batches:
            optimizer.zero_grad(); loss = loss_fn(model(xb), yb); loss.backward(); optimizer.step()
    print(w.summary())

At every step it records the step, epoch and batch, the loss (the scalar `.backward()` was called on,
or one given with `w.loss(...)`), each parameter's gradient norm, update norm and update/weight ratio,
and the optimizer's state (Adam's exp_avg, exp_avg_sq). It warns, naming the layer and the step, about
gradients that were never zeroed, NaN/inf, exploding or vanishing gradients, a loss that keeps rising,
and ReLU layers whose outputs are all zero. Without an optimizer (a hand-written update under
`torch.no_grad()`), call `w.step(loss)` after each update.

This module holds the hooks and the step recording; the records are in records.py, the warnings
in checks.py, the tables, summary and charts in views.py. It imports torch; `import backtrace` does
not load it until `backtrace.watch` is used.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from .. import patches
from ..errors import UsageError
from ..tracer.stats import tensor_stats
from . import views
from .checks import CHECKS, EXPLODE, RISE, VANISH
from .records import Finding, ParamRecord, StepRecord, TrainingWarning

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = ["Finding", "ParamRecord", "StepRecord", "TrainingWarning", "Watch", "named_parameters",
           "watch"]


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64))


def named_parameters(model: Any, optimizer: Any = None) -> tuple[dict[str, torch.Tensor],
                                                                  dict[str, str], dict[str, str]]:
    """(name -> parameter, name -> layer, layer -> module type) for a module, a dict, an object
    holding tensors (the lecture's LinearRegression), a list of tensors, or just an optimizer."""
    params: dict[str, torch.Tensor] = {}
    layers: dict[str, str] = {}
    kinds: dict[str, str] = {}
    if isinstance(model, torch.nn.Module):
        modules = dict(model.named_modules())
        for name, p in model.named_parameters():
            layer = name.rpartition(".")[0] or name
            params[name], layers[name] = p, layer
            kinds[layer] = type(modules.get(layer, p)).__name__ if layer in modules else "Parameter"
    elif isinstance(model, Mapping):
        params = {str(k): v for k, v in model.items() if isinstance(v, torch.Tensor)}
    elif isinstance(model, torch.Tensor):
        params = {"param": model}
    elif model is not None and hasattr(model, "__dict__") and not isinstance(model, (list, tuple)):
        params = {k: v for k, v in vars(model).items() if isinstance(v, torch.Tensor)}
    elif model is not None:
        params = {f"param{i}": p for i, p in enumerate(model) if isinstance(p, torch.Tensor)}
    params = {k: p for k, p in params.items() if p.requires_grad}
    if optimizer is not None:
        known = {id(p) for p in params.values()}
        for g, group in enumerate(optimizer.param_groups):
            for i, p in enumerate(group["params"]):
                if id(p) not in known:
                    params[f"group{g}.param{i}"] = p
                    known.add(id(p))
    if not params:
        raise UsageError("nothing to watch: the model has no tensors that require gradients")
    for name in params:
        layers.setdefault(name, name)
    return params, layers, kinds


class Watch:
    """Records a training loop step by step; use as a context manager or call attach()/detach()."""

    def __init__(self, model: Any, optimizer: Any = None, dataset_size: int | None = None,
                 batch_size: int | None = None, *, log: Callable[[str], Any] | None = None,
                 capture_loss: bool = True, explode: float = EXPLODE, vanish: float = VANISH,
                 rise: int = RISE, hook_optimizer: bool = True) -> None:
        if (dataset_size is None) != (batch_size is None):
            raise UsageError("give dataset_size and batch_size together (or neither)")
        if batch_size is not None and (batch_size < 1 or dataset_size < 1):
            raise UsageError("dataset_size and batch_size must be positive")
        self.model, self.optimizer = model, optimizer
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.log, self.capture_loss = log, capture_loss
        self.explode, self.vanish, self.rise = explode, vanish, rise
        self.hook_optimizer = hook_optimizer
        self.params, self.layer_of, self.layer_kind = named_parameters(model, optimizer)
        self.steps: list[StepRecord] = []
        self.warnings: list[Finding] = []
        self.counts: dict[tuple[str, str], int] = {}  # (kind, layer) -> steps it was found at
        self.check_state: dict[str, Any] = {}  # what checks remember between steps, by kind
        self._last_found: dict[tuple[str, str], int] = {}
        self._handles: list[Any] = []
        self._snapshot: dict[str, torch.Tensor] = {}
        self._grad_norms: dict[str, float] = {}  # gradient norms captured since the last step
        self._accum_version: dict[str, int] = {}
        self._relu: dict[str, float] = {}
        self._pending_loss: float | None = None
        self._attached = False

    # ------------------------------------------------------------------ accounting
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
        """Start watching: parameter, ReLU and optimizer hooks, and the loss capture."""
        if self._attached:
            return self
        self._attached = True
        for name, p in self.params.items():
            self._snapshot[name] = p.detach().clone()
            self._accum_version[name] = p._version
            self._handles.append(p.register_hook(self._before_accumulate(name, p)))
            self._handles.append(p.register_post_accumulate_grad_hook(self._after_accumulate(name)))
        if isinstance(self.model, torch.nn.Module):
            for name, module in self.model.named_modules():
                if isinstance(module, torch.nn.ReLU):
                    self._handles.append(module.register_forward_hook(self._relu_hook(name)))
        if self.optimizer is not None and self.hook_optimizer:
            self._handles.append(self.optimizer.register_step_pre_hook(
                lambda opt, args, kwargs: self.before_step()))
            self._handles.append(self.optimizer.register_step_post_hook(
                lambda opt, args, kwargs: self.after_step()))
        if self.capture_loss:  # the scalar .backward() is called on is the step's loss
            self._handles.append(patches.patch("Tensor.backward", self._capture_loss))
        if self.accounting and self.log:
            self.log(self.accounting)
        return self

    def detach(self) -> None:
        """Stop watching; the records stay."""
        if not self._attached:
            return
        self._attached = False
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _capture_loss(self, call: Callable, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if tensor.numel() == 1:
            self._pending_loss = float(tensor.detach())
        return call(tensor, *args, **kwargs)

    def __enter__(self) -> Watch:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _before_accumulate(self, name: str, p: torch.Tensor):
        def hook(grad: torch.Tensor) -> None:
            changed = p._version != self._accum_version[name]
            for check in CHECKS["backward"]:
                self._report(check(self, name, p.grad, changed))
        return hook

    def _after_accumulate(self, name: str):
        def hook(p: torch.Tensor) -> None:
            self._accum_version[name] = p._version
            self._grad_norms[name] = _norm(p.grad)
        return hook

    def _relu_hook(self, name: str):
        def hook(module, inputs, output) -> None:
            if not (module.training and torch.is_grad_enabled()) or output.numel() == 0:
                return
            zero = float((output == 0).double().mean())
            self._relu[name] = zero
            for check in CHECKS["relu"]:
                self._report(check(self, name, zero))
        return hook

    # ------------------------------------------------------------------ steps
    def before_step(self) -> None:
        """Called just before optimizer.step(): the gradients it is about to use, the weights."""
        for name, p in self.params.items():
            if p.grad is not None:
                self._grad_norms[name] = _norm(p.grad)
            self._snapshot[name] = p.detach().clone()

    def after_step(self) -> None:
        """Called just after optimizer.step()."""
        self._record(self._current_lr())

    def step(self, loss: Any = None) -> StepRecord:
        """Record one hand-written update (call it after the update); `loss` is optional."""
        if loss is not None:
            self.loss(loss)
        return self._record(None)

    def loss(self, value: Any) -> None:
        """Give the loss of the current step (before or after its update)."""
        value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if self.steps and self._pending_loss is None and not self._grad_norms:
            self.steps[-1].loss = value  # logged after the step it belongs to
            self._check_loss(self.steps[-1])
        else:
            self._pending_loss = value

    def weight_norm(self, name: str) -> float:
        """The norm of a parameter's weights now."""
        return _norm(self.params[name])

    def _current_lr(self) -> float | None:
        if self.optimizer is None:
            return None
        lr = self.optimizer.param_groups[0].get("lr")
        return float(lr) if lr is not None else None

    def _record(self, lr: float | None) -> StepRecord:
        k = len(self.steps) + 1
        spe = self.steps_per_epoch
        state = getattr(self.optimizer, "state", {}) if self.optimizer is not None else {}
        params: dict[str, ParamRecord] = {}
        for name, p in self.params.items():
            before = self._snapshot[name]
            now = p.detach()
            params[name] = ParamRecord(name, self.layer_of[name], tuple(p.shape),
                                       self._grad_norms.get(name), _norm(before),
                                       _norm(now - before), _optimizer_state(state.get(p, {})))
            self._snapshot[name] = now.clone()
        layers: dict[str, float | None] = {}
        for rec in params.values():
            if rec.grad_norm is None:
                layers.setdefault(rec.layer, None)
            else:
                layers[rec.layer] = math.sqrt((layers.get(rec.layer) or 0.0) ** 2
                                              + rec.grad_norm ** 2)
        record = StepRecord(k, None if spe is None else (k - 1) // spe + 1,
                            None if spe is None else (k - 1) % spe + 1, self._pending_loss, lr,
                            params, layers, dict(self._relu))
        self._pending_loss = None
        self._grad_norms = {}
        self.steps.append(record)
        self._check(record)
        return record

    # ------------------------------------------------------------------ checks
    # stacklevel=4 counts _report, its caller (a hook, _check or _check_loss) and two more frames:
    # call _report only from those, or the warning's reported location moves.
    def _report(self, finding: Finding | None) -> None:
        if finding is None:
            return
        key = (finding.kind, finding.layer)
        if self._last_found.get(key) == finding.step:
            return  # a layer's weight and bias share one finding per step
        self._last_found[key] = finding.step
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] > 1:
            return  # one warning per fault and layer; counts keeps at how many steps it happened
        self.warnings.append(finding)
        if self.log is not None:
            self.log(f"warning: {finding.message}")
        else:
            warnings.warn(TrainingWarning(finding.message), stacklevel=4)

    def _check(self, r: StepRecord) -> None:
        for name in r.params:
            for check in CHECKS["parameter"]:
                self._report(check(self, r, name))
        finite = {layer: v for layer, v in r.layers.items() if v is not None and math.isfinite(v)}
        top = max(finite.values(), default=0.0)
        for layer, v in finite.items():
            for check in CHECKS["layer"]:
                self._report(check(self, r, layer, v, top))
        self._check_loss(r)

    def _check_loss(self, r: StepRecord) -> None:
        for check in CHECKS["loss"]:
            self._report(check(self, r))

    # ------------------------------------------------------------------ views (views.py)
    @property
    def losses(self) -> list[float | None]:
        """The loss of every step (None where none was recorded)."""
        return [s.loss for s in self.steps]

    def table(self, last: int | None = None, boxed: bool = False) -> Table:
        """A rich Table: step, epoch, batch, loss, lr, gradient norm, largest update/weight ratio."""
        return views.steps_table(self, last, boxed)

    def layer_table(self, step: int = -1, boxed: bool = False) -> Table:
        """A rich Table of one step, per parameter: gradient, update, ratio, optimizer state."""
        return views.layer_table(self, step, boxed)

    def loss_curve(self, width: int = 60, height: int = 8) -> str:
        """The loss per step as plain text."""
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

    def plot(self, path: str) -> None:
        """Write the loss curve to an .svg/.png file."""
        from .plots import save

        save(self.loss_figure(), path)

    def plot_gradient_flow(self, path: str) -> None:
        """Write the per-layer gradient-flow chart to an .svg/.png file."""
        from .plots import save

        save(self.gradient_flow_figure(), path)


def _optimizer_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter's optimizer state as numbers and TensorStats (Adam: step, exp_avg, exp_avg_sq)."""
    st: dict[str, Any] = {}
    for key, v in state.items():
        if isinstance(v, torch.Tensor):
            st[key] = float(v) if v.numel() == 1 and key == "step" else tensor_stats(v)
        elif isinstance(v, (int, float)):
            st[key] = float(v)
    return st


def watch(model: Any, optimizer: Any = None, dataset_size: int | None = None,
          batch_size: int | None = None, **options: Any) -> Watch:
    """Watch a training loop; use `with backtrace.watch(model, optimizer, ...) as w:`.

    `model`: an nn.Module, a dict of tensors, an object holding tensors or a list of tensors.
    Options: log (a function that receives the accounting line and each warning; without it warnings
    go through Python's warnings module as TrainingWarning), capture_loss (record the scalar
    `.backward()` is called on, default True), explode, vanish, rise (warning thresholds)."""
    return Watch(model, optimizer, dataset_size, batch_size, **options)
