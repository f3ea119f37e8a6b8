"""How a Trace shows itself outside the command line: `t.to_graphviz()` and Jupyter's picture.

Importing this module installs it as `Trace.display` (backtrace/__init__.py imports it), so the
Trace type itself never imports a renderer."""
from __future__ import annotations

from typing import Any

from ..traces import Trace


class Display:
    """What Trace's display methods hand over to."""

    def to_graphviz(self, trace: Trace, mode: str = "backward", step: int | None = None,
                    **options: Any):
        """A graphviz.Digraph of the trace as drawn (at replay step `step`), whose
        .render()/.pipe() use backtrace's Graphviz; options as backtrace.render.options.Options."""
        from .dot import to_graphviz
        from .draw import prepare
        from .fit import direction_of
        from .layout import use
        from .options import Options

        o = Options.of(mode=mode, **options)
        use(o.dot)  # graphviz.Digraph.render() finds the embedded engine even in a fresh kernel
        drawn = prepare(trace, o)
        return to_graphviz(drawn, o.mode, step=step, colour=o.colour, folding=False,
                           direction=direction_of(drawn, o))

    def text(self, trace: Trace) -> str:
        """The trace's tables as plain text, as wide as the terminal (`print(trace)`)."""
        import shutil

        from . import to_text
        from .formats import view

        return to_text(view(trace, "plain"), width=shutil.get_terminal_size((100, 24)).columns)

    def svg(self, trace: Trace) -> str:
        """The trace's picture as SVG text."""
        from .draw import draw

        return draw(trace, "svg").decode()


Trace.display = Display()
