"""Gradient descent on a formula: W = W - α·∂L/∂W, one reference-engine pass per step, every number kept.

A tensor variable is optimized element by element, each element named by its index (``W[0,1]``,
``b[2]``), which is exactly what torch.optim does to a tensor; the formula sees it whole again
at every step (`assemble`)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from ..engine import run
from ..tensor import Tensor, from_value, indices
from ..values import nested_shape, numbers
from ..errors import DomainError, MissingValueError, UsageError
from ..ir import Graph
from ..values import format_number
from ..parser import Limits, parse
from .optimizers import OPTIMIZERS, Update, make_optimizer, make_schedule

FLAT = 0.01  # converged: the last tenth of the run moved the loss by at most 1% of its total fall
SLOPE = 0.05  # ... and the gradient has shrunk to at most 5% of its size at the start
GRAD_ZERO = 1e-12  # a gradient this small (relative to the first) means the minimum is reached


@dataclass(frozen=True)
class DescentStep:
    """One update: the values before, their gradients, what the optimizer did, the values after."""

    step: int  # 1-based
    lr: float
    before: dict[str, float]
    grads: dict[str, float]
    updates: dict[str, Update]
    after: dict[str, float]
    loss: float  # the loss at `after` (nan when it could not be computed)


@dataclass(frozen=True)
class Verdict:
    """converged / too slow / diverged, the step it refers to, and why."""

    kind: str
    step: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.step is None:
            return self.kind
        return f"{self.kind} ({'at' if self.kind == 'diverged' else 'by'} step {self.step})"


@dataclass
class Descent:
    """A whole run: the start, every step, and the verdict."""

    graph: Graph
    optimizer: str
    lr: float
    schedule: str | None
    start: dict[str, float]
    fixed: dict[str, float]
    start_loss: float
    start_grads: dict[str, float]
    steps: list[DescentStep] = field(default_factory=list)
    verdict: Verdict = Verdict("too slow")
    label: str = ""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the tensor variables

    def tensors(self, point: Mapping[str, float]) -> dict[str, Any]:
        """A point of the path with its tensor variables whole (nested lists), e.g. the final W."""
        return assemble(point)

    @property
    def losses(self) -> list[float]:
        """The loss at the start and after every step."""
        return [self.start_loss] + [s.loss for s in self.steps]

    @property
    def path(self) -> list[dict[str, float]]:
        """The optimized variables at the start and after every step."""
        return [dict(self.start)] + [s.after for s in self.steps]

    @property
    def final(self) -> dict[str, float]:
        """The variables where the run ended."""
        return self.path[-1]

    @property
    def final_loss(self) -> float:
        """The loss where the run ended."""
        return self.losses[-1]


def check_inputs(graph: Graph, start: Mapping[str, float], fixed: Mapping[str, float]) -> None:
    """Every input is either optimized (has a start) or fixed, and nothing else is named."""
    inputs = graph.input_names
    both = sorted(set(start) & set(fixed))
    if both:
        raise UsageError(f"{both[0]} is both optimized and fixed")
    unknown = [n for n in (*start, *fixed) if n not in inputs]
    if unknown:
        raise UsageError(f"{unknown[0]!r} is not an input of the formula "
                         f"(its inputs: {', '.join(inputs) or 'none'})")
    missing = [n for n in inputs if n not in start and n not in fixed]
    if missing:
        n = missing[0]
        raise MissingValueError(f"no value for input {n}: give it a start value to optimize it "
                                f"(--{n} 1) or keep it constant (--fix {n}=1)")
    if not start:
        raise UsageError("nothing to optimize: give at least one variable a start value, e.g. --w 0")


def descend(formula: str | Graph, start: Mapping[str, float], fixed: Mapping[str, float] | None = None,
            lr: float = 0.1, steps: int = 50, optimizer: str = "sgd", schedule: str | None = None,
            limits: Limits | None = None, label: str = "") -> Descent:
    """Run `steps` optimizer updates on the variables in `start`, keeping `fixed` constant."""
    graph = formula if isinstance(formula, Graph) else parse(formula, limits or Limits())
    fixed = dict(fixed or {})
    check_inputs(graph, start, fixed)
    if steps < 0:
        raise UsageError("the number of steps must be >= 0")
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"the learning rate must be a positive number, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
    opt, rate = make_optimizer(optimizer), make_schedule(schedule, lr, steps)
    values, shapes = flatten(start)
    fixed = {n: v if isinstance(v, Real) else from_value(v, n).tolist() for n, v in fixed.items()}
    loss, grads = _evaluate(graph, values, fixed)
    run_ = Descent(graph, optimizer, lr, schedule, dict(values), fixed, loss, grads, label=label,
                   shapes=shapes)
    failure = None
    for k in range(1, steps + 1):
        lr_k = rate(k - 1)
        updates = opt.step(values, grads, lr_k)
        after = {n: values[n] + u.delta for n, u in updates.items()}
        try:
            if not all(map(math.isfinite, after.values())):
                raise DomainError("the variables overflowed")
            new_loss, new_grads = _evaluate(graph, after, fixed)
        except DomainError as exc:
            run_.steps.append(DescentStep(k, lr_k, values, grads, updates, after, math.nan))
            failure = (k, str(exc))
            break
        run_.steps.append(DescentStep(k, lr_k, values, grads, updates, after, new_loss))
        values, grads = after, new_grads
    grad_norms = [_norm(s.grads) for s in run_.steps] + [_norm(grads)]  # at path[0..n]
    run_.verdict = judge(run_.losses, grad_norms, failure)
    return run_


def descend_runs(formula: str | Graph, start: Mapping[str, float],
                 fixed: Mapping[str, float] | None = None, *, lrs: Sequence[float] | None = None,
                 optimizers: Sequence[str] | None = None, starts: Sequence[float] | None = None,
                 limits: Limits | None = None, **settings) -> list[Descent]:
    """One run of `descend`, or one per learning rate, optimizer or start value (of the one
    optimized variable) to compare; `settings` are descend's lr, steps, optimizer, schedule."""
    if sum(v is not None for v in (lrs, optimizers, starts)) > 1:
        raise UsageError("compare learning rates, optimizers or starts, one at a time")
    graph = formula if isinstance(formula, Graph) else parse(formula, limits or Limits())
    if lrs is not None:
        return [descend(graph, start, fixed, **{**settings, "lr": r}, label=f"lr={r:g}")
                for r in lrs]
    if optimizers is not None:
        return [descend(graph, start, fixed, **{**settings, "optimizer": n}, label=n)
                for n in optimizers]
    if starts is not None:
        if len(start) != 1:
            raise UsageError(f"comparing starts needs exactly one optimized variable, got "
                             f"{', '.join(start) or 'none'}")
        (var,) = start
        return [descend(graph, {var: x}, fixed, **settings, label=f"{var}={x:g}") for x in starts]
    return [descend(graph, start, fixed, **settings)]


def flatten(start: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, tuple[int, ...]]]:
    """Every optimized number by name (tensors element by element) and the tensors' shapes."""
    flat: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name, v in start.items():
        if isinstance(v, Real) and not isinstance(v, bool):
            flat[name] = float(v)
            continue
        t = from_value(v, name)
        shapes[name] = t.shape
        flat.update(zip(element_names(name, t.shape), t.data))
    return flat, shapes


def element_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """'W[0,0]', 'W[0,1]', ... in row-major order ('W' itself for a 0-d tensor)."""
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, i))}]" for i in indices(shape)]


def assemble(flat: Mapping[str, float]) -> dict[str, Any]:
    """Named numbers back into variables: 'W[0,1]'-style elements become nested lists."""
    whole: dict[str, Any] = {}
    parts: dict[str, dict[tuple[int, ...], float]] = {}
    for key, v in flat.items():
        name, bracket, index = key.partition("[")
        if not bracket:
            whole[key] = v
            continue
        parts.setdefault(name, {})[tuple(int(k) for k in index.rstrip("]").split(","))] = v
    for name, elems in parts.items():
        shape = tuple(max(i[d] for i in elems) + 1 for d in range(len(next(iter(elems)))))
        whole[name] = Tensor(shape, [elems[i] for i in indices(shape)]).tolist()
    return whole


def _evaluate(graph: Graph, values: Mapping[str, float], fixed: Mapping[str, Any]):
    """The loss and the gradient of every optimized number at `values`."""
    trace = run(graph, {**fixed, **assemble(values)})
    grads = {}
    for name, g in trace.grads.items():
        if isinstance(g, list):
            grads.update(zip(element_names(name, nested_shape(g)), numbers(g)))
        else:
            grads[name] = g
    return trace.value, {n: (grads.get(n) or 0.0) for n in values}


def _norm(grads: Mapping[str, float]) -> float:
    return math.sqrt(sum(g * g for g in grads.values()))


def judge(losses: Sequence[float], grad_norms: Sequence[float],
          failure: tuple[int, str] | None = None) -> Verdict:
    """Converged, too slow or diverged, from the loss after each step (losses[0]: the start).

    diverged: the loss or the variables stopped being finite numbers, or the run ended with a loss
    above where it started (reported at the first step that rose above the start); converged: the
    gradient vanished, or the loss flattened out (the last tenth of the run moved it by at most 1% of
    its total fall) and the slope shrank to 5% of its start; too slow: otherwise."""
    start, final, n = losses[0], losses[-1], len(losses) - 1
    if failure is not None:
        k, why = failure
        rose = next((i for i, v in enumerate(losses[:k]) if v > start), None)
        if rose is None:
            return Verdict("diverged", k, why)
        return Verdict("diverged", rose, f"the loss rose above its start at step {rose}; at step "
                                         f"{k}: {why}")
    if final > start:
        k = next(i for i, v in enumerate(losses) if v > start)
        return Verdict("diverged", k, f"the loss rose from {format_number(start)} to "
                                      f"{format_number(losses[k])} at step {k} and ended at "
                                      f"{format_number(final)}")
    g0 = grad_norms[0]
    zero = [i for i, g in enumerate(grad_norms) if g <= GRAD_ZERO * max(1.0, g0)]
    if zero and zero[-1] == n and all(i in zero for i in range(zero[0], n + 1)):
        return Verdict("converged", zero[0], "the gradient is zero: a minimum (or a flat point)")
    fall = start - min(losses)
    if n == 0 or fall <= 0:
        return Verdict("too slow", None, "the loss did not go down")
    window = max(1, n // 10)
    recent = abs(losses[n - window] - final)
    if recent <= FLAT * fall and grad_norms[-1] <= SLOPE * g0:
        by = next(i for i in range(n + 1)
                  if all(abs(v - final) <= FLAT * fall for v in losses[i:]))
        return Verdict("converged", by, f"the loss stays within 1% of its total fall after step {by}")
    if recent > FLAT * fall:
        return Verdict("too slow", None,
                       f"still falling: the last {window} step{'s' * (window > 1)} lowered the loss "
                       f"by {100 * recent / fall:.0f}% of its total fall")
    return Verdict("too slow", None, f"the slope is still {100 * grad_norms[-1] / g0:.0f}% of its "
                                     "size at the start")


def loss_grid(graph: Graph, fixed: Mapping[str, float], names: Sequence[str],
              axes: Sequence[Sequence[float]]) -> list:
    """The loss on a grid: 1 name -> a list over axes[0]; 2 names -> rows over axes[1] of values
    over axes[0]; nan where the formula cannot be evaluated."""
    def at(point: Sequence[float]) -> float:
        try:
            return run(graph, {**fixed, **assemble(dict(zip(names, point)))}).value
        except DomainError:
            return math.nan

    if len(names) == 1:
        return [at((x,)) for x in axes[0]]
    return [[at((x, y)) for x in axes[0]] for y in axes[1]]
