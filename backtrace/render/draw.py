"""The drawing front door: a Trace as DOT, SVG, PNG or PDF, folded first when it needs it."""
from __future__ import annotations

from typing import Any

from ..fold import fold_if_needed
from ..traces import Trace
from .layout import render_pdf, run_dot
from .options import Options


def prepare(trace: Trace, opts: Options) -> Trace:
    """The trace as it will be drawn: folded when it has modules, hidden kinds or too many nodes."""
    return fold_if_needed(trace, opts.depth, opts.hide, opts.budget)


def notes(drawn: Trace) -> list[str]:
    """What folding did to a prepared trace, one line each, for the user."""
    return list(drawn.meta.get("fold", {}).get("notes", ()))


def dot_source(drawn: Trace, opts: Options, step: int | None = None) -> str:
    """DOT source of an already prepared trace (at a replay step, if given)."""
    from .dot import to_graphviz

    return to_graphviz(drawn, opts.mode, step=step, colour=opts.colour, folding=False).source


def draw(trace: Trace, fmt: str, opts: Options | None = None, **options: Any) -> bytes | str:
    """The trace drawn as dot (text), svg, png or pdf (bytes); options as `Options`' fields."""
    o = Options.of(opts, **options)
    return draw_prepared(prepare(trace, o), fmt, o)


def draw_prepared(drawn: Trace, fmt: str, opts: Options) -> bytes | str:
    """An already prepared trace (see `prepare`) drawn as dot, svg, png or pdf."""
    source = dot_source(drawn, opts)
    if fmt == "dot":
        return source
    if fmt == "pdf":
        return render_pdf(source, opts.dot, opts.timeout)
    return run_dot(source, fmt, opts.dot, opts.timeout)
