"""The reference engine on tensors: pure Python, forward in topological order, backward in reverse,
each step recording per edge the upstream gradient, the rule (with shapes), the local factor and
the contribution, as the scalar engine does. Values in the Trace are nested lists of floats.

`backtrace.engine.run` hands a graph here when a value is a tensor or an op has no scalar form.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DomainError, reason
from .ir import CONST, INPUT, Graph
from .ops import OPS
from .shapes import Resolved, resolve
from .tensor import Tensor, full, zip_map
from .tensor_ops import BadValue
from .traces import Edge, Step, Trace, TraceNode

NO_GRADIENT = "constant: no gradient"
CLASS_INDEX = "class indices have no gradient"


@dataclass
class Pass:
    """One forward and backward pass: values, gradients and, per step, each edge's numbers."""

    resolved: Resolved
    vals: list[Tensor]
    grads: list[Tensor | None]
    order: list[int]  # node index of each backward step, in execution order
    edges: list[list[tuple[Any, Tensor | None]]]  # per step: (local, contribution) per slot


def operands(graph: Graph, i: int) -> dict[str, str]:
    """The names the rules and messages use for node i's inputs: a, b, ..."""
    return dict(zip("abcdefgh", (graph.label(j) for j in graph.nodes[i].inputs)))


def forward(r: Resolved) -> list[Tensor]:
    """Every node's value; a failing element or a bad class index is one line naming the node."""
    graph, vals = r.graph, list(r.starts)
    for i, n in enumerate(graph.nodes):
        if vals[i] is not None:
            continue
        ins = [vals[j] for j in n.inputs]
        try:
            out = OPS[n.op].tensor_rule.forward(ins, dict(n.params))
        except BadValue as exc:
            raise DomainError(f"cannot compute {n.id} = {graph.expression(i)}: "
                              f"{str(exc).format(**operands(graph, i))}") from None
        except (ArithmeticError, ValueError) as exc:
            raise element_failure(graph, i, ins, r.shapes[i], exc) from None
        check_finite(graph, i, out, "value")
        vals[i] = out
    return vals


def element_failure(graph: Graph, i: int, ins: list[Tensor], shape: tuple[int, ...],
                    exc: Exception) -> DomainError:
    """'cannot compute the value of h = log(x) at element [1] with x = -2: outside the domain'."""
    n, op = graph.nodes[i], OPS[graph.nodes[i].op]
    where, args = "", ""
    if op.forward is not None:  # elementwise: find the element that fails
        cols = zip_map(lambda *xs: xs, shape, *ins).data
        for k, xs in enumerate(cols):
            try:
                op.forward(*xs)
            except (ArithmeticError, ValueError):
                names = operands(graph, i)
                where = f" at element {_index(shape, k)}" if shape else ""
                args = " with " + ", ".join(f"{names[c]} = {x:.6g}" for c, x in zip("abcdefgh", xs)
                                            if names[c] != f"{x:.6g}")
                break
    return DomainError(f"cannot compute the value of {n.id} = {graph.expression(i)}{where}"
                       f"{args if args != ' with ' else ''}: {reason(exc, op.name)}")


def _index(shape: tuple[int, ...], k: int) -> str:
    idx = []
    for d in reversed(shape):
        idx.append(k % d)
        k //= d
    return "[" + ", ".join(map(str, reversed(idx))) + "]"


def check_finite(graph: Graph, i: int, t: Tensor, what: str) -> None:
    """Name the node and the first element that is inf or NaN."""
    for k, x in enumerate(t.data):
        if not math.isfinite(x):
            where = f" at element {_index(t.shape, k)}" if t.shape else ""
            cause = "overflow" if math.isinf(x) else "not a number"
            raise DomainError(f"{what} of {graph.nodes[i].id} = {graph.expression(i)}{where} is "
                              f"{x} ({cause})")


def backward(r: Resolved, vals: list[Tensor]) -> Pass:
    """Gradients in reverse topological order: each op gives its vector-Jacobian products."""
    graph, active = r.graph, r.active
    out = graph.output
    grads: list[Tensor | None] = [None] * len(vals)
    grads[out] = full((), 1.0) if active[out] else None  # an output of constants has no gradient
    done = Pass(r, vals, grads, [], [])
    for i in range(out, -1, -1):
        n = graph.nodes[i]
        if not active[i] or n.op in (INPUT, CONST) or grads[i] is None:
            continue  # a node only class indices flow through gets no gradient: no step
        done.order.append(i)
        done.edges.append(_step(graph, i, vals, grads, active))
    for i, g in enumerate(grads):
        if g is not None:
            check_finite(graph, i, g, "gradient")
    return done


def _step(graph: Graph, i: int, vals: list[Tensor], grads: list[Tensor | None],
          active: bytearray) -> list[tuple[Any, Tensor | None]]:
    n = graph.nodes[i]
    rule, ins, params = OPS[n.op].tensor_rule, [vals[j] for j in n.inputs], dict(n.params)
    found = []
    for slot, j in enumerate(n.inputs):
        if not active[j]:
            found.append((None, None))
            continue
        try:
            local, contribution = rule.vjps[slot](grads[i], ins, vals[i], params)
        except (ArithmeticError, ValueError) as exc:
            raise DomainError(f"cannot compute the local derivative of {n.id} = "
                              f"{graph.expression(i)}: {reason(exc, n.op)}") from None
        found.append((local, contribution))
        if contribution is not None:
            g = grads[j]
            grads[j] = contribution if g is None else \
                Tensor(g.shape, [x + y for x, y in zip(g.data, contribution.data)])
    return found


def edge_rule(r: Resolved, i: int, slot: int) -> str:
    """The rule of one edge over the operand names, with the upstream written ∂L/∂node."""
    graph = r.graph
    n = graph.nodes[i]
    out = graph.nodes[graph.output].id
    names = {**operands(graph, i), "out": n.id, "g": "1" if i == graph.output else f"∂{out}/∂{n.id}"}
    shapes = dict(zip("abcdefgh", (r.shapes[j] for j in n.inputs)))
    text = OPS[n.op].tensor_rule.text(slot, names, shapes, dict(n.params))
    if i == graph.output:  # the seed is 1: ∂L/∂z = softmax(z) − onehot(y), as the course writes it
        text = text.replace("1 · ", "", 1).replace("1 [scalar] · ", "", 1).replace("1 ⊙ ", "", 1)
        if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
            text = text[1:-1]
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


def edge_note(r: Resolved, i: int, slot: int, contribution: Any) -> str:
    """Why an edge carries no gradient (empty when it does)."""
    if contribution is not None:
        return ""
    return NO_GRADIENT if not r.active[r.graph.nodes[i].inputs[slot]] else CLASS_INDEX


def plain(v: Any) -> Any:
    """A Trace value: nested lists of floats for a tensor, a float for a 0-d one."""
    return v.tolist() if isinstance(v, Tensor) else v


def to_trace(p: Pass, engine: str = "reference") -> Trace:
    """The pass as a Trace, tensors as nested lists."""
    graph = p.resolved.graph
    nodes = tuple(TraceNode(n.id, n.op, tuple(graph.nodes[j].id for j in n.inputs),
                            graph.expression(i), plain(p.vals[i]), plain(p.grads[i]),
                            n.op if n.op in (INPUT, CONST) else "op")
                  for i, n in enumerate(graph.nodes))
    steps = []
    for k, (i, found) in enumerate(zip(p.order, p.edges)):
        n = graph.nodes[i]
        edges = tuple(Edge(slot, graph.nodes[j].id, plain(local), edge_rule(p.resolved, i, slot),
                           plain(c), edge_note(p.resolved, i, slot, c))
                      for slot, (j, (local, c)) in enumerate(zip(n.inputs, found)))
        steps.append(Step(k, n.id, plain(p.grads[i]), edges))
    meta = {"formula": graph.source} if graph.source else {}
    return Trace(engine, graph.nodes[graph.output].id, nodes, tuple(steps), meta)


def run(graph: Graph, values: Mapping[str, Any]) -> Trace:
    """Run a graph with tensor values forward and backward on the pure-Python engine."""
    r = resolve(graph, values)
    return to_trace(backward(r, forward(r)))
