"""The layer × step view of a watched run: one row per layer, one column per stretch of steps, each
cell the layer's gradient RMS (or norm, update/weight ratio, share of exact zeros) over those
steps, from the running summary (so it covers every step in bounded memory).

In the terminal it is a block of characters whose height and colour both carry the level (so it
reads the same off a terminal, in plain text); as a chart (`heatmap_figure`) three panels of
matplotlib images. rich and matplotlib load inside the functions that draw.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .records import METRICS, Watched

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RAMP = "▁▂▃▄▅▆▇█"  # low to high
BAD = "x"  # NaN or inf at some step of the cell
ZERO = "·"  # exactly zero on a log scale (a layer no gradient reaches)
LOG = {"rms", "grad", "ratio"}  # metrics drawn on a log scale (zeros: 0 to 100%)
# Low to high: dark blue, teal, green, yellow, red (viridis-like, then hot for the top).
COLOURS = ((48, 18, 120), (33, 110, 160), (40, 170, 120), (170, 200, 40), (250, 200, 30),
           (230, 90, 20), (200, 20, 20), (140, 0, 0))


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise UsageError(f"unknown heatmap metric {metric!r}: choose from {', '.join(METRICS)}")


def grid(w: Watched, metric: str, columns: int) -> tuple[list[str], list[int], list[list[Any]]]:
    """(layers, first step of each column, cells per layer): the running series binned into at
    most `columns` columns; a cell is a float, None (nothing measured) or NaN (non-finite)."""
    _check(metric)
    layers = list(w.summary_data.layers)
    if not layers:
        return [], [], []
    ref = w.summary_data.layers[layers[0]][metric]
    n = len(ref)
    cols = max(1, min(columns, n))
    edges = [round(j * n / cols) for j in range(cols + 1)]
    starts = [ref.first[edges[j]] for j in range(cols)]
    cells = []
    for layer in layers:
        values = w.summary_data.layers[layer][metric].values()
        row = []
        for j in range(cols):
            part = values[edges[j]:edges[j + 1]]
            row.append(_pool(part, metric in LOG))
        cells.append(row)
    return layers, starts, cells


def _pool(values: Sequence[float | None], log: bool) -> float | None:
    """The cell of several buckets: NaN if any is non-finite, else their (geometric) mean."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    if any(not math.isfinite(v) for v in known):
        return math.nan
    if log:
        positive = [v for v in known if v > 0]
        return math.exp(sum(map(math.log, positive)) / len(positive)) if positive else 0.0
    return sum(known) / len(known)


def _range(cells: list[list[Any]], log: bool) -> tuple[float, float]:
    finite = [v for row in cells for v in row if v is not None and math.isfinite(v)
              and (v > 0 or not log)]
    if not log:
        return 0.0, 1.0
    if not finite:
        return 1.0, 10.0
    lo, hi = math.log10(min(finite)), math.log10(max(finite))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _level(v: float, log: bool, lo: float, hi: float) -> int:
    """0 .. len(RAMP)-1."""
    x = (math.log10(v) if v > 0 else lo) if log else v
    return min(len(RAMP) - 1, max(0, int((x - lo) / (hi - lo) * len(RAMP)))) if hi > lo else 0


def _number(v: float, log: bool) -> str:
    return f"{10 ** v:.2g}" if log else f"{v:.0%}"


class TerminalHeatmap:
    """A rich renderable that sizes itself to the console (and prints as plain text off it)."""

    def __init__(self, w: Watched, metric: str, width: int | None = None) -> None:
        _check(metric)
        self.w, self.metric, self.width = w, metric, width

    def lines(self, width: int) -> list[tuple[str, list[tuple[str, tuple[int, int, int] | None]]]]:
        """(label, [(character, colour)]) per row, then the axis and the legend as labels."""
        log = self.metric in LOG
        if not self.w.summary_data.layers:
            return [("heatmap: no step recorded yet", [])]
        names = [self._label(layer) for layer in self.w.summary_data.layers]
        pad = min(max((len(n) for n in names), default=0), max(8, width // 3))
        layers, starts, cells = grid(self.w, self.metric, max(1, width - pad - 8))  # + " step"
        lo, hi = _range(cells, log)
        rows = []
        for name, row in zip(names, cells):
            chars = []
            for v in row:
                if v is None:
                    chars.append((" ", None))
                elif not math.isfinite(v):
                    chars.append((BAD, (255, 0, 255)))
                elif log and v <= 0:
                    chars.append((ZERO, (120, 120, 120)))
                else:
                    k = _level(v, log, lo, hi)
                    chars.append((RAMP[k], COLOURS[k]))
            rows.append((name[:pad].ljust(pad) + " │", chars))
        last = str(self.w.summary_data.layers[layers[0]][self.metric].last()) if layers else ""
        first = str(starts[0]) if starts else ""
        span = len(cells[0]) if cells else 0
        axis = " " * (pad + 2) + first + last.rjust(max(1, span - len(first))) + " step"
        legend = f"{' ' * (pad + 2)}{RAMP[0]} {_number(lo, log)} … {RAMP[-1]} {_number(hi, log)}"
        zero = any(c == ZERO for _, chars in rows for c, _ in chars)
        for part in (" (log scale)" if log else "", f", {ZERO} zero" if zero else "",
                     f", {BAD} NaN/inf", ", blank: no gradient"):
            if part and len(legend) + len(part) <= width:
                legend += part
        return [(f"{METRICS[self.metric]} per layer", [])] + rows + [(axis, []), (legend, [])]

    def _label(self, layer: str) -> str:
        kind = self.w.layer_kind.get(layer)
        return f"{layer} ({kind})" if kind else layer

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.style import Style
        from rich.text import Text

        for label, chars in self.lines(self.width or options.max_width):
            text = Text(label, no_wrap=True, overflow="crop")
            for ch, rgb in chars:
                text.append(ch, Style(color=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})") if rgb else None)
            yield text

    def __str__(self) -> str:
        width = self.width or 80
        return "\n".join((label + "".join(c for c, _ in chars)).rstrip()[:width]
                         for label, chars in self.lines(width))


def terminal_heatmap(w: Watched, metric: str = "rms", width: int | None = None) -> TerminalHeatmap:
    """The layer × step heatmap of `metric` (rms, grad, ratio, zeros) for the terminal."""
    return TerminalHeatmap(w, metric, width)


def heatmap_figure(w: Watched, metrics: Sequence[str] = ("rms", "ratio", "zeros")) -> Figure:
    """One panel per metric: layers down, steps across, colour by value (log scale for norms and
    ratios); images carry gid heatmap-METRIC."""
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    layers = list(w.summary_data.layers)
    if not layers:
        raise UsageError("no step recorded yet: nothing to draw a heatmap of")
    for metric in metrics:
        _check(metric)
    fig = Figure(figsize=(8, 1.2 + (0.35 * len(layers) + 0.9) * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics):
        _, starts, cells = grid(w, metric, 400)
        missing = np.array([[v is None for v in row] for row in cells], dtype=bool)
        data = np.array([[np.nan if v is None else v for v in row] for row in cells], dtype=float)
        bad = np.isnan(data) & ~missing  # non-finite at some step of the cell
        log = metric in LOG
        finite = data[np.isfinite(data) & ((data > 0) if log else True)]
        norm = (LogNorm(finite.min(), finite.max()) if log and finite.size
                else Normalize(0.0, 1.0) if not log else None)
        # a zero on a log scale (a layer no gradient reaches) gets the lowest colour
        shown = np.ma.masked_invalid(np.where(data > 0, data, finite.min()) if log and finite.size
                                     else data)
        last = w.summary_data.layers[layers[0]][metric].last() if layers else 1
        extent = (starts[0] - 0.5, last + 0.5, len(layers) - 0.5, -0.5) if starts else None
        image = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="viridis",
                          norm=norm, extent=extent)
        image.set_gid(f"heatmap-{metric}")
        ys, xs = np.nonzero(bad)
        if len(xs):  # NaN/inf cells: a red cross over the empty cell
            step = (last - starts[0] + 1) / max(1, data.shape[1])
            ax.plot(starts[0] + (xs + 0.5) * step, ys, "x", color="red", markersize=4)
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel("step")
        ax.set_title(METRICS[metric])
        fig.colorbar(image, ax=ax, pad=0.01)
    return fig
