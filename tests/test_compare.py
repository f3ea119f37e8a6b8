"""Verdicts: agreement within tolerance, the first disagreement in backward order, and finite
differences as a third opinion."""
from __future__ import annotations

import dataclasses
import math

import pytest

from backtrace.compare import compare, delta
from backtrace.engine import run
from backtrace.numeric import numeric_check, numeric_grads
from backtrace.parser import parse
from backtrace.traces import Trace
from backtrace.values import TensorStats
from tests.conftest import NEURON, TEXTBOOK


def tampered(trace: Trace, node_id: str, **changes) -> Trace:
    nodes = tuple(dataclasses.replace(n, **changes) if n.id == node_id else n for n in trace.nodes)
    return Trace("torch", trace.output, nodes, tuple(trace.steps), dict(trace.meta))


def test_identical_traces_agree_exactly():
    a = run(parse(TEXTBOOK[0]), TEXTBOOK[1])
    verdict = compare(a, run(parse(TEXTBOOK[0]), TEXTBOOK[1]), ("reference", "torch"))
    assert verdict.agree and verdict.max_abs_diff == 0.0 and verdict.first is None
    # 5 nodes × (value, grad) + 2 steps × upstream + 4 edges × (local, contribution)
    assert verdict.compared == 10 + 2 + 8
    assert verdict.line() == "engines agree, max |Δ| = 0"


def test_first_difference_in_backward_order():
    a = run(parse(TEXTBOOK[0]), TEXTBOOK[1])
    # %0 is met before x in backward order, so a wrong %0 gradient is reported, not x's
    b = tampered(tampered(a, "%0", grad=-3.5), "x", grad=9.0)
    verdict = compare(a, b, ("reference", "torch"))
    assert not verdict.agree and verdict.max_abs_diff == 13.0
    assert (verdict.first.node, verdict.first.what, verdict.first.a, verdict.first.b) == \
        ("%0", "gradient", -4.0, -3.5)
    assert verdict.line() == ("engines disagree, max |Δ| = 13; first difference in backward order "
                              "at %0 gradient: reference -4, torch -3.5 (|Δ| = 0.5)")
    assert verdict.to_dict()["first"]["torch"] == -3.5


def test_slot_of_an_edge_is_named():
    a = run(parse("f = x * y"), {"x": 2.0, "y": 3.0})
    step = a.steps[0]
    bad = dataclasses.replace(step.edges[1], contribution=2.5)
    b = Trace("torch", a.output, tuple(a.nodes), (dataclasses.replace(step, edges=(step.edges[0], bad)),))
    first = compare(a, b).first
    assert (first.node, first.what, first.slot, first.a, first.b) == ("f", "contribution", 1, 2.0, 2.5)


def test_tolerance_is_relative():
    a = run(parse("f = x * 1e6"), {"x": 3.0})
    b = tampered(a, "f", value=3e6 * (1 + 1e-12))
    assert compare(a, b).agree and compare(a, b).max_abs_diff > 0
    assert not compare(a, b, rtol=0, atol=0).agree


def test_delta_on_tensors_stats_and_missing():
    torch = pytest.importorskip("torch")
    assert delta(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5])) == 0.5
    assert delta(torch.ones(2), torch.ones(3)) == math.inf
    s = TensorStats((2,), "float32", 1.0, 0.5, 1.0)
    assert delta(s, dataclasses.replace(s, mean=0.25)) == 0.25
    assert delta(None, None) == 0.0 and delta(None, 1.0) == math.inf
    assert delta((1.0, None), (1.5, None)) == 0.5


def test_numeric_grads_match_the_hand_derived_ones():
    graph = parse(TEXTBOOK[0])
    trace = run(graph, TEXTBOOK[1])
    est = numeric_grads(graph, TEXTBOOK[1], trace)
    assert est["x"] == pytest.approx(-4.0, abs=1e-8) and est["z"] == pytest.approx(3.0, abs=1e-8)
    assert est["%0"] == pytest.approx(-4.0, abs=1e-8) and est["f"] == pytest.approx(1.0)
    neuron = parse(NEURON[0])
    verdict = numeric_check(neuron, NEURON[1], run(neuron, NEURON[1]))
    # 5 inputs and 8 ops, each checked by perturbing it and re-running what lies downstream
    assert verdict.agree and verdict.max_abs_diff < 1e-8 and verdict.compared == 13


def test_numeric_check_catches_a_wrong_gradient_and_kinks():
    graph = parse("q = x * y; f = sin(q)")
    values = {"x": 0.5, "y": 2.0}
    good = run(graph, values)
    bad = tampered(good, "q", grad=0.0)
    verdict = numeric_check(graph, values, bad)
    assert not verdict.agree and verdict.first.node == "q"
    assert verdict.first.b == pytest.approx(math.cos(1.0), rel=1e-7)
    kink = parse("f = relu(x) * 2")
    verdict = numeric_check(kink, {"x": 0.0}, run(kink, {"x": 0.0}))
    assert not verdict.agree and verdict.first.b == pytest.approx(1.0)  # half of 2: relu'(0) = 0 by convention
