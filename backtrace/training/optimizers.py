"""SGD, momentum and Adam on plain floats, every intermediate kept so each update can be shown.

The arithmetic follows torch.optim's single-tensor CPU code operation by operation (same order, same
constants such as ``1 - beta1`` computed in Python), so a trajectory equals torch's in float64.
Learning-rate schedules follow torch.optim.lr_scheduler's closed forms.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import UsageError


@dataclass(frozen=True)
class Update:
    """One variable's update: the change applied (new = old + delta) and the quantities behind it."""

    delta: float
    parts: dict[str, float] = field(default_factory=dict)  # e.g. {"m̂": .., "v̂": .., "step": ..}


def _lerp(start: float, end: float, weight: float) -> float:
    """torch.lerp's formula (ATen Lerp.h): two branches so that both ends are exact."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


class SGD:
    """W = W - lr × grad, optionally with momentum (torch.optim.SGD)."""

    name = "sgd"

    def __init__(self, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        if momentum < 0 or weight_decay < 0:
            raise UsageError("momentum and weight decay must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise UsageError("Nesterov momentum needs momentum > 0 and no dampening")
        self.momentum, self.dampening = momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay
        self.buffers: dict[str, float] = {}

    def step(self, values: Mapping[str, float], grads: Mapping[str, float],
             lr: float) -> dict[str, Update]:
        """Updates for every variable in `values` (torch _single_tensor_sgd)."""
        out = {}
        for name, p in values.items():
            g = grads[name]
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            parts: dict[str, float] = {}
            if self.momentum != 0:
                if name not in self.buffers:
                    buf = g
                else:
                    buf = self.buffers[name] * self.momentum + (1 - self.dampening) * g
                self.buffers[name] = buf
                parts["velocity"] = buf
                g = g + self.momentum * buf if self.nesterov else buf
            out[name] = Update(-lr * g, parts)
        return out


class Momentum(SGD):
    """SGD with momentum 0.9: the velocity keeps part of every earlier gradient."""

    name = "momentum"

    def __init__(self, momentum: float = 0.9, **kwargs) -> None:
        super().__init__(momentum=momentum, **kwargs)


class Adam:
    """Adam (torch.optim.Adam, amsgrad off): per-variable steps from running gradient moments."""

    name = "adam"

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1) or eps < 0 or weight_decay < 0:
            raise UsageError("Adam needs 0 <= beta < 1 and eps, weight decay >= 0")
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.exp_avg: dict[str, float] = {}
        self.exp_avg_sq: dict[str, float] = {}
        self.t = 0

    def step(self, values: Mapping[str, float], grads: Mapping[str, float],
             lr: float) -> dict[str, Update]:
        """Updates for every variable in `values` (torch _single_tensor_adam, same operation order)."""
        self.t += 1
        beta1, beta2, t = self.beta1, self.beta2, self.t
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        out = {}
        for name, p in values.items():
            g = grads[name]
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            m = _lerp(self.exp_avg.get(name, 0.0), g, 1 - beta1)
            v = self.exp_avg_sq.get(name, 0.0) * beta2 + ((1 - beta2) * g) * g  # mul_ then addcmul_
            self.exp_avg[name], self.exp_avg_sq[name] = m, v
            denom = math.sqrt(v) / bias_correction2_sqrt + self.eps
            delta = (-step_size * m) / denom  # addcdiv_: value * t1 / t2
            m_hat, v_hat = m / bias_correction1, v / bias_correction2
            out[name] = Update(delta, {"m": m, "v": v, "m̂": m_hat, "v̂": v_hat,
                                       "step": -delta})  # step = lr·m̂/(√v̂+ε)
        return out


OPTIMIZERS: dict[str, tuple[str, Callable[[], object]]] = {
    "sgd": ("W = W - lr·∂L/∂W", SGD),
    "momentum": ("velocity = 0.9·velocity + ∂L/∂W; W = W - lr·velocity", Momentum),
    "adam": ("W = W - lr·m̂/(√v̂+ε), m̂ and v̂ the bias-corrected gradient moments", Adam),
}


def make_optimizer(name: str) -> SGD | Adam:
    """A fresh optimizer by name (sgd, momentum, adam)."""
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name][1]()


# Learning-rate schedules: the rate used by step k (0-based), as torch's scheduler.step() after
# every optimizer step would give it.

def constant(lr: float, steps: int) -> Callable[[int], float]:
    """The same rate at every step."""
    return lambda k: lr


def step_decay(lr: float, steps: int, step_size: int | None = None,
               gamma: float = 0.5) -> Callable[[int], float]:
    """StepLR: multiply the rate by gamma every step_size steps (default: a quarter of the run)."""
    size = step_size or max(1, steps // 4)
    return lambda k: lr * gamma ** (k // size)


def cosine(lr: float, steps: int, eta_min: float = 0.0) -> Callable[[int], float]:
    """CosineAnnealingLR with T_max = the run's length: from lr down to eta_min along a half cosine."""
    t_max = max(1, steps)
    return lambda k: eta_min + (lr - eta_min) * (1 + math.cos(math.pi * k / t_max)) / 2


SCHEDULES: dict[str, tuple[str, Callable[..., Callable[[int], float]]]] = {
    "constant": ("the same rate throughout", constant),
    "step": ("halve the rate every quarter of the run", step_decay),
    "cosine": ("anneal the rate to 0 along a half cosine over the run", cosine),
}


def make_schedule(name: str | None, lr: float, steps: int) -> Callable[[int], float]:
    """The learning rate of step k (0-based) under schedule `name` (None: constant)."""
    name = name or "constant"
    if name not in SCHEDULES:
        raise UsageError(f"unknown schedule {name!r}: choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[name][1](lr, steps)
