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


def _random_graph(seed: int):
    """A random graph of every kind of op over three inputs, with fan-out, reuse and constants."""
    import random

    rng = random.Random(seed)
    xs = [Value(rng.uniform(0.5, 1.5), n) for n in "abc"]
    nodes = list(xs)
    for _ in range(60):
        kind = rng.choice(["add", "sub", "mul", "div", "tanh", "sigmoid", "sin", "max", "clamp",
                           "pow", "const"])
        p, q = rng.choice(nodes), rng.choice(nodes)
        if kind == "add":
            out = p + q
        elif kind == "sub":
            out = p - q
        elif kind == "mul":
            out = p * q
        elif kind == "div":
            out = p / (q.abs() + 1)
        elif kind == "max":
            out = p.max(q)
        elif kind == "clamp":
            out = p.clamp(-0.5, q)
        elif kind == "pow":
            out = p.abs() ** 1.5
        elif kind == "const":
            out = p * 0.5 + 2
        else:
            out = getattr(p, kind)()
        nodes.append(out.tanh() if abs(out.data) > 50 else out)
    return xs, sum(nodes[-19:], nodes[-20])


@pytest.mark.parametrize("seed", range(5))
def test_backward_agrees_with_trace_bit_for_bit_and_with_torch(seed):
    """backward runs over the Value objects and trace() over the engine's flat IR: same order, so
    the same sums, bit for bit; and both match torch's autograd (the oracle)."""
    torch = pytest.importorskip("torch")
    xs, f = _random_graph(seed)
    t = f.trace()
    f.backward()
    assert {x.label: x.grad for x in xs} == t.grads  # exact: the engine's sums in the engine's order
    ts = {x.label: torch.tensor(x.data, dtype=torch.float64, requires_grad=True) for x in xs}
    ops = {"a": ts["a"], "b": ts["b"], "c": ts["c"]}
    tf = _replay(f, ops, torch)
    tf.backward()
    assert f.data == pytest.approx(tf.item(), rel=1e-12)
    for x in xs:
        assert x.grad == pytest.approx(ts[x.label].grad.item(), rel=1e-10, abs=1e-12)


def _replay(root, leaves, torch):
    """The same graph on torch, from the Value objects' inputs and op names (no shared code)."""
    from backtrace.value_graph import topological

    out = {}
    for v in topological(root):
        if v._row is None:
            out[v] = leaves[v.label]
        elif v._row == "const":
            out[v] = torch.tensor(v.data, dtype=torch.float64)
        else:
            out[v] = v._row.torch_function()(*(out[c] for c in v._prev))
    return out[root]


def test_intermediate_grads_and_sharing_between_graphs():
    """Every node gets its gradient (as micrograd does); a backward through part of a graph and
    then through the whole leaves no trace of the first walk behind."""
    x, y = Value(3.0, "x"), Value(-2.0, "y")
    a = x * y
    b = a + x
    a.backward()
    assert (x.grad, y.grad, a.grad, b.grad) == (-2.0, 3.0, 1.0, 0.0)
    b.backward()
    assert (x.grad, y.grad, a.grad, b.grad) == (-2.0 + -2.0 + 1.0, 6.0, 2.0, 1.0)
    x.backward()  # a leaf's own backward: d x / d x
    assert x.grad == -2.0


def test_constants_get_no_local_derivative_and_no_gradient():
    """As in PyTorch: numbers, and what is computed from numbers only, need no gradient, so their
    local derivatives are never evaluated (they would fail here)."""
    torch = pytest.importorskip("torch")
    x = Value(-2.0, "x")
    y = x ** 2  # d/d(exponent) = out*log(-2) is outside log's domain: must not be evaluated
    y.backward()
    assert x.grad == -4.0
    k = Value(0.0, _op="const").sqrt()  # sqrt'(0) = 1/0, but k depends on no input
    x.grad = 0.0
    f = x * k + x
    f.backward()
    assert (x.grad, k.grad) == (1.0, 0.0)
    tx = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    (tx * torch.tensor(0.0, dtype=torch.float64).sqrt() + tx).backward()
    assert x.grad == tx.grad.item()
    assert f.trace().grads == {"x": 1.0}


def test_a_failed_backward_changes_no_grad_and_leaves_the_graph_usable():
    x, w = Value(0.0, "x"), Value(2.0, "w")
    y = w * x.sqrt()  # sqrt'(0) = 1/0
    with pytest.raises(DomainError, match=r"local derivative of %2 = sqrt\(x\) with x = 0: division by zero"):
        y.backward()
    assert (x.grad, w.grad, y.grad) == (0.0, 0.0, 0.0)
    big = Value(5e-324, "t").log()  # log'(t) = 1/t overflows: a gradient that is not finite
    with pytest.raises(DomainError, match="gradient of t is inf"):
        big.backward()
    z = w * 3 + x  # the same nodes again: the failed walks left nothing marked
    z.backward()
    assert (x.grad, w.grad) == (1.0, 3.0)


def test_three_input_ops_and_micrograds_prev():
    torch = pytest.importorskip("torch")
    x, lo, hi = Value(0.7, "x"), Value(-1.0, "lo"), Value(0.5, "hi")
    c = x.clamp(lo, hi) * x.clamp(0.0, 1.0)
    c.backward()
    tx, tlo, thi = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.7, -1.0, 0.5))
    (torch.clamp(tx, tlo, thi) * torch.clamp(tx, 0.0, 1.0)).backward()
    assert (x.grad, lo.grad, hi.grad) == (tx.grad.item(), tlo.grad.item(), thi.grad.item())
    ternary = c._prev[0]
    assert ternary._prev == (x, lo, hi) and ternary._op == "clamp"
    assert x._prev == () and (x * lo)._prev == (x, lo) and x.tanh()._prev == (x,)
    built = Value(0.5, (x, lo, hi), "clamp")  # micrograd's constructor form, three inputs
    built.backward()
    assert built._prev == (x, lo, hi) and hi.grad == thi.grad.item() + 1.0


def test_threads_running_backward_through_a_shared_parameter():
    """The walk marks nodes on themselves, so walks are kept apart: two threads whose graphs share
    w each add their whole gradient, every time."""
    import threading

    w = Value(0.5, "w")

    def graph(seed: int) -> Value:
        xs = [Value(math.sin(seed + k)) for k in range(6_000)]
        return sum(((w * x).tanh() for x in xs), Value(0.0))

    graphs = [graph(1), graph(2)]
    expected = []
    for g in graphs:
        w.grad = 0.0
        g.backward()
        expected.append(w.grad)
    w.grad = 0.0
    threads = [threading.Thread(target=lambda g=g: [g.backward() for _ in range(3)]) for g in graphs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.grad == pytest.approx(3 * sum(expected), rel=1e-12)
