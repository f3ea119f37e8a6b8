"""The torch engine: a formula Graph run on PyTorch in float64, recorded by the tracer.

Each op calls the torch function of its op-table row; the tracer records the backward pass, and
the result is laid out with the reference engine's node ids, expressions and rules so the two
traces can be compared node by node. torch is imported here only.

Tensor formulas run the graph `backtrace.shapes.resolve` gives both engines (broadcast nodes
included): one autograd backward for every gradient, then each node's own vector-Jacobian
product by `torch.autograd.grad` on detached copies of its inputs, so an op that torch builds
from several autograd nodes (matmul of a vector, cross_entropy) is still one step per formula node.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .engine import Compiled, TensorValues, check_finite, input_values, split_limits
from . import tensor_engine
from .ir import CONST, INPUT, Graph, Node
from .ops import OPS
from .parser import Limits, parse
from .shapes import Resolved, resolve
from .tensor import Tensor
from .traces import Edge, Step, Trace, TraceNode


def run(graph: Graph, values: Mapping[str, float]) -> Trace:
    """Run `graph` forward and backward on torch (float64) and return a Trace with the formula's ids."""
    import torch

    from .tracer import trace

    compiled = Compiled.of(graph)
    try:
        if compiled.tensor:
            raise TensorValues("an op has no scalar form")
        vals = input_values(graph, values)  # checks the values exactly as the reference engine does
    except TensorValues:
        return run_tensors(graph, values)
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


def call(node: Node, args: list[Any]) -> Any:
    """The torch function of the node's op-table row on these tensors (with its parameters)."""
    op = OPS[node.op]
    kwargs = {**dict(op.torch_kwargs), **{k: v for k, v in node.params if v is not None}}
    return op.torch_function()(*args, **kwargs)


def run_tensors(graph: Graph, values: Mapping[str, Any]) -> Trace:
    """A formula with tensor values on torch, float64, in the reference engine's layout."""
    import torch

    r = resolve(graph, values)
    g = r.graph
    ts: list[Any] = []
    with torch.autograd.set_grad_enabled(True):
        for i, n in enumerate(g.nodes):
            if r.starts[i] is not None:
                t = torch.tensor(r.starts[i].tolist(), dtype=torch.float64,
                                 requires_grad=n.op == INPUT)
            else:
                t = call(n, [ts[j] for j in n.inputs])
                if t.requires_grad:
                    t.retain_grad()
            _check_finite(g, i, t, "value")
            ts.append(t)
        out = ts[g.output]
        if out.requires_grad:
            out.backward()
        steps = _tensor_steps(r, ts) if out.requires_grad else []
    grads = [t.grad for t in ts]
    for i, t in enumerate(grads):
        if t is not None:
            _check_finite(g, i, t, "gradient")
    nodes = tuple(TraceNode(n.id, n.op, tuple(g.nodes[j].id for j in n.inputs), g.expression(i),
                            ts[i].detach().tolist(), None if grads[i] is None else grads[i].tolist(),
                            n.op if n.op in (INPUT, CONST) else "op", _torch_type(ts[i]))
                  for i, n in enumerate(g.nodes))
    meta = {"formula": g.source} if g.source else {}
    return Trace("torch", g.nodes[g.output].id, nodes, tuple(steps), {**meta, "dtype": "float64"})


def _torch_type(t: Any) -> dict:
    return {"torch_type": type(t.grad_fn).__name__ if t.grad_fn is not None else
            "AccumulateGrad" if t.requires_grad else ""}


def _check_finite(graph: Graph, i: int, t: Any, what: str) -> None:
    import torch

    if not bool(torch.isfinite(t.detach()).all()):
        tensor_engine.check_finite(graph, i, Tensor(tuple(t.shape), t.detach().flatten().tolist()),
                                   what)


def _tensor_steps(r: Resolved, ts: list[Any]) -> list[Step]:
    """One step per op node that received a gradient, in the reference engine's order: the
    upstream from the full backward pass, each contribution from this node's function alone."""
    import torch

    g, steps = r.graph, []
    for i in range(g.output, -1, -1):
        n, up = g.nodes[i], ts[i].grad
        if n.op in (INPUT, CONST) or not r.active[i] or up is None:
            continue
        xs = [ts[j].detach().requires_grad_(bool(r.active[j])) for j in n.inputs]
        wanted = [x for x in xs if x.requires_grad]
        found = torch.autograd.grad(call(n, xs), wanted, up, allow_unused=True)
        by_slot = iter(found)
        contributions = [next(by_slot) if x.requires_grad else None for x in xs]
        edges = tuple(Edge(slot, g.nodes[j].id, None, tensor_engine.edge_rule(r, i, slot),
                           None if c is None else c.tolist(),
                           tensor_engine.edge_note(r, i, slot, c))
                      for slot, (j, c) in enumerate(zip(n.inputs, contributions)))
        steps.append(Step(len(steps), n.id, up.tolist(), edges, _torch_type(ts[i])))
    return steps


def explain(formula: str, limits: Limits | None = None, /, **values: Any) -> Trace:
    """Parse `formula` and run it on the torch engine (any input name works, as in
    `backtrace.explain`)."""
    limits, values = split_limits(limits, values)
    return run(parse(formula, limits), values)
