"""backtrace.math: one function runs on floats, Values and torch tensors, with the same numbers."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import backtrace.math as bm
from backtrace import Value
from backtrace.ops import FUNCTIONS

SCALAR = sorted(name for name, op in FUNCTIONS.items() if not op.tensor_only)

# Points away from kinks and ties, inside every function's domain.
POINTS = {1: [(0.7,), (1.9,), (0.3,)], 2: [(0.7, 1.3), (1.9, 0.4), (2.5, 1.1)],
          3: [(0.7, 0.2, 1.3), (1.9, 0.4, 1.5), (0.3, 0.5, 2.0)]}
MATH = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "sin": math.sin, "cos": math.cos,
        "tanh": math.tanh, "sigmoid": lambda a: 1 / (1 + math.exp(-a)),
        "relu": lambda a: a if a > 0 else 0.0, "abs": abs, "max": max, "min": min, "pow": math.pow,
        "clamp": lambda a, lo, hi: min(max(a, lo), hi)}


def test_one_function_per_op_table_function():
    assert sorted(bm.__all__) == sorted(FUNCTIONS)
    assert sorted(MATH) == SCALAR  # the tensor-only ones are checked in tests/test_tensor_ops.py


@pytest.mark.parametrize("name", SCALAR)
def test_floats_match_python_math(name):
    fn = getattr(bm, name)
    for args in POINTS[FUNCTIONS[name].arity]:
        assert fn(*args) == pytest.approx(MATH[name](*args), rel=1e-15)


@pytest.mark.parametrize("name", SCALAR)
def test_values_and_tensors_agree_with_torch_autograd(name):
    fn = getattr(bm, name)
    for args in POINTS[FUNCTIONS[name].arity]:
        values = [Value(a, f"a{i}") for i, a in enumerate(args)]
        out = fn(*values)
        assert isinstance(out, Value)
        out.backward()
        tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
        t_out = fn(*tensors)
        assert isinstance(t_out, torch.Tensor)
        t_out.backward()
        assert out.data == pytest.approx(t_out.item(), rel=1e-14)
        for v, t in zip(values, tensors):
            assert v.grad == pytest.approx(t.grad.item(), rel=1e-12)


def test_a_composite_function_gives_the_same_gradients_on_value_and_torch():
    def f(x, y):
        h = bm.tanh(x * y) + bm.exp(-x) * bm.sigmoid(y)
        return bm.max(h, 0.1) + bm.pow(bm.abs(y), 1.5) - bm.log(bm.sqrt(x * x + 1))

    xv, yv = Value(0.8, "x"), Value(-1.3, "y")
    out = f(xv, yv)
    out.backward()
    xt = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(-1.3, dtype=torch.float64, requires_grad=True)
    f(xt, yt).backward()
    assert out.data == pytest.approx(f(0.8, -1.3), rel=1e-14)
    assert (xv.grad, yv.grad) == pytest.approx((xt.grad.item(), yt.grad.item()), rel=1e-12)


def test_numbers_mix_with_tensors_keeping_dtype_and_shape():
    t = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert bm.max(t, 0.5).tolist() == [1.0, 0.5, 3.0]
    assert bm.min(0.5, t).tolist() == [0.5, -2.0, 0.5]
    assert bm.max(t, 0.5).dtype == torch.float64
    assert bm.pow(2.0, t).tolist() == [2.0, 0.25, 8.0]
    assert bm.relu(t).tolist() == [1.0, 0.0, 3.0]


def test_numbers_mix_with_values_as_constants():
    x = Value(2.0, "x")
    y = bm.max(1.0, x) * bm.pow(3.0, x)
    y.backward()
    # d/dx [x * 3**x] = 3**x + x * 3**x * ln 3
    assert x.grad == pytest.approx(9 + 2 * 9 * math.log(3), rel=1e-14)


def test_ties_and_kinks_follow_torch():
    a, b = Value(1.0, "a"), Value(1.0, "b")
    bm.max(a, b).backward()
    ta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    bm.max(ta, tb).backward()
    assert (a.grad, b.grad) == (ta.grad.item(), tb.grad.item()) == (0.5, 0.5)
    z = Value(0.0, "z")
    bm.relu(z).backward()
    assert z.grad == 0.0


def test_wrong_arity_and_mixed_kinds_are_type_errors():
    with pytest.raises(TypeError, match="takes 1 argument"):
        bm.exp(1.0, 2.0)
    with pytest.raises(TypeError, match="cannot mix"):
        bm.max(Value(1.0), torch.tensor(2.0))
    with pytest.raises(TypeError, match="unsupported argument"):
        bm.max(Value(1.0), "2")


def test_functions_are_documented_with_their_rule():
    assert "1 - tanh(a)**2" in bm.tanh.__doc__
    assert bm.exp.__name__ == "exp" and bm.exp.__module__ == "backtrace.math"


def test_import_does_not_import_torch():
    code = ("import sys, backtrace.math as m; m.tanh(0.5); from backtrace import Value;"
            " m.exp(Value(1.0)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
