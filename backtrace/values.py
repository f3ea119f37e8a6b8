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


def format_complex(z: complex) -> str:
    """0.646-0.123j: both parts short, as Python writes complex numbers."""
    imag = format_number(abs(z.imag))
    return f"{format_number(z.real)}{'-' if z.imag < 0 or str(z.imag).startswith('-') else '+'}{imag}j"


def is_tensor(v: Any) -> bool:
    """True for torch tensors, detected without importing torch."""
    return type(v).__module__.startswith("torch") and hasattr(v, "shape")


def dense(v: Any) -> Any:
    """A tensor detached and strided: sparse ones (nn.Embedding(sparse=True)'s gradient) densified,
    since flatten, norm and friends are not defined for every layout."""
    t = v.detach()
    return t.to_dense() if str(t.layout) != "torch.strided" else t


def shape_text(shape: Sequence[int]) -> str:
    """[4×8] for a shape, [scalar] for ()."""
    return "[" + ("×".join(map(str, shape)) or "scalar") + "]"


def nested_shape(v: Any) -> tuple[int, ...]:
    """The shape of a tensor held as nested lists (() for a number), read along first elements."""
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        v = v[0] if v else None
    return tuple(shape)


def shape_of(v: Any) -> str:
    """Only the shape of a tensor value (the wire label of torch graphs); numbers as themselves."""
    if isinstance(v, TensorStats) or is_tensor(v):
        return shape_text(tuple(v.shape))
    if isinstance(v, list):
        return shape_text(nested_shape(v))
    return describe(v)


def nested_text(v: Any, digits: int = 6) -> str:
    """A tensor as nested lists, '[[1, -0.5], [2, 3]]', numbers to `digits` significant digits."""
    if isinstance(v, list):
        return "[" + ", ".join(nested_text(x, digits) for x in v) + "]"
    return format_number(v) if digits >= 6 else format_number(float(f"{v:.{digits}g}"))


def _describe_nested(v: list, absmax: bool, listed: int) -> str:
    """A tensor held as nested lists: its numbers when small, else its shape and norm."""
    flat = numbers(v) or []
    if len(flat) <= max(listed, 1):
        return nested_text(v)
    text = f"{shape_text(nested_shape(v))} ‖·‖={format_number(math.sqrt(math.fsum(x * x for x in flat)))}"
    return f"{text} max|·|={format_number(max(map(abs, flat)))}" if absmax else text


def norm(v: Any) -> float | None:
    """The Euclidean norm of a value, whatever its representation; None when there is none."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float, complex)):
        return abs(v) if isinstance(v, complex) else abs(float(v))
    if isinstance(v, TensorStats):
        return float(v.norm)
    if is_tensor(v):
        t = dense(v)
        return float((t.abs() if t.is_complex() else t).double().norm())
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
        x = _stored(v.detach())
        return float(x.isfinite().logical_not().sum()) if x.is_floating_point() or \
            x.is_complex() else 0
    if isinstance(v, (tuple, list)):
        return sum(nonfinite(x) for x in v)
    return 0


def _stored(x: Any) -> Any:
    """The elements a tensor stores: a sparse one's values (its zeros are finite), without
    making it dense (a sparse embedding's gradient is mostly zeros)."""
    layout = str(x.layout)
    if layout == "torch.strided":
        return x
    return x.coalesce().values() if layout == "torch.sparse_coo" else x.values()


def has_nan(v: Any) -> bool:
    """True when a value holds a NaN (statistics: max |x| is NaN exactly then)."""
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, TensorStats):
        return math.isnan(v.absmax)
    if is_tensor(v):
        x = _stored(v.detach())
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
    if isinstance(v, complex):
        return [v.real, v.imag]
    if isinstance(v, TensorStats):
        return [float(x) for x in v.numbers()]
    if is_tensor(v):
        t = dense(v).cpu()
        if t.is_complex():  # real and imaginary parts, element by element
            return [float(x) for z in t.flatten().tolist() for x in (z.real, z.imag)]
        return [float(x) for x in t.double().flatten().tolist()]
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
    with `absmax`), None as a dash; per-slot tuples joined, numbered with `slots`. Lists are the
    tensors of formulas, as nested lists."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return format_number(v)
    if isinstance(v, list):
        return _describe_nested(v, absmax, listed)
    if isinstance(v, complex):
        return format_complex(v)
    if isinstance(v, tuple):
        parts = [describe(x, absmax=absmax, listed=listed) for x in v]
        return "; ".join(f"{k}: {p}" for k, p in enumerate(parts)) if slots else ", ".join(parts)
    if isinstance(v, TensorStats):
        if all(d == 1 for d in v.shape):  # one number: its mean is the number itself
            return format_number(v.mean)
        size, top = v.norm, v.absmax
    elif is_tensor(v):
        flat = dense(v)
        if flat.is_complex():
            if flat.numel() <= max(listed, 1):
                items = [format_complex(x) for x in flat.flatten().tolist()]
                return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
            flat = flat.abs()
        if flat.numel() <= max(listed, 1):
            items = [format_number(x) for x in flat.double().flatten().tolist()]
            return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
        flat = flat.double()
        size = float(flat.norm())
        top = float(flat.abs().max()) if flat.numel() else 0.0
    else:
        return str(v)
    text = f"{shape_text(v.shape)} ‖·‖={format_number(size)}"
    if absmax:
        text = f"{text} max|·|={format_number(top)}"
    bad = v.nonfinite if isinstance(v, TensorStats) else 0
    return f"{text} ({format_number(bad)} non-finite)" if bad else text
