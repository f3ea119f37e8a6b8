"""`backtrace render`: draw a saved trace as SVG, PNG, PDF, DOT or the interactive HTML explorer."""
from __future__ import annotations

import click

from .options import (drawing_options, format_option, output_option, print_view, steps_option,
                      write_outputs)

_HELP = (
    "\b\nExamples:\n"
    '  backtrace explain "f=(x+y)*z" --x -2 --y 5 --z -4 -o trace.json\n'
    "  backtrace render trace.json -o graph.svg -o graph.png\n"
    "  backtrace render trace.json -o page.html    # explore: fold, search, inspect, replay\n"
    "  backtrace render trace.json --steps steps/  # one SVG per backward step\n"
    "  backtrace render model.json -o model.svg --depth 2 --hide accumulate,constants\n"
    "\b\nThe layout engine is the embedded graphviz-pure; --dot PATH or BACKTRACE_DOT=PATH picks a\n"
    "system Graphviz instead. PDF uses a system dot when there is one, else CairoSVG."
)


@click.command(epilog=_HELP)
@click.argument("trace_file", metavar="TRACE.json", type=click.Path(dir_okay=False))
@output_option
@steps_option
@format_option
@drawing_options
def render(trace_file: str, outputs: tuple[str, ...], steps_dir: str | None, fmt: str | None,
           **drawing) -> None:
    """Draw the trace in TRACE.json (written by `explain -o trace.json`) as a graph.

    Without -o or --steps it prints the graph as DOT (or the tables with --format)."""
    from ..traces import load

    trace = load(trace_file)
    write_outputs(trace, outputs, steps_dir, **drawing)
    if fmt or not (outputs or steps_dir):
        print_view(trace, fmt or "dot", **drawing)
