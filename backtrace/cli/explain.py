"""`backtrace explain`: a formula forward and backward, step by step."""
from __future__ import annotations

import contextlib
import os
import sys
import textwrap

import click

from ..crosscheck import CHECKS, ENGINES
from ..ops import CONSTANTS, FUNCTIONS, INFIX_OPS
from ..parser import Limits
from .options import (dot_option, file_option, format_option, output_option, parse_values,
                      print_view, read_formula, seed_option, steps_option, write_outputs)

_LANGUAGE = (
    "\b\nFormula language:\n"
    "  statements:  name = expression, separated by ';' or new lines; the last is the output\n"
    f"  operators:   {' '.join(INFIX_OPS)} and unary -, parentheses; ** is right-associative\n"
    + "".join(f"  {head:12} {line}\n" for head, line in zip(
        ("functions:", ""), textwrap.wrap(" ".join(sorted(FUNCTIONS)), 64)))
    + f"  constants:   {' '.join(CONSTANTS)} (a name you assign hides one: e = c - d)\n"
    "  every other name is an input: give it a value as --x -2, --x=-2 or x=-2\n"
    "  tensors: --x \"[1.4, 2.7, 1.9]\", --W \"[[1, 2], [3, 4]]\", --W \"randn(3, 4)\" (--seed);\n"
    "           a @ b, broadcasting + - * / **, sum(a) and mean(a), or along an axis: mean(a, 0)\n"
    "\b\nExamples:\n"
    '  backtrace explain "f=(x+y)*z" --x -2 --y 5 --z -4\n'
    '  backtrace explain "q = x + y; f = q * z" x=-2 y=5 z=-4 --format markdown\n'
    '  backtrace explain "1/(1+exp(-(w0*x0+w1*x1+w2)))" --w0 2 --x0 -1 --w1 -3 --x1 -2 --w2 -3\n'
    '  backtrace explain "h = relu(x @ W1 + b1); L = cross_entropy(h @ W2 + b2, y)" \\\n'
    '      --x "[1.4, 2.7, 1.9]" --W1 "randn(3, 4)" --b1 "zeros(4)" --W2 "randn(4, 3)" \\\n'
    '      --b2 "zeros(3)" --y 0\n'
    '  backtrace explain -f network.txt x=[1,2] ...   (the formula from a file; -f - reads stdin)\n'
    "\b\nA variable named like an option (format, step, seed, ...) takes the name=value form."
)


@click.command(epilog=_LANGUAGE,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("formula", required=False)
@click.argument("values", nargs=-1, type=click.UNPROCESSED)
@file_option
@seed_option
@format_option
@click.option("--step", is_flag=True,
              help="Reveal the backward pass one step at a time: any key shows the next step, "
                   "q quits. Ignored when stdin is not a terminal.")
@output_option
@steps_option
@dot_option
@click.option("--max-nodes", type=click.IntRange(1), default=Limits.max_nodes, show_default=True,
              help="Refuse formulas with more nodes than this.")
@click.option("--engine", type=click.Choice(ENGINES), default="both", show_default=True,
              help="reference: backtrace's exact pure-Python engine; torch: the same formula on "
                   "PyTorch autograd in float64; both: run both and compare them node by node.")
@click.option("--check", type=click.Choice(CHECKS), default=None,
              help="numeric: also check every gradient against central finite differences.")
def explain(formula: str | None, values: tuple[str, ...], formula_file: str | None, seed: int,
            fmt: str | None, step: bool, outputs: tuple[str, ...], steps_dir: str | None,
            dot: str | None, max_nodes: int, engine: str = "both", check: str | None = None) -> None:
    """Run FORMULA forward and backward and show every number of the chain rule.

    Prints the forward values, then each backward step in the order autograd runs it
    (upstream gradient × local derivative = contribution), then ∂f/∂x for each input
    with its derivation along every path."""
    from ..crosscheck import crosscheck
    from ..render.console import console, is_terminal

    formula, values = read_formula(formula, formula_file, values)
    result = crosscheck(formula, parse_values(values, seed), engine, check,
                        Limits(max_nodes=max_nodes))
    write_outputs(result.trace, outputs, steps_dir, dot=dot)
    fmt = fmt or ("table" if is_terminal() else "plain")
    if step and sys.stdin.isatty() and fmt in ("table", "plain"):
        if not _step_through(result.trace, fmt, console()):
            return  # the user quit: nothing more
    else:
        print_view(result.trace, fmt)
    if fmt in ("table", "plain", "markdown"):  # other formats are data: the verdicts are in json
        _print_check(result, fmt)


QUIT = ("q", "Q", "\x03", "\x04", "\x1b")  # q, Ctrl-C, Ctrl-D, Escape


def _step_through(trace, fmt: str, out) -> bool:
    """Redraw the view with one more backward step per key press (no Enter needed); gradients
    appear only once computed. Returns False when the user quit (q, Escape, Ctrl-C or Ctrl-D)."""
    from ..render.terminal import ExplainView

    total = len(trace.steps)
    with _keys() as read_key:
        for upto in range(total):
            out.clear()
            out.print(ExplainView(trace, fmt, upto))
            out.print(f"step {upto} of {total}: any key for step {upto + 1}, q to quit ", end="",
                      highlight=False, markup=False)
            key = read_key()
            out.print()
            if key in QUIT:
                return False
    out.clear()
    out.print(ExplainView(trace, fmt))  # the whole pass, with the chain rule along every path
    return True


@contextlib.contextmanager
def _keys():
    """A reader of single key presses: the terminal in cbreak mode for the whole step-through, so
    a key pressed as soon as the prompt shows is read at once, without Enter."""
    try:
        import termios
        import tty
    except ImportError:  # not a POSIX terminal
        yield click.getchar
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield lambda: os.read(fd, 1).decode(errors="replace")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _print_check(result, fmt: str) -> None:
    """The torch section, then one verdict line each, never wrapped (they are meant to be grepped)."""
    from ..render.torch_table import EngineCheck
    from ..render.console import console

    out = console()
    if result.torch is not None and result.reference is not None:
        check = EngineCheck(result.reference, result.torch, result.verdicts, fmt)
        if fmt == "markdown":  # as text: a terminal's width must not cut a Markdown row
            from ..render import to_text
            from ..render.console import PIPE_WIDTH

            click.echo(to_text(check, width=PIPE_WIDTH))
        else:
            out.print(check)
    for verdict in result.verdicts:
        colour = "green" if verdict.agree else "red"
        click.echo(click.style(verdict.line(), fg=colour, bold=True) if out.is_terminal
                   else verdict.line())
