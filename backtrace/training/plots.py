"""Charts with matplotlib (loaded on first use, drawn on its Agg/SVG canvases without pyplot, so no
global backend is touched): loss curves, learning-rate and optimizer comparisons, the path of a run
over its loss curve or contour, and per-layer gradient flow. Every line we draw carries a gid
(curve-N, path-N, layer-NAME) so a test, or a reader of the SVG, can find it."""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import UsageError
from ..files import write_atomic
from .textplot import scale_of

FORMATS = ("svg", "png", "pdf")
GRID = 60  # contour resolution per axis
HUGE = 1e250  # losses beyond this are left out of a chart (a log axis cannot place them)


def check_suffix(path: str | Path) -> str:
    """The chart format named by the file's suffix, or a UsageError."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the chart format of {path}: use .svg, .png or .pdf")
    return fmt


def save(fig, path: str | Path) -> Path:
    """Write a figure to `path` atomically, in the format its suffix names."""
    fmt = check_suffix(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100, bbox_inches="tight",
                metadata={"Date": None} if fmt == "svg" else None)
    write_atomic(path, buf.getvalue())
    return Path(path)


def _figure(panels: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * panels, 4.4), layout="constrained")
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    return fig, axes


def _set_scale(ax, values: Sequence[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if scale_of(finite) == "log":
        ax.set_yscale("log")
    elif finite and min(finite) < 0 < max(finite) and max(map(abs, finite)) > 1e3:
        ax.set_yscale("symlog")


def ceiling(series: Mapping[str, Sequence[float]]) -> float:
    """The highest loss a chart shows: a thousand times the highest starting loss (at least 1),
    so a run that diverges to 1e256 leaves the chart instead of flattening the others."""
    starts = [abs(v) for values in series.values() for v in values[:1] if math.isfinite(v)]
    return min(HUGE, 1e3 * max([1.0, *starts]))


def loss_axes(ax, series: Mapping[str, Sequence[float]], xlabel: str = "step",
              steps: Sequence[int] | None = None) -> None:
    """One line per labelled loss series, gid curve-0, curve-1, ...; x: `steps` (default 0, 1,
    ...). Losses above `ceiling` (or not finite) are cut, with a ▲ where a run left the chart."""
    everything = []
    top = ceiling(series)
    for i, (label, values) in enumerate(series.items()):
        xs = list(steps) if steps is not None else list(range(len(values)))
        ys = [v if math.isfinite(v) and abs(v) <= top else math.nan for v in values]
        (line,) = ax.plot(xs[:len(ys)], ys, label=label or None, linewidth=1.6)
        line.set_gid(f"curve-{i}")
        left = next((k for k, v in enumerate(values) if not (math.isfinite(v) and abs(v) <= top)),
                    None)
        if left is not None:  # where it went off the chart
            (mark,) = ax.plot([xs[left]], [top], marker="^", color=line.get_color(), clip_on=False)
            mark.set_gid(f"off-chart-{i}")
        everything += [y for y in ys if not math.isnan(y)]
    _set_scale(ax, everything)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if any(series):
        ax.legend(fontsize="small")


def loss_curves(series: Mapping[str, Sequence[float]], title: str = "Loss",
                steps: Sequence[int] | None = None) -> object:
    """A figure of loss curves, one per series (x: `steps`, as the text numbers them)."""
    fig, (ax,) = _figure()
    loss_axes(ax, series, steps=steps)
    ax.set_title(title)
    return fig


def descent_figure(runs: Sequence) -> object:
    """Loss curves of one or more Descents and, for 1 or 2 optimized variables, their paths over the
    loss (a curve for one variable, a contour for two)."""
    names = list(runs[0].start)
    paths = len(names) <= 2
    fig, axes = _figure(2 if paths else 1)
    series = {(r.label or f"{r.optimizer}, lr {r.lr:g}") + f": {r.verdict}": r.losses for r in runs}
    loss_axes(axes[0], series)
    axes[0].set_title(_title(runs))
    if paths:
        (_path_1d if len(names) == 1 else _path_2d)(axes[1], runs, names)
    return fig


def lr_comparison(runs: Sequence) -> object:
    """The learning-rate comparison chart: the same start, one loss curve per rate, with verdicts."""
    return descent_figure(runs)


def _title(runs: Sequence) -> str:
    source = runs[0].graph.source.strip()
    if len(runs) == 1:
        return f"{source}: {runs[0].optimizer}, lr {runs[0].lr:g}"
    return source


def _window(runs: Sequence, index: int, names: Sequence[str]) -> tuple[float, float]:
    """The range of variable `index` worth drawing: the points of every path whose loss stayed below
    ten times the highest starting loss (so a diverging run does not stretch the axes to 1e150)."""
    cap = max(abs(r.start_loss) for r in runs) * 10 + 1
    xs = []
    for r in runs:
        for point, loss in zip(r.path, r.losses):
            if math.isfinite(loss) and abs(loss) <= cap:
                xs.append(point[names[index]])
    lo, hi = min(xs), max(xs)
    pad = max((hi - lo) * 0.25, 0.5)
    return lo - pad, hi + pad


def _path_1d(ax, runs: Sequence, names: Sequence[str]) -> None:
    from .descend import loss_grid

    lo, hi = _window(runs, 0, names)
    xs = [lo + (hi - lo) * i / 399 for i in range(400)]
    ys = loss_grid(runs[0].graph, runs[0].fixed, names, [xs])
    (line,) = ax.plot(xs, ys, color="0.35", linewidth=1.2, label=runs[0].graph.source.strip())
    line.set_gid("function")
    for i, r in enumerate(runs):
        px = [p[names[0]] for p in r.path]
        (path,) = ax.plot(px, r.losses, label=r.label or "path", **_path_style(i, len(runs)))
        path.set_gid(f"path-{i}")
    ax.set_xlim(lo, hi)
    finite = [y for y in ys if math.isfinite(y)]
    if finite:
        span = max(finite) - min(finite) or 1.0
        ax.set_ylim(min(finite) - 0.05 * span, max(finite) + 0.05 * span)
    ax.set_xlabel(names[0])
    ax.set_ylabel("loss")
    ax.set_title("path over the loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _path_2d(ax, runs: Sequence, names: Sequence[str]) -> None:
    import numpy as np

    from .descend import loss_grid

    (x0, x1), (y0, y1) = _window(runs, 0, names), _window(runs, 1, names)
    xs, ys = np.linspace(x0, x1, GRID), np.linspace(y0, y1, GRID)
    z = np.ma.masked_invalid(np.array(loss_grid(runs[0].graph, runs[0].fixed, names,
                                                [xs.tolist(), ys.tolist()])))
    if z.count():
        # Levels at quantiles of the surface: valleys get as many lines as slopes.
        levels = np.unique(np.quantile(z.compressed(), np.linspace(0, 1, 16)))
        if len(levels) > 1:
            ax.contour(xs, ys, z, levels=levels, cmap="viridis", linewidths=0.8)
    for i, r in enumerate(runs):
        (path,) = ax.plot([p[names[0]] for p in r.path], [p[names[1]] for p in r.path],
                          label=r.label or "path", **_path_style(i, len(runs)))
        path.set_gid(f"path-{i}")
        ax.plot([r.start[names[0]]], [r.start[names[1]]], marker="s", color=path.get_color())
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title("path over the loss contours")
    ax.legend(fontsize="small")


MARKERS = ("o", "s", "^", "D", "v", "P")
LINES = ("-", "--", ":", "-.")


def _path_style(i: int, count: int) -> dict:
    """Each run's path its own marker and dash, hollow after the first and drawn under the earlier
    ones, so a path that runs along another (SGD's under Adam's) still shows."""
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINES[i % len(LINES)],
            "markersize": 4 if i == 0 else 5, "linewidth": 1.0, "alpha": 0.9,
            "markerfacecolor": None if i == 0 else "none", "zorder": 3 + count - i}


def gradient_flow(steps: Sequence[int], grad_norms: Mapping[str, Sequence[float]],
                  ratios: Mapping[str, Sequence[float]] | None = None,
                  labels: Mapping[str, str] | None = None) -> object:
    """Per-layer gradient norm at each step (and the update/weight ratio when given), log scale;
    labels: what the legend calls each layer ('0 (Linear)' for Sequential's layer 0)."""
    fig, axes = _figure(2 if ratios else 1)
    for ax, data, ylabel in zip(axes, (grad_norms, ratios or {}),
                                ("gradient norm ‖∂L/∂W‖", "update / weight ‖ΔW‖/‖W‖")):
        positive = False
        for layer, values in data.items():
            ys = [v if math.isfinite(v) and v > 0 else math.nan for v in values]
            positive |= any(not math.isnan(v) for v in ys)
            (line,) = ax.plot(list(steps), ys, label=(labels or {}).get(layer, layer),
                              linewidth=1.2)
            line.set_gid(f"layer-{layer}" if ax is axes[0] else f"ratio-{layer}")
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_title("gradient flow per layer")
    if ratios:
        axes[1].set_title("update size relative to the weights")
    return fig
