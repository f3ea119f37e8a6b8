"""Tensor statistics on the tensor's device: every statistic of TensorStats is one row of
REDUCTIONS, computed for a block of tensors of one shape at once (one row of the block per
tensor), and the numbers of many blocks come back with one transfer per device at the end.
Batching tensors into blocks is tracer.batch's job."""
from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch

from ..values import TensorStats
from . import compat


class Reduction(NamedTuple):
    """How one statistic is computed: `device(x, acc)` reduces the last dimension of a 2-D block x
    (one row per tensor) to a few per-row results, accumulating in dtype acc; `host(parts, n)`
    makes the statistic from those numbers and the row's element count n. With `if_not_finite`
    the statistic is 0 whenever every other result of the row is finite, and on the CPU (where
    looking costs no device sync) it is computed only for blocks where one is not."""

    device: Callable[[torch.Tensor, torch.dtype], tuple[torch.Tensor, ...]]
    host: Callable[[Sequence[float], int], float]
    if_not_finite: bool = False


def _max_min(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's max and min: in one read for a single row (aminmax along a dimension is many
    times slower on the CPU than amax and amin)."""
    if x.shape[0] == 1:
        lo, hi = torch.aminmax(x.reshape(-1))
        return hi.reshape(1), lo.reshape(1)
    return x.amax(-1), x.amin(-1)


def _count_nonfinite(x: torch.Tensor) -> torch.Tensor:
    """How many elements of each row are inf or NaN: x * 0 is NaN exactly there (counted in
    float32, exact up to 2**24 elements a row, else in float64)."""
    exact = torch.float32 if x.shape[-1] <= 1 << 24 else torch.float64
    return (x * 0).nan_to_num_(1.0).sum(-1, dtype=exact)


def _absmax(hi: float, lo: float) -> float:
    """max |x| from max x and min x (NaN when either is: amax and amin propagate NaN)."""
    return hi + lo if math.isnan(hi) or math.isnan(lo) else max(hi, -lo)


# One row per statistic, in the order of TensorStats.NUMBERS (float16 and bfloat16 accumulate in
# float32, whose sums do not overflow). Adding a statistic: a field of TensorStats and a row here.
REDUCTIONS: dict[str, Reduction] = {
    "norm": Reduction(lambda x, acc: (torch.linalg.vector_norm(
        x, dim=-1, dtype=acc if acc != x.dtype else None),), lambda p, n: p[0]),
    "mean": Reduction(lambda x, acc: (x.sum(-1, dtype=acc),), lambda p, n: p[0] / n),
    "absmax": Reduction(lambda x, acc: _max_min(x), lambda p, n: _absmax(*p)),
    "nonfinite": Reduction(lambda x, acc: (_count_nonfinite(x),), lambda p, n: p[0],
                           if_not_finite=True),
}

assert tuple(REDUCTIONS) == TensorStats.NUMBERS, "one reduction per TensorStats statistic"

_PLAIN = {torch.float32: torch.float32, torch.float64: torch.float64,
          torch.float16: torch.float32, torch.bfloat16: torch.float32}  # dtype -> accumulation
_PROBE = torch.zeros(1, 1)
_WIDTHS = {name: len(r.device(_PROBE, torch.float32)) for name, r in REDUCTIONS.items()}
del _PROBE


class Block:
    """The per-row results of REDUCTIONS for a block of tensors, on their device (`full`: with
    the results of the if_not_finite rows too)."""

    __slots__ = ("data", "full")

    def __init__(self, data: torch.Tensor, full: bool) -> None:
        self.data, self.full = data, full


def block_parts(x: torch.Tensor, acc: torch.dtype, extra: bool | None) -> torch.Tensor:
    """REDUCTIONS results of each row of the 2-D block x, stacked (results × rows): all of them
    (extra None), only those of the if_not_finite rows (True) or only the others (False)."""
    parts: list[torch.Tensor] = []
    for r in REDUCTIONS.values():
        if extra is None or r.if_not_finite == extra:
            parts.extend(r.device(x, acc))
    return torch.stack(parts)


def reduce_blocks(xs: list[tuple[torch.Tensor, torch.dtype]]) -> list[Block]:
    """The Blocks of 2-D blocks (x, acc): on the CPU the if_not_finite rows are computed only
    for blocks with a non-finite result (one look for all of them when every value is finite)."""
    if not xs:
        return []
    if xs[0][0].device.type != "cpu":
        return [Block(block_parts(x, acc, None), True) for x, acc in xs]
    blocks = [Block(block_parts(x, acc, False), False) for x, acc in xs]
    data = blocks[0].data if len(blocks) == 1 else torch.cat([b.data for b in blocks], dim=1)
    finite = data.sum(0).isfinite()  # per row of every block: one look for all of them
    if not bool(finite.all()):
        starts = list(itertools.accumulate((b.data.shape[1] for b in blocks), initial=0))
        bad = {bisect.bisect_right(starts, col) - 1
               for col in finite.logical_not().nonzero().flatten().tolist()}
        for k in sorted(bad):
            x, acc = xs[k]
            blocks[k].data = _in_order(blocks[k].data, block_parts(x, acc, True))
            blocks[k].full = True
    return blocks


def _in_order(main: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """The results of the other rows and of the if_not_finite rows, in REDUCTIONS order."""
    parts, m, e = [], 0, 0
    for name, r in REDUCTIONS.items():
        w = _WIDTHS[name]
        if r.if_not_finite:
            parts.append(extra[e:e + w].to(main.dtype))
            e += w
        else:
            parts.append(main[m:m + w])
            m += w
    return torch.cat(parts)


def numbers(parts: Sequence[float], n: int, full: bool) -> tuple[float, ...]:
    """The statistics of one row from its REDUCTIONS results (see Block)."""
    out, k = [], 0
    for name, r in REDUCTIONS.items():
        if r.if_not_finite and not full:
            out.append(0.0)
            continue
        width = _WIDTHS[name]
        out.append(float(r.host(parts[k:k + width], n)))
        k += width
    return tuple(out)


def prepared(t: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """The tensor as real floating-point values (t's own memory when it already is), and the
    dtype its sums accumulate in."""
    x = t.detach()
    if x.layout != torch.strided:  # sparse gradients (nn.Embedding(sparse=True)): rare, small
        x = x.to_dense()
    if x.is_complex():
        x = x.abs()
    if not x.is_floating_point():
        x = x.double()
    return x, accumulation(x.dtype)


def plain(t: torch.Tensor) -> torch.dtype | None:
    """The accumulation dtype of a strided floating-point tensor (None for anything else)."""
    return _PLAIN.get(t.dtype) if t.layout == torch.strided else None


def accumulation(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums of a floating-point dtype accumulate in."""
    return _PLAIN.get(dtype, dtype)


def flat(x: torch.Tensor) -> torch.Tensor:
    """x as one row: the same memory read as a flat block when it is one (reductions over
    strided views, such as transposed weight gradients, are many times slower), else a copy."""
    n = x.numel()
    return x.as_strided((1, n), (n, 1)) if dense(x) else x.reshape(1, n)


ZERO = (0.0,) * len(REDUCTIONS)  # the statistics of an empty tensor
dtype_name = compat.dtype_name


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """A tensor's statistics now (one sync): for code outside a backward pass, such as `watch`."""
    if t.numel() == 0:
        return TensorStats.of(t.shape, dtype_name(t.dtype), ZERO)
    with torch.no_grad():
        block, = reduce_blocks([(flat(x), acc) for x, acc in [prepared(t)]])
        parts = block.data.double().flatten().tolist()
    return TensorStats.of(t.shape, dtype_name(t.dtype), numbers(parts, t.numel(), block.full))


def device_parts(t: torch.Tensor) -> torch.Tensor:
    """Every REDUCTIONS result of one non-empty tensor as a vector on its device (no sync);
    `numbers(parts, t.numel(), True)` makes its statistics once they are on the host."""
    x, acc = prepared(t)
    return block_parts(flat(x), acc, None).flatten()


def to_host(blocks: list[Block]) -> dict[int, list[list[float]]]:
    """Each block's results as rows of numbers (by id of the block): one transfer per device
    (two on the CPU when some blocks carry more results than others; no device to wait for)."""
    by_device: dict[Any, list[Block]] = {}
    for b in blocks:
        by_device.setdefault((b.data.device, b.data.shape[0]), []).append(b)
    out: dict[int, list[list[float]]] = {}
    for group in by_device.values():
        data = group[0].data if len(group) == 1 else torch.cat([b.data for b in group], dim=1)
        columns = list(zip(*data.double().tolist()))
        start = 0
        for b in group:
            width = b.data.shape[1]
            out[id(b)] = columns[start:start + width]
            start += width
    return out


@contextmanager
def one_thread(enabled: bool = True):
    """Run the tracer's small reductions on one CPU thread.

    They are memory-bound, and on a busy machine every parallel region waits for a second
    thread to be scheduled, which costs far more than the reduction itself. The thread count is
    process-wide: while it is narrowed, torch work of any other Python thread would run on one
    thread too, and some kernels (convolutions) then sum in another order and change the user's
    gradients in the last bit. So it is narrowed only while no other Python thread exists.
    """
    if not enabled or threading.active_count() != 1:
        yield
        return
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def key(t: torch.Tensor) -> tuple | None:
    """What identifies a live tensor's contents: its memory, layout and in-place version."""
    if not compat.plain(t):  # sparse, meta, torch.func wrappers: no memory to compare
        return None
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device, compat.version(t))


def dense(t: torch.Tensor) -> bool:
    """True when t covers one gap-free block of memory (any order of dimensions)."""
    if t.layout != torch.strided:
        return False
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True
