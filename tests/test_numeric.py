"""Finite differences re-run only what lies downstream of the perturbed node, and keep to a budget
proportional to the graph: checked against a full re-run (the old, quadratic way) as the oracle."""
from __future__ import annotations

import dataclasses
import math
import random
import re
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from backtrace import numeric
from backtrace.cli import cli
from backtrace.engine import Compiled, run
from backtrace.ir import GraphBuilder
from backtrace.numeric import _Probe, numeric_check, numeric_grads, plan
from backtrace.ops import OPS
from backtrace.traces import Trace

UNARY, BINARY = ("tanh", "sin", "sigmoid", "neg"), ("add", "sub", "mul", "max")


def random_graph(seed: int, n: int = 80):
    """A random DAG: inputs, constants and ops over any earlier nodes (fan-out, reuse, dead ends)."""
    rng = random.Random(seed)
    g, values = GraphBuilder(), {}
    for k in range(4):
        values[f"x{k}"] = rng.uniform(-1, 1)
        g.add("input", name=f"x{k}")
    g.add("const", value=0.5)
    while len(g.nodes) < n:
        if rng.random() < 0.3:
            g.add(rng.choice(UNARY), (rng.randrange(len(g.nodes)),))
        else:
            g.add(rng.choice(BINARY), (rng.randrange(len(g.nodes)), rng.randrange(len(g.nodes))))
    return g.build(len(g.nodes) - 1), values


def chain(n: int):
    """y = tanh(y) + x_k: every node's cone reaches the output."""
    g, values = GraphBuilder(), {"x0": 0.3}
    y = g.add("input", name="x0")
    k = 1
    while len(g.nodes) + 3 <= n:
        values[f"x{k}"] = 0.5 * math.sin(k)
        y = g.add("add", (g.add("tanh", (y,)), g.add("input", name=f"x{k}")))
        k += 1
    return g.build(y), values


def tree(n: int):
    g, values = GraphBuilder(), {}
    terms = []
    for k in range(n // 3):
        values[f"x{k}"] = math.cos(k)
        terms.append(g.add("sin", (g.add("input", name=f"x{k}"),)))
    while len(terms) > 1:
        terms = [g.add("add", tuple(terms[i:i + 2])) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return g.build(terms[0]), values


def downstream(graph, i: int) -> list[int]:
    """Brute force: every later node fed by i, on a path to the output."""
    dirty = {i}
    for j in range(i + 1, graph.output + 1):
        if dirty & set(graph.nodes[j].inputs):
            dirty.add(j)
    feeds = {graph.output}
    for j in range(graph.output, -1, -1):
        if j in feeds:
            feeds.update(graph.nodes[j].inputs)
    return sorted((dirty - {i}) & feeds)


def full_rerun(graph, trace: Trace, i: int, h: float = 1e-6) -> float | None:
    """The old estimate: node i moved by ±step and every later node re-run."""
    vals = [float(trace.node(n.id).value) for n in graph.nodes]

    def f(v: float) -> float:
        work = vals.copy()
        work[i] = v
        for j in range(i + 1, graph.output + 1):
            n = graph.nodes[j]
            if n.op not in ("input", "const"):
                work[j] = OPS[n.op].forward(*(work[k] for k in n.inputs))
        return work[graph.output]

    step = h * max(1.0, abs(vals[i]))
    try:
        return (f(vals[i] + step) - f(vals[i] - step)) / (2 * step)
    except (ArithmeticError, ValueError):
        return None


@pytest.mark.parametrize("seed", range(8))
def test_cones_are_exactly_whats_downstream_and_bounded(seed):
    graph, values = random_graph(seed)
    probe = _Probe(graph, values, run(graph, values))
    bounds = probe.cone_bounds()
    for i in range(len(graph.nodes)):
        cone = probe.cone(i)
        assert cone == downstream(graph, i)
        assert bounds[i] >= len(cone)


@pytest.mark.parametrize("make", [chain, tree])
def test_cone_bounds_are_exact_on_chains_and_trees(make):
    graph, values = make(300)
    probe = _Probe(graph, values, run(graph, values))
    assert probe.cone_bounds() == [len(probe.cone(i)) for i in range(len(graph.nodes))]


@pytest.mark.parametrize("seed", range(8))
def test_estimates_are_those_of_a_full_rerun_bit_for_bit(seed):
    """Nodes outside the cone keep their values, so re-running only the cone changes nothing."""
    graph, values = random_graph(seed)
    trace = run(graph, values)
    estimates = numeric_grads(graph, values, trace)
    assert estimates  # something was checked
    active = Compiled.of(graph).active
    assert set(estimates) == {n.id for i, n in enumerate(graph.nodes)
                              if active[i] and n.op != "const"}
    index = {n.id: i for i, n in enumerate(graph.nodes)}
    for node_id, estimate in estimates.items():
        assert estimate == full_rerun(graph, trace, index[node_id])
        assert estimate == pytest.approx(trace.node(node_id).grad, rel=1e-5, abs=1e-6)


def test_plan_takes_all_that_fit_else_evenly_spaced_with_both_ends():
    bounds = list(range(100, 0, -1)) + [0]  # a chain: the deepest node costs the most
    candidates = list(range(100, -1, -1))  # backward order: the output (100) first
    assert plan(candidates, bounds, 10**9) == candidates
    budget = 2_000
    picked = plan(candidates, bounds, budget)
    assert picked[0] == 100 and picked[-1] == 0  # the output's side and the inputs' side
    assert 2 * sum(bounds[i] for i in picked) <= budget
    gaps = {b - a for a, b in zip(picked[1:], picked)}
    assert max(gaps) - min(gaps) <= 1  # evenly spaced
    more = plan(candidates, bounds, 2 * budget)
    assert len(more) > len(picked)  # the budget is used, not a fixed sample size
    assert plan(candidates, bounds, 0) == [100]  # the output alone costs nothing


def counting(graph):
    """Count every forward call made from now on (the graph's compiled ops swapped: run the
    engine first)."""
    calls = [0]
    compiled = Compiled.of(graph)

    def wrap(op):
        def forward(*args):
            calls[0] += 1
            return op.forward(*args)
        return SimpleNamespace(forward=forward)

    compiled.ops[:] = [op if op is None else wrap(op) for op in compiled.ops]
    return calls


@pytest.mark.parametrize("floor", [0, None])
def test_a_long_chain_is_checked_within_the_budget_and_says_what_was_checked(floor, monkeypatch):
    if floor is not None:  # the budget proportional to the graph alone
        monkeypatch.setattr(numeric, "BUDGET_FLOOR", floor)
    graph, values = chain(6_000)
    trace = run(graph, values)
    calls = counting(graph)
    verdict = numeric_check(graph, values, trace)
    budget = max(numeric.BUDGET_FLOOR, numeric.BUDGET_PER_NODE * len(graph.nodes))
    assert 0 < calls[0] <= budget  # linear: at most BUDGET_PER_NODE ops per node
    assert calls[0] > budget // 2  # and the budget is spent on checks
    assert verdict.agree and verdict.max_abs_diff < 1e-7
    found = re.search(r"; ([\d,]+) of ([\d,]+) nodes checked, evenly spaced in backward order: "
                      rf"all would re-run up to ([\d,]+) ops, the budget is {budget:,}$", verdict.note)
    assert found, verdict.note
    checked, candidates, all_ops = (int(g.replace(",", "")) for g in found.groups())
    assert checked == verdict.compared and candidates == len(graph.nodes)  # no constants here
    assert all_ops > budget


def test_a_teaching_size_chain_is_checked_in_full():
    graph, values = chain(1_000)  # 500,000 ops to check every node: under the floor
    verdict = numeric_check(graph, values, run(graph, values))
    assert verdict.agree and verdict.compared == len(graph.nodes) and "checked" not in verdict.note


def test_the_deepest_input_is_always_checked():
    graph, values = chain(6_000)
    good = run(graph, values)
    nodes = tuple(dataclasses.replace(n, grad=n.grad + 0.1) if n.id == "x0" else n
                  for n in good.nodes)
    bad = Trace("torch", good.output, nodes, tuple(good.steps), dict(good.meta))
    verdict = numeric_check(graph, values, bad)
    assert not verdict.agree and verdict.first.node == "x0"
    assert verdict.first.a == pytest.approx(verdict.first.b + 0.1)


def test_a_tree_is_checked_in_full():
    graph, values = tree(6_000)
    trace = run(graph, values)
    calls = counting(graph)
    verdict = numeric_check(graph, values, trace)
    assert verdict.agree and verdict.compared == len(graph.nodes)  # no constants here
    assert "checked" not in verdict.note and calls[0] <= numeric.BUDGET_PER_NODE * len(graph.nodes)


def test_explain_check_numeric_on_a_long_formula(tmp_path):
    lines = ["y0 = tanh(x) + x", *(f"y{k} = tanh(y{k - 1}) * 0.9 + x" for k in range(1, 800)),
             "f = y799"]
    path = tmp_path / "chain.txt"
    path.write_text("\n".join(lines))
    result = CliRunner().invoke(cli, ["explain", "-f", str(path), "--x", "0.3", "--engine",
                                      "reference", "--check", "numeric"])
    assert result.exit_code == 0, result.output
    verdict = result.output.strip().splitlines()[-1]
    assert verdict.startswith("reference and finite differences agree")
    found = re.search(r"([\d,]+) of ([\d,]+) nodes checked, evenly spaced in backward order", verdict)
    checked, total = (int(g.replace(",", "")) for g in found.groups())
    assert 0 < checked < total == 1 + 2 + 3 * 799  # x; tanh and + per statement, * after the first
