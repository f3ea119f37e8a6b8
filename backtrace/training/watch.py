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

This module imports torch; `import backtrace` does not load it until `backtrace.watch` is used.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import patches
from ..errors import UsageError
from ..tracer.stats import tensor_stats
from ..values import TensorStats

EXPLODE = 1e3  # a layer whose gradient norm exceeds this is exploding
VANISH = 1e-4  # ... below this fraction of the largest layer's gradient norm is vanishing
RISE = 3  # loss window when the epoch length is unknown
RISE_FACTOR = 1.5  # a mean loss this many times its lowest is rising


class TrainingWarning(UserWarning):
    """Something in a watched training loop is probably wrong (the message names layer and step)."""


@dataclass
class ParamRecord:
    """One parameter at one step."""

    name: str
    layer: str
    shape: tuple[int, ...]
    grad_norm: float | None  # None: no gradient reached it
    weight_norm: float  # before the update
    update_norm: float
    state: dict[str, Any] = field(default_factory=dict)  # optimizer state: TensorStats or numbers

    @property
    def ratio(self) -> float:
        """‖ΔW‖ / ‖W‖: how much of the weight one update changes (around 1e-3 is typical)."""
        if self.weight_norm == 0:
            return math.inf if self.update_norm else 0.0
        return self.update_norm / self.weight_norm


@dataclass
class StepRecord:
    """One optimizer step (one weight update)."""

    step: int  # 1-based
    epoch: int | None
    batch: int | None
    loss: float | None
    lr: float | None
    params: dict[str, ParamRecord]
    layers: dict[str, float | None]  # layer -> norm of all its parameters' gradients
    relu_zero: dict[str, float] = field(default_factory=dict)  # ReLU layer -> share of zeros

    @property
    def grad_norm(self) -> float:
        """The norm of the whole model's gradient."""
        return math.sqrt(sum(v * v for v in self.layers.values() if v is not None))


@dataclass(frozen=True)
class Finding:
    """A warning: what, where (layer) and when (step)."""

    kind: str  # not-zeroed, non-finite, exploding, vanishing, loss-rising, dead-relu
    step: int
    layer: str
    message: str

    def __str__(self) -> str:
        return self.message


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
        self._last_found: dict[tuple[str, str], int] = {}
        self._handles: list[Any] = []
        self._snapshot: dict[str, torch.Tensor] = {}
        self._grad_norms: dict[str, float] = {}  # gradient norms captured since the last step
        self._accum_version: dict[str, int] = {}
        self._relu: dict[str, float] = {}
        self._pending_loss: float | None = None
        self._means: tuple | None = None  # first loss, lowest and last windowed mean
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
        spe = self.steps_per_epoch
        if spe is None:
            return None
        n, b = self.dataset_size, self.batch_size
        last = n - (spe - 1) * b
        tail = "" if last == b else f"; the last batch has {last} sample{'s' * (last != 1)}"
        return (f"{n} samples, batch {b} -> {spe} step{'s' * (spe != 1)} per epoch (each step "
                f"processes {min(b, n)} samples and updates the weights once{tail}; after {spe} "
                f"step{'s' * (spe != 1)} every sample has been seen once = 1 epoch)")

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
            # The weight changed since a gradient was last added, yet .grad still holds that
            # gradient: backward is about to add a new one to it (it accumulates).
            old = p.grad
            if old is not None and p._version != self._accum_version[name] and bool(old.any()):
                k = len(self.steps) + 1
                self._find("not-zeroed", k, self.layer_of[name],
                           f"step {k}: the gradient of {self._where(name)} was not zeroed after "
                           f"step {k - 1}, so backward adds to the old one (gradients accumulate): "
                           "call optimizer.zero_grad() or p.grad.zero_() every step")
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
            if zero == 1.0:
                k = len(self.steps) + 1
                self._find("dead-relu", k, name,
                           f"step {k}: every output of ReLU layer {name} is zero, so no gradient "
                           "flows back through it (dead ReLUs: lower the learning rate, check the "
                           "initialisation or the inputs' scale)")
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
            st = {}
            for key, v in state.get(p, {}).items():
                if isinstance(v, torch.Tensor):
                    st[key] = float(v) if v.numel() == 1 and key == "step" else tensor_stats(v)
                elif isinstance(v, (int, float)):
                    st[key] = float(v)
            params[name] = ParamRecord(name, self.layer_of[name], tuple(p.shape),
                                       self._grad_norms.get(name), _norm(before),
                                       _norm(now - before), st)
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
    def _where(self, name: str) -> str:
        layer = self.layer_of[name]
        short = name[len(layer) + 1:] if name != layer else ""
        return self._layer(layer) + (f" {short}" if short else "")

    def _layer(self, layer: str) -> str:
        kind = self.layer_kind.get(layer)
        return f"layer {layer} ({kind})" if kind else layer

    def _find(self, kind: str, step: int, layer: str, message: str) -> None:
        key = (kind, layer)
        if self._last_found.get(key) == step:
            return  # a layer's weight and bias share one finding per step
        self._last_found[key] = step
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] > 1:
            return  # one warning per fault and layer; counts keeps at how many steps it happened
        finding = Finding(kind, step, layer, message)
        self.warnings.append(finding)
        if self.log is not None:
            self.log(f"warning: {message}")
        else:
            warnings.warn(TrainingWarning(message), stacklevel=4)

    def _check(self, r: StepRecord) -> None:
        k = r.step
        for name, rec in r.params.items():
            if rec.grad_norm is not None and not math.isfinite(rec.grad_norm):
                self._find("non-finite", k, rec.layer,
                           f"step {k}: the gradient of {self._where(name)} contains NaN or inf")
            elif not math.isfinite(_norm(self.params[name])):
                self._find("non-finite", k, rec.layer,
                           f"step {k}: the weights of {self._where(name)} became NaN or inf")
        finite = {layer: v for layer, v in r.layers.items() if v is not None and math.isfinite(v)}
        top = max(finite.values(), default=0.0)
        for layer, v in finite.items():
            if v > self.explode:
                self._find("exploding", k, layer,
                           f"step {k}: exploding gradient in {self._layer(layer)}: norm "
                           f"{v:.3g} > {self.explode:g} (lower the learning rate or clip gradients)")
            elif top > 0 and v < self.vanish * top:
                self._find("vanishing", k, layer,
                           f"step {k}: vanishing gradient in {self._layer(layer)}: norm {v:.3g}, "
                           f"{v / top:.2g} of the largest layer's ({top:.3g})")
        self._check_loss(r)

    def _check_loss(self, r: StepRecord) -> None:
        if r.loss is None:
            return
        if not math.isfinite(r.loss):
            self._find("non-finite", r.step, "loss", f"step {r.step}: the loss is {r.loss}")
            return
        # Mini-batch losses are noisy: compare means over a window (an epoch, at most 10 steps).
        # Rising: the mean went up, is 50% above its lowest (or the first loss), by a tenth of that.
        window = min(10, self.steps_per_epoch or self.rise)
        chunk = [s.loss for s in self.steps[-window:]]
        if len(chunk) < window or None in chunk or not all(map(math.isfinite, chunk)):
            return
        now = sum(chunk) / window
        start = next(s.loss for s in self.steps if s.loss is not None)  # before any learning
        first, low, last = self._means or (start, start, None)
        self._means = (first, min(low, now), now)
        if first <= 0:
            return
        if (last is None or now > last) and now >= RISE_FACTOR * low and now - low >= 0.1 * first:
            lr = f" {r.lr:g}" if r.lr is not None else ""
            cause = "probably because gradients accumulate (they are not zeroed)" \
                if any(f.kind == "not-zeroed" for f in self.warnings) else \
                f"the learning rate{lr} is probably too large, each update overshoots"
            self._find("loss-rising", r.step, "loss",
                       f"step {r.step}: the loss is rising (mean of the last {window} step"
                       f"{'s' * (window > 1)} {now:.4g}, up from {low:.4g}): {cause}")

    # ------------------------------------------------------------------ views
    @property
    def losses(self) -> list[float | None]:
        """The loss of every step (None where none was recorded)."""
        return [s.loss for s in self.steps]

    def table(self, last: int | None = None, boxed: bool = False):
        """A rich Table: step, epoch, batch, loss, lr, gradient norm, largest update/weight ratio."""
        from ..render.tables import table as make_table

        heads = ("step", "epoch", "batch", "loss", "lr", "‖∂L/∂W‖", "max ‖ΔW‖/‖W‖")
        table = make_table(heads, "table" if boxed else "plain", right=heads)
        rows = self.steps if last is None else self.steps[-last:]
        for s in rows:
            ratio = max((p.ratio for p in s.params.values()), default=0.0)
            table.add_row(str(s.step), _opt(s.epoch), _opt(s.batch), _num(s.loss), _num(s.lr),
                          _num(s.grad_norm), _num(ratio))
        return table

    def layer_table(self, step: int = -1, boxed: bool = False):
        """A rich Table of one step, per parameter: gradient, update, ratio, optimizer state."""
        from ..render.tables import table as make_table

        s = self.steps[step]
        table = make_table(("parameter", "shape", "‖grad‖", "‖W‖", "‖ΔW‖", "‖ΔW‖/‖W‖",
                            "optimizer state"), "table" if boxed else "plain",
                           right=("shape", "‖grad‖", "‖W‖", "‖ΔW‖", "‖ΔW‖/‖W‖"),
                           title=f"step {s.step}, per parameter")
        for p in s.params.values():
            state = ", ".join(f"{k} {v}" if isinstance(v, TensorStats) else f"{k} {_num(v)}"
                              for k, v in p.state.items())
            table.add_row(p.name, "×".join(map(str, p.shape)) or "scalar", _num(p.grad_norm),
                          _num(p.weight_norm), _num(p.update_norm), _num(p.ratio), state)
        return table

    def loss_curve(self, width: int = 60, height: int = 8) -> str:
        """The loss per step as plain text."""
        from .textplot import ascii_curve

        values = [v for v in self.losses if v is not None]
        if not values:
            return "loss: none recorded (call .backward() on the loss, or w.loss(value))"
        first = next(s.step for s in self.steps if s.loss is not None)
        return ascii_curve(values, width, height, first=first)

    def summary(self) -> str:
        """Accounting, steps and epochs seen, and every warning with how often it happened."""
        lines = [self.accounting] if self.accounting else []
        n, spe = len(self.steps), self.steps_per_epoch
        if spe:
            full, rest = divmod(n, spe)
            lines.append(f"{n} steps = {full} epoch{'s' * (full != 1)} of {spe} steps"
                         + (f" + {rest} step{'s' * (rest != 1)}" if rest else ""))
        else:
            lines.append(f"{n} step{'s' * (n != 1)}")
        done = [s.loss for s in self.steps if s.loss is not None]
        if done:
            lines.append(f"loss {done[0]:.4g} at the first step, {done[-1]:.4g} at the last")
        if not self.warnings:
            lines.append("no warnings")
        for f in self.warnings:
            times = self.counts[(f.kind, f.layer)]
            lines.append(f"warning: {f.message}" + (f" (and at {times - 1} more step"
                                                    f"{'s' * (times > 2)})" if times > 1 else ""))
        return "\n".join(lines)

    def loss_figure(self):
        """A matplotlib Figure of the loss per step."""
        from .plots import loss_curves

        return loss_curves({"loss": [math.nan if v is None else v for v in self.losses]},
                           "Training loss")

    def gradient_flow_figure(self):
        """A matplotlib Figure: per-layer gradient norm and update/weight ratio at each step."""
        from .plots import gradient_flow

        layers = list(dict.fromkeys(self.layer_of.values()))
        steps = [s.step for s in self.steps]
        grads = {layer: [_nan(s.layers.get(layer)) for s in self.steps] for layer in layers}
        ratios = {}
        for layer in layers:
            names = [n for n, lay in self.layer_of.items() if lay == layer]
            ratios[layer] = [max(s.params[n].ratio for n in names) for s in self.steps]
        return gradient_flow(steps, grads, ratios)

    def plot(self, path: str) -> None:
        """Write the loss curve to an .svg/.png file."""
        from .plots import save

        save(self.loss_figure(), path)

    def plot_gradient_flow(self, path: str) -> None:
        """Write the per-layer gradient-flow chart to an .svg/.png file."""
        from .plots import save

        save(self.gradient_flow_figure(), path)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def watch(model: Any, optimizer: Any = None, dataset_size: int | None = None,
          batch_size: int | None = None, **options: Any) -> Watch:
    """Watch a training loop; use `with backtrace.watch(model, optimizer, ...) as w:`.

    `model`: an nn.Module, a dict of tensors, an object holding tensors or a list of tensors.
    Options: log (a function that receives the accounting line and each warning; without it warnings
    go through Python's warnings module as TrainingWarning), capture_loss (record the scalar
    `.backward()` is called on, default True), explode, vanish, rise (warning thresholds)."""
    return Watch(model, optimizer, dataset_size, batch_size, **options)

