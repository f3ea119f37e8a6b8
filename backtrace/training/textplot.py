"""A loss curve as plain text: a few rows of '*' that read the same on a terminal, a pipe or a file."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..values import format_number


def scale_of(values: Sequence[float]) -> str:
    """'log' when the finite values are positive and span more than three decades, else 'linear'."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 1e3:
        return "log"
    return "linear"


def ascii_curve(values: Sequence[float], width: int = 60, height: int = 8,
                label: str = "loss", first: int = 0, last: int | None = None) -> str:
    """`values` (one per step, values[0] at step `first`; or, with `last`, evenly spread over the
    steps first..last) drawn as `height` rows of at most `width` columns.

    Non-finite values are drawn as 'x' on the top row; a log scale is used when the values span
    many decades."""
    n = len(values)
    if n == 0:
        return f"{label}: no values"
    cols = min(width, n)
    picks = [round(j * (n - 1) / (cols - 1)) if cols > 1 else 0 for j in range(cols)]
    column = [values[i] for i in picks]
    scale = scale_of(values)
    tf = math.log10 if scale == "log" else (lambda v: v)
    finite = [tf(v) for v in column if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    rows = [[" "] * cols for _ in range(height)]
    for j, v in enumerate(column):
        if not math.isfinite(v):
            rows[0][j] = "x"
            continue
        level = 0 if hi == lo else round((tf(v) - lo) / (hi - lo) * (height - 1))
        rows[height - 1 - level][j] = "*"
    finite_values = [v for v in values if math.isfinite(v)]
    top = format_number(max(finite_values)) if finite_values else "nan"
    bottom = format_number(min(finite_values)) if finite_values else "nan"
    pad = max(len(top), len(bottom))
    lines = [f"{label}{' (log scale)' if scale == 'log' else ''}"]
    for r, row in enumerate(rows):
        tick = top if r == 0 else bottom if r == height - 1 else ""
        lines.append(f"{tick:>{pad}} |{''.join(row).rstrip()}")
    lines.append(f"{'':>{pad}} +{'-' * cols}")
    last = str(first + n - 1 if last is None else last)
    lines.append(f"{'':>{pad}}  {first}{last:>{max(1, cols - len(str(first)))}} step")
    return "\n".join(lines)
