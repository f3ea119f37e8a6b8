"""backtrace.Value as a drop-in for micrograd's Value: micrograd's own test suite (test/test_engine.py),
its nn.py, the draw_dot code of its trace_graph notebook and its constructor form
Value(data, (a, b), '*') run unchanged."""
from __future__ import annotations

import random

import pytest

from backtrace import Value

torch = pytest.importorskip("torch")


# micrograd's test/test_engine.py, with micrograd's Value replaced by backtrace's
def test_sanity_check():
    x = Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xmg, ymg = x, y

    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xpt, ypt = x, y

    assert ymg.data == ypt.data.item()
    assert xmg.grad == xpt.grad.item()


def test_more_ops():
    a = Value(-4.0)
    b = Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    amg, bmg, gmg = a, b, g

    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    apt, bpt, gpt = a, b, g

    tol = 1e-6
    assert abs(gmg.data - gpt.data.item()) < tol
    assert abs(amg.grad - apt.grad.item()) < tol
    assert abs(bmg.grad - bpt.grad.item()) < tol


def test_micrograd_nn_trains_on_backtrace_values(monkeypatch):
    """micrograd/nn.py unchanged, its Value swapped for backtrace's: an MLP whose loss falls."""
    nn = pytest.importorskip("micrograd.nn")
    monkeypatch.setattr(nn, "Value", Value)
    random.seed(1337)
    model = nn.MLP(2, [8, 1])
    xs = [[2.0, 3.0], [3.0, -1.0], [0.5, 1.0], [1.0, 1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]
    losses = []
    for _ in range(20):
        loss = sum(((model(x) - y) ** 2 for x, y in zip(xs, ys)), Value(0.0))
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.01 * p.grad
        losses.append(loss.data)
    assert all(isinstance(p, Value) for p in model.parameters())
    assert losses[-1] < losses[0] / 2


def _trace(root):  # micrograd's trace_graph.ipynb, as published
    nodes, edges = set(), set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)
    build(root)
    return nodes, edges


def draw_dot(root, format="svg", rankdir="LR"):
    from graphviz import Digraph

    assert rankdir in ["LR", "TB"]
    nodes, edges = _trace(root)
    dot = Digraph(format=format, graph_attr={"rankdir": rankdir})
    for n in nodes:
        dot.node(name=str(id(n)), label="{ data %.4f | grad %.4f }" % (n.data, n.grad), shape="record")
        if n._op:
            dot.node(name=str(id(n)) + n._op, label=n._op)
            dot.edge(str(id(n)) + n._op, str(id(n)))
    for n1, n2 in edges:
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)
    return dot


def test_draw_dot_from_micrograds_notebook():
    x = Value(1.0)
    y = (x * 2 + 1).relu()
    y.backward()
    source = draw_dot(y).source
    assert 'label="{ data 1.0000 | grad 2.0000 }"' in source  # x, with ∂y/∂x = 2
    assert {"*", "+", "relu"} <= {n._op for n in _trace(y)[0]} and x._op == ""
    assert all(isinstance(n._op, str) for n in _trace(y)[0])


def test_micrograds_constructor_makes_op_nodes():
    """Lecture code builds nodes as micrograd does: Value(data, children, op)."""
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    c = Value(a.data * b.data, (a, b), "*")
    d = Value(c.data ** 2, (c,), "**2")  # micrograd's spelling of a power
    e = Value(max(0.0, d.data), (d,), "ReLU")
    t = Value(0.5, (e,), "tanh")
    e.backward()
    assert (e.data, a.grad, b.grad) == (36.0, 36.0, -24.0)  # d(a²b²)/da = 2ab², /db = 2a²b
    assert (c._op, d._op, e._op, t._op, a._op) == ("*", "**", "relu", "tanh", "")
    assert Value(3.0, "x").label == "x"  # backtrace's own Value(data, label) still works
    with pytest.raises(ValueError, match="unknown op for 1 input"):
        Value(1.0, (a,), "foo")
    with pytest.raises(TypeError, match="children must be Values"):
        Value(1.0, (1.0, 2.0), "+")
