"""The torch-call recorder sees custom Functions however they are applied, and restores them."""
from __future__ import annotations

import pytest
import torch

from backtrace.torchcalls import TorchCalls


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class Triple(torch.autograd.Function):  # setup_context style
    @staticmethod
    def forward(x, k=3.0):
        return x * k

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.k = inputs[1]

    @staticmethod
    def backward(ctx, g):
        return g * ctx.k, None


square = Square.apply  # an alias taken before recording starts


@pytest.mark.parametrize("form", ["class", "alias", "lambda", "setup_context"])
def test_custom_functions_are_seen_however_they_are_called(form):
    x = torch.randn(3, requires_grad=True)
    f = {"class": lambda: Square.apply(x), "alias": lambda: square(x),
         "lambda": (lambda g: lambda: g(x))(square), "setup_context": lambda: Triple.apply(x)}[form]
    calls = []
    with TorchCalls(calls.append):
        out = f()
    custom = [c for c in calls if c.custom]
    assert len(custom) == 1 and custom[0].args[0] is x
    assert custom[0].func is (Triple if form == "setup_context" else Square)
    assert out.grad_fn is not None and type(out.grad_fn).__name__.startswith(custom[0].func.__name__)
    inner = [c for c in calls if not c.custom]
    assert inner and all(c.inside for c in inner)  # the mul inside forward is the Function's own
    assert Square.__dict__["forward"].__func__.__name__ == "forward" and "__wrapped__" not in \
        vars(Square.__dict__["forward"].__func__)


class SquareTwice(Square):  # inherits forward: the call must still name the class applied
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 4 * x * g


def test_a_subclass_inheriting_forward_is_named_as_applied():
    x = torch.randn(2, requires_grad=True)
    calls = []
    with TorchCalls(calls.append):
        SquareTwice.apply(x)
        Square.apply(x)
    assert [c.func for c in calls if c.custom] == [SquareTwice, Square]
    assert "forward" not in SquareTwice.__dict__  # inherited again after the block


def test_forwards_are_restored_after_an_error():
    before = Square.__dict__["forward"]
    with pytest.raises(ZeroDivisionError):
        with TorchCalls(lambda c: None):
            1 / 0
    assert Square.__dict__["forward"] is before
