"""`backtrace explain`: a formula forward and backward, step by step."""
from __future__ import annotations

import sys

import click

from ..ops import CONSTANTS, FUNCTIONS, INFIX_OPS
from ..parser import Limits
from ..render import FORMATS
from .options import parse_values
from .render_cmd import dot_option, draw, steps_option

_LANGUAGE = (
    "\b\nFormula language:\n"
    "  statements:  name = expression, separated by ';' or new lines; the last is the output\n"
    f"  operators:   {' '.join(INFIX_OPS)} and unary -, parentheses; ** is right-associative\n"
    f"  functions:   {' '.join(sorted(FUNCTIONS))}\n"
    f"  constants:   {' '.join(CONSTANTS)}\n"
    "  every other name is an input: give it a value as --x -2, --x=-2 or x=-2\n"
    "\b\nExamples:\n"
    '  backtrace explain "f=(x+y)*z" --x -2 --y 5 --z -4\n'
    '  backtrace explain "q = x + y; f = q * z" x=-2 y=5 z=-4 --format markdown\n'
    '  backtrace explain "1/(1+exp(-(w0*x0+w1*x1+w2)))" --w0 2 --x0 -1 --w1 -3 --x1 -2 --w2 -3\n'
    "\b\nA variable named like an option (format, step, ...) takes the name=value form."
)


@click.command(epilog=_LANGUAGE,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("formula")
@click.argument("values", nargs=-1, type=click.UNPROCESSED)
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default=None,
              help="How to print: " + "; ".join(f"{k}: {h}" for k, (h, _) in FORMATS.items()) + ".")
@click.option("--step", is_flag=True,
              help="Reveal the backward pass one step at a time (Enter: next). Ignored when "
                   "stdin is not a terminal.")
@click.option("-o", "--output", "outputs", multiple=True, metavar="FILE",
              help="Also write the trace to FILE; its suffix picks the format (.json, and the "
                   "graph as .svg .png .pdf .dot, the backward replay as .html). Repeatable.")
@steps_option
@dot_option
@click.option("--max-nodes", type=click.IntRange(1), default=Limits.max_nodes, show_default=True,
              help="Refuse formulas with more nodes than this.")
@click.option("--engine", type=click.Choice(["reference", "torch", "both"]), default="both",
              show_default=True,
              help="reference: backtrace's exact pure-Python engine; torch: the same formula on "
                   "PyTorch autograd in float64; both: run both and compare them node by node.")
@click.option("--check", type=click.Choice(["numeric"]), default=None,
              help="numeric: also check every gradient against central finite differences.")
def explain(formula: str, values: tuple[str, ...], fmt: str | None, step: bool,
            outputs: tuple[str, ...], steps_dir: str | None, dot: str | None, max_nodes: int,
            engine: str = "both", check: str | None = None) -> None:
    """Run FORMULA forward and backward and show every number of the chain rule.

    Prints the forward values, then each backward step in the order autograd runs it
    (upstream gradient × local derivative = contribution), then ∂f/∂x for each input
    with its derivation along every path."""
    from ..render import render
    from .output import console, is_terminal

    trace, checked = _run_engines(formula, parse_values(values), max_nodes, engine, check)
    for note in draw(trace, outputs, steps_dir, dot=dot):
        click.echo(f"note: {note}", err=True)
    fmt = fmt or ("table" if is_terminal() else "plain")
    out = console()
    if step and sys.stdin.isatty() and fmt in ("table", "plain"):
        _step_through(trace, fmt, out)
        _print_check(checked(fmt), out)
        return
    shown = render(trace, fmt)
    if isinstance(shown, str):
        click.echo(shown)
    else:
        out.print(shown)
        _print_check(checked(fmt), out)


def _step_through(trace, fmt: str, out) -> None:
    """Redraw the view with one more backward step per Enter; 'q' stops."""
    from ..render.terminal import ExplainView

    for upto in range(len(trace.steps) + 1):
        out.clear()
        out.print(ExplainView(trace, fmt, upto))
        prompt = f"step {upto}/{len(trace.steps)}: Enter for the next step, q to quit "
        if input(prompt).strip().lower() == "q":
            return
    out.clear()
    out.print(ExplainView(trace, fmt))


def _run_engines(formula: str, values: dict[str, float], max_nodes: int, engine: str,
                 check: str | None):
    """The trace to show (reference first) and a function giving the cross-check view for a format.

    torch is imported only when the torch engine runs."""
    from ..compare import compare
    from ..engine import run
    from ..parser import parse

    graph = parse(formula, Limits(max_nodes=max_nodes))
    reference = run(graph, values) if engine in ("reference", "both") else None
    tor = None
    if engine in ("torch", "both"):
        from ..torch_engine import run as run_torch

        tor = run_torch(graph, values)
    trace = reference if reference is not None else tor
    verdicts = []
    if reference is not None and tor is not None:
        verdicts.append(compare(reference, tor, ("reference", "torch")))
    if check == "numeric":
        from ..numeric import numeric_check

        verdicts.append(numeric_check(graph, values, trace))

    if verdicts:  # in the trace itself, so --format json and every -o file.json carry them
        trace.meta["check"] = [v.to_dict() for v in verdicts]

    def checked(fmt: str):
        if fmt == "json" or not verdicts and (tor is None or trace is tor):
            return None
        from ..render.torch_table import EngineCheck

        return EngineCheck(reference, tor, verdicts, fmt)

    return trace, checked


def _print_check(view, out) -> None:
    """The torch section, then one verdict line each, never wrapped (they are meant to be grepped)."""
    if view is None:
        return
    if view.torch is not None and view.reference is not None:
        out.print(view)
    for verdict in view.verdicts:
        colour = "green" if verdict.agree else "red"
        click.echo(click.style(verdict.line(), fg=colour, bold=True) if out.is_terminal
                   else verdict.line())
