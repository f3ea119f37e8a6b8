"""The patch registry: hooks around torch's backward entry points, removable in any order."""
from __future__ import annotations

import itertools

import pytest
import torch

from backtrace import patches

ORIGINALS = {t: getattr(*patches._place(t)) for t in patches.TARGETS}


def hook(log: list, name: str):
    def around(call, *args, **kwargs):
        log.append(f"{name} in")
        out = call(*args, **kwargs)
        log.append(f"{name} out")
        return out
    return around


def backward_once() -> float:
    x = torch.tensor(3.0, requires_grad=True)
    (x * x).backward()
    return float(x.grad)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_removal_order_restores_exactly_what_was_there(order):
    log: list[str] = []
    handles = [patches.patch("Tensor.backward", hook(log, str(k))) for k in range(3)]
    assert backward_once() == 6.0
    assert log == ["2 in", "1 in", "0 in", "0 out", "1 out", "2 out"]  # newest outermost
    remaining = [0, 1, 2]
    for k in order:
        handles[k].remove()
        remaining.remove(k)
        log.clear()
        assert backward_once() == 6.0
        assert log == [f"{j} in" for j in reversed(remaining)] + [f"{j} out" for j in remaining]
    handles[0].remove()  # idempotent
    assert {t: getattr(*patches._place(t)) for t in patches.TARGETS} == ORIGINALS
    assert patches.active() == {}


def test_a_patch_laid_over_ours_stays_and_ours_passes_through():
    log: list[str] = []
    ours = patches.patch("autograd.grad", hook(log, "ours"))
    ours_wrapper = torch.autograd.grad

    def theirs(*args, **kwargs):
        log.append("theirs")
        return ours_wrapper(*args, **kwargs)

    torch.autograd.grad = theirs
    try:
        ours.remove()
        assert torch.autograd.grad is theirs  # not ours to take away
        again = patches.patch("autograd.grad", hook(log, "new"))
        x = torch.tensor(2.0, requires_grad=True)
        (g,) = torch.autograd.grad(x * x, x)
        assert float(g) == 4.0 and log == ["new in", "theirs", "new out"]  # the hook ran once
        again.remove()
    finally:
        torch.autograd.grad = ORIGINALS["autograd.grad"]


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="cannot patch 'Tensor.grad'"):
        patches.patch("Tensor.grad", lambda call, *a, **k: call(*a, **k))
