"""Values as short text, one function for every view: numbers, tensor statistics, tensors, slots."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ir import format_number
from ..trace import TensorStats


def is_tensor(v: Any) -> bool:
    """True for torch tensors, detected without importing torch."""
    return type(v).__module__.startswith("torch") and hasattr(v, "shape")


def shape_text(shape: Sequence[int]) -> str:
    """[4×8] for a shape, [scalar] for ()."""
    return "[" + ("×".join(map(str, shape)) or "scalar") + "]"


def describe(v: Any, *, absmax: bool = False, listed: int = 1, slots: bool = False) -> str:
    """A value in a few characters: numbers short, one-element tensors (and their statistics) as the
    number, tensors of up to `listed` elements as a list, bigger ones as [shape] ‖·‖ (and max|·|
    with `absmax`), None as a dash; per-slot tuples joined, numbered with `slots`."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return format_number(v)
    if isinstance(v, (tuple, list)):
        parts = [describe(x, absmax=absmax, listed=listed) for x in v]
        return "; ".join(f"{k}: {p}" for k, p in enumerate(parts)) if slots else ", ".join(parts)
    if isinstance(v, TensorStats):
        if all(d == 1 for d in v.shape):  # one number: its mean is the number itself
            return format_number(v.mean)
        norm, top = v.norm, v.absmax
    elif is_tensor(v):
        flat = v.detach()
        if flat.numel() <= max(listed, 1):
            numbers = [format_number(x) for x in flat.double().flatten().tolist()]
            return numbers[0] if len(numbers) == 1 else "[" + ", ".join(numbers) + "]"
        flat = flat.double()
        norm, top = float(flat.norm()), float(flat.abs().max())
    else:
        return str(v)
    text = f"{shape_text(v.shape)} ‖·‖={format_number(norm)}"
    return f"{text} max|·|={format_number(top)}" if absmax else text
