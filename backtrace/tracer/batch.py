"""Statistics in batches: small tensors wait in a Batch, grouped by shape, and each group is
reduced as one stacked block (a handful of kernels for many tensors); large ones are reduced at
once. A Pending stands for a tensor's statistics until `resolve` brings them to the host (one
transfer per device). Also the recorded form of a tensor at each tracer level."""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import torch

from ..values import TensorStats
from . import compat, stats


class Pending:
    """A tensor's statistics, on the device (or still waiting in a Batch) until `resolve` brings
    them to the host; then `stats()` gives its TensorStats. A view of a recorded tensor gets a
    Pending of its own shape that shares the tensor's numbers (`row`: the Pending holding them;
    the statistics ignore element order)."""

    __slots__ = ("row", "shape", "dtype", "_stats", "block", "col", "n", "numbers", "batch")

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, n: int,
                 batch: Batch | None = None, row: Pending | None = None) -> None:
        self.row = self if row is None else row
        self.shape, self.dtype, self.n, self.batch = shape, dtype, n, batch
        self._stats: TensorStats | None = None
        self.block: stats.Block | None = None  # where the numbers are, until resolved
        self.col = 0
        self.numbers: tuple[float, ...] | None = None

    def stats(self) -> TensorStats | None:
        """The TensorStats once resolved (None if the tensor could not be summarized)."""
        if self._stats is None and self.row.numbers is not None:
            self._stats = TensorStats.of(self.shape, stats.dtype_name(self.dtype),
                                         self.row.numbers)
        return self._stats

    def view(self, shape: tuple[int, ...]) -> Pending:
        """The statistics of a view of this tensor (the same numbers, another shape)."""
        return Pending(shape, self.dtype, self.n, row=self.row)


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
        self.groups: dict[tuple, list[tuple[torch.Tensor, Pending, int]]] = {}
        self.held = 0
        self.failures: list[str] = []  # what could not be summarized (changed in place)
        self._lock = threading.Lock()  # CUDA runs backward hooks on the device's own thread

    def add(self, t: torch.Tensor, copy: bool) -> Pending:
        """t's statistics, to come; `copy` for tensors that may change before the flush."""
        n = t.numel()
        pending = Pending(tuple(t.shape), t.dtype, n, self)
        if 0 < n <= self.small and stats.plain(t) is not None:  # the common case, kept short
            if copy:
                x, version = t.detach().clone(), -1  # ours: nobody changes it
            else:
                x, version = t, compat.version(t)
        else:
            if n == 0:
                pending.numbers, pending.batch = stats.ZERO, None
                return pending
            x, acc = stats.prepared(t)
            if n > self.small:
                self._reduce([(stats.flat(x), acc)], [[pending]])
                return pending
            version = compat.version(x)
            if copy and x.dtype == t.dtype and x.layout == t.layout:  # else a new tensor already
                x, version = x.clone(), -1
        with self._lock:
            self.groups.setdefault((x.device, x.dtype, pending.shape), []).append(
                (x, pending, version))
            self.held += n
            if self.held > self.held_max:
                self._flush()
        return pending

    def flush(self) -> None:
        """Reduce every waiting group (one block each) and let go of the tensors."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        groups, self.groups, self.held = self.groups, {}, 0
        by_device: dict[Any, tuple[list, list]] = {}
        for (device, dtype, _), entries in groups.items():
            entries = self._unchanged(entries)
            if entries:
                xs, rows = by_device.setdefault(device, ([], []))
                tensors = [x for x, _, _ in entries]
                xs.append((torch.stack(tensors).view(len(tensors), -1) if len(tensors) > 1
                           else stats.flat(tensors[0]), stats.accumulation(dtype)))
                rows.append([row for _, row, _ in entries])
        for xs, rows in by_device.values():
            self._reduce(xs, rows)

    def _reduce(self, xs: list[tuple[torch.Tensor, torch.dtype]],
                rows: list[list[Pending]]) -> None:
        """Reduce blocks; each block's rows learn where their numbers are."""
        try:
            with torch.no_grad(), self._narrow(xs[0][0]):
                blocks = stats.reduce_blocks(xs)
        except Exception as exc:  # never raised into the user's pass: noted, left unknown
            self._fail(f"statistics of {sum(map(len, rows))} tensors: {type(exc).__name__}: {exc}")
            blocks = [None] * len(xs)
        for block, block_rows in zip(blocks, rows):
            for col, row in enumerate(block_rows):
                row.block, row.col, row.batch = block, col, None

    def _unchanged(self, entries: list) -> list:
        """The entries whose tensor is as it was when added; the others are noted, unsummarized."""
        kept = []
        for entry in entries:
            x, row, version = entry
            if version < 0 or compat.version(x) == version:
                kept.append(entry)
            else:
                row.batch = None
                self._fail(f"a {list(x.shape)} tensor changed in place before its statistics "
                           "were taken; they are not recorded")
        return kept

    def _fail(self, message: str) -> None:
        if len(self.failures) < 100:  # a failure repeated every step must not grow memory
            self.failures.append(message)

    def _narrow(self, x: torch.Tensor):
        """One CPU thread for reductions of the traced thread (see stats.one_thread)."""
        return stats.one_thread(x.device.type == "cpu" and threading.get_ident() == self.thread)


def resolve(pending: Iterable[Pending]) -> None:
    """Flush what still waits, then one transfer per device turns every block into numbers."""
    rows = {id(p.row): p.row for p in pending if p.row.numbers is None}
    for batch in {id(r.batch): r.batch for r in rows.values() if r.batch is not None}.values():
        batch.flush()
    blocks = {id(r.block): r.block for r in rows.values() if r.block is not None}
    host = stats.to_host(list(blocks.values()))
    for r in rows.values():
        if r.block is not None:
            r.numbers = stats.numbers(host[id(r.block)][r.col], r.n, r.block.full)
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
    if level != "stats" or t.layout != torch.strided:
        return None
    ptr = t.data_ptr()
    if not ptr:  # no memory (meta, empty): nothing to tell tensors apart by
        return None
    for o, rec in zip(others, records):  # the cheap test first: most gradients are new tensors
        if o is not None and type(rec) is Pending and o.layout == torch.strided \
                and o.data_ptr() == ptr and o.numel() == t.numel() and o.dtype == t.dtype \
                and o.device == t.device and compat.version(o) == compat.version(t) \
                and stats.dense(t) and stats.dense(o):
            return rec.view(tuple(t.shape))
    return None
