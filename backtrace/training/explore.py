"""The watch's layer × step heatmaps inside the HTML explorer: a Training tab beside the trace's
own panels (one `@panel` of render.explorer, drawn by assets/heatmap.js), the cells coloured as
in the terminal. `explore(w, path, trace)` writes the explorer page of a trace with it."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..render.explorer import panel
from ..traces import Trace
from .heatmap import COLOURS, LOG, _level, _number, _range, grid
from .records import METRICS, Watched

COLUMNS = 120  # cells per row at most: the panel is narrow
SHOWN = ("rms", "ratio", "zeros")


def training_data(w: Watched) -> dict[str, Any]:
    """The page's data of the Training tab: per metric, layers, column steps and coloured cells
    (a value, "nan" for NaN/inf, None where nothing was measured)."""
    maps = []
    for metric in SHOWN:
        layers, starts, cells = grid(w, metric, COLUMNS)
        log = metric in LOG
        lo, hi = _range(cells, log)
        maps.append({"metric": metric, "title": METRICS[metric], "log": log, "layers": layers,
                     "starts": starts, "last": w.summary_data.steps,
                     "low": _number(lo, log), "high": _number(hi, log),
                     "cells": [[_cell(v, log, lo, hi) for v in row] for row in cells]})
    return {"steps": w.step_count, "maps": maps}


def _cell(v: float | None, log: bool, lo: float, hi: float) -> dict[str, Any]:
    if v is None:
        return {"v": None, "c": None}
    if not math.isfinite(v):
        return {"v": "nan", "c": "#ff00ff"}
    if log and v <= 0:
        return {"v": 0.0, "c": "#787878"}
    r, g, b = COLOURS[_level(v, log, lo, hi)]
    return {"v": v, "c": f"#{r:02x}{g:02x}{b:02x}"}


@panel("training", "heatmap.js")
def _panel_data(trace: Trace, opts: Any) -> dict[str, Any] | None:
    """The Training tab's data, when the trace carries a watch's (see `explore`)."""
    return trace.meta.get("training")


def explore(w: Watched, path: str | os.PathLike, trace: Trace, **options: Any) -> Path:
    """Write the explorer page of `trace` (a trace of the watched model) with the watch's
    heatmaps in a Training tab; options as for backtrace.export."""
    from ..render.formats import export

    if not w.step_count:
        from ..errors import UsageError

        raise UsageError("no step recorded yet: nothing to show in the Training tab")
    meta = {**trace.meta, "training": training_data(w)}
    return export(Trace(trace.engine, trace.output, trace.nodes, trace.steps, meta), path,
                  **options)
