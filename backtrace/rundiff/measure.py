"""Two recorded values side by side: do they agree (the one tolerance rule, compare.close), and how
far apart are they (‖a - b‖, or the lower bound statistics give when only they were recorded)."""
from __future__ import annotations

import math
from typing import Any

from ..compare import close
from ..values import TensorStats, is_tensor, norm


def _comparable(u: Any, v: Any) -> tuple[Any, Any]:
    """A tensor next to statistics (runs traced at different levels) becomes statistics too."""
    if isinstance(u, TensorStats) and is_tensor(v):
        from ..tracer.stats import tensor_stats
        return u, tensor_stats(v)
    if is_tensor(u) and isinstance(v, TensorStats):
        from ..tracer.stats import tensor_stats
        return tensor_stats(u), v
    return u, v


def agree(u: Any, v: Any, rtol: float, atol: float, *, unknown: bool = False) -> bool | None:
    """Whether two gradients (or values) agree; None when there is nothing to compare.

    Gradients: None is "no gradient", so None against a gradient disagrees. Values (`unknown`):
    None is "not recorded", so it agrees or disagrees with nothing."""
    if u is None or v is None:
        if u is None and v is None or unknown:
            return None
        return False
    if isinstance(u, tuple) or isinstance(v, tuple):  # one value per output slot
        if not (isinstance(u, tuple) and isinstance(v, tuple)) or len(u) != len(v):
            return False
        found = [agree(x, y, rtol, atol, unknown=unknown) for x, y in zip(u, v)]
        return None if all(f is None for f in found) else all(f is not False for f in found)
    u, v = _comparable(u, v)
    if _shape(u) != _shape(v):
        return False
    return close(u, v, rtol, atol)


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, TensorStats) or is_tensor(v) else ()


def distance(u: Any, v: Any) -> tuple[float, bool]:
    """(‖u - v‖, exact): exact for numbers and tensors; from statistics, the largest of the lower
    bounds |Δ‖·‖|, √n·|Δmean| and |Δmax|·|| (each ≤ ‖u - v‖), so never an overstatement."""
    if u is None and v is None:
        return 0.0, True
    if u is None or v is None:
        return math.inf, True
    if isinstance(u, tuple) and isinstance(v, tuple) and len(u) == len(v):
        parts = [distance(x, y) for x, y in zip(u, v)]
        return math.sqrt(sum(d * d for d, _ in parts)), all(e for _, e in parts)
    u, v = _comparable(u, v)
    if _shape(u) != _shape(v):
        return math.inf, True
    if isinstance(u, TensorStats):
        n = math.prod(u.shape)
        bound = max(abs(u.norm - v.norm), math.sqrt(n) * abs(u.mean - v.mean),
                    abs(u.absmax - v.absmax))
        if bound != bound:  # NaN statistics: no distance, unless both runs have the same NaNs
            bound = 0.0 if close(u, v, 0.0, 0.0) else math.inf
        return bound, False
    if is_tensor(u):
        x, y = u.detach().double(), v.detach().double().to(u.device)
        same = (x == y) | (x.isnan() & y.isnan())  # NaN where both have NaN is no difference
        d = float((x - y).masked_fill(same, 0.0).norm())
        return (math.inf if d != d else d), True
    try:
        return abs(float(u) - float(v)), True
    except (TypeError, ValueError):
        return (0.0 if u == v else math.inf), True


def relative(delta: float, size: float | None) -> float:
    """delta / size, with 0/0 = 0 and x/0 = inf."""
    size = size or 0.0
    if delta == 0:
        return 0.0
    return delta / size if size > 0 else math.inf


def size(v: Any) -> float:
    """‖v‖ (0 for no value)."""
    return norm(v) or 0.0
