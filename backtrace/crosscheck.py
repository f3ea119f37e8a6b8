"""A formula on every engine asked for, cross-checked node by node: the library behind
`backtrace explain`. torch is imported only when the torch engine runs."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from .compare import Verdict, compare
from .errors import UsageError
from .ir import Graph
from .parser import Limits, parse
from .traces import Trace

ENGINES = ("reference", "torch", "both")
CHECKS = ("numeric",)


@dataclass(frozen=True)
class CrossCheck:
    """Each engine's trace and the verdicts comparing them."""

    trace: Trace  # the one to show: the reference engine's when it ran, else torch's; with verdicts
    reference: Trace | None
    torch: Trace | None
    verdicts: tuple[Verdict, ...] = field(default=())


def crosscheck(formula: str | Graph, values: Mapping[str, float], engine: str = "both",
               check: str | None = None, limits: Limits | None = None) -> CrossCheck:
    """Run `formula` on the reference engine, on torch or on both, compare them node by node
    (and with finite differences when check="numeric"); the verdicts go into `trace.meta["check"]`
    so every file written from the trace carries them."""
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if check is not None and check not in CHECKS:
        raise UsageError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
    graph = formula if isinstance(formula, Graph) else parse(formula, limits or Limits())
    reference = tor = None
    if engine in ("reference", "both"):
        from .engine import run

        reference = run(graph, values)
    if engine in ("torch", "both"):
        from .torch_engine import run as run_torch

        tor = run_torch(graph, values)
    shown = reference if reference is not None else tor
    verdicts = []
    if reference is not None and tor is not None:
        verdicts.append(compare(reference, tor, ("reference", "torch")))
    if check == "numeric" and shown.scalar:
        from .numeric import numeric_check

        verdicts.append(numeric_check(graph, values, shown))
    elif check == "numeric":  # tensors: element by element
        from .tensor_numeric import numeric_check as tensor_check

        verdicts.append(tensor_check(graph, values, shown))
    if verdicts:
        meta = {**shown.meta, "check": [v.to_dict() for v in verdicts]}
        shown = dataclasses.replace(shown, meta=meta)
    return CrossCheck(shown, reference, tor, tuple(verdicts))
