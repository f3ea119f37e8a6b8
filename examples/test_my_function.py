"""Testing a hand-written backward with backtrace: run `pytest examples/test_my_function.py`.

The broken Function's test is marked xfail so the suite stays green; see its report with
`pytest examples/test_my_function.py --runxfail`.
"""
from __future__ import annotations

import pytest
import torch

from backtrace.math import sigmoid, tanh
from backtrace.testing import assert_grads, check_function


class Swish(torch.autograd.Function):
    """swish(x) = x * sigmoid(x), with its derivative written by hand."""

    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return grad * (s + x * s * (1 - s))


class BrokenSwish(Swish):
    """The same with a classic slip: the product rule's second term is forgotten."""

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return grad * s


def test_swish_backward_matches_finite_differences():
    report = check_function(Swish, torch.linspace(-3, 3, 7))
    assert report.ok
    print(report.table())


def test_swish_inside_a_model_is_checked_node_by_node():
    def model(x, w):
        return tanh(Swish.apply(x @ w)).sum()  # backtrace.math.tanh calls torch.tanh here

    torch.manual_seed(0)
    check_function(model, torch.randn(4, 3), torch.randn(3, 2))


def test_the_hand_derivation_on_every_engine():
    # One Python function runs on the reference engine, on torch and under finite differences.
    def swish(x):
        s = sigmoid(x)
        return x * s

    s = 1 / (1 + 2.718281828459045 ** -0.5)
    assert_grads(swish, {"x": 0.5}, expected={"x": s + 0.5 * s * (1 - s), "s": 0.5})


@pytest.mark.xfail(raises=AssertionError, strict=True,
                   reason="deliberately broken backward, to show the report")
def test_broken_swish_is_caught_at_its_node():
    def model(x, w):
        return tanh(BrokenSwish.apply(x @ w)).sum()

    torch.manual_seed(0)
    # AssertionError: backward of BrokenSwishBackward (BrokenSwish.apply(MmBackward0)) is wrong
    # at input slot 0 (MmBackward0): at element [2, 0]: numeric 0.138748, backward 0.332823 ...
    check_function(model, torch.randn(4, 3), torch.randn(3, 2))
