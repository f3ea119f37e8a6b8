"""What `watch` warns about: one small function per kind of fault, in a table by when it runs.

Each check gets the watch and what its moment offers (see SCOPES) and returns a Finding, or None
when all is well; `Watch` runs every check of a scope, in table order, and reports what they find
(once per kind and layer). Adding a warning kind is one function here plus one row in CHECKS.
This module imports neither torch nor the watch: it reads the watch through records.Watched."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .records import Finding, StepRecord, Watched

EXPLODE = 1e3  # a layer whose gradient norm exceeds this is exploding
VANISH = 1e-4  # ... below this fraction of the largest layer's gradient norm is vanishing
RISE = 3  # loss window when the epoch length is unknown
RISE_FACTOR = 1.5  # a mean loss this many times its lowest is rising

# When each scope's checks run, and what they get after the watch.
SCOPES = {
    "backward": "before backward adds a gradient to a parameter: (name, its .grad, whether the "
                "weights changed since a gradient was last added)",
    "relu": "after a ReLU layer's forward while training: (layer, share of zero outputs)",
    "parameter": "after each step, once per parameter: (step record, parameter name)",
    "layer": "after each step, once per layer with a finite gradient norm: (step record, layer, "
             "its gradient norm, the largest layer's)",
    "loss": "once a step's loss is known: (step record)",
}


def _where(w: Watched, name: str) -> str:
    layer = w.layer_of[name]
    short = name[len(layer) + 1:] if name != layer else ""
    return _layer(w, layer) + (f" {short}" if short else "")


def _layer(w: Watched, layer: str) -> str:
    kind = w.layer_kind.get(layer)
    return f"layer {layer} ({kind})" if kind else layer


# ---------------------------------------------------------------------- while the loop runs

def not_zeroed(w: Watched, name: str, grad: Any, weights_changed: bool) -> Finding | None:
    """A gradient is about to be added to last step's gradient, which was never zeroed."""
    # The weight changed since a gradient was last added, yet .grad still holds that
    # gradient: backward is about to add a new one to it (it accumulates).
    if grad is None or not weights_changed or not bool(grad.any()):
        return None
    k = len(w.steps) + 1
    return Finding("not-zeroed", k, w.layer_of[name],
                   f"step {k}: the gradient of {_where(w, name)} was not zeroed after "
                   f"step {k - 1}, so backward adds to the old one (gradients accumulate): "
                   "call optimizer.zero_grad() or p.grad.zero_() every step")


def dead_relu(w: Watched, layer: str, zero: float) -> Finding | None:
    """Every output of a ReLU layer is zero: no gradient flows back through it."""
    if zero != 1.0:
        return None
    k = len(w.steps) + 1
    return Finding("dead-relu", k, layer,
                   f"step {k}: every output of ReLU layer {layer} is zero, so no gradient "
                   "flows back through it (dead ReLUs: lower the learning rate, check the "
                   "initialisation or the inputs' scale)")


# ---------------------------------------------------------------------- after each step

def non_finite_parameter(w: Watched, r: StepRecord, name: str) -> Finding | None:
    """A parameter's gradient, or else its weights, contain NaN or inf."""
    rec = r.params[name]
    if rec.grad_norm is not None and not math.isfinite(rec.grad_norm):
        return Finding("non-finite", r.step, rec.layer,
                       f"step {r.step}: the gradient of {_where(w, name)} contains NaN or inf")
    if not math.isfinite(w.weight_norm(name)):
        return Finding("non-finite", r.step, rec.layer,
                       f"step {r.step}: the weights of {_where(w, name)} became NaN or inf")
    return None


def exploding(w: Watched, r: StepRecord, layer: str, norm: float, top: float) -> Finding | None:
    """A layer's gradient norm is above the explode threshold."""
    if not norm > w.explode:
        return None
    return Finding("exploding", r.step, layer,
                   f"step {r.step}: exploding gradient in {_layer(w, layer)}: norm "
                   f"{norm:.3g} > {w.explode:g} (lower the learning rate or clip gradients)")


def vanishing(w: Watched, r: StepRecord, layer: str, norm: float, top: float) -> Finding | None:
    """A layer's gradient norm is a tiny fraction of the largest layer's (and not exploding)."""
    if norm > w.explode or not (top > 0 and norm < w.vanish * top):
        return None
    return Finding("vanishing", r.step, layer,
                   f"step {r.step}: vanishing gradient in {_layer(w, layer)}: norm {norm:.3g}, "
                   f"{norm / top:.2g} of the largest layer's ({top:.3g})")


def non_finite_loss(w: Watched, r: StepRecord) -> Finding | None:
    """The loss is NaN or inf."""
    if r.loss is None or math.isfinite(r.loss):
        return None
    return Finding("non-finite", r.step, "loss", f"step {r.step}: the loss is {r.loss}")


def loss_rising(w: Watched, r: StepRecord) -> Finding | None:
    """The windowed mean loss went up and is well above its lowest: the loss keeps rising."""
    if r.loss is None:
        return None
    # Mini-batch losses are noisy: compare means over a window (an epoch, at most 10 steps).
    # Rising: the mean went up, is 50% above its lowest (or the first loss), by a tenth of that.
    # A NaN or inf loss (non_finite_loss) is in the window, so it returns before the means move.
    window = min(10, w.steps_per_epoch or w.rise)
    chunk = [s.loss for s in w.steps[-window:]]
    if len(chunk) < window or None in chunk or not all(map(math.isfinite, chunk)):
        return None
    now = sum(chunk) / window
    start = next(s.loss for s in w.steps if s.loss is not None)  # before any learning
    # first loss, lowest and last windowed mean
    first, low, last = w.check_state.get("loss-rising") or (start, start, None)
    w.check_state["loss-rising"] = (first, min(low, now), now)
    if first <= 0:
        return None
    if not ((last is None or now > last) and now >= RISE_FACTOR * low and now - low >= 0.1 * first):
        return None
    lr = f" {r.lr:g}" if r.lr is not None else ""
    cause = "probably because gradients accumulate (they are not zeroed)" \
        if any(f.kind == "not-zeroed" for f in w.warnings) else \
        f"the learning rate{lr} is probably too large, each update overshoots"
    return Finding("loss-rising", r.step, "loss",
                   f"step {r.step}: the loss is rising (mean of the last {window} step"
                   f"{'s' * (window > 1)} {now:.4g}, up from {low:.4g}): {cause}")


CHECKS: dict[str, tuple[Callable[..., Finding | None], ...]] = {
    "backward": (not_zeroed,),
    "relu": (dead_relu,),
    "parameter": (non_finite_parameter,),
    "layer": (exploding, vanishing),
    "loss": (non_finite_loss, loss_rising),
}
assert set(CHECKS) == set(SCOPES), "every scope is described and has its checks"
