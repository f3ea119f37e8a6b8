"""Shapes through the IR: a formula Graph and its input tensors -> the graph both engines run.

Every node's shape is inferred from its inputs' by its op's tensor rule (a mismatch is one line
naming the node and the shapes), every tensor is held to the reference engine's size limit, and
where an elementwise op broadcasts an input that needs a gradient, an explicit `broadcast` node
is inserted before it: its backward step is the reduction (the sum over the broadcast axes) that
autograd would otherwise do out of sight. Pure Python.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DomainError
from .ir import CONST, INPUT, Graph, GraphBuilder, check_names, needs_grad
from .ops import OPS
from .tensor import Tensor, check_size, from_value, scalar, shape_text
from .tensor_ops import ShapeMismatch


class ShapeError(DomainError):
    """Shapes an op cannot take: names the node and every operand's shape."""


@dataclass(frozen=True)
class Resolved:
    """The graph to run (broadcast nodes inserted), each node's shape, which nodes need a
    gradient, and the starting tensors (inputs and constants; None for op nodes)."""

    graph: Graph
    shapes: list[tuple[int, ...]]
    active: bytearray
    starts: list[Tensor | None]


def input_tensors(graph: Graph, values: Mapping[str, Any]) -> dict[str, Tensor]:
    """Each input's value as a Tensor: numbers, nested lists, Tensors and torch tensors."""
    names = list(graph.input_names)
    check_names(graph, names, values)
    return {name: from_value(values[name], name) for name in names}


def shape_error(graph: Graph, i: int, shapes: list[tuple[int, ...]], why: str) -> ShapeError:
    """'shape error at h = x @ W: x is [3], W is [4×4]; @ needs ...' in one line."""
    labels = [graph.label(j) for j in graph.nodes[i].inputs]
    operands = dict(zip("abcdefgh", labels))
    parts = ", ".join(f"{name} is {shape_text(s)}" for name, s in zip(labels, shapes))
    return ShapeError(f"shape error at {graph.nodes[i].id} = {graph.expression(i)}: {parts}; "
                      f"{why.format(**operands)}")


def resolve(graph: Graph, values: Mapping[str, Any]) -> Resolved:
    """Infer every shape, check the limits and insert the broadcast nodes."""
    tensors = input_tensors(graph, values)
    old_active = needs_grad([n.inputs for n in graph.nodes], [n.op == INPUT for n in graph.nodes],
                            graph.output)
    b = GraphBuilder(max_nodes=2 * len(graph.nodes) + 1)
    where: list[int] = []  # old node index -> new node index
    shapes: list[tuple[int, ...]] = []
    starts: list[Tensor | None] = []

    def add(op: str, inputs: tuple = (), value: Any = None, name: str | None = None,
            params: tuple = (), shape: tuple = (), start: Tensor | None = None) -> int:
        shapes.append(shape)
        starts.append(start)
        return b.add(op, inputs, value, name, params)

    for i, n in enumerate(graph.nodes):
        name = n.id if n.named else None
        if n.op == INPUT:
            t = tensors[n.id]
            where.append(add(INPUT, name=n.id, shape=t.shape, start=t))
        elif n.op == CONST:
            where.append(add(CONST, value=n.value, name=name, start=scalar(n.value)))
        else:
            op, args = OPS[n.op], [where[j] for j in n.inputs]
            in_shapes = [shapes[k] for k in args]
            try:
                out = op.tensor_rule.shape(in_shapes, dict(n.params))
            except ShapeMismatch as exc:
                raise shape_error(graph, i, in_shapes, str(exc)) from None
            check_size(out, f"{n.id} = {graph.expression(i)}")
            if op.tensor_rule.broadcasts:
                for slot, (j, k) in enumerate(zip(n.inputs, args)):
                    if shapes[k] != out and old_active[j]:
                        args[slot] = add("broadcast", (k,), params=(("size", out),), shape=out)
            where.append(add(n.op, tuple(args), name=name, params=n.params, shape=out))
    if shapes[where[graph.output]]:
        raise ShapeError(f"the output {graph.nodes[graph.output].id} is "
                         f"{shape_text(shapes[where[graph.output]])}, not one number: backward starts "
                         f"from a scalar loss; end the formula with sum(...) or mean(...)")
    aliases = tuple((alias, where[j]) for alias, j in graph.aliases)
    new = b.build(where[graph.output], graph.source, aliases)
    active = needs_grad([n.inputs for n in new.nodes], [n.op == INPUT for n in new.nodes], new.output)
    return Resolved(new, shapes, active, starts)
