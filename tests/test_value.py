"""The micrograd-style Value: same engine, PyTorch semantics for repeated backward calls."""
from __future__ import annotations

import math

import pytest

from backtrace import Value
from backtrace.errors import DomainError


def test_lecture_example():
    x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    f = (x + y) * z
    f.backward()
    assert (f.data, x.grad, y.grad, z.grad) == (-12.0, -4.0, -4.0, 3.0)


def test_all_methods_match_torch():
    torch = pytest.importorskip("torch")
    a, b = Value(0.7, "a"), Value(-1.3, "b")
    f = (a.exp() + b.tanh() * a.sigmoid() - a.relu() / (b.abs() + 1) + a.sin() * b.cos()
         + (a ** 2).sqrt() + a.log() + a.max(b) - b.min(a) + 2 ** a - 3 / b + a.pow(3))
    f.backward()
    ta, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.7, -1.3))
    tf = (ta.exp() + tb.tanh() * ta.sigmoid() - ta.relu() / (tb.abs() + 1) + ta.sin() * tb.cos()
          + (ta ** 2).sqrt() + ta.log() + torch.maximum(ta, tb) - torch.minimum(tb, ta)
          + 2 ** ta - 3 / tb + ta.pow(3))
    tf.backward()
    assert f.data == pytest.approx(tf.item(), rel=1e-14)
    assert a.grad == pytest.approx(ta.grad.item(), rel=1e-12)
    assert b.grad == pytest.approx(tb.grad.item(), rel=1e-12)


def test_reused_values_and_second_backward_accumulate_like_torch():
    """micrograd PR #102: a second backward compounded stale intermediate grads. Not here."""
    torch = pytest.importorskip("torch")
    a = Value(2.0, "a")
    b = a * a
    c = b * b + b
    c.backward()
    first = a.grad
    c.backward()
    ta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    tb = ta * ta
    tc = tb * tb + tb
    tc.backward(retain_graph=True)
    assert first == ta.grad.item() == 4 * 2.0 ** 3 + 2 * 2.0
    tc.backward()
    assert a.grad == ta.grad.item() == 2 * first


def test_zero_grad_resets_the_graph():
    x = Value(3.0)
    y = x * x
    y.backward()
    y.zero_grad()
    assert x.grad == 0.0 and y.grad == 0.0
    y.backward()
    assert x.grad == 6.0


def test_million_deep_chain():
    x = Value(0.5, "x")
    y = x
    for _ in range(1_000_000):  # a million deep, and x fans out a million times
        y = y + x
    y.backward()
    assert y.data == 500_000.5
    assert x.grad == 1_000_001.0  # a sum of ones: exact


def test_trace_is_the_same_type_as_explain():
    x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    t = ((x + y) * z).trace()
    assert t.grads == {"x": -4.0, "y": -4.0, "z": 3.0}
    assert t.value == -12.0
    assert x.grad == 0.0  # trace() leaves .grad alone
    assert [s.upstream for s in t.steps] == [1.0, -4.0]


def test_numbers_mix_in_and_errors_are_domain_errors():
    x = Value(2.0)
    assert (1 + x * 3 - 1).data == 6.0
    with pytest.raises(DomainError, match="log"):
        Value(-1.0).log()
    with pytest.raises(TypeError):
        x + "a"
    assert math.isclose(Value(0.5).tanh().data, math.tanh(0.5))
