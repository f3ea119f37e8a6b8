"""Tensor statistics on the tensor's device: one reduction per statistic of TensorStats, gathered
in one small vector per tensor and turned into numbers with one transfer per device at the end;
and the recorded form of a tensor at each tracer level (statistics, or a detached clone)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

from ..values import TensorStats
from . import compat

# One reduction per statistic, in the order of TensorStats.NUMBERS: f(x, acc) of a flat tensor x,
# accumulating in dtype acc (float32 for float16 and bfloat16, whose sums overflow).
REDUCTIONS: dict[str, Callable[[torch.Tensor, torch.dtype], torch.Tensor]] = {
    "norm": lambda x, acc: torch.linalg.vector_norm(x, dtype=acc if acc != x.dtype else None),
    "mean": lambda x, acc: x.mean(dtype=acc) if acc != x.dtype else x.mean(),
    "absmax": lambda x, acc: _absmax(x).to(acc),
}


def _absmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = torch.aminmax(x)  # one read of x, no |x| copy
    return torch.maximum(hi, -lo)


assert tuple(REDUCTIONS) == TensorStats.NUMBERS, "one reduction per TensorStats statistic"


class Pending:
    """A statistics vector still on the device; resolved to TensorStats with one sync at the end."""

    __slots__ = ("vec", "shape", "dtype", "stats")

    def __init__(self, vec: torch.Tensor | None, shape: tuple[int, ...], dtype: str,
                 stats: TensorStats | None = None) -> None:
        self.vec, self.shape, self.dtype = vec, shape, dtype
        self.stats = None if stats is None else TensorStats.of(shape, dtype, stats.numbers())
        if self.stats is not None:
            self.vec = None


def stats_vector(t: torch.Tensor) -> torch.Tensor:
    """Every statistic of REDUCTIONS of a tensor as one small tensor on its device (no sync)."""
    x = t.detach()
    if x.layout != torch.strided:  # sparse gradients (nn.Embedding(sparse=True)): rare, small
        x = x.to_dense()
    if x.is_complex():
        x = x.abs()
    if not x.is_floating_point():
        x = x.double()
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if x.numel() == 0:
        return torch.zeros(len(REDUCTIONS), dtype=acc, device=x.device)
    # The statistics ignore element order, and reductions over strided views (the transposed
    # weight gradients) are many times slower: read the same memory as one flat block instead.
    x = x.as_strided((x.numel(),), (1,)) if dense(x) else x.reshape(-1)
    return torch.stack([reduce(x, acc) for reduce in REDUCTIONS.values()])


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """A tensor's statistics now (one sync): for code outside a backward pass, such as `watch`."""
    with torch.no_grad():
        numbers = stats_vector(t).double().tolist()
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
    if not compat.plain(t):  # sparse, meta, torch.func wrappers: no memory to compare
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


def resolve(pending: list[Pending]) -> None:
    """One transfer per device turns every statistics vector into TensorStats."""
    by_device: dict[Any, list[Pending]] = {}
    for p in pending:
        if p.stats is None:
            by_device.setdefault(p.vec.device, []).append(p)
    for group in by_device.values():
        rows = torch.stack([p.vec.double() for p in group]).tolist()
        for p, numbers in zip(group, rows):
            p.stats = TensorStats.of(p.shape, p.dtype, numbers)
            p.vec = None


def recorded(t: torch.Tensor, level: str, thread: int) -> Any:
    """The recorded form of a tensor: a Pending statistics vector ("stats") or a detached clone
    ("full"); `thread` is the traced thread, the only one whose CPU reductions are narrowed."""
    t, _ = compat.readable(t)  # a torch.func.grad wrapper is read through; meta: no numbers
    if t is None:
        return None
    cpu = t.device.type == "cpu" and threading.get_ident() == thread
    with torch.no_grad(), one_thread(cpu), compat.no_transforms():
        if level == "full":
            return t.detach().clone()
        return Pending(stats_vector(t), tuple(t.shape), str(t.dtype).removeprefix("torch."))


def same_memory(t: torch.Tensor, level: str, others: Any, records: Any) -> Pending | None:
    """The record of a live tensor holding exactly t's elements (a view of it), if any.

    Statistics ignore element order, so a transpose or reshape of a recorded tensor reuses its
    record; both tensors are alive here, so equal memory means equal contents.
    """
    if level != "stats" or not compat.plain(t) or not dense(t):
        return None
    others = [o if o is not None and compat.plain(o) else None for o in others]
    ptr, n, version = t.data_ptr(), t.numel(), compat.version(t)
    for o, rec in zip(others, records):
        if isinstance(rec, Pending) and o is not None and o.data_ptr() == ptr \
                and o.numel() == n and o.dtype == t.dtype and o.device == t.device \
                and compat.version(o) == version and dense(o):
            return Pending(rec.vec, tuple(t.shape), rec.dtype, rec.stats)
    return None
