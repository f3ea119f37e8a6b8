"""`backtrace render`: draw a saved trace as SVG, PNG, PDF, DOT or a replay page."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import BacktraceError, UsageError

_HELP = (
    "\b\nExamples:\n"
    '  backtrace explain "f=(x+y)*z" --x -2 --y 5 --z -4 -o trace.json\n'
    "  backtrace render trace.json -o graph.svg -o graph.png\n"
    "  backtrace render trace.json -o replay.html --steps steps/\n"
    "  backtrace render model.json -o model.svg --depth 2 --hide accumulate,constants\n"
    "\b\nThe layout engine is the embedded graphviz-pure; --dot PATH or BACKTRACE_DOT=PATH picks a\n"
    "system Graphviz instead. PDF uses a system dot when there is one, else CairoSVG."
)


def dot_option(f):
    """--dot PATH: lay out with this Graphviz binary instead of the embedded one."""
    return click.option("--dot", "dot", metavar="PATH", default=None,
                        help="Graphviz binary to lay out with (default: the embedded graphviz-pure, "
                             "or $BACKTRACE_DOT).")(f)


def steps_option(f):
    """--steps DIR: one SVG per backward step."""
    return click.option("--steps", "steps_dir", metavar="DIR", default=None,
                        help="Write one SVG per backward step into DIR (step-000.svg is before "
                             "the backward pass).")(f)


def parse_hide(text: str | None) -> tuple[str, ...]:
    """'accumulate, constants' -> ('accumulate', 'constants'), checked against the HIDE choices."""
    from ..render.fold import HIDE

    names = tuple(h.strip() for h in (text or "").split(",") if h.strip())
    unknown = [h for h in names if h not in HIDE]
    if unknown:
        raise UsageError(f"--hide {','.join(unknown)}: choose from {', '.join(HIDE)}")
    return names


def draw(trace, outputs: tuple[str, ...], steps_dir: str | None, **opts) -> list[str]:
    """Export to every -o file and the step folder with these drawing options; returns notes."""
    from ..export import export
    from ..render.graphviz_run import options
    from ..render.replay import write_steps

    with options(**{k: v for k, v in opts.items() if v is not None}) as notes:
        for path in outputs:
            export(trace, path)
        if steps_dir:
            write_steps(trace, steps_dir)
    return notes


@click.command(epilog=_HELP)
@click.argument("trace_file", metavar="TRACE.json", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "outputs", multiple=True, metavar="FILE",
              help="Write the picture to FILE; its suffix picks the format (.svg .png .pdf .dot "
                   ".html .json). Repeatable. Without -o or --steps, DOT goes to stdout.")
@steps_option
@click.option("--depth", type=click.IntRange(1), default=None,
              help="Fold each module N levels deep, with all it holds, into one box (default: "
                   "the deepest that draws at most ~150 boxes).")
@click.option("--hide", "hide", metavar="KINDS", default=None,
              help="Leave out node kinds, comma-separated: accumulate (the AccumulateGrad "
                   "leaves: parameters and inputs that require grad), constants.")
@click.option("--budget", type=click.IntRange(1), default=None,
              help="Most boxes to hand to dot; past it the graph is folded further (default 1000).")
@click.option("--mode", type=click.Choice(["backward", "forward"]), default="backward",
              show_default=True, help="forward: values only; backward: gradients too.")
@click.option("--colour", "--color", "colour", type=click.Choice(["grad", "kind"]), default=None,
              help="Fill nodes by gradient norm (log scale) or by kind (default: grad for tensors).")
@dot_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
              help="Give up on a layout after this many seconds (default 60).")
def render(trace_file: str, outputs: tuple[str, ...], steps_dir: str | None, depth: int | None,
           hide: str | None, budget: int | None, mode: str, colour: str | None, dot: str | None,
           timeout: float | None) -> None:
    """Draw the trace in TRACE.json (written by `explain -o trace.json`) as a graph."""
    from ..render.graphviz_run import Options, to_dot
    from ..traces import Trace

    try:
        text = Path(trace_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BacktraceError(f"cannot read {trace_file}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    trace = Trace.from_json(text)
    opts = dict(depth=depth, hide=parse_hide(hide), budget=budget, mode=mode, colour=colour,
                dot=dot, timeout=timeout)
    if not outputs and not steps_dir:
        kept = {k: v for k, v in opts.items() if v is not None}
        click.echo(to_dot(trace, opts=Options(**kept)), nl=False)
        return
    for note in draw(trace, outputs, steps_dir, **opts):
        click.echo(f"note: {note}", err=True)
