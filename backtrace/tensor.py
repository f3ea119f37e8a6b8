"""Pure-Python tensors for the reference engine: a shape and a flat row-major list of floats.

No numpy: the reference engine is the independent oracle that torch is checked against, so it
computes every number itself, for teaching sizes (at most MAX_ELEMENTS per tensor). Broadcasting
follows numpy's rules; `@` takes vectors and matrices.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import product
from numbers import Real
from typing import Any

from .errors import LimitError, MissingValueError
from .values import nested_shape, shape_text  # noqa: F401  (nested_shape: read by tensors' users)

MAX_ELEMENTS = 10_000  # per tensor: pure Python is for teaching sizes
MAX_DIMS = 8


class Tensor:
    """A shape and its numbers in row-major order; a 0-d tensor holds one number."""

    __slots__ = ("shape", "data")

    def __init__(self, shape: tuple[int, ...], data: list[float]) -> None:
        self.shape, self.data = shape, data

    def __repr__(self) -> str:
        return f"Tensor({shape_text(self.shape)}, {self.tolist()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and (self.shape, self.data) == (other.shape, other.data)

    __hash__ = None  # type: ignore[assignment]

    @property
    def numel(self) -> int:
        """How many numbers it holds."""
        return len(self.data)

    def item(self) -> float:
        """The number of a one-element tensor."""
        return self.data[0]

    def tolist(self) -> float | list:
        """Nested lists of floats (a plain float for a 0-d tensor): what a Trace holds."""
        if not self.shape:
            return self.data[0]
        rows: list = self.data
        for d in reversed(self.shape[1:]):
            rows = [rows[i:i + d] for i in range(0, len(rows), d)]
        return list(rows)

    def reshape(self, shape: tuple[int, ...]) -> Tensor:
        """The same numbers in another shape of the same size."""
        return Tensor(tuple(shape), self.data)


def size(shape: Sequence[int]) -> int:
    """Number of elements of a shape."""
    return math.prod(shape)


def scalar(v: float) -> Tensor:
    """A 0-d tensor."""
    return Tensor((), [float(v)])


def full(shape: tuple[int, ...], v: float) -> Tensor:
    """A tensor of one repeated number."""
    return Tensor(shape, [float(v)] * size(shape))


# ---------------------------------------------------------------- values from users

def check_size(shape: Sequence[int], what: str) -> None:
    """Refuse tensors the pure-Python engine is not meant for, in one line."""
    n = size(shape)
    if n > MAX_ELEMENTS:
        raise LimitError(f"{what} would have {n:,} elements {shape_text(shape)}; the reference "
                         f"engine takes at most {MAX_ELEMENTS:,} per tensor")


def is_tensor_like(v: Any) -> bool:
    """True for what `from_value` takes beyond plain numbers: lists, tuples, Tensors, torch tensors."""
    return isinstance(v, (list, tuple, Tensor)) or (
        type(v).__module__.startswith("torch") and hasattr(v, "shape"))


def from_value(v: Any, name: str) -> Tensor:
    """A number, nested lists of numbers, a Tensor or a torch tensor as a Tensor (checked)."""
    if isinstance(v, Tensor):
        return v
    if type(v).__module__.startswith("torch") and hasattr(v, "shape"):
        v = v.detach().cpu().double().tolist()
    shape = _nested_shape(v, name)
    check_size(shape, f"value of {name}")
    flat = _flatten(v, len(shape), name)
    for x in flat:
        if not math.isfinite(x):
            raise MissingValueError(f"value of {name} must be finite, got {x}")
    return Tensor(shape, flat)


def _number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, Real):
        raise MissingValueError(f"value of {name} must be a number or a list of numbers, got {v!r}"[:200])
    try:
        return float(v)
    except OverflowError:
        raise MissingValueError(f"value of {name} is too large for a float") from None


def _nested_shape(v: Any, name: str) -> tuple[int, ...]:
    shape, level = [], v
    while isinstance(level, (list, tuple)):
        if len(shape) >= MAX_DIMS:
            raise MissingValueError(f"value of {name} has more than {MAX_DIMS} dimensions")
        if not level:
            raise MissingValueError(f"value of {name} has an empty list: tensors need numbers")
        shape.append(len(level))
        level = level[0]
        if size(shape) > MAX_ELEMENTS:
            check_size(shape, f"value of {name}")
    return tuple(shape)


def _flatten(v: Any, depth: int, name: str) -> list[float]:
    """Row-major numbers of nested lists that must be rectangular (depth levels of lists)."""
    level = [v]
    for d in range(depth):
        width = len(level[0]) if isinstance(level[0], (list, tuple)) else -1
        nxt = []
        for row in level:
            if not isinstance(row, (list, tuple)) or len(row) != width:
                raise _ragged(name, d)
            nxt.extend(row)
        level = nxt
    if any(isinstance(x, (list, tuple)) for x in level):
        raise _ragged(name, depth)
    return [_number(x, name) for x in level]


def _ragged(name: str, depth: int) -> MissingValueError:
    return MissingValueError(f"value of {name} is not rectangular: the lists at depth {depth + 1} "
                             f"differ in length or mix numbers and lists")


# ---------------------------------------------------------------- broadcasting

def broadcast_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """numpy's broadcast of two shapes, or None when they do not broadcast."""
    out = []
    for x, y in zip(reversed((1,) * (len(b) - len(a)) + tuple(a)),
                    reversed((1,) * (len(a) - len(b)) + tuple(b))):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(reversed(out))


def strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def broadcast_index(src: Sequence[int], out: Sequence[int]) -> list[int]:
    """For each flat position of shape `out`, the flat position in `src` broadcast to it."""
    padded = (1,) * (len(out) - len(src)) + tuple(src)
    steps = [0 if p == 1 else s for p, s in zip(padded, strides(padded))]
    index = [0]
    for d, step in zip(out, steps):
        index = [i + j * step for i in index for j in range(d)]
    return index


def broadcast_to(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """t copied along the axes it is broadcast over."""
    if t.shape == shape:
        return t
    data = t.data
    return Tensor(shape, [data[i] for i in broadcast_index(t.shape, shape)])


def sum_to(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The reduction of a broadcast: g summed back over the axes `shape` was broadcast along."""
    if g.shape == shape:
        return g
    out = [0.0] * size(shape)
    for x, i in zip(g.data, broadcast_index(shape, g.shape)):
        out[i] += x
    return Tensor(shape, out)


def broadcast_axes(src: Sequence[int], out: Sequence[int]) -> tuple[int, ...]:
    """The axes of `out` that a tensor of shape `src` is copied along."""
    padded = (1,) * (len(out) - len(src)) + tuple(src)
    return tuple(k for k, (p, d) in enumerate(zip(padded, out)) if p != d)


def zip_map(f: Callable[..., float], shape: tuple[int, ...], *ts: Tensor) -> Tensor:
    """f applied element by element to tensors broadcast to `shape`."""
    cols = [t.data if t.shape == shape else broadcast_to(t, shape).data for t in ts]
    return Tensor(shape, [f(*xs) for xs in zip(*cols)])


# ---------------------------------------------------------------- linear algebra and reductions

def as_matrix(t: Tensor, row: bool) -> Tensor:
    """A vector as a 1×n row or an n×1 column; matrices as they are."""
    if len(t.shape) == 2:
        return t
    n = t.shape[0] if t.shape else 1
    return t.reshape((1, n) if row else (n, 1))


def mm(a: Tensor, b: Tensor) -> Tensor:
    """Matrix times matrix."""
    (k, n), (_, m) = a.shape, b.shape
    ad, bd = a.data, b.data
    cols = [bd[j::m] for j in range(m)]
    out = []
    for i in range(k):
        row = ad[i * n:(i + 1) * n]
        out.extend(sum(x * y for x, y in zip(row, col)) for col in cols)
    return Tensor((k, m), out)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for vectors and matrices, as numpy and torch: a vector is a row on the left, a
    column on the right, and its axis is dropped from the result."""
    out = mm(as_matrix(a, row=True), as_matrix(b, row=False))
    return out.reshape(matmul_shape(a.shape, b.shape))


def matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """The shape of a @ b (shapes already checked to match)."""
    return tuple(a[:-1]) + tuple(b[1:] if len(b) == 2 else ())


def transpose(t: Tensor) -> Tensor:
    """Rows become columns (vectors and numbers are their own transpose)."""
    if len(t.shape) < 2:
        return t
    k, m = t.shape
    return Tensor((m, k), [t.data[i * m + j] for j in range(m) for i in range(k)])


def reduce_sum(t: Tensor, dim: int | None = None) -> Tensor:
    """The sum of every element (dim None), or along one axis."""
    if dim is None:
        return scalar(math.fsum(t.data)) if t.data else scalar(0.0)
    dim %= len(t.shape)
    kept = t.shape[:dim] + (1,) + t.shape[dim + 1:]
    return sum_to(t, kept).reshape(t.shape[:dim] + t.shape[dim + 1:])


def expand(g: Tensor, shape: tuple[int, ...], dim: int | None) -> Tensor:
    """A reduced gradient copied back along the reduced axis (every axis when dim is None)."""
    if dim is None:
        return full(shape, g.item())
    dim %= len(shape)
    return broadcast_to(g.reshape(shape[:dim] + (1,) + shape[dim + 1:]), shape)


def rows(t: Tensor) -> list[list[float]]:
    """The last axis as rows (a 0-d tensor is one row of one)."""
    n = t.shape[-1] if t.shape else 1
    return [t.data[i:i + n] for i in range(0, len(t.data), n)]


def softmax_rows(t: Tensor) -> list[list[float]]:
    """softmax along the last axis, row by row (shifted by the row maximum, so exp never overflows)."""
    out = []
    for row in rows(t):
        top = max(row)
        e = [math.exp(x - top) for x in row]
        s = math.fsum(e)
        out.append([x / s for x in e])
    return out


def log_softmax_rows(t: Tensor) -> list[list[float]]:
    """log of softmax along the last axis, computed as x - max - log(sum(exp(x - max)))."""
    out = []
    for row in rows(t):
        top = max(row)
        lse = top + math.log(math.fsum(math.exp(x - top) for x in row))
        out.append([x - lse for x in row])
    return out


def joined(shape: tuple[int, ...], parts: list[list[float]]) -> Tensor:
    """Rows back into a tensor of `shape`."""
    return Tensor(shape, [x for row in parts for x in row])


def indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every index of a shape in row-major order."""
    return list(product(*(range(d) for d in shape)))
