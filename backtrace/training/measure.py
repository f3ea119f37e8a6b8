"""What `watch` measures of tensors, on their device: norms, exact zeros, bit fingerprints, all kept
as small device tensors during a step and turned into numbers with one transfer per device at its
end (`collect`). Sharded parameters (FSDP2's DTensors) are measured on the local shard; ranks.py
combines the shards."""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch

_F64 = torch.float64
# Integer views of each float width, for bit fingerprints.
_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of `t` this process holds: a DTensor's local shard, any other tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None and hasattr(t, "placements") else t


def sharded(t: torch.Tensor) -> bool:
    """True for a DTensor split across ranks (FSDP2's parameters): its figures need combining."""
    return any(type(p).__name__ == "Shard" for p in getattr(t, "placements", ()))


def norm(t: torch.Tensor) -> torch.Tensor:
    """‖t‖ as a float64 0-d tensor on t's device (no sync)."""
    x = local(t).detach()
    if x.layout != torch.strided:
        x = x.to_dense()
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(_F64)
    return torch.linalg.vector_norm(x, dtype=_F64)


def zeros(t: torch.Tensor) -> torch.Tensor:
    """How many elements of t are exactly zero, as a float64 0-d tensor (no sync)."""
    x = local(t).detach()
    if x.layout != torch.strided:
        x = x.to_dense()
    return (x.numel() - torch.count_nonzero(x)).to(_F64)


def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums over t's bits (plain and mixed): equal tensors give equal fingerprints, and
    a change of any bit changes them (int64 on t's device, no sync)."""
    x = local(t).detach()
    if x.layout != torch.strided:
        x = x.to_dense()
    if x.is_complex():
        x = torch.view_as_real(x)
    x = x.contiguous().reshape(-1)
    bits = x.view(_BITS[x.element_size()]) if x.element_size() in _BITS else x.to(torch.int64)
    mixed = torch.bitwise_xor(bits, torch.bitwise_right_shift(bits, 7))
    return torch.stack([bits.sum(dtype=torch.int64), mixed.sum(dtype=torch.int64)])


def collect(items: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, Any]:
    """Every item as numbers with one transfer per device: a 0-d tensor becomes a float, a
    longer one a list of floats."""
    by_device: dict[Any, list[Hashable]] = {}
    for k, v in items.items():
        by_device.setdefault(v.device, []).append(k)
    out: dict[Hashable, Any] = {}
    with torch.no_grad():
        for keys in by_device.values():
            scalars = [k for k in keys if items[k].dim() == 0]
            vectors = [k for k in keys if items[k].dim() != 0]
            parts = [torch.stack([_f64(items[k]) for k in scalars])] if scalars else []
            parts += [_f64(items[k]).reshape(-1) for k in vectors]
            numbers = torch.cat(parts).tolist() if len(parts) > 1 else parts[0].tolist()
            out.update(zip(scalars, numbers))
            at = len(scalars)
            for k in vectors:
                n = items[k].numel()
                out[k] = numbers[at:at + n]
                at += n
    return out


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == _F64 else t.to(_F64)
