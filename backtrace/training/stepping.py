"""One watched step, measured: what the hooks left on the device during the step (Pending), read
with one transfer at its end, combined across ranks when the job has several, turned into a
StepRecord and the running summary, and checked (checks.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..tracer import stats
from ..values import TensorStats
from . import measure, ranks
from .checks import CHECKS
from .records import ParamRecord, RankView, StepRecord, Watched, hypot

_NAN = float("nan")
_PER_PARAM = ("stepped", "backward", "zeros", "weight", "update", "after")  # exchanged figures


class Pending:
    """What one step measured so far, as device tensors (no sync until the step ends)."""

    __slots__ = ("loss", "captured", "backward", "zeros", "local", "stale", "stepped", "prints",
                 "keys", "late")

    def __init__(self) -> None:
        self.loss: Any = None  # a float given by hand, or the captured loss (a 0-d tensor)
        self.captured = False  # the loss was caught at .backward() (scaled, under GradScaler)
        self.backward: dict[str, torch.Tensor] = {}  # ‖g‖ right after the backward call
        self.zeros: dict[str, torch.Tensor] = {}
        self.local: dict[str, torch.Tensor] = {}  # ‖g‖ of this rank before DDP's all-reduce
        self.stale: dict[str, torch.Tensor] = {}  # a gradient was added to an unzeroed one
        self.stepped: dict[str, torch.Tensor] = {}  # ‖g‖ the optimizer stepped with
        self.prints: dict[str, torch.Tensor] = {}  # fingerprints of the gradients stepped with
        self.keys: dict[str, tuple] = {}  # each .grad as backward left it: (memory, version)
        self.late = False  # the watch began after this step's backward: what it made is unknown

    def untouched(self) -> bool:
        """Nothing of a new step happened yet (a loss given now belongs to the last step)."""
        return self.loss is None and not self.backward and not self.stepped

    def catch_loss(self, loss: torch.Tensor) -> None:
        """The scalar a backward call starts from is the step's loss."""
        self.loss, self.captured = loss.detach().reshape(()).clone(), True

    def after_backward(self, params: dict[str, torch.Tensor]) -> None:
        """The gradients as backward left them (reduced by DDP, before clipping or unscaling)."""
        with torch.no_grad():
            for name, p in params.items():
                g = p.grad
                if g is not None:
                    self.backward[name] = measure.norm(g)
                    self.zeros[name] = measure.zeros(g)
                    self.keys[name] = _key(g)

    def before_step(self, params: dict[str, torch.Tensor], prints: bool) -> None:
        """The gradients the optimizer is about to step with (after clipping, unscaled)."""
        with torch.no_grad():
            for name, p in params.items():
                g = p.grad
                if g is None:
                    continue
                if self.keys.get(name) != _key(g):  # clipped or unscaled since backward
                    self.stepped[name] = measure.norm(g)
                if name not in self.zeros:
                    self.zeros[name] = measure.zeros(g)
                if prints:
                    self.prints[name] = measure.fingerprint(g)


def _key(g: torch.Tensor) -> tuple:
    """What tells whether a gradient tensor was changed in place (or replaced)."""
    return (id(g), g.data_ptr(), g._version)


@dataclass
class Extras:
    """What the checks need of a step beyond its record."""

    stale: set[str] = field(default_factory=set)
    dead: dict[str, float] = field(default_factory=dict)  # activation site -> share dead
    ranks: list[RankView] | None = None


def record(w: Any, pending: Pending, lr: float | None, skipped: bool, scale: float | None,
           exchange: bool) -> tuple[StepRecord, Extras]:
    """The step's record: every figure read with one transfer (one gather across ranks)."""
    items: dict[Any, torch.Tensor] = {}
    with torch.no_grad():
        nows = _param_items(w, pending, items)
        if isinstance(pending.loss, torch.Tensor):
            items[("loss",)] = pending.loss
        dead = w.activations.take() if w.activations is not None else {}
        for site, (count, _) in dead.items():
            items[("dead", site)] = count
        world = w.world
        n_floats = 0
        if exchange and world is not None and world.agree(_layout(w)):
            payload, n_floats = _payload(w, pending, items, nows)
            items[("ranks",)] = ranks.unpack(world.gather(payload), n_floats)
        numbers = measure.collect(items)
    loss = numbers.get(("loss",), pending.loss)
    if pending.captured and scale and loss is not None:
        loss = loss / scale  # the scaled loss was what backward started from
    rows = _rows(numbers.get(("ranks",)), world.size if world else 1)
    r = _step_record(w, numbers, rows, n_floats, loss, lr, skipped, scale, pending.late)
    extras = Extras({n for n in w.params if numbers.get(("stale", n))},
                    {s: numbers[("dead", s)] / total for s, (_, total) in dead.items() if total})
    r.relu_zero = dict(extras.dead)
    if rows:
        extras.ranks = _rank_views(w, rows, n_floats)
    _summarise(w, r)
    return r, extras


def _param_items(w: Any, pending: Pending, items: dict) -> dict[str, torch.Tensor]:
    """Each parameter's figures as device tensors; returns its weights now (local shards)."""
    state = getattr(w.optimizer, "state", {}) if w.optimizer is not None else {}
    nows = {}
    for name, p in w.params.items():
        before, now = w._snapshot[name], measure.local(p).detach()
        items[("weight", name)] = measure.norm(before)
        items[("update", name)] = measure.norm(now - before)
        stepped = pending.stepped.get(name)
        if stepped is None and name not in pending.backward and p.grad is not None:
            stepped = measure.norm(p.grad)  # neither hook saw it (e.g. a gradient set by hand)
        if stepped is not None:
            items[("stepped", name)] = stepped
        for kind in ("backward", "zeros", "local", "stale"):
            v = getattr(pending, kind).get(name)
            if v is not None:
                items[(kind, name)] = v
        for key, v in state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                v = measure.local(v)
                if key == "step" and v.numel() == 1:
                    items[("state", name, key)] = v
                elif v.numel():
                    items[("state", name, key)] = stats.device_parts(v)
        w._snapshot[name] = now.clone()
        nows[name] = now
    return nows


def _layout(w: Any) -> str:
    """What must be the same on every rank for figures to be compared: names, shapes, sharding."""
    return ";".join(f"{n}:{tuple(p.shape)}:{w.sharded[n]}" for n, p in w.params.items())


def _payload(w: Any, pending: Pending, items: dict,
             nows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """This rank's vector for the gather: loss, local ‖g‖, per parameter the figures of
    _PER_PARAM, then the fingerprints of gradient and weights."""
    device = w.world.device
    nan = torch.tensor(_NAN, dtype=torch.float64, device=device)

    def at(key: Any) -> torch.Tensor:
        v = items.get(key)
        return nan if v is None else v.to(device=device, dtype=torch.float64)

    # this rank's own gradient (a shard of FSDP2's is not the gradient of its own batch)
    local = [items.get(("local", n), items.get(("backward", n))) for n in w.params
             if not w.sharded[n]]
    local = [v.to(device) for v in local if v is not None]
    floats = [at(("loss",)) if ("loss",) in items else
              torch.tensor(_NAN if pending.loss is None else float(pending.loss),
                           dtype=torch.float64, device=device),
              torch.linalg.vector_norm(torch.stack(local)) if local else nan]
    prints = []
    for name, p in w.params.items():
        after = measure.norm(nows[name])
        floats += [at((k, name)) for k in _PER_PARAM[:-1]] + [after.to(device)]
        g = pending.prints.get(name)
        if g is None:
            g = measure.fingerprint(p.grad) if p.grad is not None else \
                torch.zeros(2, dtype=torch.int64)
        prints += [g.to(device), measure.fingerprint(nows[name]).to(device)]
    floats_t = torch.stack(floats)
    return ranks.pack(floats_t, torch.cat(prints)), floats_t.numel()


def _rows(flat: list[float] | None, size: int) -> list[list[float]] | None:
    if not flat:
        return None
    n = len(flat) // size
    return [flat[i * n:(i + 1) * n] for i in range(size)]


def _figure(rows: list[list[float]], at: int, combine: str) -> float | None:
    """One figure over the ranks: combined norms (shards), summed counts."""
    values = [row[at] for row in rows]
    if any(math.isnan(v) for v in values):
        return None
    return hypot(values) if combine == "norm" else sum(values)


def _step_record(w: Any, numbers: dict, rows: list[list[float]] | None, n_floats: int,
                 loss: float | None, lr: float | None, skipped: bool,
                 scale: float | None, late: bool) -> StepRecord:
    k = w.step_count + 1
    spe = w.steps_per_epoch
    unscale = 1.0 / scale if scale else 1.0
    state = getattr(w.optimizer, "state", {}) if w.optimizer is not None else {}
    params: dict[str, ParamRecord] = {}
    for i, (name, p) in enumerate(w.params.items()):
        got = {kind: numbers.get((kind, name)) for kind in ("stepped", "backward", "zeros",
                                                             "weight", "update", "local")}
        if rows is not None and w.sharded[name]:  # the true figures: every rank's shard
            base = 2 + i * len(_PER_PARAM)
            for j, kind in enumerate(_PER_PARAM[:-1]):
                got[kind] = _figure(rows, base + j, "count" if kind == "zeros" else "norm")
        backward = None if got["backward"] is None else got["backward"] * unscale
        # no optimizer hook (a hand-written update): it stepped with what backward produced
        stepped = None if skipped else got["stepped"] if got["stepped"] is not None else backward
        numel = math.prod(p.shape)
        params[name] = ParamRecord(
            name, w.layer_of[name], tuple(p.shape), stepped,
            got["weight"] or 0.0, got["update"] or 0.0,
            _state(numbers, name, state.get(p, {})),
            backward if backward is not None or late else stepped,
            None if got["zeros"] is None or not numel else got["zeros"] / numel,
            None if got["local"] is None else got["local"] * unscale)
    layers: dict[str, float | None] = {}
    for rec in params.values():
        layers[rec.layer] = hypot((layers.get(rec.layer), rec.backward_norm))
    per_rank = tuple((row[0] if math.isfinite(row[0]) else None,
                      row[1] * unscale if math.isfinite(row[1]) else None)
                     for row in rows) if rows else ()
    return StepRecord(k, None if spe is None else (k - 1) // spe + 1,
                      None if spe is None else (k - 1) % spe + 1, loss, lr, params, layers,
                      skipped=skipped, scale=scale, ranks=per_rank)


def _state(numbers: dict, name: str, state: dict) -> dict[str, Any]:
    """A parameter's optimizer state as numbers and TensorStats (Adam: step, exp_avg, exp_avg_sq)."""
    out: dict[str, Any] = {}
    for key, v in state.items():
        got = numbers.get(("state", name, key))
        if isinstance(got, list):
            local = measure.local(v)
            out[key] = TensorStats.of(tuple(local.shape), stats.dtype_name(local.dtype),
                                      stats.numbers(got, local.numel(), True))
        elif got is not None:
            out[key] = float(got)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _rank_views(w: Any, rows: list[list[float]], n_floats: int) -> list[RankView]:
    """Per parameter that is not sharded: every rank's fingerprints and norms."""
    found = []
    for i, (name, p) in enumerate(w.params.items()):
        if w.sharded[name]:
            continue  # shards differ by design
        base = 2 + i * len(_PER_PARAM)
        pb = n_floats + i * 8  # two fingerprints of two int64 = 8 exact halves
        found.append(RankView(
            name, tuple(tuple(row[pb:pb + 4]) for row in rows),
            tuple(tuple(row[pb + 4:pb + 8]) for row in rows),
            tuple(row[base] for row in rows), tuple(row[base + 5] for row in rows)))
    return found


def _summarise(w: Any, r: StepRecord) -> None:
    """The running summary over every step: loss, norms, per-layer heatmap rows."""
    s = w.summary_data
    s.steps += 1
    s.skipped += r.skipped
    s.add_loss(r.step, r.loss)
    s.grad.add(r.step, r.grad_norm if r.layers else None)
    s.stepped.add(r.step, r.stepped_norm)
    by_layer: dict[str, list[ParamRecord]] = {}
    for rec in r.params.values():
        by_layer.setdefault(rec.layer, []).append(rec)
    for layer, recs in by_layer.items():
        series = s.layer(layer)
        known = [x for x in recs if x.backward_norm is not None]
        numel = sum(x.numel for x in known)
        norm = hypot(x.backward_norm for x in known)
        series["grad"].add(r.step, norm)
        series["rms"].add(r.step, norm / math.sqrt(numel) if norm is not None and numel else None)
        weight = hypot(x.weight_norm for x in recs)
        series["ratio"].add(r.step, hypot(x.update_norm for x in recs) / weight
                            if weight and math.isfinite(weight) else None)
        z = [x for x in recs if x.zeros is not None]
        total = sum(x.numel for x in z)
        series["zeros"].add(r.step, sum(x.zeros * x.numel for x in z) / total if total else None)


# ---------------------------------------------------------------------- checks

def check(w: Watched, r: StepRecord, extras: Extras) -> None:
    """Every check of the table, in its order, on this step."""
    for name in extras.stale:
        for c in CHECKS["backward"]:
            w.report(c(w, r, name))
    for site, share in extras.dead.items():
        for c in CHECKS["activation"]:
            w.report(c(w, r, site, share))
    if not r.skipped:
        for name in r.params:
            for c in CHECKS["parameter"]:
                w.report(c(w, r, name))
        finite = {layer: v for layer, v in r.layers.items() if v is not None and math.isfinite(v)}
        top = max(finite.values(), default=0.0)
        for layer, v in finite.items():
            for c in CHECKS["layer"]:
                w.report(c(w, r, layer, v, top))
    for c in CHECKS["step"]:
        w.report(c(w, r))
    if extras.ranks:
        for c in CHECKS["ranks"]:
            for finding in c(w, r, extras.ranks):
                w.report(finding)
    check_loss(w, r)


def check_loss(w: Watched, r: StepRecord) -> None:
    """The checks of a step's loss (run again when the loss is given after the step)."""
    for c in CHECKS["loss"]:
        w.report(c(w, r))
