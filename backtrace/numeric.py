"""Finite differences: a third opinion on a formula's gradients that knows nothing of the chain rule.

∂f/∂node is estimated by central differences, (f(v + h) - f(v - h)) / 2h, perturbing one node's
value and re-running only what lies downstream of it (its cone) on the reference engine's forward
functions. In a tree the cones are short, but in a chain every cone runs to the output, so checking
every node would cost the square of the graph's size: `numeric_check` re-runs at most
BUDGET_PER_NODE ops per node of the graph (BUDGET_FLOOR at least, so teaching-size graphs are
checked in full), and when that cannot pay for every node it checks nodes evenly spaced in
backward order (the output's side and the inputs' side both) and says so.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .compare import Difference, Verdict, _show, close
from .engine import Compiled, input_values
from .ir import CONST, INPUT, Graph
from .traces import Trace

BUDGET_PER_NODE = 128  # re-run ops per node of the graph (two per node of a cone): linear time
BUDGET_FLOOR = 2_000_000  # about half a second: every node of a 1,400-node chain


class _Probe:
    """A graph's node values and, per node, its consumers on a path to the output: what one
    perturbation has to re-run."""

    def __init__(self, graph: Graph, values: Mapping[str, float], trace: Trace) -> None:
        compiled = Compiled.of(graph)
        self.graph, self.ops, self.ins, self.output = graph, compiled.ops, compiled.ins, graph.output
        vals = input_values(graph, values)
        for i, n in enumerate(graph.nodes):
            vals[i] = float(trace.node(n.id).value)
        self.vals = vals
        feeds = bytearray(len(vals))  # on a path to the output: the only consumers that matter
        feeds[self.output] = 1
        users: list[list[int]] = [[] for _ in vals]
        for i in range(self.output, -1, -1):
            if feeds[i]:
                for j in self.ins[i]:
                    feeds[j] = 1
        for i in range(self.output + 1):
            if feeds[i]:
                for j in self.ins[i]:
                    if not users[j] or users[j][-1] != i:  # x * x uses x once
                        users[j].append(i)
        self.users, self.active = users, compiled.active
        self._up, self._down = vals.copy(), vals.copy()  # the values at x + h and at x - h
        self._seen, self._stamp = [0] * len(vals), 0

    def candidates(self, order: Sequence[str], inputs_only: bool = False) -> list[int]:
        """The nodes with a gradient to check (on a path from an input to the output, not
        constants), in `order`, an order of node ids."""
        nodes = self.graph.nodes
        index = {n.id: i for i, n in enumerate(nodes)}
        return [i for i in map(index.__getitem__, order) if self.active[i] and nodes[i].op != CONST
                and (not inputs_only or nodes[i].op == INPUT)]

    def cone_bounds(self) -> list[int]:
        """For each node, how many nodes perturbing it re-runs: exact where the paths from it to
        the output never meet again (trees, chains), else an upper bound."""
        users, bound = self.users, [0] * len(self.vals)
        for i in range(self.output - 1, -1, -1):
            bound[i] = min(self.output - i, sum(1 + bound[u] for u in users[i]))
        return bound

    def cone(self, i: int) -> list[int]:
        """The nodes downstream of i on a path to the output, in topological order."""
        self._stamp += 1
        stamp, seen, users = self._stamp, self._seen, self.users
        found = []
        add = found.append
        for u in users[i]:
            seen[u] = stamp
            add(u)
        for j in found:  # the list grows while it is read: a queue with no pops
            for u in users[j]:
                if seen[u] != stamp:
                    seen[u] = stamp
                    add(u)
        found.sort()
        return found

    def estimate(self, i: int, h: float) -> float | None:
        """Central-difference ∂f/∂node i; None when a perturbation leaves an op's domain."""
        vals, up, down, ops, ins = self.vals, self._up, self._down, self.ops, self.ins
        cone = self.cone(i)
        x = vals[i]
        step = h * max(1.0, abs(x))
        up[i], down[i] = x + step, x - step
        try:  # f(x + step) and f(x - step) side by side, one pass over the cone
            for j in cone:
                args, forward = ins[j], ops[j].forward
                if len(args) == 2:  # unrolled like the engine's forward
                    a, b = args
                    up[j], down[j] = forward(up[a], up[b]), forward(down[a], down[b])
                elif len(args) == 1:
                    a = args[0]
                    up[j], down[j] = forward(up[a]), forward(down[a])
                else:
                    up[j] = forward(*[up[k] for k in args])
                    down[j] = forward(*[down[k] for k in args])
            estimate = (up[self.output] - down[self.output]) / (2 * step)
        except (ArithmeticError, ValueError):
            estimate = None
        finally:  # both copies are shared by every perturbation: put the cone back
            up[i] = down[i] = x
            for j in cone:
                up[j] = down[j] = vals[j]
        return estimate if estimate is None or math.isfinite(estimate) else None


def numeric_grads(graph: Graph, values: Mapping[str, float], trace: Trace,
                  nodes: str = "all", h: float = 1e-6) -> dict[str, float | None]:
    """Central-difference ∂f/∂node for every node on a path to the output (or only the inputs).

    Uses the node values of `trace` (a reference or torch trace of `graph`); a node whose
    perturbation leaves the op's domain gets None. Every node is estimated, whatever it costs
    (`numeric_check` keeps to a budget)."""
    probe = _Probe(graph, values, trace)
    ids = [n.id for n in graph.nodes]
    return {ids[i]: probe.estimate(i, h) for i in probe.candidates(ids, nodes == "inputs")}


def _evenly(candidates: list[int], m: int) -> list[int]:
    """m of the candidates, evenly spaced, the first and the last among them."""
    if m >= len(candidates):
        return candidates
    if m == 1:
        return candidates[:1]
    last = len(candidates) - 1
    return [candidates[round(k * last / (m - 1))] for k in range(m)]


def _cost(picked: list[int], bounds: list[int]) -> int:
    """Ops re-run to check the picked nodes: their cones, twice (up and down)."""
    return 2 * sum(bounds[i] for i in picked)


def plan(candidates: list[int], bounds: list[int], budget: int) -> list[int]:
    """Every candidate if checking them fits the budget, else as many as fit, evenly spaced
    (candidates are in backward order, so both the output's and the inputs' side are checked)."""
    if _cost(candidates, bounds) <= budget:
        return candidates
    lo, hi = 1, len(candidates)  # the output alone costs nothing: one always fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _cost(_evenly(candidates, mid), bounds) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return _evenly(candidates, lo)


def numeric_check(graph: Graph, values: Mapping[str, float], trace: Trace,
                  h: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6) -> Verdict:
    """Compare the trace's gradients with finite differences, node by node in backward order,
    every node when the budget allows (see BUDGET_PER_NODE), else nodes evenly spaced."""
    probe = _Probe(graph, values, trace)
    candidates = probe.candidates(trace.backward_order())
    bounds = probe.cone_bounds()
    budget = max(BUDGET_FLOOR, BUDGET_PER_NODE * len(graph.nodes))
    chosen = plan(candidates, bounds, budget)
    worst, first, count, skipped = 0.0, None, 0, 0
    for i in chosen:
        node_id = graph.nodes[i].id
        estimate, grad = probe.estimate(i, h), trace.node(node_id).grad
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
    if len(chosen) < len(candidates):
        note += (f"; {len(chosen):,} of {len(candidates):,} nodes checked, evenly spaced in backward "
                 f"order: all would re-run up to {_cost(candidates, bounds):,} ops, the budget is "
                 f"{budget:,}")
    if skipped:
        note += f"; {skipped} node(s) skipped: a perturbation left the op's domain"
    return Verdict((trace.engine, "finite differences"), first is None, worst, first, count, note)
