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


# In-place torch functions that are not named like one (x.add_, torch.relu_ are: a trailing _).
_INPLACE = {"__setitem__", "__set__", "__iadd__", "__isub__", "__imul__", "__itruediv__",
            "__ifloordiv__", "__imod__", "__ipow__", "__imatmul__", "__iand__", "__ior__",
            "__ixor__", "__ilshift__", "__irshift__"}
_MUTATES: dict[Any, bool] = {}  # torch function -> whether it changes its first argument


def _mutates(func: Any) -> bool:
    """Whether a torch function changes its first argument in place (by its name, cached)."""
    known = _MUTATES.get(func)
    if known is None:
        name = getattr(func, "__name__", "")
        known = _MUTATES[func] = name in _INPLACE or (name.endswith("_")
                                                       and not name.endswith("__"))
    return known


BLOCK = 1 << 16  # elements per stacked block (256 KB of float32: it stays in the cache)


class Batch:
    """Tensors waiting for their statistics, grouped by (device, dtype, shape); each group is
    reduced as one stacked block when the batch is flushed: when it holds `held` elements, or
    when the numbers are asked for. Tensors of more than `small` elements are reduced at once.

    thread: the traced thread, the only one whose CPU reductions are narrowed to one thread.
    Tensors are held as they are: autograd makes a new tensor rather than add into a gradient
    that is referenced, and a forward value that an in-place torch call is about to change
    (ReLU(inplace=True), x += 1) is copied first (`before_call`). A tensor changed in a way no
    torch call shows is noted at the flush (its version moved) and left unsummarized.
    """

    def __init__(self, thread: int, small: int = 1 << 16, held: int = 1 << 21) -> None:
        self.thread, self.small, self.held_max = thread, small, held
        self.groups: dict[tuple, list[list]] = {}  # key -> [tensor, pending, version] entries
        self.aliases: dict[int, list[list]] = {}  # storage address -> forward values held there
        self.held = 0
        self.failures: list[str] = []  # what could not be summarized (changed in place)
        self._lock = threading.Lock()  # CUDA runs backward hooks on the device's own thread

    def add(self, t: torch.Tensor, forward: bool = False) -> Pending:
        """t's statistics, to come; `forward` for a forward value (the forward may change it)."""
        n = t.numel()
        pending = Pending(tuple(t.shape), t.dtype, n, self)
        if 0 < n <= self.small and stats.plain(t) is not None:  # the common case, kept short
            x = t.detach() if forward else t
        else:
            if n == 0:
                pending.numbers, pending.batch = stats.ZERO, None
                return pending
            x, acc = stats.prepared(t)
            if n > self.small:
                self._reduce([(stats.flat(x), acc)], [[pending]])
                return pending
            forward = forward and x.dtype == t.dtype and x.layout == t.layout  # else a new tensor
        entry = [x, pending, compat.version(x)]
        with self._lock:
            self.groups.setdefault((x.device, x.dtype, pending.shape), []).append(entry)
            if forward:
                self.aliases.setdefault(compat.storage_address(x), []).append(entry)
            self.held += n
            if self.held > self.held_max:
                with torch.no_grad():
                    self._flush()
        return pending

    def before_call(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Before a torch call of the forward: copy the held values it will change in place."""
        if not self.aliases:
            return
        if _mutates(func):
            targets = args[:1]
        elif kwargs and ("out" in kwargs or kwargs.get("inplace") is True):
            out = kwargs.get("out")
            targets = (out if isinstance(out, (tuple, list)) else (out,)) if out is not None \
                else args[:1]
        else:
            return
        with self._lock:
            for t in targets:
                if isinstance(t, torch.Tensor) and compat.plain(t):  # no memory: none of ours
                    for entry in self.aliases.pop(compat.storage_address(t), ()):
                        entry[0], entry[2] = entry[0].clone(), -1  # ours now: nobody changes it

    def flush(self) -> None:
        """Reduce every waiting group (one block each) and let go of the tensors."""
        with self._lock, torch.no_grad():
            self._flush()

    def _flush(self) -> None:
        groups, self.groups, self.held = self.groups, {}, 0
        self.aliases.clear()
        by_device: dict[Any, tuple[list, list]] = {}
        for (device, dtype, _), entries in groups.items():
            entries = self._unchanged(entries)
            if not entries:
                continue
            xs, rows = by_device.setdefault(device, ([], []))
            # blocks of at most BLOCK elements: each is read once per statistic, from the cache
            per_block = max(1, BLOCK // entries[0][1].n)
            for k in range(0, len(entries), per_block):
                part = entries[k:k + per_block]
                tensors = [x for x, _, _ in part]
                xs.append((torch.stack(tensors).view(len(tensors), -1) if len(tensors) > 1
                           else stats.flat(tensors[0]), stats.accumulation(dtype)))
                rows.append([row for _, row, _ in part])
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
        """One CPU thread for the reductions of the traced thread (see stats.one_thread)."""
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


def recorded(t: torch.Tensor, level: str, batch: Batch, forward: bool = False) -> Any:
    """The recorded form of a tensor: its statistics to come ("stats") or a detached clone
    ("full"); `forward` for a forward value (see Batch)."""
    t, _ = compat.readable(t)  # a torch.func.grad wrapper is read through; meta: no numbers
    if t is None:
        return None
    with torch.no_grad(), compat.no_transforms():
        if level == "full":
            return t.detach().clone()
        return batch.add(t, forward)


def same_memory(t: torch.Tensor, level: str, others: Any, records: Any) -> Pending | None:
    """The record of a live tensor holding exactly t's elements (a view of it), if any.

    Statistics ignore element order, so a transpose or reshape of a recorded tensor reuses its
    record; both tensors are alive here, so equal memory means equal contents.
    """
    if level != "stats" or not compat.plain(t):  # sparse, meta, torch.func wrappers: no memory
        return None
    others = [o if o is not None and compat.plain(o) else None for o in others]
    try:
        ptr = t.data_ptr()  # the cheap test first: most gradients are new tensors
        if not ptr:  # no memory (meta, empty): nothing to tell tensors apart by
            return None
        for o, rec in zip(others, records):
            if o is not None and type(rec) is Pending and o.data_ptr() == ptr \
                    and o.numel() == t.numel() and o.dtype == t.dtype and o.device == t.device \
                    and compat.version(o) == compat.version(t) and stats.dense(t) \
                    and stats.dense(o):
                return rec.view(tuple(t.shape))
    except RuntimeError:  # no data pointer (sparse): not a view of anything we hold
        return None
    return None
