"""The torch engine: a formula Graph run on PyTorch in float64, recorded by the tracer.

Each op calls the torch function of its op-table row; the tracer records the backward pass, and
the result is laid out with the reference engine's node ids, expressions and rules so the two
traces can be compared node by node. torch is imported here only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .engine import Compiled, check_finite, input_values
from .ir import CONST, INPUT, Graph
from .ops import OPS
from .parser import Limits, parse
from .traces import Edge, Step, Trace, TraceNode


def run(graph: Graph, values: Mapping[str, float]) -> Trace:
    """Run `graph` forward and backward on torch (float64) and return a Trace with the formula's ids."""
    import torch

    from .tracer import trace

    compiled = Compiled.of(graph)
    vals = input_values(graph, values)  # checks the values exactly as the reference engine does
    nodes = graph.nodes
    tensors: list[Any] = []
    ids = lambda i: f"{nodes[i].id} = {graph.expression(i)}"  # noqa: E731
    with torch.autograd.set_grad_enabled(True):
        for i, n in enumerate(nodes):
            if n.op in (INPUT, CONST):
                tensors.append(torch.tensor(vals[i], dtype=torch.float64,
                                            requires_grad=n.op == INPUT))
            else:
                fn = OPS[n.op].torch_function()
                tensors.append(fn(*(tensors[j] for j in n.inputs)))
        floats = [float(t.detach()) for t in tensors]
        check_finite(floats, ids, "value")
        out = tensors[graph.output]
        named = {n.id: t for i, (n, t) in enumerate(zip(nodes, tensors))
                 if compiled.active[i] and t.requires_grad}
        if not out.requires_grad:  # the output depends on no input: nothing to differentiate
            return _layout(graph, floats, None)
        with trace(names=named, level="full", local_max=1, frame_names=False) as t:
            out.backward()
    traced = t.trace
    grads = [_number(traced.node(n.id).grad) if n.id in named else None for n in nodes]
    check_finite(grads, ids, "gradient")
    return _layout(graph, floats, traced)


def _number(v: Any) -> float | None:
    if v is None:
        return None
    return float(v)


def _layout(graph: Graph, values: list[float], traced: Trace | None) -> Trace:
    """The traced numbers in the reference engine's shape: same ids, expressions, rules and order."""
    nodes = graph.nodes
    known = {n.id for n in traced.nodes} if traced is not None else set()
    out_nodes = []
    for i, n in enumerate(nodes):
        kind = n.op if n.op in (INPUT, CONST) else "op"
        grad, meta = None, {}
        if n.id in known:
            tn = traced.node(n.id)
            grad = _number(tn.grad)
            meta = {"torch_type": tn.meta.get("torch_type", "")}
        out_nodes.append(TraceNode(n.id, n.op, tuple(nodes[j].id for j in n.inputs),
                                   graph.expression(i), values[i], grad, kind, meta))
    steps = []
    if traced is not None:
        index = {n.id: i for i, n in enumerate(nodes)}
        for s in traced.steps:
            i = index.get(s.node)
            if i is None:
                continue  # a node the formula does not have (none today; keep the layout honest)
            node = nodes[i]
            op = OPS[node.op]
            operands = [graph.label(j) for j in node.inputs]
            edges = []
            for slot, j in enumerate(node.inputs):
                e = s.edges[slot]
                contribution = _number(e.contribution)
                edges.append(Edge(slot, nodes[j].id, _number(e.local),
                                  op.rule(slot, *operands, out=node.id), contribution,
                                  "" if contribution is not None else "constant: no gradient"))
            steps.append(Step(len(steps), node.id, _number(s.upstream), tuple(edges),
                              {"torch_type": traced.node(s.node).meta.get("torch_type", "")}))
    meta = {"formula": graph.source} if graph.source else {}
    meta["dtype"] = "float64"
    return Trace("torch", nodes[graph.output].id, tuple(out_nodes), tuple(steps), meta)


def explain(formula: str, limits: Limits | None = None, **values: float) -> Trace:
    """Parse `formula` and run it on the torch engine."""
    return run(parse(formula, limits or Limits()), values)
