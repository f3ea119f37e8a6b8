"""What `watch` warns about: one small function per kind of fault, in a table by when it runs.

Each check gets the watch and what its moment offers (see SCOPES) and returns a Finding, or None
when all is well (a "ranks" check returns a list); `Watch` runs every check of a scope, in table
order, at the end of each step, and reports what they find (once per kind and layer). Adding a
warning kind is one function here plus one row in CHECKS. This module imports neither torch nor
the watch: it reads the watch through records.Watched.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from .records import Finding, RankView, StepRecord, Watched, groups

EXPLODE = 1e3  # a layer whose gradient norm exceeds this is exploding
VANISH = 1e-4  # ... below this fraction of the largest layer's gradient norm is vanishing
RISE = 3  # loss window when the epoch length is unknown
RISE_FACTOR = 1.5  # a mean loss this many times its lowest is rising
CLIP_FACTOR = 10.0  # clipping that divides the gradient norm by more than this hides a problem

# When each scope's checks run (all at the end of a step), and what they get after the watch.
SCOPES = {
    "backward": "per parameter to which backward added a gradient while .grad still held an "
                "old one and the weights had changed: (step record, parameter name)",
    "activation": "per activation call site seen while training: (step record, site, share of "
                  "its outputs that were dead this step)",
    "parameter": "per parameter, unless GradScaler skipped the step: (step record, name)",
    "layer": "per layer with a finite gradient norm, unless the step was skipped: (step record, "
             "layer, its gradient norm as backward produced it, the largest layer's)",
    "step": "once per step: (step record)",
    "ranks": "once per step of a distributed job whose figures were exchanged: (step record, "
             "every parameter's RankView); returns a list of findings",
    "loss": "once a step's loss is known: (step record)",
}


def _where(w: Watched, name: str) -> str:
    layer = w.layer_of[name]
    short = name[len(layer) + 1:] if name != layer else ""
    return _layer(w, layer) + (f" {short}" if short else "")


def _layer(w: Watched, layer: str) -> str:
    kind = w.layer_kind.get(layer)
    return f"layer {layer} ({kind})" if kind else layer


def _ranks(ranks: Sequence[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else \
        "ranks " + ", ".join(map(str, ranks[:-1])) + f" and {ranks[-1]}"


# ---------------------------------------------------------------------- gradients and activations

def not_zeroed(w: Watched, r: StepRecord, name: str) -> Finding | None:
    """A gradient was added to last step's gradient, which was never zeroed."""
    k = r.step
    return Finding("not-zeroed", k, w.layer_of[name],
                   f"step {k}: the gradient of {_where(w, name)} was not zeroed after "
                   f"step {k - 1}, so backward adds to the old one (gradients accumulate): "
                   "call optimizer.zero_grad() or p.grad.zero_() every step")


def _site(w: Watched, site: str) -> Any:
    return w.activation_sites.get(site)


def _caller(s: Any) -> str:
    """The module whose forward called an activation function."""
    return f"{s.module} ({s.kind})" if s.module else "the model"


def dead_relu(w: Watched, r: StepRecord, site: str, share: float) -> Finding | None:
    """Every output of a ReLU (module or function) is zero: no gradient flows back through it."""
    s = _site(w, site)
    if share != 1.0 or s is None or s.op != "relu":
        return None
    where = f"ReLU layer {site}" if not s.functional else f"relu() called in {_caller(s)}"
    return Finding("dead-relu", r.step, site,
                   f"step {r.step}: every output of {where} is zero, so no gradient "
                   "flows back through it (dead ReLUs: lower the learning rate, check the "
                   "initialisation or the inputs' scale)")


def dead_activation(w: Watched, r: StepRecord, site: str, share: float) -> Finding | None:
    """Every input of a GELU, SiLU or Mish lies where its derivative is nearly zero."""
    s = _site(w, site)
    if share != 1.0 or s is None or s.cutoff is None:
        return None
    name = {"gelu": "GELU", "silu": "SiLU", "mish": "Mish"}.get(s.op, s.op)
    where = f"{name} layer {site}" if not s.functional else f"{s.op}() called in {_caller(s)}"
    return Finding("dead-activation", r.step, site,
                   f"step {r.step}: every input of {where} is below {s.cutoff:g}, where its "
                   "derivative is under 0.001, so almost no gradient flows back through it "
                   "(dead units: lower the learning rate, check the initialisation or the "
                   "inputs' scale)")


def non_finite_parameter(w: Watched, r: StepRecord, name: str) -> Finding | None:
    """A parameter's gradient, or else its weights, contain NaN or inf."""
    rec = r.params[name]
    for norm in (rec.backward_norm, rec.grad_norm):
        if norm is not None and not math.isfinite(norm):
            return Finding("non-finite", r.step, rec.layer,
                           f"step {r.step}: the gradient of {_where(w, name)} contains NaN or "
                           "inf (or is too large for its norm to be a float)")
    if not (math.isfinite(rec.weight_norm) and math.isfinite(rec.update_norm)):
        return Finding("non-finite", r.step, rec.layer,
                       f"step {r.step}: the weights of {_where(w, name)} became NaN or inf")
    return None


def exploding(w: Watched, r: StepRecord, layer: str, norm: float, top: float) -> Finding | None:
    """A layer's gradient norm (before any clipping) is above the explode threshold."""
    if not norm > w.explode:
        return None
    return Finding("exploding", r.step, layer,
                   f"step {r.step}: exploding gradient in {_layer(w, layer)}: norm "
                   f"{norm:.3g} > {w.explode:g} as backward produced it (lower the learning "
                   "rate or clip gradients)")


def vanishing(w: Watched, r: StepRecord, layer: str, norm: float, top: float) -> Finding | None:
    """A layer's gradient norm is a tiny fraction of the largest layer's (and not exploding)."""
    if norm > w.explode or not (top > 0 and norm < w.vanish * top):
        return None
    return Finding("vanishing", r.step, layer,
                   f"step {r.step}: vanishing gradient in {_layer(w, layer)}: norm {norm:.3g}, "
                   f"{norm / top:.2g} of the largest layer's ({top:.3g})")


# ---------------------------------------------------------------------- the step as a whole

def clipped(w: Watched, r: StepRecord) -> Finding | None:
    """Clipping divided the gradient norm by a large factor: it hides exploding gradients."""
    before, after = r.grad_norm, r.stepped_norm
    if r.skipped or not after or not math.isfinite(before) or before <= w.clip_factor * after:
        return None
    return Finding("clipped", r.step, "clipping",
                   f"step {r.step}: clipping cut the gradient norm from {before:.3g} (as backward "
                   f"produced it) to {after:.3g} (what the optimizer stepped with), a factor "
                   f"{before / after:.3g}: the gradients explode and clipping hides it (lower "
                   "the learning rate, check the loss scale and the inputs)")


def amp_skipped(w: Watched, r: StepRecord) -> Finding | None:
    """GradScaler found inf/NaN in the scaled gradients and skipped the update."""
    if not r.skipped:
        return None
    scale = f" at scale {r.scale:g}" if r.scale else ""
    return Finding("amp-skipped", r.step, "GradScaler",
                   f"step {r.step}: GradScaler skipped the update: the scaled gradients held "
                   f"inf or NaN{scale}, so it lowers the scale and tries again (now and then is "
                   "how AMP finds its scale; skips at most steps mean the gradients overflow)")


# ---------------------------------------------------------------------- across ranks

def _by_layer(w: Watched, views: Sequence[RankView], field: str) -> dict[str, list[RankView]]:
    """The parameters whose `field` fingerprints differ across ranks, by layer."""
    found: dict[str, list[RankView]] = {}
    for v in views:
        if len(groups(getattr(v, field))) > 1:
            found.setdefault(w.layer_of[v.name], []).append(v)
    return found


def not_synchronised(w: Watched, r: StepRecord, views: Sequence[RankView]) -> list[Finding]:
    """A gradient the optimizer steps with differs across ranks: nothing reduced it."""
    out = []
    for layer, bad in _by_layer(w, views, "grads").items():
        v = bad[0]
        norms = "; ".join(f"rank {k}: ‖g‖ {n:.4g}" for k, n in enumerate(v.grad_norms))
        names = ", ".join(x.name for x in bad)
        out.append(Finding("not-synchronised", r.step, layer,
                           f"step {r.step}: the gradient of {names} differs across ranks "
                           f"({norms}), so it was not synchronised: DDP reduces only the "
                           "parameters of the module it wraps that its forward used; move the "
                           "parameter into the wrapped module, or all_reduce its gradient "
                           "yourself"))
    return out


def ranks_differ(w: Watched, r: StepRecord, views: Sequence[RankView]) -> list[Finding]:
    """A parameter holds different values on different ranks after the step: they diverged."""
    out = []
    unsynced = {v.name for vs in _by_layer(w, views, "grads").values() for v in vs}
    for layer, bad in _by_layer(w, views, "values").items():
        v = bad[0]
        main, *others = groups(v.values)
        odd = sorted(k for g in others for k in g)
        norms = ", ".join(f"{n:.6g} on rank {k}" for k, n in enumerate(v.weight_norms))
        cause = "its gradient was not synchronised" if v.name in unsynced else \
            "the weights were changed outside the synchronised update (a change on one rank, " \
            "initialisation with different seeds, an optimizer that steps differently)"
        names = ", ".join(x.name for x in bad)
        out.append(Finding("ranks-differ", r.step, layer,
                           f"step {r.step}: parameter {names} differs across ranks after the "
                           f"update: {_ranks(odd)} hold{'s' * (len(odd) == 1)} other values "
                           f"than {_ranks(main)} (‖W‖ {norms}): {cause}"))
    return out


# ---------------------------------------------------------------------- the loss

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
    chunk = [s.loss for s in itertools.islice(reversed(w.steps), window)][::-1]
    if len(chunk) < window or None in chunk or not all(map(math.isfinite, chunk)):
        return None
    now = sum(chunk) / window
    start = w.summary_data.first_loss  # before any learning
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


CHECKS: dict[str, tuple[Callable[..., Any], ...]] = {
    "backward": (not_zeroed,),
    "activation": (dead_relu, dead_activation),
    "parameter": (non_finite_parameter,),
    "layer": (exploding, vanishing),
    "step": (clipped, amp_skipped),
    "ranks": (not_synchronised, ranks_differ),
    "loss": (non_finite_loss, loss_rising),
}
assert set(CHECKS) == set(SCOPES), "every scope is described and has its checks"
