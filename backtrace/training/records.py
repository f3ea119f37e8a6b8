"""What `watch` keeps of a training loop: one record per parameter and per optimizer step (a rolling
window of them), running summaries over every step, and the warnings it found; and `Watched`, what
the checks and views read of a Watch. Plain data: this module imports neither torch nor anything
heavy."""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class TrainingWarning(UserWarning):
    """Something in a watched training loop is probably wrong (the message names layer and step)."""


def hypot(values: Iterable[float | None]) -> float | None:
    """The norm of norms (√Σv²) without overflow past 1e154; None when no value is given."""
    known = [v for v in values if v is not None]
    return math.hypot(*known) if known else None


@dataclass(slots=True)
class ParamRecord:
    """One parameter at one step. Gradient norms say which gradient they are: `backward_norm` is
    what backward produced (after DDP's all-reduce, unscaled by AMP's GradScaler, before
    clipping); `grad_norm` is what the optimizer stepped with (after clipping)."""

    name: str
    layer: str
    shape: tuple[int, ...]
    grad_norm: float | None  # the gradient the optimizer stepped with; None: no gradient reached it
    weight_norm: float  # before the update
    update_norm: float
    state: dict[str, Any] = field(default_factory=dict)  # optimizer state: TensorStats or numbers
    backward_norm: float | None = None  # the gradient backward produced (before clipping)
    zeros: float | None = None  # share of exact zeros in the gradient stepped with
    local_norm: float | None = None  # distributed: this rank's gradient before the all-reduce

    @property
    def numel(self) -> int:
        """How many elements the parameter has."""
        return math.prod(self.shape)

    @property
    def ratio(self) -> float | None:
        """‖ΔW‖ / ‖W‖: how much of the weight one update changes (around 1e-3 is typical); None
        for weights that are all zero (a bias at its start), where no ratio means anything."""
        if self.weight_norm == 0 or not math.isfinite(self.weight_norm):
            return None
        return self.update_norm / self.weight_norm


@dataclass(slots=True)
class StepRecord:
    """One optimizer step (one weight update, or one GradScaler skipped)."""

    step: int  # 1-based
    epoch: int | None
    batch: int | None
    loss: float | None
    lr: float | None
    params: dict[str, ParamRecord]
    layers: dict[str, float | None]  # layer -> norm of its parameters' gradients (backward's)
    relu_zero: dict[str, float] = field(default_factory=dict)  # activation -> share of dead outputs
    skipped: bool = False  # GradScaler found inf/NaN and skipped the update
    scale: float | None = None  # GradScaler's scale the gradients were multiplied by
    ranks: tuple[tuple[float | None, float | None], ...] = ()  # per rank: (loss, local ‖g‖)

    @property
    def grad_norm(self) -> float:
        """The norm of the whole model's gradient as backward produced it (before clipping)."""
        return hypot(self.layers.values()) or 0.0

    @property
    def stepped_norm(self) -> float | None:
        """The norm of the whole gradient the optimizer stepped with (after clipping)."""
        return hypot(p.grad_norm for p in self.params.values())

    @property
    def max_ratio(self) -> float | None:
        """The largest ‖ΔW‖/‖W‖ of the parameters whose ratio is defined."""
        ratios = [r for p in self.params.values() if (r := p.ratio) is not None]
        return max(ratios, default=None)


@dataclass(frozen=True)
class Finding:
    """A warning: what, where (layer) and when (step)."""

    kind: str  # not-zeroed, non-finite, exploding, vanishing, clipped, amp-skipped, loss-rising,
    # dead-relu, grads-not-synced, ranks-differ
    step: int
    layer: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class RankView:
    """One parameter across the ranks at one step: per rank, fingerprints and norms."""

    name: str
    grads: tuple[tuple[float, ...], ...]  # per rank: the gradient's fingerprint
    values: tuple[tuple[float, ...], ...]  # per rank: the weights' fingerprint after the step
    grad_norms: tuple[float, ...]
    weight_norms: tuple[float, ...]


def groups(prints: Sequence[tuple[float, ...]]) -> list[list[int]]:
    """Ranks grouped by equal fingerprints, the largest group (then the one holding rank 0) first."""
    found: dict[tuple[float, ...], list[int]] = {}
    for rank, p in enumerate(prints):
        found.setdefault(tuple(p), []).append(rank)
    return sorted(found.values(), key=lambda g: (-len(g), g[0]))


class Series:
    """A running series over every step in bounded memory: consecutive steps are averaged in
    buckets, and when the buckets fill up, neighbours merge and each bucket spans twice the steps.
    Per bucket: its first step, the sum and count of its values (a NaN or inf stays visible)."""

    __slots__ = ("capacity", "span", "first", "sums", "counts", "latest")

    def __init__(self, capacity: int = 512) -> None:
        self.capacity, self.span, self.latest = max(2, capacity), 1, 0
        self.first: list[int] = []
        self.sums: list[float] = []
        self.counts: list[int] = []

    def add(self, step: int, value: float | None) -> None:
        """Add one step's value (None: nothing measured at this step; its bucket still exists, so
        series fed at every step share their buckets)."""
        self.latest = max(self.latest, step)
        if not self.first or step - self.first[-1] >= self.span:
            if len(self.first) == self.capacity:
                self._halve()
            if not self.first or step - self.first[-1] >= self.span:
                self.first.append(step)
                self.sums.append(0.0)
                self.counts.append(0)
        if value is not None:
            self.sums[-1] += value
            self.counts[-1] += 1

    def _halve(self) -> None:
        """Merge neighbouring buckets; every bucket now spans twice the steps."""
        self.span *= 2
        first, sums, counts = [], [], []
        for f, v, n in zip(self.first, self.sums, self.counts):
            if first and f - first[-1] < self.span:
                sums[-1] += v
                counts[-1] += n
            else:
                first.append(f)
                sums.append(v)
                counts.append(n)
        self.first, self.sums, self.counts = first, sums, counts

    def __len__(self) -> int:
        return len(self.first)

    def values(self) -> list[float | None]:
        """The mean of each bucket (None where nothing was measured)."""
        return [v / n if n else None for v, n in zip(self.sums, self.counts)]

    def last(self) -> int:
        """The last step the series has seen (0 when empty)."""
        return self.latest


# The per-layer figures kept over every step (the layer × step heatmap), with what each one is.
METRICS = {
    "rms": "gradient RMS ‖∂L/∂W‖/√n (as backward produced it)",
    "grad": "gradient norm ‖∂L/∂W‖ (as backward produced it)",
    "ratio": "update / weight ‖ΔW‖/‖W‖",
    "zeros": "share of exact zeros in the gradient",
}


@dataclass
class Summary:
    """Running figures over every step of a run, however long (the window keeps only the last)."""

    steps: int = 0
    skipped: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    lowest_loss: tuple[int, float] | None = None  # (step, loss)
    loss: Series = field(default_factory=Series)
    grad: Series = field(default_factory=Series)  # whole-model ‖g‖ as backward produced it
    stepped: Series = field(default_factory=Series)  # ... as the optimizer stepped with it
    # layer -> metric (METRICS) -> Series: the layer × step heatmap
    layers: dict[str, dict[str, Series]] = field(default_factory=dict)

    def add_loss(self, step: int, loss: float | None) -> None:
        """Note a step's loss (given once per step, possibly after the step was recorded)."""
        self.loss.add(step, loss)
        if loss is None:
            return
        if self.first_loss is None:
            self.first_loss = loss
        self.last_loss = loss
        if math.isfinite(loss) and (self.lowest_loss is None or loss < self.lowest_loss[1]):
            self.lowest_loss = (step, loss)

    def layer(self, name: str) -> dict[str, Series]:
        """The running series of one layer."""
        found = self.layers.get(name)
        if found is None:
            found = self.layers[name] = {m: Series() for m in METRICS}
        return found


class Window(deque):
    """The rolling window of detailed step records: a deque that also slices, like the list
    `w.steps` was (``w.steps[-10:]``)."""

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return super().__getitem__(index)


def window(size: int | None) -> Window:
    """The rolling window of detailed step records (None: keep every step)."""
    return Window(maxlen=size)


class Watched(Protocol):
    """What checks and views read of a Watch (they cannot import it: it imports them)."""

    model: Any
    optimizer: Any
    dataset_size: int | None
    batch_size: int | None
    steps: Window  # the last `window` StepRecords
    summary_data: Summary  # every step, summarised
    warnings: list[Finding]
    counts: dict[tuple[str, str], int]  # (kind, layer) -> steps it was found at
    layer_of: dict[str, str]  # parameter name -> layer
    layer_kind: dict[str, str]  # layer -> module type
    explode: float
    vanish: float
    rise: int
    clip_factor: float
    check_state: dict[str, Any]  # what checks remember between steps, by kind
    rank: int
    world_size: int
    activation_sites: dict[str, Any]  # activation call site -> activations.Site

    @property
    def step_count(self) -> int:
        """Steps recorded so far (also those the window let go)."""

    @property
    def steps_per_epoch(self) -> int | None:
        """ceil(dataset_size / batch_size), or None when they are not given."""

    @property
    def accounting(self) -> str | None:
        """The samples/batch/steps-per-epoch line, or None."""

    def report(self, finding: Finding | None) -> None:
        """Keep and say a finding (once per kind and layer)."""
