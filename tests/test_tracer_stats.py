"""Level "stats" computed in batches: every statistic equals a direct computation (torch, float64)
for every kind of tensor; values changed in place after they were recorded keep their recorded
statistics; and the statistics reach the host once per backward call, not once per node."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import backtrace
from backtrace.tracer import stats
from backtrace.tracer.batch import BLOCK, Batch, resolve
from backtrace.values import TensorStats


def oracle(t: torch.Tensor) -> tuple[float, ...]:
    """norm, mean, max |x| and the non-finite count, in float64, the plain way."""
    x = t.detach()
    if x.is_sparse:
        x = x.to_dense()
    x = (x.abs() if x.is_complex() else x).double().flatten()
    if x.numel() == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(x.norm()), float(x.mean()), float(x.abs().max()),
            float((~torch.isfinite(x)).sum()))


def close(got: TensorStats, t: torch.Tensor) -> None:
    want = oracle(t)
    rel = 2e-3 if t.dtype in (torch.float16, torch.bfloat16) else 1e-5
    for name, g, w in zip(TensorStats.NUMBERS, got.numbers(), want):
        if math.isnan(w):
            assert math.isnan(g), name
        else:
            assert g == pytest.approx(w, rel=rel, abs=1e-6), (name, g, w)
    assert got.shape == tuple(t.shape)


def tensors() -> list[torch.Tensor]:
    torch.manual_seed(0)
    a = torch.randn(8, 16, 32)
    return [a, a * 2, torch.randn(8, 16, 32), a.transpose(0, 2), a[:, ::2],  # strided, gappy
            torch.randn(3), torch.tensor(2.5), torch.randn(0, 4),
            torch.randn(BLOCK // 4, 8),  # more than one block of one shape
            torch.randn(Batch(0).small + 3),  # reduced at once
            torch.randn(5, 5).half(), torch.randn(5, 5).bfloat16(), torch.randn(7).double(),
            torch.arange(6), torch.tensor([True, False]), torch.randn(4, dtype=torch.complex64),
            torch.sparse_coo_tensor([[0, 2]], [3.0, -4.0], (5,), check_invariants=True),
            torch.tensor([1.0, float("nan"), float("inf"), -2.0]),
            torch.tensor([[-float("inf"), 1.0], [3.0, 4.0]]).t()]


def test_every_statistic_of_every_kind_of_tensor_equals_the_direct_computation():
    batch = Batch(0)
    items = [(t, batch.add(t)) for t in tensors()]
    resolve([p for _, p in items])
    for t, p in items:
        close(p.stats(), t)
    assert batch.groups == {}  # resolved: nothing held any more


@pytest.mark.parametrize("t", tensors()[:3] + tensors()[-2:])
def test_tensor_stats_alone_agrees(t):
    close(stats.tensor_stats(t), t)


def test_each_reduction_keeps_the_rows_of_a_block_apart():
    """The contract of a REDUCTIONS row: one result per row, from that row only."""
    x = torch.randn(5, 7)
    x[2, 3] = float("nan")
    x[4, 0] = float("inf")
    for name, r in stats.REDUCTIONS.items():
        block = r.device(x, torch.float32)
        alone = [r.device(x[k:k + 1], torch.float32) for k in range(5)]
        for j, part in enumerate(block):
            assert part.shape == (5,), name
            for k in range(5):
                torch.testing.assert_close(part[k:k + 1].double(), alone[k][j].double(),
                                           equal_nan=True)


def test_views_share_their_sources_numbers():
    x = torch.randn(6, 4, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        x.t().reshape(2, 12).sum().backward()
    values = [n.value for n in t.trace.nodes if n.op in ("t", "reshape")]
    assert values[0].norm == values[1].norm == pytest.approx(float(x.detach().norm()))
    assert [v.shape for v in values] == [(4, 6), (2, 12)]


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        self.h_before = h.detach().clone()
        h += 1.0  # changes a recorded value in place
        g = F.relu(h, inplace=True)
        self.g_before = g.detach().clone()
        y = g * 2
        y[0] = 5.0
        d = F.dropout(y, 0.5, True, inplace=True)
        return self.b(d)


@pytest.mark.parametrize("level", ["stats", "full"])
def test_values_changed_in_place_keep_what_was_recorded(level):
    torch.manual_seed(0)
    model = InPlace()
    x = torch.randn(5, 4)
    with backtrace.trace(model=model, level=level) as t:
        model(x).sum().backward()
    ops = {n.op: n for n in t.trace.nodes if n.kind == "op" and n.module == "a"}
    ops.update((n.op, n) for n in t.trace.nodes if n.kind == "op" and n.module == "")
    assert {"linear", "add_", "relu", "mul", "setitem", "dropout"} <= set(ops), ops.keys()
    for op, before in (("linear", model.h_before), ("add_", model.h_before + 1),
                       ("relu", model.g_before)):
        if level == "full":
            assert torch.equal(ops[op].value, before), op
        else:
            close(ops[op].value, before)
    assert "tracer_errors" not in t.trace.meta


class Zero(nn.Module):
    def forward(self, h):
        return h.mul_(0.0)


def test_a_change_no_torch_call_shows_is_noted_never_misreported():
    """A module called under no_grad runs without the tracer's torch-function mode (so fused
    inference paths stay bit-identical): an in-place change there is seen only afterwards."""
    torch.manual_seed(0)
    lin, zero = nn.Linear(3, 4), Zero()
    x = torch.randn(2, 3)
    with backtrace.trace(model=nn.ModuleList([lin, zero])) as t:
        h = lin(x)
        with torch.no_grad():
            zero(h)
        h.sum().backward()
    linear = next(n for n in t.trace.nodes if n.op == "linear")
    assert linear.value is None  # unknown, not the zeros it became
    assert any("changed in place" in e for e in t.trace.meta["tracer_errors"])
    with backtrace.trace(model=nn.ModuleList([lin, zero])) as t:  # seen by the mode: copied
        h = lin(x)
        with torch.no_grad():
            h.mul_(0.0)
        h.sum().backward()
    close(next(n for n in t.trace.nodes if n.op == "linear").value, lin(x))


def test_fan_in_gradients_are_the_sums_autograd_made():
    x = torch.randn(4, 3, requires_grad=True)
    with backtrace.trace(names={"x": x}, level="stats") as t:
        h = x.exp()
        (h * 2 + h.sin() + h.pow(2)).sum().backward()
    node = next(n for n in t.trace.nodes if n.op == "exp")
    h = x.detach().exp()
    close(node.grad, 2 + h.cos() + 2 * h)  # three edges summed by autograd's input buffer
    close(t.trace.grads["x"], x.grad)


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("depth", [3, 30])
def test_no_host_read_per_node(depth):
    """A deeper model has more nodes, not more reads of numbers: the flush looks once per
    backward call (on the CPU, whether any value is non-finite); the rest waits for the read."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(depth)])
    x = torch.randn(4, 8)
    with backtrace.trace(model=model) as t:
        loss = model(x).sum()
        with Count() as count:
            loss.backward()
    assert len(t.trace.steps) > 2 * depth and count.reads <= 2


def test_files_written_before_the_count_read_back_as_finite():
    from backtrace.traces import decode, encode

    old = {"stats": {"shape": [2], "dtype": "float32", "norm": 1.0, "mean": 0.5, "absmax": 1.0}}
    assert decode(old) == TensorStats((2,), "float32", 1.0, 0.5, 1.0, 0.0)
    new = TensorStats((2,), "float32", float("inf"), float("nan"), float("inf"), 2.0)
    again = decode(encode(new))
    assert again.nonfinite == 2.0 and str(again) == "[2] ‖·‖=inf (2 non-finite)"
    assert str(TensorStats((2,), "float32", 1.0, 0.5, 1.0)) == "[2] ‖·‖=1"  # unchanged
