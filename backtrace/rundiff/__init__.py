"""What changed between two runs: `diff(a, b)` aligns two torch traces of the same model and
names the first node, in backward order, whose inputs agree but whose output does not, with the
relative gradient error per module and per parameter (`backtrace diff A.json B.json`).

One module per job: `align` (which node is which), `measure` (agreement under compare.close, and
distances), `walk` (where differences start), `report` (the result as data), `view` (as a table).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..traces import Trace, load
from .align import Alignment, align, clean_path, named, op_of
from .measure import agree, distance, relative, size
from .report import DiffReport, Divergence, ModuleError, ParameterError, Unaligned
from .walk import Walk

__all__ = ["DiffReport", "Divergence", "ModuleError", "ParameterError", "Unaligned", "diff"]


def diff(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-6,
         names: tuple[str, str] = ("A", "B")) -> DiffReport:
    """Compare two runs' backward passes: traces, tracers (their last trace) or trace files."""
    if not (rtol >= 0 and atol >= 0):
        raise UsageError(f"tolerances must be non-negative numbers, got rtol={rtol}, atol={atol}")
    ta, tb = _trace(a, names[0]), _trace(b, names[1])
    al = align(ta, tb, names)
    walk = Walk(al, rtol, atol, names)
    divergences = walk.run()
    # Where any difference starts at all: a difference below the tolerance can grow past it
    # further on (LayerNorm's backward amplifies relative error element by element).
    exact = Walk(al, 0.0, 0.0, names).run() if walk.differences else []
    return DiffReport(
        names, rtol, atol, divergences[0] if divergences else None, divergences,
        module_errors(al), parameter_errors(al, rtol, atol), _unaligned(al), len(al.pairs),
        (len(al.a.nodes()), len(al.b.nodes())), (len(al.a.casts), len(al.b.casts)),
        walk.differences, (str(ta.meta.get("level", "")), str(tb.meta.get("level", ""))),
        exact[0] if exact else None)


def _trace(x: Any, name: str) -> Trace:
    if isinstance(x, Trace):
        return x
    if isinstance(x, (str, os.PathLike)):
        return load(x)
    if isinstance(getattr(x, "traces", None), list):  # a tracer: its last backward call
        return x.trace
    raise UsageError(f"diff compares traces, tracers or trace files; {name} is a "
                     f"{type(x).__name__}")


@dataclass
class _Sums:
    """One module's running sums of squared norms, and its worst node."""

    nodes: int = 0
    a: float = 0.0
    b: float = 0.0
    delta: float = 0.0
    exact: bool = True
    worst: str = ""
    worst_error: float = -1.0

    def add(self, node_id: str, ga: Any, gb: Any) -> None:
        delta, exact = distance(ga, gb)
        self.nodes += 1
        self.a, self.b = self.a + size(ga) ** 2, self.b + size(gb) ** 2
        self.delta += delta * delta
        self.exact = self.exact and exact
        if relative(delta, size(ga)) > self.worst_error:
            self.worst, self.worst_error = node_id, relative(delta, size(ga))


def module_errors(al: Alignment) -> list[ModuleError]:
    """Relative gradient error of each module's aligned nodes, largest first."""
    sums: dict[str, _Sums] = defaultdict(_Sums)
    for x, y in al.pairs.items():
        na, nb = al.a.trace.node(x), al.b.trace.node(y)
        if na.grad is not None or nb.grad is not None:
            sums[clean_path(na.module)].add(x, na.grad, nb.grad)
    found = [ModuleError(m, s.nodes, s.a ** 0.5, s.b ** 0.5, relative(s.delta ** 0.5, s.a ** 0.5),
                         s.exact, s.worst if s.delta > 0 else "")
             for m, s in sums.items()]
    return sorted(found, key=lambda e: (-e.rel_error, e.module))


def parameter_errors(al: Alignment, rtol: float, atol: float) -> list[ParameterError]:
    """Each aligned named leaf's gradient in both runs, largest relative error first."""
    found = []
    for x, y in al.pairs.items():
        na, nb = al.a.trace.node(x), al.b.trace.node(y)
        if not named(na):
            continue
        delta, exact = distance(na.grad, nb.grad)
        shape = tuple(getattr(na.value, "shape", None) or getattr(na.grad, "shape", ()) or ())
        found.append(ParameterError(clean_path(x), shape, size(na.grad), size(nb.grad),
                                    relative(delta, size(na.grad)), exact,
                                    agree(na.grad, nb.grad, rtol, atol) is not False))
    return sorted(found, key=lambda e: (-e.rel_error, e.name))


def _unaligned(al: Alignment) -> list[Unaligned]:
    def text(trace: Trace, ids: list[str]) -> tuple[str, ...]:
        nodes = [trace.node(i) for i in ids]
        return tuple(f"{n.id} {op_of(n)}" + (f" ({n.module})" if n.module else "") for n in nodes)
    return [Unaligned(text(al.a.trace, r.a), text(al.b.trace, r.b)) for r in al.regions]
