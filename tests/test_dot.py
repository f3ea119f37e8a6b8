"""Trace -> DOT: golden DOT text for the textbook graphs and the small label functions, checked
against hand-derived numbers."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from backtrace import explain
from backtrace.render.dot import (ACTIVE_FILL, GRAD_COLOUR, NORM_PALETTE, PENDING_COLOUR, frame,
                                  grad_cell, edge_label, legend_label, node_label, norm_colour,
                                  to_graphviz)
from backtrace.traces import Edge, TraceNode
from backtrace.values import TensorStats, describe, norm


from .conftest import NEURON, TEXTBOOK

GOLDEN = Path(__file__).parent / "golden"
FANOUT = ("a = x * x; b = x + 1; f = a * b", {"x": 3.0})  # ∂f/∂x = 4·3 + 4·3 + 9 = 33
CASES = {"textbook": TEXTBOOK, "neuron": NEURON, "fanout": FANOUT}


def trace_of(case):
    formula, values = case
    return explain(formula, **values)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_dot(case):
    source = to_graphviz(trace_of(CASES[case])).source
    assert source == (GOLDEN / f"dot_{case}.dot").read_text(encoding="utf-8")


def test_golden_dot_forward_mode_and_replay_frame():
    t = trace_of(FANOUT)
    assert to_graphviz(t, "forward").source == (GOLDEN / "dot_fanout_forward.dot").read_text()
    assert to_graphviz(t, step=2).source == (GOLDEN / "dot_fanout_step2.dot").read_text()


def test_textbook_dot_carries_the_lecture_numbers():
    # f = (x + y) z at (-2, 5, -4): q = 3, f = -12, ∂f/∂x = ∂f/∂y = z = -4, ∂f/∂z = q = 3.
    source = to_graphviz(trace_of(TEXTBOOK)).source
    for name, value, grad in [("x", "-2", "-4"), ("y", "5", "-4"), ("z", "-4", "3"), ("f", "-12", "1")]:
        label = next(line for line in source.splitlines() if f"<B>{name}</B>" in line)
        assert f'>{value}</TD>' in label
        assert f'<FONT COLOR="{GRAD_COLOUR}">{grad}</FONT>' in label
    # The edge q -> f carries q's value 3 and upstream 1 × local z = -4 = contribution -4.
    assert "label=<3<BR/>" in source and "1 × -4 = -4" in source
    # The edge z -> f: 1 × q = 3.
    assert "1 × 3 = 3" in source


def test_fan_in_sum_is_visible_in_the_node_label():
    source = to_graphviz(trace_of(FANOUT)).source
    assert "(9) + (12) + (12) = 33" in source  # in execution order: b, then a twice


def test_forward_mode_has_no_gradients():
    source = to_graphviz(trace_of(TEXTBOOK), "forward").source
    assert ">grad<" not in source and "×" not in source and GRAD_COLOUR not in source
    assert "label=<-12>" not in source and ">-12</TD>" in source  # values stay


def test_node_label_escapes_html_and_shows_expression():
    node = TraceNode("a<b", "add", ("x", "y"), "x + y", 3.0, -4.0)
    label = node_label(node, grad_cell(node, [-4.0]))
    assert "a&lt;b" in label and "x + y" in label and ">3</TD>" in label and ">-4</FONT>" in label


def test_constant_has_no_gradient_and_is_greyed():
    node = TraceNode("%1", "const", (), "1", 1.0, None, "const")
    cell = grad_cell(node, [None])
    assert cell.text == "no gradient" and cell.pending


def test_edge_label_shows_upstream_times_local_equals_contribution():
    e = Edge(0, "x", 2.0, "y", -8.0)
    assert edge_label(3.0, e, -4.0, "backward", False) == \
        f'<3<BR/><FONT COLOR="{GRAD_COLOUR}">-4 × 2 = -8</FONT>>'
    assert edge_label(3.0, e, -4.0, "forward", False) == "<3>"
    assert "pending" in edge_label(3.0, e, -4.0, "backward", False, shown=False)


def test_tensor_values_show_shape_and_norm():
    stats = TensorStats((3, 4), "float32", 5.0, 0.1, 2.0)
    assert describe(stats) == "[3×4] ‖·‖=5"
    t = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # Frobenius norm 5
    assert describe(t) == "[2×2] ‖·‖=5"
    assert norm(t) == pytest.approx(5.0) and norm(stats) == 5.0 and norm(-2.5) == 2.5
    assert norm((TensorStats((2,), "f", 3.0, 0, 0), TensorStats((2,), "f", 4.0, 0, 0))) == 5.0
    assert describe(torch.tensor(2.5)) == "2.5"
    assert describe(TensorStats((), "float32", 2.5, -2.5, 2.5)) == "-2.5"  # a scalar is its value
    e = Edge(0, "w", None, "", stats)
    assert edge_label(stats, e, None, "backward", True) == \
        f'<[3×4]<BR/><FONT COLOR="{GRAD_COLOUR}">∂ [3×4] ‖·‖=5</FONT>>'


def test_norm_colour_is_one_colour_per_decade_on_a_fixed_scale():
    # Hand-placed: a gradient of norm 1 is in the middle decade [1, 10); below 1e-3 is the palest
    # (vanishing); from 1e4 on the deepest red (exploding).
    assert norm_colour(1.0) == norm_colour(9.99) == NORM_PALETTE[4]
    assert norm_colour(0.5) == NORM_PALETTE[3] and norm_colour(10.0) == NORM_PALETTE[5]
    assert norm_colour(1e-3) == NORM_PALETTE[1] and norm_colour(9e-4) == norm_colour(1e-30) == NORM_PALETTE[0]
    assert norm_colour(1e3) == NORM_PALETTE[7] and norm_colour(1e4) == norm_colour(1e300) == NORM_PALETTE[8]
    assert norm_colour(0.0) is None and norm_colour(None) is None and norm_colour(math.inf) is None
    legend = legend_label("backward", True)
    assert all(c in legend for c in NORM_PALETTE) and "one colour per decade" in legend
    assert [t in legend for t in ("&lt;1e-3", ">1<", "≥1e4")] == [True, True, True]
    assert "3-D: folded modules" not in legend and "3-D: folded modules" in legend_label(
        "backward", True, folded=True)
    assert "upstream × local = contribution" in legend_label("backward", False)
    assert "local Jacobian" in legend_label("backward", True, tensors=True)


def test_replay_frames_fill_gradients_in_execution_order():
    t = trace_of(TEXTBOOK)  # steps: f (sends to q and z), then q (sends to x and y)
    f0, f1, f2 = frame(t, 0), frame(t, 1), frame(t, 2)
    assert f0.active is None and f1.active == "f" and f2.active == "%0"
    x = t.node("x")
    assert grad_cell(x, f1.received["x"], complete=False).text == "pending"
    assert f2.received["x"] == [-4.0]
    source = to_graphviz(t, step=1).source
    q_line = next(line for line in source.splitlines() if "<B>%0</B>" in line)
    x_line = next(line for line in source.splitlines() if "<B>x</B>" in line)
    f_line = next(line for line in source.splitlines() if "<B>f</B>" in line)
    assert f'"{ACTIVE_FILL}"' in f_line and "-4</FONT>" in q_line  # q's gradient has arrived
    assert f'<FONT COLOR="{PENDING_COLOUR}">pending</FONT>' in x_line
    assert "step 1 of 2: f sends its gradient to %0, z" in source


def test_bad_mode_is_refused():
    with pytest.raises(ValueError):
        to_graphviz(trace_of(TEXTBOOK), "sideways")
