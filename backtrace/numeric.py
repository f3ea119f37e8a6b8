"""Finite differences: a third opinion on a formula's gradients that knows nothing of the chain rule.

∂f/∂node is estimated by central differences, (f(v + h) - f(v - h)) / 2h, perturbing one node's
value and re-running only what lies downstream of it, on the reference engine's forward functions.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from .compare import Difference, Verdict, _show, close
from .engine import Compiled, input_values
from .ir import Graph
from .traces import Trace

MAX_NODES = 2_000  # every node costs one downstream re-run: quadratic, so teaching-size graphs only


def _output_with(graph: Graph, vals: list[float], i: int, v: float) -> float:
    """f with node i's value replaced by v (everything after i recomputed, in topological order)."""
    compiled = Compiled.of(graph)
    ops, ins = compiled.ops, compiled.ins
    work = vals.copy()
    work[i] = v
    for j in range(i + 1, graph.output + 1):
        op = ops[j]
        if op is not None:
            work[j] = op.forward(*(work[k] for k in ins[j]))
    return work[graph.output]


def numeric_grads(graph: Graph, values: Mapping[str, float], trace: Trace,
                  nodes: str = "all", h: float = 1e-6) -> dict[str, float | None]:
    """Central-difference ∂f/∂node for every node on a path to the output (or only the inputs).

    Uses the node values of `trace` (a reference or torch trace of `graph`); a node whose
    perturbation leaves the op's domain gets None.
    """
    compiled = Compiled.of(graph)
    vals = input_values(graph, values)
    for i, n in enumerate(graph.nodes):
        vals[i] = float(trace.node(n.id).value)
    result: dict[str, float | None] = {}
    for i, n in enumerate(graph.nodes):
        if not compiled.active[i] or n.op == "const" or (nodes == "inputs" and n.op != "input"):
            continue
        step = h * max(1.0, abs(vals[i]))
        try:
            up = _output_with(graph, vals, i, vals[i] + step)
            down = _output_with(graph, vals, i, vals[i] - step)
            estimate = (up - down) / (2 * step)
        except (ArithmeticError, ValueError):
            estimate = None
        result[n.id] = estimate if estimate is None or math.isfinite(estimate) else None
    return result


def numeric_check(graph: Graph, values: Mapping[str, float], trace: Trace,
                  h: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6) -> Verdict:
    """Compare the trace's gradients with finite differences, node by node in backward order."""
    nodes = "all" if len(graph.nodes) <= MAX_NODES else "inputs"
    estimates = numeric_grads(graph, values, trace, nodes, h)
    worst, first, count, skipped = 0.0, None, 0, 0
    for node_id in trace.backward_order():
        if node_id not in estimates:
            continue
        estimate, grad = estimates[node_id], trace.node(node_id).grad
        if estimate is None:
            skipped += 1
            continue
        count += 1
        d = abs(float(grad) - estimate) if grad is not None else math.inf
        worst = max(worst, d)
        if first is None and not close(grad, estimate, rtol, atol):
            first = Difference(node_id, "gradient", None, float(grad) if grad is not None else None,
                               estimate, d)
    note = f"central differences, h = {_show(h)}·max(1, |v|)"
    if nodes == "inputs":
        note += f"; inputs only (more than {MAX_NODES:,} nodes)"
    if skipped:
        note += f"; {skipped} node(s) skipped: a perturbation left the op's domain"
    return Verdict((trace.engine, "finite differences"), first is None, worst, first, count, note)
