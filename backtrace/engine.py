"""The reference engine: pure Python, exact, iterative. Forward in topological order, backward in
reverse, recording every step as upstream × local = contribution. Imports no torch."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from numbers import Real
from typing import Any

from . import tensor_engine
from .errors import DomainError, MissingValueError, UsageError, reason
from .ir import CONST, INPUT, Graph, check_names, needs_grad
from .values import format_number
from .ops import OPS, Op
from .parser import Limits, parse
from .tensor import is_tensor_like
from .traces import Edge, LazySeq, Step, Trace, TraceNode

class Tape:
    """The raw numbers of one pass in flat lists; `to_trace` views them as a Trace lazily."""

    # Upstream gradients and contributions are not stored: a step's upstream is its node's final
    # gradient, and its contribution is local × upstream, recomputed bit for bit when read.
    # Half the floats kept alive means a million-node pass stays in cache and linear.
    __slots__ = ("ops", "ins", "vals", "grads", "order", "locals")

    def __init__(self, ops: list[Op | None], ins: list[tuple[int, ...]], vals: list[float]) -> None:
        self.ops, self.ins, self.vals = ops, ins, vals
        self.grads: list[float | None] = []
        self.order: list[int] = []  # node index of each backward step, in execution order
        self.locals: list[float | None] = []  # one per edge of each step, flattened


def backward(tape: Tape, output: int, active: bytearray) -> None:
    """Fill the tape's gradients and steps: the engine multiplies, ops only give local derivatives."""
    ops, ins, vals = tape.ops, tape.ins, tape.vals
    grads = [0.0] * len(vals)
    grads[output] = 1.0
    order = [i for i in range(output, -1, -1) if active[i] and ops[i] is not None]
    add_local = tape.locals.append
    i = 0
    try:
        for i in order:
            up = grads[i]
            args = ins[i]
            derivs = ops[i].derivs
            # Ops of one and two inputs, nearly all of them, are unrolled: the general loop below
            # (any arity) builds an argument list per node and runs the engine 1.9x slower.
            if len(args) == 2:
                a, b = args
                va, vb, out = vals[a], vals[b], vals[i]
                if active[a]:
                    loc = derivs[0](va, vb, out)
                    grads[a] += loc * up
                    add_local(loc)
                else:
                    add_local(None)
                if active[b]:
                    loc = derivs[1](va, vb, out)
                    grads[b] += loc * up
                    add_local(loc)
                else:
                    add_local(None)
            elif len(args) == 1:
                a = args[0]
                loc = derivs[0](vals[a], vals[i])
                grads[a] += loc * up
                add_local(loc)
            else:
                xs = [vals[j] for j in args]
                xs.append(vals[i])  # every local derivative is d(*inputs, out)
                for j, deriv in zip(args, derivs):
                    if active[j]:
                        loc = deriv(*xs)
                        grads[j] += loc * up
                        add_local(loc)
                    else:
                        add_local(None)
    except (ArithmeticError, ValueError) as exc:
        raise NodeFailure(i, exc, "the local derivative") from None
    tape.order = order
    # Nodes backward never reached have no gradient (None), not a gradient of zero.
    tape.grads = grads if all(active) else [g if on else None for g, on in zip(grads, active)]


def forward(ops: list[Op | None], ins: list[tuple[int, ...]], vals: list[float]) -> None:
    """Compute every op node's value in place (inputs and constants are already in `vals`)."""
    i = 0
    try:
        for i, op in enumerate(ops):
            if op is not None:
                args = ins[i]
                if len(args) == 2:  # unrolled like backward's
                    vals[i] = op.forward(vals[args[0]], vals[args[1]])
                elif len(args) == 1:
                    vals[i] = op.forward(vals[args[0]])
                else:
                    vals[i] = op.forward(*[vals[j] for j in args])
    except (ArithmeticError, ValueError) as exc:
        raise NodeFailure(i, exc, "the value") from None


class NodeFailure(Exception):
    """Raised inside the hot loops; the caller, who knows the node names, turns it into a DomainError."""

    def __init__(self, index: int, exc: Exception, what: str) -> None:
        super().__init__(index, exc, what)
        self.index, self.exc, self.what = index, exc, what

    def domain_error(self, ops: list[Op | None], ins: list[tuple[int, ...]], vals: list[float],
                     name) -> DomainError:
        """One line naming the node, its op, its inputs and their values."""
        i, op = self.index, ops[self.index]
        why = reason(self.exc, op.name)
        args = ", ".join(f"{name(j)} = {format_number(vals[j])}" for j in ins[i]
                         if name(j) != format_number(vals[j])) or "constant inputs"
        return DomainError(f"cannot compute {self.what} of {name(i)} = "
                           f"{op.expression(*map(name, ins[i]))} with {args}: {why}")


def check_finite(values: list, ids, what: str) -> None:
    """Name the first node whose value or gradient is inf or NaN."""
    try:
        if math.isfinite(sum(values)):  # one C-speed pass; a non-finite sum is checked exactly
            return
    except TypeError:  # None for nodes without a gradient
        if math.isfinite(sum(v for v in values if v is not None)):
            return
    for i, v in enumerate(values):
        if v is not None and not math.isfinite(v):
            cause = "overflow" if math.isinf(v) else "not a number"
            raise DomainError(f"{what} of {ids(i)} is {format_number(v)} ({cause})")


@dataclass(frozen=True)
class Compiled:
    """The value-independent part of a graph as flat lists, computed once per Graph."""

    ops: list[Op | None]
    ins: list[tuple[int, ...]]
    consts: list[float]  # constants in place, 0.0 elsewhere
    inputs: list[tuple[int, str]]  # (node index, name) of each input
    active: bytearray
    tensor: bool = False  # an op with no scalar form (@, sum, softmax, ...): the tensor engine runs it

    @classmethod
    def of(cls, graph: Graph) -> Compiled:
        """The graph's compiled form, cached on the graph (graphs are immutable)."""
        cached = graph.__dict__.get("_compiled")
        if cached is None:
            nodes = graph.nodes
            ops = [OPS.get(n.op) for n in nodes]
            ins = [n.inputs for n in nodes]
            consts = [n.value if n.op == CONST else 0.0 for n in nodes]
            is_input = [n.op == INPUT for n in nodes]
            inputs = [(i, nodes[i].id) for i, flag in enumerate(is_input) if flag]
            cached = cls(ops, ins, consts, inputs, needs_grad(ins, is_input, graph.output),
                         any(op is not None and op.tensor_only for op in ops))
            object.__setattr__(graph, "_compiled", cached)
        return cached


class TensorValues(UsageError):
    """Raised by `input_values` when a value is a tensor: the caller runs the tensor engine."""


def input_values(graph: Graph, values: Mapping[str, float]) -> list[float]:
    """Every node's starting value: the given inputs (checked) and the constants."""
    compiled = Compiled.of(graph)
    if len(values) != len(compiled.inputs) or any(name not in values for _, name in compiled.inputs):
        check_names(graph, [name for _, name in compiled.inputs], values)
    vals = compiled.consts.copy()
    for i, name in compiled.inputs:
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, Real):
            if is_tensor_like(v):
                raise TensorValues(f"{name} is a tensor: the formula runs on the tensor engine")
            raise MissingValueError(f"value of {name} must be a number, got {v!r}"[:200])
        try:
            v = float(v)
        except OverflowError:
            raise MissingValueError(f"value of {name} is too large for a float") from None
        if not math.isfinite(v):
            raise MissingValueError(f"value of {name} must be finite, got {v}")
        vals[i] = v
    return vals


def run(graph: Graph, values: Mapping[str, float]) -> Trace:
    """Run a graph forward and backward on the reference engine and return its Trace (values
    may be numbers, or tensors: nested lists, `backtrace.tensor.Tensor`s or torch tensors)."""
    compiled = Compiled.of(graph)
    ops, ins = compiled.ops, compiled.ins
    try:
        if compiled.tensor:
            raise TensorValues("an op has no scalar form")
        vals = input_values(graph, values)
    except TensorValues:
        return tensor_engine.run(graph, values)
    tape = Tape(ops, ins, vals)
    ids = lambda i: f"{graph.nodes[i].id} = {graph.expression(i)}"  # noqa: E731
    try:
        forward(ops, ins, vals)
        check_finite(vals, ids, "value")
        backward(tape, graph.output, compiled.active)
        check_finite(tape.grads, ids, "gradient")
    except NodeFailure as failure:
        raise failure.domain_error(ops, ins, vals, graph.label) from None
    return graph_trace(graph, tape)


def graph_trace(graph: Graph, tape: Tape, engine: str = "reference") -> Trace:
    """View a tape of `graph` as a Trace; nodes and steps are built when first read."""
    nodes, vals, grads = graph.nodes, tape.vals, tape.grads
    label, expression = graph.label, graph.expression

    def make_node(i: int) -> TraceNode:
        n = nodes[i]
        kind = n.op if n.op in (INPUT, CONST) else "op"
        return TraceNode(n.id, n.op, tuple(nodes[j].id for j in n.inputs), expression(i),
                         vals[i], grads[i], kind)

    offsets: list[int] = []  # where each step's edges start in the flat lists; built on first read

    def make_step(k: int) -> Step:
        if not offsets:
            offsets.extend(accumulate((len(nodes[i].inputs) for i in tape.order), initial=0))
        i = tape.order[k]
        node, op, up = nodes[i], OPS[nodes[i].op], grads[i]
        operands = [label(j) for j in node.inputs]
        edges = []
        for slot, j in enumerate(node.inputs):
            local = tape.locals[offsets[k] + slot]
            edges.append(Edge(slot, nodes[j].id, local, op.rule(slot, *operands, out=node.id),
                              None if local is None else local * up,
                              "" if local is not None else "constant: no gradient"))
        return Step(k, node.id, up, tuple(edges))

    meta = {"formula": graph.source} if graph.source else {}
    return Trace(engine, nodes[graph.output].id, LazySeq(len(nodes), make_node),
                 LazySeq(len(tape.order), make_step), meta)


def explain(formula: str, limits: Limits | None = None, /, **values: Any) -> Trace:
    """Parse `formula`, run it forward and backward on the reference engine, return the Trace.

    Every keyword is an input value, whatever its name (``explain("f = limits*2", limits=2)``);
    limits go second, by position."""
    limits, values = split_limits(limits, values)
    return run(parse(formula, limits), values)


def split_limits(limits: Limits | None, values: dict[str, Any]) -> tuple[Limits, dict[str, Any]]:
    """The parser limits and the input values, also from an older call's ``limits=Limits(...)``."""
    if limits is None and isinstance(values.get("limits"), Limits):
        values = dict(values)
        limits = values.pop("limits")
    return limits or Limits(), values
