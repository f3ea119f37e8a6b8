"""What `backtrace.diff` found, as data: the first divergence in backward order, every place where
a difference starts, the relative gradient error per module and per parameter, and what aligned
with nothing. `to_dict` is the JSON of ``backtrace diff --format json``; views read the fields."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..values import TensorStats, format_number, is_tensor

SCHEMA = "backtrace.diff/1"
WHAT = {"value": "its inputs agree but its forward value differs",
        "local": "its upstream gradient agrees but the gradient it sends differs (its local "
                 "derivative differs)",
        "gradient": "the gradient reaching it differs though every node that feeds it agrees"}
KIND = {"value": "its forward value", "local": "its local derivative",
        "gradient": "the gradient reaching it"}


@dataclass(frozen=True)
class Divergence:
    """A place where the runs start to differ: a node (or a region of nodes found in one run
    only, compared at its boundary) whose inputs agree but whose output does not."""

    node: str  # its id in the first trace ("" when it is in the second only)
    node_b: str  # its id in the second trace ("" when it is in the first only)
    op: str
    module: str
    what: str  # "value", "local" or "gradient" (see WHAT)
    a: Any  # the quantity that differs, in each run
    b: Any
    rel_error: float  # ‖a - b‖ / ‖a‖ (a lower bound when only statistics were recorded)
    exact: bool = True
    slot: int | None = None  # "local": the input slot whose gradient differs
    input: str = ""  # its input's id (first trace); "gradient": the node it reaches
    region: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # nodes in one run only (a, b)
    position: float = 0.0  # where backward meets it (the first trace's backward order)
    op_b: str = ""  # the op in the second trace, when it differs (an edited node)
    agreed: tuple[tuple[str, Any, Any], ...] = ()  # what agreed here: (quantity, a, b)
    root: bool = False  # "gradient" at a root of the backward call
    note: str = ""  # a caveat: what was not recorded here

    @property
    def name(self) -> str:
        """How the node is called in a sentence: ``%3 sq (blocks.1)``."""
        ids = self.node if self.node == self.node_b or not self.node_b else \
            f"{self.node or '—'}/{self.node_b}"
        if self.op == "input":  # a leaf: a parameter or an input, named by its id
            return ids
        op = self.op if not self.op_b or self.op_b == self.op else f"{self.op}/{self.op_b}"
        return f"{ids} {op}" + (f" ({self.module})" if self.module else "")

    def short(self, names: tuple[str, str] = ("A", "B")) -> str:
        """Where and what, in a few words: ``%3 sq (blocks.1), its local derivative``."""
        a, b = self.region
        if len(a) + len(b) == 1:
            where = f"{(a or b)[0]} ({names[0] if a else names[1]} only)"
        elif a or b:
            where = (f"a region of {self.module or 'the top level'} ({len(a)} nodes in {names[0]}, "
                     f"{len(b)} in {names[1]})")
        else:
            where = self.name
        return f"{where}, {KIND[self.what]}"

    def sentence(self, names: tuple[str, str] = ("A", "B")) -> str:
        """What happened here, in words (`names`: what the two runs are called)."""
        to = f" to {self.input}" + (f" (slot {self.slot})" if self.slot is not None else "")
        if any(self.region):
            one = len(self.region[0]) + len(self.region[1]) == 1
            where = f"the node{'' if one else 's'} {_region_text(self.region, names)}"
            inside = f" ({self.module})" if self.module else ""
            their, they = ("its", "it") if one else ("their", "they")
            if self.what == "value":
                return (f"{where}{inside}, compared at {their} boundary: {their} inputs agree but "
                        f"the value {they} pass{'es' if one else ''}{to} differs")
            return (f"{where}{inside}, compared at {their} boundary: the gradients entering agree "
                    f"but the gradient {they} send{'s' if one else ''}{to} differs")
        if self.what == "local":
            return (f"{self.name}: its upstream gradient agrees but the gradient it sends{to} "
                    "differs, so its local derivative differs")
        if self.what == "gradient" and self.root:
            return (f"{self.name}: the backward call started from a different gradient "
                    "(the gradient passed to backward)")
        if self.what == "value" and self.op == "input":
            return f"{self.name}: the runs start from different values of this input"
        return f"{self.name}: {WHAT[self.what]}" + (f" ({self.note})" if self.note else "")

    def to_dict(self) -> dict:
        """JSON-ready: the differing quantities as numbers or statistics."""
        return {"node": self.node, "node_b": self.node_b, "op": self.op,
                "op_b": self.op_b or self.op, "module": self.module,
                "what": self.what, "a": summary(self.a), "b": summary(self.b),
                "rel_error": plain(self.rel_error), "exact": self.exact, "slot": self.slot,
                "input": self.input, "region": {"a": list(self.region[0]),
                                                "b": list(self.region[1])},
                "agreed": [{"quantity": q, "a": summary(x), "b": summary(y)}
                           for q, x, y in self.agreed], "note": self.note}


@dataclass(frozen=True)
class ModuleError:
    """The relative gradient error of one module's aligned nodes: ‖∂L/∂· in A - in B‖ / ‖in A‖."""

    module: str
    nodes: int  # aligned nodes compared
    norm_a: float
    norm_b: float
    rel_error: float
    exact: bool  # False: a lower bound from statistics (level stats)
    worst: str  # the node with the largest relative error

    def to_dict(self) -> dict:
        return {"module": self.module, "nodes": self.nodes, "norm_a": plain(self.norm_a),
                "norm_b": plain(self.norm_b), "rel_error": plain(self.rel_error),
                "exact": self.exact, "worst": self.worst}


@dataclass(frozen=True)
class ParameterError:
    """One parameter's (or named input's) gradient in both runs."""

    name: str
    shape: tuple[int, ...]
    norm_a: float
    norm_b: float
    rel_error: float
    exact: bool
    ok: bool  # within tolerance

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "norm_a": plain(self.norm_a),
                "norm_b": plain(self.norm_b), "rel_error": plain(self.rel_error),
                "exact": self.exact, "ok": self.ok}


@dataclass(frozen=True)
class Unaligned:
    """Nodes found in one run only (or replaced by others), between the same aligned nodes."""

    a: tuple[str, ...]  # "id op (module)" of each node in the first run
    b: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"a": list(self.a), "b": list(self.b)}


@dataclass
class DiffReport:
    """Two runs' backward passes compared node by node."""

    names: tuple[str, str]
    rtol: float
    atol: float
    first: Divergence | None
    divergences: list[Divergence] = field(default_factory=list)  # every start, backward order
    modules: list[ModuleError] = field(default_factory=list)  # largest error first
    parameters: list[ParameterError] = field(default_factory=list)  # largest error first
    unaligned: list[Unaligned] = field(default_factory=list)
    aligned: int = 0  # nodes aligned
    nodes: tuple[int, int] = (0, 0)  # nodes compared in each run (casts and constants aside)
    casts: tuple[int, int] = (0, 0)  # casts seen through in each run
    differences: int = 0  # quantities (values, gradients, contributions) beyond tolerance
    levels: tuple[str, str] = ("", "")  # the tracer level of each run
    first_exact: Divergence | None = None  # where any difference starts (zero tolerance)

    @property
    def earlier(self) -> Divergence | None:
        """The start of all differences when it is not `first`: a difference below the
        tolerance there grew past it further on."""
        e, f = self.first_exact, self.first
        if e is None or (f is not None and (e.node, e.node_b, e.what) == (f.node, f.node_b, f.what)):
            return None
        return e

    @property
    def differ(self) -> bool:
        """True when anything compared differs beyond tolerance (exit code 1)."""
        return self.differences > 0

    @property
    def exact(self) -> bool:
        """False when errors are lower bounds (a run recorded statistics, not tensors)."""
        return all(m.exact for m in self.modules) and all(p.exact for p in self.parameters)

    def line(self) -> str:
        """The verdict in one line."""
        a, b = self.names
        tol = f"rtol={self.rtol:g}, atol={self.atol:g}"
        if not self.differ:
            return f"{a} and {b} agree within {tol} ({self.aligned} nodes aligned)"
        if self.first is None:
            return (f"{a} and {b} differ beyond {tol} in {self.differences} quantities, though "
                    "no node makes a difference that large by itself")
        return (f"{a} and {b} differ beyond {tol}; the first divergence in backward order is "
                f"{self.first.short(self.names)}")

    def to_dict(self) -> dict:
        """The JSON of ``backtrace diff --format json``."""
        return {"schema": SCHEMA, "a": self.names[0], "b": self.names[1],
                "rtol": self.rtol, "atol": self.atol, "differ": self.differ,
                "first": self.first.to_dict() if self.first else None,
                "earlier": self.earlier.to_dict() if self.earlier else None,
                "modules": [m.to_dict() for m in self.modules],
                "parameters": [p.to_dict() for p in self.parameters],
                "divergences": [d.to_dict() for d in self.divergences],
                "unaligned": [u.to_dict() for u in self.unaligned],
                "aligned": self.aligned, "nodes": list(self.nodes), "casts": list(self.casts),
                "differences": self.differences, "levels": list(self.levels),
                "line": self.line()}


def _region_text(region: tuple[tuple[str, ...], tuple[str, ...]], names: tuple[str, str]) -> str:
    a, b = region
    if a and b:
        return f"{_few(a)} of {names[0]} and {_few(b)} of {names[1]}"
    return f"{_few(a or b)} found in {names[0] if a else names[1]} only"


def _few(ids: tuple[str, ...], n: int = 3) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def plain(v: float) -> Any:
    """A float for JSON: non-finite ones as text."""
    return v if math.isfinite(v) else repr(v)


def summary(v: Any) -> Any:
    """A value for JSON: numbers as themselves, tensors by their statistics."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return plain(v)
    if isinstance(v, (tuple, list)):
        return [summary(x) for x in v]
    if is_tensor(v):
        from ..tracer.stats import tensor_stats
        v = tensor_stats(v)
    if isinstance(v, TensorStats):
        return {"shape": list(v.shape), "dtype": v.dtype,
                **{k: plain(float(x)) for k, x in zip(v.NUMBERS, v.numbers())}}
    return str(v)


def percent(x: float) -> str:
    """A relative error for people: 1.2e-03 as 0.12%, tiny ones in scientific notation."""
    if not math.isfinite(x):
        return "∞"
    if x == 0:
        return "0"
    if x >= 1e-4:
        return f"{format_number(float(f'{x * 100:.3g}'))}%"
    return f"{x:.1e}"
