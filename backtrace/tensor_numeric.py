"""Finite differences for tensor formulas: ∂f/∂node element by element, knowing nothing of the
chain rule (the tensor counterpart of backtrace.numeric).

Each element of a node's value is moved by ±h and only the nodes downstream of it are re-run on
the reference engine's tensor forward functions. Every element costs two partial forward passes,
so all nodes are checked up to MAX_ELEMENTS perturbed elements, the inputs only beyond that.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .compare import Difference, Verdict, _show, close, delta
from .ir import CONST, INPUT, Graph
from .ops import OPS
from .shapes import Resolved, resolve
from .tensor import Tensor
from .tensor_engine import forward
from .traces import Trace

MAX_ELEMENTS = 2_000


def _output_with(r: Resolved, vals: list[Tensor], i: int, k: int, v: float) -> float:
    """f with element k of node i set to v, everything downstream of i recomputed."""
    work = list(vals)
    data = list(work[i].data)
    data[k] = v
    work[i] = Tensor(work[i].shape, data)
    graph = r.graph
    for j in range(i + 1, graph.output + 1):
        n = graph.nodes[j]
        if n.op not in (INPUT, CONST):
            work[j] = OPS[n.op].tensor_rule.forward([work[m] for m in n.inputs], dict(n.params))
    return work[graph.output].item()


def _estimate(r: Resolved, vals: list[Tensor], i: int, h: float) -> Any:
    """Central differences of f for every element of node i (None where one leaves the domain)."""
    out = []
    for k, x in enumerate(vals[i].data):
        step = h * max(1.0, abs(x))
        try:
            d = (_output_with(r, vals, i, k, x + step) - _output_with(r, vals, i, k, x - step)) / (2 * step)
        except (ArithmeticError, ValueError):
            return None
        out.append(d)
    return Tensor(vals[i].shape, out).tolist()


def numeric_check(graph: Graph, values: Mapping[str, Any], trace: Trace, h: float = 1e-6,
                  rtol: float = 1e-5, atol: float = 1e-6) -> Verdict:
    """Compare the trace's gradients with finite differences, node by node in backward order."""
    r = resolve(graph, values)
    vals = forward(r)
    index = {n.id: i for i, n in enumerate(r.graph.nodes)}
    wanted = [i for i, n in enumerate(r.graph.nodes) if r.active[i] and n.op != CONST]
    inputs_only = sum(vals[i].numel for i in wanted) > MAX_ELEMENTS
    worst, first, count, skipped = 0.0, None, 0, 0
    for node_id in trace.backward_order():
        i = index.get(node_id)
        if i is None or i not in wanted or (inputs_only and r.graph.nodes[i].op != INPUT):
            continue
        grad = trace.node(node_id).grad
        if grad is None:  # class indices: no gradient to check
            continue
        estimate = _estimate(r, vals, i, h)
        if estimate is None:
            skipped += 1
            continue
        count += 1
        d = delta(grad, estimate)
        worst = max(worst, d)
        if first is None and not close(grad, estimate, rtol, atol):
            first = Difference(node_id, "gradient", None, grad, estimate, d)
    note = f"central differences element by element, h = {_show(h)}·max(1, |v|)"
    if inputs_only:
        note += f"; inputs only (more than {MAX_ELEMENTS:,} elements)"
    if skipped:
        note += f"; {skipped} node(s) skipped: a perturbation left the op's domain"
    return Verdict((trace.engine, "finite differences"), first is None,
                   worst if math.isfinite(worst) else math.inf, first, count, note)
