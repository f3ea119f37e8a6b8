"""Every op on tensors: its vector-Jacobian products against torch autograd and against central
finite differences, one row per case (broadcasting cases included), and the rules as the course
writes them."""
from __future__ import annotations

import math
import random

import pytest

from backtrace.ops import OPS
from backtrace.tensor import Tensor, from_value

V3 = [1.4, -2.7, 1.9]
P3 = [0.6, 2.1, 1.3]  # positive: log, sqrt, pow, div
M23 = [[0.5, -1.2, 0.3], [2.0, 0.7, -0.4]]
M34 = [[0.1, -0.2, 0.3, 0.4], [0.5, 0.1, -0.3, 0.2], [-0.1, 0.2, 0.1, -0.4]]
PM23 = [[0.5, 1.2, 0.3], [2.0, 0.7, 1.4]]

# (op, inputs, params): one row per case. Adding a tensor op means adding its rows here.
CASES = [
    ("matmul", (V3, M34), {}), ("matmul", (M23, M34), {}), ("matmul", (M23, V3), {}),
    ("matmul", (V3, P3), {}),
    ("sum", (M23,), {}), ("sum", (M23,), {"dim": 0}), ("sum", (M23,), {"dim": -1}),
    ("mean", (M23,), {}), ("mean", (M23,), {"dim": 1}), ("mean", (V3,), {"dim": 0}),
    ("transpose", (M23,), {}), ("transpose", (V3,), {}),
    ("softmax", (V3,), {}), ("softmax", (M23,), {}),
    ("log_softmax", (V3,), {}), ("log_softmax", (M23,), {}),
    ("cross_entropy", (V3, 0.0), {}), ("cross_entropy", (M23, [2.0, 0.0]), {}),
    ("cross_entropy", (V3, [0.2, 0.5, 0.3]), {}), ("cross_entropy", (M23, [[0, 1, 0], [1, 0, 0]]), {}),
    ("mse", (M23, PM23), {}), ("mse", (V3, P3), {}),
    ("broadcast", (V3,), {"size": (2, 3)}), ("broadcast", ([[1.5], [-0.5]],), {"size": (2, 3)}),
    # elementwise, with numpy broadcasting: rows, columns, scalars
    ("add", (M23, V3), {}), ("sub", (V3, M23), {}), ("mul", (M23, [[2.0], [-1.0]]), {}),
    ("div", (M23, P3), {}), ("pow", (PM23, [2.0, 0.5, 3.0]), {}), ("mul", (V3, -1.5), {}),
    ("max", (M23, V3), {}), ("min", (V3, 0.4), {}), ("clamp", (M23, -0.5, 1.0), {}),
    ("relu", (M23,), {}), ("sigmoid", (M23,), {}), ("tanh", (V3,), {}), ("exp", (V3,), {}),
    ("log", (P3,), {}), ("sqrt", (PM23,), {}), ("abs", (M23,), {}), ("neg", (V3,), {}),
    ("sin", (V3,), {}), ("cos", (M23,), {}),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def _ours(name, inputs, params):
    rule = OPS[name].tensor_rule
    ins = [from_value(v, f"in{k}") for k, v in enumerate(inputs)]
    out = rule.forward(ins, params)
    rng = random.Random(7)
    g = Tensor(out.shape, [rng.uniform(-1, 1) for _ in out.data])  # a random upstream gradient
    return rule, ins, out, g


@pytest.mark.parametrize("name,inputs,params", CASES, ids=IDS)
def test_forward_and_vjps_equal_torch_autograd(name, inputs, params):
    torch = pytest.importorskip("torch")
    from backtrace.ir import Node
    from backtrace.torch_engine import call

    rule, ins, out, g = _ours(name, inputs, params)
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in inputs]
    node = Node("f", name, tuple(range(len(ts))), params=tuple(params.items()))
    t_out = call(node, ts)
    assert list(t_out.shape) == list(out.shape)
    assert torch.allclose(t_out.detach().flatten(), torch.tensor(out.data, dtype=torch.float64),
                          rtol=1e-12, atol=1e-14)
    found = torch.autograd.grad(t_out, ts, torch.tensor(g.tolist(), dtype=torch.float64),
                                allow_unused=True)
    for slot, (t, expected) in enumerate(zip(ins, found)):
        local, contribution = rule.vjps[slot](g, ins, out, params)
        if expected is None:  # a class index: no gradient in torch, none here
            assert contribution is None, slot
            continue
        assert contribution.shape == t.shape
        assert torch.allclose(torch.tensor(contribution.data, dtype=torch.float64),
                              expected.flatten(), rtol=1e-12, atol=1e-14), slot


@pytest.mark.parametrize("name,inputs,params", CASES, ids=IDS)
def test_vjps_equal_central_differences(name, inputs, params):
    """<g, f(x + h·e_k)> - <g, f(x - h·e_k)> over 2h is component k of the vector-Jacobian product."""
    rule, ins, out, g = _ours(name, inputs, params)
    h = 1e-6
    for slot, t in enumerate(ins):
        _, contribution = rule.vjps[slot](g, ins, out, params)
        if contribution is None:
            continue
        for k in range(t.numel):
            def f(step, k=k):
                moved = list(ins)
                moved[slot] = Tensor(t.shape, [x + step * (j == k) for j, x in enumerate(t.data)])
                return math.fsum(a * b for a, b in zip(rule.forward(moved, params).data, g.data))
            numeric = (f(h) - f(-h)) / (2 * h)
            assert contribution.data[k] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (slot, k)


def test_rules_read_as_the_course_writes_them():
    assert OPS["matmul"].rule_text(0) == "∂L/∂a = g · bᵀ"  # ∂L/∂x = g · Wᵀ
    assert OPS["matmul"].rule_text(1) == "∂L/∂b = aᵀ · g"  # ∂L/∂W = xᵀ · g
    assert OPS["cross_entropy"].rule_text(0) == "∂L/∂a = g · (softmax(a) − onehot(b))"
    from backtrace import explain

    t = explain("L = cross_entropy(z, y)", z=V3, y=2)
    (step,) = t.steps
    assert step.edges[0].rule == "softmax(z) − onehot(y)"  # ∂L/∂z at the loss: the seed is 1
    assert step.edges[1].contribution is None and "class indices" in step.edges[1].note
    t = explain("h = x @ W; f = sum(h)", x=V3, W=M34)
    assert [e.rule for e in t.steps[1].edges] == ["∂f/∂h [1×4] · Wᵀ [4×3]", "xᵀ [3×1] · ∂f/∂h [1×4]"]
    assert t.steps[1].edges[1].local == [[1.4], [-2.7], [1.9]]  # xᵀ, as a column


def test_a_broadcast_is_a_step_of_its_own():
    from backtrace import explain

    t = explain("f = sum(X + b)", X=M23, b=V3)
    broadcast = t.node("%0")
    assert broadcast.op == "broadcast" and broadcast.expr == "broadcast(b, [2×3])"
    step = next(s for s in t.steps if s.node == "%0")
    (edge,) = step.edges
    assert edge.rule == "∂f/∂%0 summed over axis 0 ([2×3] → [3])"
    assert step.upstream == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]] and edge.contribution == [2.0, 2.0, 2.0]
    assert t.grads == {"X": [[1.0] * 3] * 2, "b": [2.0, 2.0, 2.0]}
