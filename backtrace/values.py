"""What a recorded value is and how it reads: tensor statistics, numbers, tensors, per-slot tuples.

One home for every question asked of a value (its text, its norm, its numbers), so the trace, the
comparisons, folding and every view agree. Imports no torch: a tensor is recognised by its type.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class TensorStats:
    """A tensor seen through its shape and a few statistics (the tracer's "stats" level).

    The statistics are the fields after shape and dtype; every reader and writer (JSON, the
    tracer's reductions, comparisons) iterates over `TensorStats.NUMBERS`, so adding one is one
    field here plus its reduction in `backtrace.tracer.stats.REDUCTIONS`. A field with a default
    may be missing from files written before it existed (`DEFAULTS`)."""

    shape: tuple[int, ...]
    dtype: str
    norm: float
    mean: float
    absmax: float
    nonfinite: float = 0.0  # how many elements are inf or NaN

    NUMBERS: ClassVar[tuple[str, ...]]
    DEFAULTS: ClassVar[dict[str, float]]

    @classmethod
    def of(cls, shape: Sequence[int], dtype: str, numbers: Sequence[float]) -> TensorStats:
        """Statistics from their numbers, in the order of NUMBERS."""
        return cls(tuple(shape), dtype, *numbers)

    def numbers(self) -> tuple[float, ...]:
        """The statistics, in the order of NUMBERS."""
        return tuple(getattr(self, k) for k in self.NUMBERS)

    def __str__(self) -> str:
        return describe(self)


TensorStats.NUMBERS = tuple(f.name for f in fields(TensorStats))[2:]
TensorStats.DEFAULTS = {f.name: f.default for f in fields(TensorStats) if f.default is not MISSING}


def format_number(v: float | None) -> str:
    """Short, exact-looking numbers: -4 not -4.0, 0.196612 not 0.19661193324148185."""
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    return f"{v:.6g}"


def is_tensor(v: Any) -> bool:
    """True for torch tensors, detected without importing torch."""
    return type(v).__module__.startswith("torch") and hasattr(v, "shape")


def shape_text(shape: Sequence[int]) -> str:
    """[4×8] for a shape, [scalar] for ()."""
    return "[" + ("×".join(map(str, shape)) or "scalar") + "]"


def shape_of(v: Any) -> str:
    """Only the shape of a tensor value (the wire label of torch graphs); numbers as themselves."""
    if isinstance(v, TensorStats) or is_tensor(v):
        return shape_text(tuple(v.shape))
    return describe(v)


def norm(v: Any) -> float | None:
    """The Euclidean norm of a value, whatever its representation; None when there is none."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return abs(float(v))
    if isinstance(v, TensorStats):
        return float(v.norm)
    if is_tensor(v):
        return float(v.detach().double().norm())
    if isinstance(v, (tuple, list)):
        parts = [norm(x) for x in v]
        known = [p for p in parts if p is not None]
        return math.sqrt(sum(p * p for p in known)) if known else None
    return None


def nonfinite(v: Any) -> float:
    """How many elements of a value are inf or NaN (0 for None; per-slot tuples summed)."""
    if v is None or isinstance(v, (bool, int, str)):
        return 0
    if isinstance(v, float):
        return 0 if math.isfinite(v) else 1
    if isinstance(v, TensorStats):
        # a trace written before the count existed still shows one through max |x| (the norm
        # of huge finite values can overflow, max |x| cannot)
        return v.nonfinite or (0 if math.isfinite(v.absmax) else 1)
    if is_tensor(v):
        x = v.detach()
        return float(x.isfinite().logical_not().sum()) if x.is_floating_point() or \
            x.is_complex() else 0
    if isinstance(v, (tuple, list)):
        return sum(nonfinite(x) for x in v)
    return 0


def has_nan(v: Any) -> bool:
    """True when a value holds a NaN (statistics: max |x| is NaN exactly then)."""
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, TensorStats):
        return math.isnan(v.absmax)
    if is_tensor(v):
        x = v.detach()
        return bool(x.isnan().any()) if x.is_floating_point() or x.is_complex() else False
    if isinstance(v, (tuple, list)):
        return any(has_nan(x) for x in v)
    return False


def numbers(v: Any) -> list[float] | None:
    """A value as a flat list of floats (tensors element by element, statistics as NUMBERS);
    None when there is no value."""
    if v is None:
        return None
    if isinstance(v, (bool, int, float)):
        return [float(v)]
    if isinstance(v, TensorStats):
        return [float(x) for x in v.numbers()]
    if is_tensor(v):
        return [float(x) for x in v.detach().cpu().double().flatten().tolist()]
    if isinstance(v, (list, tuple)):
        out: list[float] = []
        for x in v:
            xs = numbers(x)
            if xs is None:
                return None
            out.extend(xs)
        return out
    return None


def describe(v: Any, *, absmax: bool = False, listed: int = 1, slots: bool = False) -> str:
    """A value in a few characters: numbers short, one-element tensors (and their statistics) as the
    number, tensors of up to `listed` elements as a list, bigger ones as [shape] ‖·‖ (and max|·|
    with `absmax`), None as a dash; per-slot tuples joined, numbered with `slots`."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return format_number(v)
    if isinstance(v, (tuple, list)):
        parts = [describe(x, absmax=absmax, listed=listed) for x in v]
        return "; ".join(f"{k}: {p}" for k, p in enumerate(parts)) if slots else ", ".join(parts)
    if isinstance(v, TensorStats):
        if all(d == 1 for d in v.shape):  # one number: its mean is the number itself
            return format_number(v.mean)
        size, top = v.norm, v.absmax
    elif is_tensor(v):
        flat = v.detach()
        if flat.numel() <= max(listed, 1):
            items = [format_number(x) for x in flat.double().flatten().tolist()]
            return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
        flat = flat.double()
        size, top = float(flat.norm()), float(flat.abs().max())
    else:
        return str(v)
    text = f"{shape_text(v.shape)} ‖·‖={format_number(size)}"
    if absmax:
        text = f"{text} max|·|={format_number(top)}"
    bad = v.nonfinite if isinstance(v, TensorStats) else 0
    return f"{text} ({format_number(bad)} non-finite)" if bad else text
