"""What `watch` keeps of a training loop: one record per parameter and per optimizer step, and the
warnings it found; and `Watched`, what the checks and views read of a Watch. Plain data: this module imports neither torch nor anything heavy."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol


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


class Watched(Protocol):
    """What checks and views read of a Watch (they cannot import it: it imports them)."""

    model: Any
    optimizer: Any
    dataset_size: int | None
    batch_size: int | None
    steps: list[StepRecord]
    warnings: list[Finding]
    counts: dict[tuple[str, str], int]  # (kind, layer) -> steps it was found at
    layer_of: dict[str, str]  # parameter name -> layer
    layer_kind: dict[str, str]  # layer -> module type
    explode: float
    vanish: float
    rise: int
    check_state: dict[str, Any]  # what checks remember between steps, by kind

    @property
    def steps_per_epoch(self) -> int | None:
        """ceil(dataset_size / batch_size), or None when they are not given."""

    @property
    def accounting(self) -> str | None:
        """The samples/batch/steps-per-epoch line, or None."""

    def weight_norm(self, name: str) -> float:
        """The norm of a parameter's weights now."""
