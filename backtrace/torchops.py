"""Torch spellings of op-table rows that need more than one torch call (torch imported inside)."""
from __future__ import annotations

from typing import Any


def cross_entropy(z: Any, y: Any) -> Any:
    """F.cross_entropy with y as class indices (made integers, outside autograd) when it is not
    shaped like z, else as probabilities."""
    import torch.nn.functional as F

    if tuple(y.shape) != tuple(z.shape):
        y = y.detach().round().long()
    return F.cross_entropy(z, y)
