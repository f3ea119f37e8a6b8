"""The Trace: what one forward and backward pass did, node by node. Every engine emits it and every
renderer reads it; values may be floats (reference engine), tensor statistics or tensors (torch)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .codec import decode, encode, encode_meta
from .errors import TraceFormatError
from .schema import SCHEMA, parse_json, read, read_file
from .values import describe

__all__ = ["SCHEMA", "Edge", "LazySeq", "Step", "Trace", "TraceNode", "decode", "encode", "load"]


@dataclass(frozen=True)
class TraceNode:
    """One node of the forward graph with its value and the gradient ∂output/∂node."""

    id: str
    op: str  # an op-table name, "input", "const", or an engine's own name (MulBackward0)
    inputs: tuple[str, ...] = ()
    expr: str = ""
    value: Any = None
    grad: Any = None  # None: no gradient reaches this node
    kind: str = "op"  # "input", "const" or "op"
    meta: dict = field(default_factory=dict, compare=True, hash=False)

    @property
    def module(self) -> str:
        """The dotted path of the module that made this node ("" at the top level, in formulas)."""
        return str(self.meta.get("module", "") or "")


@dataclass(frozen=True)
class Edge:
    """One input edge of a backward step: upstream × local = contribution."""

    slot: int
    input: str  # id of the input node
    local: Any  # ∂node/∂input: a float, a Jacobian, or None when only described
    rule: str  # the local derivative as text over the operands, e.g. "z"
    contribution: Any  # local × upstream; None when the input needs no gradient
    note: str = ""


@dataclass(frozen=True)
class Step:
    """One backward step, in execution order: a node receives its upstream gradient and passes on."""

    index: int
    node: str
    upstream: Any
    edges: tuple[Edge, ...]
    meta: dict = field(default_factory=dict, compare=True, hash=False)


class LazySeq(Sequence):
    """A read-only sequence whose items are built on first access (big traces stay cheap)."""

    def __init__(self, length: int, make: Callable[[int], Any]) -> None:
        self._length, self._make, self._items = length, make, [None] * length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._length))]
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(i)
        item = self._items[i]
        if item is None:
            item = self._items[i] = self._make(i)
        return item

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(self._length))

    def __repr__(self) -> str:
        return f"<{self._length:,} items, built when read>"


@dataclass(frozen=True, eq=False)
class Trace:
    """One forward+backward pass: nodes in topological order, steps in backward execution order."""

    engine: str
    output: str
    nodes: Sequence[TraceNode]
    steps: Sequence[Step]
    meta: dict = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (self.engine, self.output, self.meta) == (other.engine, other.output, other.meta) \
            and _same(self.nodes, other.nodes) and _same(self.steps, other.steps)

    __hash__ = None  # type: ignore[assignment]

    def node(self, node_id: str) -> TraceNode:
        """The node with this id."""
        index = self._index
        if node_id not in index:
            raise KeyError(f"no node {node_id!r} in this trace")
        return self.nodes[index[node_id]]

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {n.id: i for i, n in enumerate(self.nodes)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    @property
    def value(self) -> Any:
        """The output's forward value."""
        return self.node(self.output).value

    @property
    def grads(self) -> dict[str, Any]:
        """Each input (named leaf) -> ∂output/∂input."""
        return {n.id: n.grad for n in self.nodes if n.kind == "input"}

    def backward_order(self) -> list[str]:
        """Node ids as backward meets them: stepped nodes in execution order, then the rest, last
        first (those backward never visits)."""
        order = [s.node for s in self.steps]
        seen = set(order)
        order += [n.id for n in reversed(self.nodes) if n.id not in seen]
        return order

    def nonfinite(self) -> Any:
        """The first non-finite gradient or value explained (a backtrace.nonfinite.NonFinite:
        culprit node, source line, cause, fix), or None when the gradients and output are finite."""
        from .nonfinite import explain  # reads a Trace by its fields: imports no traces

        return explain(self)

    def consumers(self, node_id: str) -> list[tuple[Step, Edge]]:
        """Every backward edge that sends gradient into node_id, in execution order (fan-in)."""
        return [(s, e) for s in self.steps for e in s.edges if e.input == node_id]

    def to_dict(self) -> dict:
        """A JSON-ready dict following the versioned schema."""
        return {
            "schema": SCHEMA,
            "engine": self.engine,
            "output": self.output,
            "value": encode(self.value),
            "grads": {k: encode(v) for k, v in self.grads.items()},
            "meta": encode_meta(self.meta),
            "nodes": [_node_dict(n) for n in self.nodes],
            "steps": [_step_dict(s) for s in self.steps],
        }

    @property
    def scalar(self) -> bool:
        """True when every value is a plain number (the reference engine, formulas, Values)."""
        return all(n.value is None or isinstance(n.value, (int, float)) for n in self.nodes)

    @property
    def formula_values(self) -> bool:
        """True when every value is a number or a tensor as nested lists: a trace of the formula
        engines (scalar or tensor formulas), not of a traced torch model."""
        return all(n.value is None or isinstance(n.value, (int, float, list)) for n in self.nodes)

    # How a trace draws itself (`t.to_graphviz()`, Jupyter's picture). The renderers import this
    # module, so it never imports them: backtrace.render.display installs itself here when it is
    # loaded (`import backtrace` loads it), and these methods hand over to it.
    display: ClassVar[Any] = None

    def to_graphviz(self, mode: str = "backward", **options: Any):
        """The trace as a graphviz.Digraph, folded like `backtrace render` (options: its flags)."""
        return self.display.to_graphviz(self, mode, **options)

    def _repr_svg_(self) -> str:
        """Jupyter shows a trace as its graph, drawn by the embedded Graphviz engine."""
        return self.display.svg(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The trace as JSON text (schema ``backtrace.trace/1``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> Trace:
        """Rebuild a trace from `to_dict` output, checked strictly (backtrace.schema): other
        schemas, wrong types, missing nodes, duplicate ids and cycles are one-line errors."""
        content = read(data)
        nodes = tuple(TraceNode(*n) for n in content["nodes"])
        steps = tuple(Step(index, node, upstream, tuple(Edge(*e) for e in edges), meta)
                      for index, node, upstream, edges, meta in content["steps"])
        return cls(content["engine"], content["output"], nodes, steps, content["meta"])

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """Parse JSON text written by `to_json`."""
        return cls.from_dict(parse_json(text))

    def __repr__(self) -> str:
        value = self.value if self.nodes and self.output in self._index else None
        shown = describe(value) if value is not None else "—"
        return (f"<Trace {self.engine}: {self.output} = {shown}, {len(self.nodes):,} nodes, "
                f"{len(self.steps):,} backward steps>")

    def __str__(self) -> str:
        """The tables `backtrace explain` or `backtrace trace` prints, as plain text."""
        return self.display.text(self)


def load(path: str | os.PathLike) -> Trace:
    """Read a trace file written by `Trace.to_json` (or `-o trace.json`), with one-line errors:
    checked like `from_dict`, and refused past a size limit (backtrace.schema.MAX_MB)."""
    try:
        return Trace.from_dict(read_file(path))
    except TraceFormatError as exc:
        message = str(exc)
        raise TraceFormatError(message if str(path) in message else f"{path}: {message}") from None


def _same(a: Sequence, b: Sequence) -> bool:
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))


def _equal(x: Any, y: Any) -> bool:
    """``==``, also when tensors of several elements sit inside nodes and steps (torch traces)."""
    try:
        return bool(x == y)
    except RuntimeError:  # "Boolean value of Tensor with more than one value is ambiguous"
        pass
    if type(x) is not type(y):
        return False
    if hasattr(x, "__dataclass_fields__"):
        return all(_equal(getattr(x, f), getattr(y, f)) for f in x.__dataclass_fields__)
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(_equal(p, q) for p, q in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if hasattr(x, "dtype") and hasattr(x, "shape"):  # torch tensors: dtype, shape and values
        return x.dtype == y.dtype and x.shape == y.shape and bool((x == y).all())
    return False


def _node_dict(n: TraceNode) -> dict:
    return {"id": n.id, "op": n.op, "kind": n.kind, "inputs": list(n.inputs), "expr": n.expr,
            "value": encode(n.value), "grad": encode(n.grad), "meta": encode_meta(n.meta)}


def _step_dict(s: Step) -> dict:
    # Steps are numbered from 1 in a file, as in every table and picture (Step.index is the
    # step's position in trace.steps, from 0).
    return {"index": s.index + 1, "node": s.node, "upstream": encode(s.upstream),
            "meta": encode_meta(s.meta),
            "edges": [{"slot": e.slot, "input": e.input, "local": encode(e.local), "rule": e.rule,
                       "contribution": encode(e.contribution), "note": e.note} for e in s.edges]}
