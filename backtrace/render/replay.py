"""Backward replay: one picture per backward step (active node highlighted, gradients filled in as they
are computed, pending ones greyed), as SVG files (--steps); the HTML replay is a mode of the explorer
page, laid out once in the browser.

Every frame has the same layout: the cells whose text changes get the width of their widest text
(backtrace.render.frames), so dot places each node where it placed it in every other frame."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LimitError
from ..files import make_folder, write_atomic
from ..traces import Trace
from .draw import prepare
from .fit import direction_of
from .layout import run_dot
from .options import Options

MAX_STEPS = 500  # a replay is for reading step by step; past this, fold or use --hide


def frames(trace: Trace, opts: Options | None = None) -> list[bytes]:
    """SVG of the graph before the backward pass (frame 0) and after each step (1 ... N)."""
    o = (opts or Options()).start()
    return _frames(prepare(trace, o), o)


def _frames(drawn: Trace, o: Options, caption: bool = True) -> list[bytes]:
    from .dot import to_graphviz
    from .frames import replay_sizes

    count = len(drawn.steps)
    if count > MAX_STEPS:
        raise LimitError(f"the backward pass has {count:,} steps, more than a replay shows "
                         f"({MAX_STEPS}): fold the graph (--depth) or hide nodes (--hide)")
    sizes = replay_sizes(drawn)  # once: every frame's changing cells at their widest
    sources = [to_graphviz(drawn, o.mode, step=k, colour=o.colour, folding=False, sizes=sizes,
                           direction=direction_of(drawn, o), caption=caption).source
               for k in range(count + 1)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # dot runs in parallel
        return list(pool.map(lambda s: run_dot(s, "svg", o.dot, o.left(), o.timeout), sources))


def write_steps(trace: Trace, directory: str | os.PathLike, opts: Options | None = None) -> list[Path]:
    """Write step-000.svg (before backward) ... step-NNN.svg into `directory`; returns the paths."""
    o = (opts or Options()).start()
    return write_prepared_steps(prepare(trace, o), directory, o)


def write_prepared_steps(drawn: Trace, directory: str | os.PathLike, opts: Options) -> list[Path]:
    """`write_steps` for an already prepared trace."""
    folder = make_folder(directory)
    paths = []
    for k, svg in enumerate(_frames(drawn, opts)):
        path = folder / f"step-{k:03d}.svg"
        write_atomic(path, svg)
        paths.append(path)
    for old in set(folder.glob("step-[0-9][0-9][0-9].svg")) - set(paths):
        old.unlink(missing_ok=True)  # frames of an earlier, longer replay would read as ours
    return paths


def replay_html(trace: Trace, opts: Options | None = None) -> str:
    """One self-contained HTML page that opens replaying the backward pass: the explorer page
    (see backtrace.render.explorer) in its replay mode, with buttons and the arrow keys."""
    from .explorer import explorer_html

    return explorer_html(trace, opts, start="replay")
