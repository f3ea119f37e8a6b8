"""The first non-finite value, explained: `Trace.nonfinite()` names the culprit node (op, module,
the line of this file that made it), the cause from upstream × local, and a fix; each case is
checked against PyTorch's own gradients (they really are inf or NaN, or really are finite)."""
from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import backtrace
import backtrace.nonfinite
from backtrace.values import TensorStats


def here() -> str:
    """This file and the caller's line, as the report gives a source location."""
    return f"{__file__}:{sys._getframe(1).f_lineno}"


class Masked(nn.Module):
    """sqrt where the input is positive, 0 elsewhere: the classic NaN through torch.where."""

    def forward(self, h):
        self.line = here(); return torch.where(h > 0, torch.sqrt(h), torch.zeros_like(h))  # noqa: E702


def test_all_finite_is_none():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace() as t:
        (x.exp() * 3).sum().backward()
    assert t.trace.nonfinite() is None and t.last_nonfinite() is False
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("level", ["stats", "full"])
def test_where_masking_sqrt_of_negatives(level):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Masked())
    x = torch.randn(8, 3)
    with backtrace.trace(model=model, level=level) as t:
        model(x).sum().backward()
    assert torch.isnan(model[0].weight.grad).any()  # PyTorch agrees: the gradient is NaN
    r = t.trace.nonfinite()
    c = r.culprit
    assert (c.op, c.module, c.source, c.where) == ("sqrt", "1", model[1].line, "backward")
    assert c.node == t.trace.steps[[s.node for s in t.trace.steps].index(c.node)].node
    assert c.cause == "0 × NaN" and "torch.where" in c.words and "double where" in c.fix
    assert t.trace.node(c.input).op == "linear"
    # the upstream was finite and the contribution is not; linear and t only passed it on
    assert backtrace.values.nonfinite(c.upstream) == 0 < backtrace.values.nonfinite(c.contribution)
    assert {t.trace.node(p).op for p in r.propagators} <= {"linear", "t"} and r.propagators
    assert r.first_forward.node == c.node  # sqrt of negatives: NaN already in the forward


def test_where_masking_log_at_zero_but_not_of_negatives():
    x = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        line = here(); y = torch.where(x > 0, torch.log(x), torch.zeros_like(x))  # noqa: E702
        y.sum().backward()
    assert torch.isnan(x.grad[0])
    c = t.trace.nonfinite().culprit
    assert (c.op, c.module, c.source, c.cause) == ("log", "", line, "0 × inf")
    assert "double where" in c.fix and c.input == "x"
    # log of a negative number is NaN in the forward, but its gradient 0 × 1/x stays finite
    x = torch.tensor([-1.0, 1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        torch.where(x > 0, torch.log(x), torch.zeros_like(x)).sum().backward()
    assert torch.isfinite(x.grad).all() and t.trace.nonfinite() is None


def test_x_over_its_norm_at_zero():
    x = torch.zeros(3, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        line = here(); u = x / x.norm()  # noqa: E702
        u.sum().backward()
    assert torch.isnan(x.grad).all()
    c = t.trace.nonfinite().culprit
    assert (c.op, c.module, c.source, c.cause) == ("div", "", line, "0/0")
    assert "epsilon" in c.fix and "F.normalize" in c.fix


def test_log_of_softmax_underflows_where_log_softmax_does_not():
    z = torch.tensor([[0.0, 200.0, 1.0]], requires_grad=True)
    target = torch.tensor([0])
    with backtrace.trace(names={"z": z}) as t:
        line = here(); logp = torch.log(torch.softmax(z, dim=1))  # noqa: E702
        F.nll_loss(logp, target).backward()
    assert not torch.isfinite(z.grad).all()
    c = t.trace.nonfinite().culprit
    assert (c.op, c.module, c.source) == ("log", "", line)
    assert c.cause in ("finite × inf", "0 × inf") and "log_softmax" in c.fix
    z.grad = None
    with backtrace.trace(names={"z": z}) as t:
        F.nll_loss(torch.log_softmax(z, dim=1), target).backward()
    assert torch.isfinite(z.grad).all() and t.trace.nonfinite() is None


@pytest.mark.parametrize("dtype, scale", [(torch.float16, 300.0), (torch.bfloat16, 1e20)])
def test_half_precision_overflow(dtype, scale):
    x = torch.full((4,), scale, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        h = x.to(dtype)
        line = here(); sq = h * h  # noqa: E702
        sq.sum().backward()
    assert torch.isinf(sq).all() and torch.isfinite(x.grad).all()  # only the forward overflows
    r = t.trace.nonfinite()
    c = r.culprit
    assert (c.op, c.module, c.source, c.where, c.cause) == ("mul", "", line, "forward", "overflow")
    assert str(dtype).removeprefix("torch.") in c.words and "float32" in c.fix


def test_half_precision_overflow_in_backward():
    x = torch.full((4,), 12.0, dtype=torch.float16, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        line = here(); y = x ** 4  # noqa: E702  (20736: fits in float16)
        ((y - y.detach()) * 20).sum().backward()  # the loss is 0; ∂/∂x = 20 · 4x³ = 138240 > 65504
    assert torch.isinf(x.grad).all()
    c = t.trace.nonfinite().culprit
    assert (c.op, c.source, c.where, c.cause) == ("pow", line, "backward", "overflow")
    assert "65504" in c.words


def test_nan_in_the_input_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    x[2, 1] = float("nan")
    with backtrace.trace(model=model) as t:
        line = here(); loss = F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1, 0]))  # noqa: E702
        loss.backward()
    assert torch.isnan(model[0].weight.grad).any()
    r = t.trace.nonfinite()
    c, first = r.culprit, r.first_forward
    assert (c.op, c.module, c.source, c.cause) == ("log_softmax", "", line,
                                                    "non-finite forward value")
    assert (first.op, first.module, first.source, first.where) == ("linear", "0", line, "forward")
    assert first.cause == "NaN in an input that needs no gradient" and "input data" in first.fix
    assert isinstance(first.value, TensorStats) and first.value.nonfinite == 4  # one row of 4


class Poison(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return v * float("nan")

    @staticmethod
    def backward(ctx, g):
        return g


class PoisonGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return v * 2

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_a_custom_function_that_returns_nan():
    # (the forward does not stamp custom Functions yet: their node takes its consumer's line,
    # so apply and consumer share one here)
    x = torch.ones(3, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        line = here(); y = PoisonGrad.apply(x * 3).sum()  # noqa: E702
        y.backward()
    assert torch.isnan(x.grad).all()
    c = t.trace.nonfinite().culprit
    assert (c.op, c.module, c.where, c.cause) == ("poison_grad", "", "backward", "finite × NaN")
    assert c.source == line and "check_function" in c.fix
    x.grad = None
    with backtrace.trace(names={"x": x}) as t:
        line = here(); y = Poison.apply(x * 3).sum()  # noqa: E702
        y.backward()
    c = t.trace.nonfinite().culprit
    assert (c.op, c.where, c.cause, c.source) == ("poison", "forward",
                                                  "NaN from a custom Function", line)


def test_double_backward_gradient_penalty_at_zero():
    x = torch.zeros(3, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        g, = torch.autograd.grad((x ** 2).sum(), x, create_graph=True)  # 2x = 0
        line = here(); penalty = g.pow(2).sum().sqrt()  # noqa: E702  (‖g‖, by hand)
        penalty.backward()
    assert len(t.traces) == 2 and t.traces[0].nonfinite() is None
    assert torch.isnan(x.grad).all()
    r = t.trace.nonfinite()
    c = r.culprit
    assert (c.op, c.module, c.source, c.cause) == ("sqrt", "", line, "finite × inf")
    assert "1e-12" in c.fix and t.trace.meta["kind"] == "backward"
    assert [t.trace.node(p).op for p in r.propagators][:2] == ["sum", "pow"]


def test_nan_passed_to_backward_is_upstream():
    x = torch.ones(2, requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        (x * 2).backward(torch.tensor([1.0, float("nan")]))
    c = t.trace.nonfinite().culprit
    assert c.cause == "NaN upstream" and c.op == "mul"


def test_the_report_reads_well_and_survives_json():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Masked())
    with backtrace.trace(model=model) as t:
        model(torch.randn(8, 3)).sum().backward()
    text = str(t.trace.nonfinite())
    assert text.splitlines()[0].startswith("first non-finite gradient in backward call 1: ")
    assert "cause: 0 × NaN" in text and "fix: the double where" in text
    assert "torch.sqrt(h)" in text  # the line of code itself
    again = backtrace.Trace.from_json(t.trace.to_json()).nonfinite().culprit
    c = t.trace.nonfinite().culprit
    fields = ("node", "op", "module", "source", "where", "cause", "words", "fix", "input")
    assert [getattr(again, k) for k in fields] == [getattr(c, k) for k in fields]
    wrapped = backtrace.nonfinite.lines(t.trace.nonfinite(), width=60)
    assert max(map(len, wrapped)) <= 60 and " ".join(wrapped).count("double where") == 1


def test_masked_infinities_that_do_not_reach_the_loss_are_not_reported():
    torch.manual_seed(0)
    att = torch.randn(2, 4, 4, requires_grad=True)
    mask = torch.tril(torch.ones(4, 4)) == 0
    with backtrace.trace(names={"att": att}) as t:
        torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1).pow(2).sum().backward()
    assert t.trace.node(t.trace.steps[-1].node).value.nonfinite > 0  # -inf in the forward
    assert t.trace.nonfinite() is None and t.last_nonfinite() is False


def test_the_count_of_non_finite_elements_is_exact_in_stats():
    x = torch.tensor([1.0, float("inf"), float("nan"), -float("inf"), 2.0], requires_grad=True)
    big = torch.zeros(70000, requires_grad=True)  # reduced on its own, not in a batch
    with backtrace.trace(names={"x": x, "big": big}) as t:
        (x * 1).sum().backward()
        (big / big).sum().backward()
    first, second = t.traces
    assert first.node("x").value.nonfinite == 3 and first.node("x").value.norm != first.node(
        "x").value.norm  # NaN
    assert second.node("big").value.nonfinite == 0
    div = next(n for n in second.nodes if n.op == "div")
    assert div.value.nonfinite == 70000 and second.nonfinite().culprit.cause == "0/0"


def test_sparse_gradients_are_counted_by_their_stored_values():
    """A sparse embedding's gradient: its stored values are read, it is never made dense."""
    from backtrace.values import has_nan, nonfinite

    emb = nn.Embedding(6, 3, sparse=True)
    with backtrace.trace(model=emb, level="full") as t:
        emb(torch.tensor([1, 4, 1])).pow(2).sum().backward()
    assert emb.weight.grad.is_sparse and t.trace.nonfinite() is None
    bad = torch.sparse_coo_tensor([[0, 2, 2]], [[1.0, math.inf, 0.0], [math.nan, 1.0, 1.0],
                                                [1.0, 1.0, 1.0]], (6, 3))
    assert nonfinite(bad) == 2 == int((~bad.to_dense().isfinite()).sum())
    assert has_nan(bad) and not has_nan(emb.weight.grad)
    csr = bad.to_dense().to_sparse_csr()
    assert nonfinite(csr) == 2 and has_nan(csr)
