"""A default picture that fits a screen: the direction (left to right, or top to bottom) and, for
torch traces with modules, the folding depth, chosen by laying the candidates out for real.

A picture fits when, shown at the width of a 1,920-pixel screen, its smallest text (10 pt) stays at
8 pt or more, and it is at most three times as wide as tall or as tall as wide."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from ..fold import DEFAULT_BUDGET, Folding, fold_if_needed, needs_folding
from ..traces import Trace
from .layout import run_dot
from .options import Options

SCREEN_PX = 1920
SMALLEST_PT, READABLE_PT = 10.0, 8.0  # our smallest font; the least it may shrink to
SCREEN_PT = SCREEN_PX * 0.75 * SMALLEST_PT / READABLE_PT  # 1 pt = 4/3 px: 1,800 pt
MAX_ASPECT = 3.0
DIRECTIONS = ("LR", "TB")
_SIZE = re.compile(rb'<svg width="([\d.]+)pt" height="([\d.]+)pt"')
# The SVGs laid out while choosing (source, binary) -> SVG, kept until the next choice, so the
# picture chosen is not laid out a second time when it is drawn.
_LAID_OUT: dict[tuple[str, str | None], bytes] = {}


def fits(width: float, height: float) -> bool:
    """True when a picture of this size (points) reads on a 1,920-pixel screen."""
    return width <= SCREEN_PT and 1 / MAX_ASPECT <= width / max(height, 1.0) <= MAX_ASPECT


def misfit(width: float, height: float) -> float:
    """How far a picture is from fitting: 1 when it fits, more the worse (width and shape)."""
    aspect = max(width / max(height, 1.0), height / max(width, 1.0))
    return max(1.0, width / SCREEN_PT) * max(1.0, aspect / MAX_ASPECT)


def direction_of(drawn: Trace, opts: Options) -> str:
    """The direction a prepared trace is drawn in: the option, or what `choose` found."""
    if opts.direction != "auto":
        return opts.direction
    return drawn.meta.get("layout", {}).get("direction", DIRECTIONS[0])


def dot_source(drawn: Trace, opts: Options, step: int | None = None) -> str:
    """DOT source of a prepared trace (at a replay step, if given)."""
    from .dot import to_graphviz

    return to_graphviz(drawn, opts.mode, step=step, colour=opts.colour, folding=False,
                       direction=direction_of(drawn, opts)).source


def measure(drawn: Trace, opts: Options, direction: str) -> tuple[float, float]:
    """Width and height in points of the picture laid out in `direction`."""
    source = dot_source(drawn, replace(opts, direction=direction))
    svg = _LAID_OUT[(source, opts.dot)] = run_dot(source, "svg", opts.dot, opts.left(), opts.timeout)
    found = _SIZE.search(svg[:2000])
    return (float(found.group(1)), float(found.group(2))) if found else (0.0, 0.0)


def directions(drawn: Trace) -> tuple[str, ...]:
    """The order to try: the board's left to right for formulas, top to bottom for models."""
    return DIRECTIONS if drawn.scalar else DIRECTIONS[::-1]


def choose(trace: Trace, opts: Options) -> Trace:
    """The trace as drawn by default: folded (if it has modules and no --depth) and laid out in the
    first direction, at the deepest folding, that fits a screen; else the least bad of them."""
    _LAID_OUT.clear()
    budget = DEFAULT_BUDGET if opts.budget is None else opts.budget
    if opts.depth is None and needs_folding(trace, None, opts.hide, budget) \
            and any(n.module for n in trace.nodes):
        candidates: Iterable[Trace] = Folding(trace, opts.hide, budget).choices()
    else:
        candidates = [fold_if_needed(trace, opts.depth, opts.hide, opts.budget)]
        if opts.direction != "auto":  # nothing to choose
            return candidates[0]
    best: tuple[float, Trace, str] | None = None
    for drawn in candidates:
        for direction in (directions(drawn) if opts.direction == "auto" else (opts.direction,)):
            width, height = measure(drawn, opts, direction)
            bad = misfit(width, height)
            if best is None or bad < best[0]:
                best = (bad, drawn, direction)
            if bad <= 1.0:
                return _with_direction(drawn, direction)
    return _with_direction(best[1], best[2])


def laid_out(source: str, opts: Options) -> bytes | None:
    """The SVG of `source` if the last choice laid it out already."""
    return _LAID_OUT.get((source, opts.dot))


def _with_direction(drawn: Trace, direction: str) -> Trace:
    meta = {**drawn.meta, "layout": {"direction": direction}}
    return Trace(drawn.engine, drawn.output, drawn.nodes, drawn.steps, meta)
