"""Backward replay: one picture per backward step (active node highlighted, gradients filled in as they
are computed, pending ones greyed), as SVG files (--steps); the HTML replay is a mode of the explorer
page, laid out once in the browser."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LimitError
from ..files import write_atomic
from ..traces import Trace
from .draw import dot_source, prepare
from .layout import run_dot
from .options import Options

MAX_STEPS = 500  # a replay is for reading step by step; past this, fold or use --hide


def frames(trace: Trace, opts: Options | None = None) -> list[bytes]:
    """SVG of the graph before the backward pass (frame 0) and after each step (1 ... N)."""
    o = opts or Options()
    return _frames(prepare(trace, o), o)


def _frames(drawn: Trace, o: Options) -> list[bytes]:
    count = len(drawn.steps)
    if count > MAX_STEPS:
        raise LimitError(f"the backward pass has {count:,} steps, more than a replay shows "
                         f"({MAX_STEPS}): fold the graph (--depth) or hide nodes (--hide)")
    sources = [dot_source(drawn, o, step=k) for k in range(count + 1)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # dot runs in parallel
        return list(pool.map(lambda s: run_dot(s, "svg", o.dot, o.timeout), sources))


def write_steps(trace: Trace, directory: str | os.PathLike, opts: Options | None = None) -> list[Path]:
    """Write step-000.svg (before backward) ... step-NNN.svg into `directory`; returns the paths."""
    o = opts or Options()
    return write_prepared_steps(prepare(trace, o), directory, o)


def write_prepared_steps(drawn: Trace, directory: str | os.PathLike, opts: Options) -> list[Path]:
    """`write_steps` for an already prepared trace."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, svg in enumerate(_frames(drawn, opts)):
        path = folder / f"step-{k:03d}.svg"
        write_atomic(path, svg)
        paths.append(path)
    for old in set(folder.glob("step-[0-9][0-9][0-9].svg")) - set(paths):
        old.unlink()  # frames of an earlier, longer replay would read as part of this one
    return paths


def replay_html(trace: Trace, opts: Options | None = None) -> str:
    """One self-contained HTML page that opens replaying the backward pass: the explorer page
    (see backtrace.render.explorer) in its replay mode, with buttons and the arrow keys."""
    from .explorer import explorer_html

    return explorer_html(trace, opts, start="replay")
