"""Every op's forward and local derivatives, against central finite differences and PyTorch."""
from __future__ import annotations

import math

import pytest

from backtrace.ops import FUNCTIONS, INFIX_OPS, OPS

# Rows with a scalar form; the tensor-only rows (@, sum, softmax, ...) have their test rows in
# tests/test_tensor_ops.py.
SCALAR = sorted(n for n, op in OPS.items() if not op.tensor_only)

# One row per op: a point where the op is smooth. Adding an op means adding its row here.
POINTS = {
    "add": (1.3, -0.7), "sub": (1.3, -0.7), "mul": (1.3, -0.7), "div": (1.3, -0.7),
    "neg": (0.8,), "pow": (1.7, 2.3), "exp": (0.6,), "log": (2.5,), "sqrt": (2.0,),
    "sin": (0.9,), "cos": (0.9,), "tanh": (0.4,), "sigmoid": (-0.8,), "relu": (0.7,),
    "abs": (-1.2,), "max": (0.3, 1.1), "min": (0.3, 1.1), "clamp": (0.7, 0.2, 1.3),
}


def test_every_op_has_a_test_row():
    from tests.test_tensor_ops import CASES

    assert set(POINTS) == set(SCALAR)
    assert set(POINTS) | {name for name, *_ in CASES} == set(OPS)


@pytest.mark.parametrize("name", SCALAR)
def test_local_derivatives_match_central_differences(name):
    op, point = OPS[name], POINTS[name]
    out = op.forward(*point)
    h = 1e-6
    for slot, deriv in enumerate(op.derivs):
        up = list(point)
        down = list(point)
        up[slot] += h
        down[slot] -= h
        numeric = (op.forward(*up) - op.forward(*down)) / (2 * h)
        assert deriv(*point, out) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


# Points on kinks, where a convention is needed: backtrace follows PyTorch.
KINKS = [("relu", (0.0,)), ("abs", (0.0,)), ("max", (1.5, 1.5)), ("min", (1.5, 1.5)),
         ("pow", (0.0, 2.0)), ("relu", (-0.7,)), ("max", (2.0, -1.0)), ("min", (2.0, -1.0)),
         ("sigmoid", (-800.0,)), ("pow", (-2.0, 3.0)),
         # clamp above, below, on each bound, and with crossed bounds (torch: the upper one wins)
         ("clamp", (1.9, 0.4, 1.5)), ("clamp", (0.3, 0.5, 2.0)), ("clamp", (0.5, 0.5, 2.0)),
         ("clamp", (2.0, 0.5, 2.0)), ("clamp", (1.0, 2.0, 0.5)), ("clamp", (0.1, 2.0, 0.5))]


@pytest.mark.parametrize("name,point", [(n, POINTS[n]) for n in SCALAR] + KINKS)
def test_forward_and_derivatives_equal_torch(name, point):
    torch = pytest.importorskip("torch")
    op = OPS[name]
    xs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in point]
    out = op.torch_function()(*xs)
    out.backward()
    ours = op.forward(*point)
    assert ours == pytest.approx(out.item(), rel=1e-15, abs=1e-300)
    for slot, deriv in enumerate(op.derivs):
        if name == "pow" and slot == 1 and point[0] < 0:
            continue  # log of a negative base: torch gives nan, the reference engine refuses
        assert deriv(*point, ours) == pytest.approx(xs[slot].grad.item(), rel=1e-12, abs=1e-300)


def test_sigmoid_does_not_overflow():
    assert OPS["sigmoid"].forward(-1000.0) == 0.0
    assert OPS["sigmoid"].forward(1000.0) == 1.0


def test_rule_text_is_the_textbook_form():
    assert OPS["mul"].rule_text(0) == "d(a*b)/da = b"
    assert OPS["div"].rule_text(1) == "d(a/b)/db = -a/b**2"
    assert OPS["tanh"].rule(0, "q", out="f") == "1 - tanh(q)**2"


def test_parser_tables_come_from_the_op_table():
    assert set(INFIX_OPS) == {"+", "-", "*", "/", "**", "@"}
    assert {"exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu", "abs", "max", "min",
            "pow", "clamp", "sum", "mean", "transpose", "softmax", "log_softmax", "cross_entropy",
            "mse"} == set(FUNCTIONS)
    assert math.isclose(OPS["pow"].forward(2.0, 10.0), 1024.0)


def test_a_three_input_op_runs_on_every_engine():
    """clamp(x, lo, hi) is one row of the op table: the parser, both engines and Value take it."""
    torch = pytest.importorskip("torch")
    from backtrace import Value, explain
    from backtrace.compare import compare
    from backtrace.parser import parse
    from backtrace.torch_engine import run as run_torch

    formula, values = "f = clamp(x * y, lo, hi) * x", {"x": 1.5, "y": 2.0, "lo": -1.0, "hi": 2.5}
    ref = explain(formula, **values)
    assert ref.value == 2.5 * 1.5  # x*y = 3 is clamped to hi = 2.5
    assert ref.grads == {"x": 2.5, "y": 0.0, "lo": 0.0, "hi": 1.5}
    assert compare(ref, run_torch(parse(formula), values)).agree
    step = next(s for s in ref.steps if len(s.edges) == 3)
    assert [e.rule for e in step.edges] == ["1 if lo <= %0 <= hi else 0", "1 if %0 < lo < hi else 0",
                                           "1 if %0 > hi or hi < lo else 0"]
    x, y, lo, hi = (Value(v, k) for k, v in values.items())
    out = (x * y).clamp(lo, hi) * x
    out.backward()
    assert (x.grad, y.grad, lo.grad, hi.grad) == (2.5, 0.0, 0.0, 1.5)
    tx = torch.tensor(1.5, requires_grad=True)
    assert float(torch.clamp(tx * 2, -1.0, 2.5)) == 2.5
