"""Tensor statistics on the tensor's device, batched: small tensors wait in a Batch, grouped by
shape, and each group is reduced as one block (a handful of kernels for many tensors); large ones
are reduced at once. Every statistic of TensorStats is one row of REDUCTIONS, and the numbers
come back with one transfer per device at the end. Also the recorded form of a tensor at each
tracer level (statistics, or a detached clone)."""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import torch

from ..values import TensorStats
from . import compat

Reduction = Callable[[torch.Tensor, torch.dtype, dict], torch.Tensor]

# One reduction per statistic, in the order of TensorStats.NUMBERS: f(x, acc, got) reduces the
# last dimension of a 2-D block x, one row per tensor (the tensors of a block have one shape, so
# a row is a whole tensor), accumulating in dtype acc (float32 for float16 and bfloat16, whose
# sums overflow); `got` holds the statistics computed before it, by name.
REDUCTIONS: dict[str, Reduction] = {
    "norm": lambda x, acc, got: torch.linalg.vector_norm(
        x, dim=-1, dtype=acc if acc != x.dtype else None),
    "mean": lambda x, acc, got: x.mean(-1, dtype=acc),
    "absmax": lambda x, acc, got: torch.maximum(x.amax(-1), x.amin(-1).neg_()).to(acc),
    "nonfinite": lambda x, acc, got: _nonfinite(x, got["absmax"]).to(acc),
}


def _nonfinite(x: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """How many elements of each row are inf or NaN (x * 0 is NaN exactly there).

    A row whose max |x| is finite has none (max propagates NaN). On the CPU that number is read
    at no device cost, so a block with every value finite, the usual case, costs nothing more;
    on an accelerator the count always runs, so no host read waits on the device."""
    if x.device.type == "cpu" and math.isfinite(absmax.sum().item()):
        return torch.zeros_like(absmax)
    return torch.count_nonzero(x * 0, dim=-1)


assert tuple(REDUCTIONS) == TensorStats.NUMBERS, "one reduction per TensorStats statistic"


def block_stats(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Every statistic of each row of a 2-D block: a (statistics × rows) tensor on its device."""
    got: dict[str, torch.Tensor] = {}
    for name, reduce in REDUCTIONS.items():
        got[name] = reduce(x, acc, got)
    return torch.stack(list(got.values()))


class Row:
    """One tensor's statistics: a column of a block on the device until resolved to numbers.
    Views of a tensor share its Row (the statistics ignore element order)."""

    __slots__ = ("block", "col", "numbers", "batch")

    def __init__(self, batch: Batch | None = None) -> None:
        self.block: torch.Tensor | None = None
        self.col = 0
        self.numbers: tuple[float, ...] | None = None
        self.batch = batch  # the Batch it waits in, until flushed


class Pending:
    """A tensor's statistics still on the device (or still waiting in a Batch); `stats()` after
    `resolve` gives its TensorStats."""

    __slots__ = ("row", "shape", "dtype")

    def __init__(self, row: Row, shape: tuple[int, ...], dtype: str) -> None:
        self.row, self.shape, self.dtype = row, shape, dtype

    def stats(self) -> TensorStats | None:
        """The TensorStats once resolved (None if the tensor could not be summarized)."""
        numbers = self.row.numbers
        return None if numbers is None else TensorStats.of(self.shape, self.dtype, numbers)


def _prepared(t: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """The tensor as real floating-point values (t's own memory when it already is), and the
    dtype its sums accumulate in."""
    x = t.detach()
    if x.layout != torch.strided:  # sparse gradients (nn.Embedding(sparse=True)): rare, small
        x = x.to_dense()
    if x.is_complex():
        x = x.abs()
    if not x.is_floating_point():
        x = x.double()
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return x, acc


def _flat(x: torch.Tensor) -> torch.Tensor:
    """x as one row: the same memory read as a flat block when it is one (reductions over
    strided views, such as transposed weight gradients, are many times slower), else a copy."""
    n = x.numel()
    return x.as_strided((1, n), (n, 1)) if dense(x) else x.reshape(1, n)


_ZERO = (0.0,) * len(REDUCTIONS)  # the statistics of an empty tensor


class Batch:
    """Tensors waiting for their statistics, grouped by (device, dtype, shape); each group is
    reduced as one stacked block when the batch is flushed: when it holds `held` elements, or
    when the numbers are asked for. Tensors of more than `small` elements are reduced at once.

    thread: the traced thread, the only one whose CPU reductions are narrowed to one thread.
    A gradient is held as it is (autograd makes a new tensor rather than add into one that is
    referenced); a forward value is copied, since the forward may change it in place (ReLU(inplace)).
    """

    def __init__(self, thread: int, small: int = 1 << 16, held: int = 1 << 21) -> None:
        self.thread, self.small, self.held_max = thread, small, held
        self.groups: dict[tuple, list[tuple[torch.Tensor, Row, int]]] = {}
        self.held = 0
        self.failures: list[str] = []  # what could not be summarized (changed in place)
        self._lock = threading.Lock()  # CUDA runs backward hooks on the device's own thread

    def add(self, t: torch.Tensor, copy: bool) -> Pending:
        """t's statistics, to come; `copy` for tensors that may change before the flush."""
        dtype = str(t.dtype).removeprefix("torch.")
        shape = tuple(t.shape)
        row = Row(self)
        n = t.numel()
        if n == 0:
            row.numbers, row.batch = _ZERO, None
            return Pending(row, shape, dtype)
        x, acc = _prepared(t)
        if n > self.small:
            with torch.no_grad(), self._narrow(x):
                row.block, row.batch = block_stats(_flat(x), acc), None
            return Pending(row, shape, dtype)
        if copy and x.dtype == t.dtype and x.layout == t.layout:  # else x is a new tensor already
            x = x.clone()
        with self._lock:
            self.groups.setdefault((x.device, x.dtype, shape), []).append(
                (x, row, compat.version(x)))
            self.held += n
            if self.held > self.held_max:
                self._flush()
        return Pending(row, shape, dtype)

    def flush(self) -> None:
        """Reduce every waiting group (one block each) and let go of the tensors."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        groups, self.groups, self.held = self.groups, {}, 0
        for (device, dtype, shape), entries in groups.items():
            entries = self._unchanged(entries)
            if not entries:
                continue
            tensors = [x for x, _, _ in entries]
            acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
            block = None
            try:
                with torch.no_grad(), self._narrow(tensors[0]):
                    x = torch.stack(tensors).view(len(tensors), -1) if len(tensors) > 1 \
                        else _flat(tensors[0])
                    block = block_stats(x, acc)
            except Exception as exc:  # never raised into the user's pass: noted, left unknown
                self._fail(f"statistics of {len(tensors)} {list(shape)} tensors: "
                           f"{type(exc).__name__}: {exc}")
            for col, (_, row, _) in enumerate(entries):
                row.block, row.col, row.batch = block, col, None

    def _unchanged(self, entries: list) -> list:
        """The entries whose tensor is as it was when added; the others are noted, unsummarized."""
        kept = []
        for x, row, version in entries:
            if compat.version(x) == version:
                kept.append((x, row, version))
            else:
                row.batch = None
                self._fail(f"a {list(x.shape)} tensor changed in place before its statistics "
                           "were taken; they are not recorded")
        return kept

    def _fail(self, message: str) -> None:
        if len(self.failures) < 100:  # a failure repeated every step must not grow memory
            self.failures.append(message)

    def _narrow(self, x: torch.Tensor):
        """One CPU thread for reductions of the traced thread (see one_thread)."""
        return one_thread(x.device.type == "cpu" and threading.get_ident() == self.thread)


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """A tensor's statistics now (one sync): for code outside a backward pass, such as `watch`."""
    if t.numel() == 0:
        return TensorStats.of(t.shape, str(t.dtype).removeprefix("torch."), _ZERO)
    with torch.no_grad():
        x, acc = _prepared(t)
        numbers = block_stats(_flat(x), acc).double().flatten().tolist()
    return TensorStats.of(t.shape, str(t.dtype).removeprefix("torch."), numbers)


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
    if t.layout != torch.strided:
        return None
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device, compat.version(t))


def dense(t: torch.Tensor) -> bool:
    """True when t covers one gap-free block of memory (any order of dimensions)."""
    if t.layout != torch.strided:
        return False
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def resolve(pending: Iterable[Pending]) -> None:
    """Flush what still waits, then one transfer per device turns every block into numbers."""
    rows = {id(p.row): p.row for p in pending if p.row.numbers is None}
    for batch in {id(r.batch): r.batch for r in rows.values() if r.batch is not None}.values():
        batch.flush()
    blocks: dict[Any, dict[int, torch.Tensor]] = {}  # device -> distinct blocks
    for r in rows.values():
        if r.block is not None:
            blocks.setdefault(r.block.device, {})[id(r.block)] = r.block
    for group in blocks.values():
        offsets, start = {}, 0
        for k, b in group.items():
            offsets[k] = start
            start += b.shape[1]
        columns = list(zip(*torch.cat(list(group.values()), dim=1).double().tolist()))
        for r in rows.values():
            if r.block is not None and id(r.block) in offsets:
                r.numbers = columns[offsets[id(r.block)] + r.col]
    for r in rows.values():
        r.block = None  # the device memory goes with the last reference


def recorded(t: torch.Tensor, level: str, batch: Batch, copy: bool = False) -> Any:
    """The recorded form of a tensor: a Pending statistics vector ("stats") or a detached clone
    ("full"); `copy` for a tensor that may change in place before its statistics are taken."""
    if level == "full":
        with torch.no_grad():
            return t.detach().clone()
    return batch.add(t, copy)


def same_memory(t: torch.Tensor, level: str, others: Any, records: Any) -> Pending | None:
    """The record of a live tensor holding exactly t's elements (a view of it), if any.

    Statistics ignore element order, so a transpose or reshape of a recorded tensor reuses its
    record; both tensors are alive here, so equal memory means equal contents.
    """
    if level != "stats" or not dense(t):
        return None
    ptr, n, version = t.data_ptr(), t.numel(), compat.version(t)
    for o, rec in zip(others, records):
        if isinstance(rec, Pending) and o is not None and o.data_ptr() == ptr \
                and o.numel() == n and o.dtype == t.dtype and o.device == t.device \
                and compat.version(o) == version and dense(o):
            return Pending(rec.row, tuple(t.shape), rec.dtype)
    return None
