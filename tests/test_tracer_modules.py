"""A node's module is the module that was running when the node was made: also for nodes no torch
call of the tracer's returns (custom autograd.Functions however they are applied, torch.compile
regions, the insides of composite ops)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backtrace

from .test_tracer import Cube


class Scale(torch.autograd.Function):  # setup_context style
    @staticmethod
    def forward(x, k):
        return x * k

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.k = inputs[1]

    @staticmethod
    def backward(ctx, g):
        return g * ctx.k, None


cube = Cube.apply  # an alias taken before any tracer exists


class Act(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form

    def forward(self, x):
        if self.form == "apply":
            return Cube.apply(x)
        if self.form == "alias":
            return cube(x)
        return Scale.apply(x, 2.0)


class Block(nn.Module):
    def __init__(self, form: str, between: bool) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(3, 3), Act(form), nn.Linear(3, 3)
        self.between = between

    def forward(self, x):
        h = self.fc1(x)
        h = cube(h) if self.between else self.act(h)  # between: in the block's own code
        return self.fc2(h)


class Net(nn.Module):
    def __init__(self, form: str = "apply", between: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(form, between), Block(form, between)])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def custom_nodes(trace, kind: str):
    return [n for n in trace.nodes if n.meta.get("torch_type") == kind]


@pytest.mark.parametrize("form,kind", [("apply", "CubeBackward"), ("alias", "CubeBackward"),
                                       ("setup_context", "ScaleBackward")])
@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 3)])  # 3-d: fc2's linear views its input first
def test_a_custom_function_inside_a_module_is_filed_under_that_module(form, kind, shape):
    torch.manual_seed(0)
    net = Net(form)
    x = torch.randn(*shape)
    with backtrace.trace(model=net) as t:
        net(x).sum().backward()
    found = custom_nodes(t.trace, kind)
    assert [n.meta["module"] for n in found] == ["blocks.0.act", "blocks.1.act"]
    assert all(n.meta["module_output"] == n.meta["module"] for n in found)
    assert all("within" not in n.meta for n in found)  # made by no composite op of fc2's
    # its neighbours stay where they were
    linears = [n for n in t.trace.nodes if n.op == "linear"]
    assert [n.meta["module"] for n in linears] == ["blocks.0.fc1", "blocks.0.fc2",
                                                   "blocks.1.fc1", "blocks.1.fc2"]


@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 3)])
def test_a_custom_function_in_a_modules_own_code_is_filed_under_it(shape):
    torch.manual_seed(0)
    net = Net(between=True)
    with backtrace.trace(model=net) as t:
        net(torch.randn(*shape)).sum().backward()
    assert [n.meta["module"] for n in custom_nodes(t.trace, "CubeBackward")] == ["blocks.0",
                                                                                "blocks.1"]


def test_a_custom_function_made_long_before_its_consumer_keeps_its_module():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 3)

    class Late(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.net = nn.Linear(3, 3), net

        def forward(self, v):
            early = Cube.apply(self.first(v))  # made here, consumed after a whole Net ran
            return self.net(v) + early

    model = Late()
    with backtrace.trace(model=model) as t:
        model(x).sum().backward()
    modules = [n.meta["module"] for n in custom_nodes(t.trace, "CubeBackward")]
    assert sorted(modules) == ["", "net.blocks.0.act", "net.blocks.1.act"]


def test_a_custom_function_as_the_root_is_filed_where_it_ran():
    torch.manual_seed(0)
    net = Net()

    class Loss(nn.Module):
        def forward(self, v):
            return Cube.apply(v.sum())

    loss_fn = Loss()
    with backtrace.trace(model=net) as t:
        loss = loss_fn(net(torch.randn(2, 3)))
        loss.backward()
    root = t.trace.node(t.trace.output)
    assert root.meta["torch_type"] == "CubeBackward" and root.meta["module"] == "Loss"


def test_the_insides_of_a_composite_op_are_filed_where_it_ran():
    torch.manual_seed(0)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, v, y):
            return F.cross_entropy(self.fc(v), y)

    model = nn.Sequential()
    model.add_module("head", Head())
    with backtrace.trace(model=model) as t:
        model.head(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).backward()
    inner = next(n for n in t.trace.nodes if n.meta.get("torch_type") == "LogSoftmaxBackward0")
    assert inner.op == "log_softmax" and inner.meta["within"] == "cross_entropy"
    assert inner.meta["module"] == "head"


def _compiled(fn):
    try:
        f = torch.compile(fn, backend="aot_eager")
        f(torch.ones(3, requires_grad=True)).sum().backward()
        return f
    except Exception as exc:  # an unsupported platform
        pytest.skip(f"torch.compile cannot run here: {type(exc).__name__}: {exc}"[:200])


class Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Tanh(), nn.Linear(3, 2))

    def forward(self, v):
        return self.inner(v).sum()


@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(3, 2)), Deep],
                         ids=["consumer-is-linear", "consumer-is-tanh-in-a-submodule"])
def test_a_compiled_function_called_at_the_root_is_filed_under_the_root(make):
    f = _compiled(lambda v: v.sin() * 2)
    torch.manual_seed(0)
    model = make()
    x = torch.randn(3, requires_grad=True)
    with backtrace.trace(model=model, level="full") as t:
        model(f(x)).sum().backward()
    region = next(n for n in t.trace.nodes if "CompiledFunction" in n.meta.get("torch_type", ""))
    assert region.meta["module"] == ""
    assert torch.allclose(t.trace.grads["x"], x.grad)
