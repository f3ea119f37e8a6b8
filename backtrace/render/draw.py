"""The drawing front door: a Trace as DOT, SVG, PNG or PDF, folded and laid out to fit a screen."""
from __future__ import annotations

from typing import Any

from ..traces import Trace
from .fit import choose, dot_source, laid_out
from .layout import render_pdf, run_dot
from .options import Options

__all__ = ["dot_source", "draw", "draw_prepared", "notes", "prepare"]


def prepare(trace: Trace, opts: Options) -> Trace:
    """The trace as it will be drawn: folded when it has modules, hidden kinds or too many nodes,
    with the folding depth and direction that fit a screen (see backtrace.render.fit)."""
    return choose(trace, opts)


def notes(drawn: Trace) -> list[str]:
    """What folding did to a prepared trace, one line each, for the user."""
    return list(drawn.meta.get("fold", {}).get("notes", ()))


def draw(trace: Trace, fmt: str, opts: Options | None = None, **options: Any) -> bytes | str:
    """The trace drawn as dot (text), svg, png or pdf (bytes); options as `Options`' fields."""
    o = Options.of(opts, **options).start()
    return draw_prepared(prepare(trace, o), fmt, o)


def draw_prepared(drawn: Trace, fmt: str, opts: Options) -> bytes | str:
    """An already prepared trace (see `prepare`) drawn as dot, svg, png or pdf."""
    source = dot_source(drawn, opts)
    opts.left()  # folding and choosing a layout count against the timeout too
    if fmt == "dot":
        return source
    if fmt == "pdf":
        return render_pdf(source, opts.dot, opts.left(), opts.timeout)
    return (fmt == "svg" and laid_out(source, opts)) or run_dot(source, fmt, opts.dot, opts.left(), opts.timeout)
