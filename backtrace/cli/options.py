"""What several commands parse the same way: the formula, input values, output files and formats,
drawing flags."""
from __future__ import annotations

import math
import random
import sys

import click

from ..errors import BacktraceError, MissingValueError, UsageError

TENSOR_HINT = 'or a tensor: "[1.4, 2.7, 1.9]", "[[1, 2], [3, 4]]", "randn(3, 4)"'


def parse_values(tokens: tuple[str, ...], seed: int = 0) -> dict[str, float | list]:
    """'--x -2', '--x=-2' and 'x=-2' -> {'x': -2.0}; '--x "[1.4, 2.7]"' -> {'x': [1.4, 2.7]};
    randn(3, 4) draws from one generator seeded by `seed`, in the order the values are given."""
    from ..literals import MAKERS, parse_literal

    rng = random.Random(seed)
    values: dict[str, float | list] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and "=" in tok:
            name, text = tok[2:].split("=", 1)
        elif tok.startswith("--") and len(tok) > 2:
            if i + 1 >= len(tokens):
                raise MissingValueError(f"{tok} needs a value, e.g. {tok} 1.5")
            name, text = tok[2:], tokens[i + 1]
            i += 1
        elif "=" in tok and not tok.startswith("-"):
            name, text = tok.split("=", 1)
        else:
            raise UsageError(f"unexpected argument {tok!r}: give values as --x -2 or x=-2 "
                             "(and quote the formula)")
        if name in values:
            raise UsageError(f"{name} is given twice")
        try:
            number = float(text)
        except ValueError:
            head = text.strip().split("(")[0].strip()
            if not (text.strip().startswith("[") or head in MAKERS):
                raise MissingValueError(f"value of {name} must be a number, got {text!r}"[:120]
                                        + f" ({TENSOR_HINT})") from None
            values[name] = parse_literal(text, name, rng)  # parsed as data, never evaluated
            i += 1
            continue
        if not math.isfinite(number):
            raise MissingValueError(f"value of {name} must be finite, got {text!r}")
        values[name] = number
        i += 1
    return values


def seed_option(f):
    """--seed N: the generator behind randn(...) values."""
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seed of the random numbers of randn(...) values.")(f)


def file_option(f):
    """-f FILE / -f -: the formula from a file or standard input."""
    return click.option("-f", "--file", "formula_file", metavar="FILE", default=None,
                        help="Read the formula from FILE ('-': standard input) instead of the "
                             "command line.")(f)


def read_formula(formula: str | None, formula_file: str | None,
                 values: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The formula text and the value tokens: with -f, what stood in FORMULA's place is a value."""
    if formula_file is None:
        if formula is None:
            raise UsageError("give a FORMULA, or -f FILE to read it from a file")
        return formula, values
    if formula is not None:
        values = (formula, *values)
    try:
        if formula_file == "-":
            text = sys.stdin.read()
        else:
            with open(formula_file, encoding="utf-8") as fh:
                text = fh.read(10_000_001)
    except (OSError, UnicodeDecodeError) as exc:
        raise BacktraceError(f"cannot read the formula from {formula_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    return text, values


# ---------------------------------------------------------------- output options, from the registry

def format_option(f):
    """--format NAME: how to print, one of the printable formats of the registry."""
    from ..render.formats import FORMATS, printable

    names = printable()
    return click.option(
        "--format", "fmt", type=click.Choice(names), default=None,
        help="How to print: " + "; ".join(f"{n}: {FORMATS[n].help}" for n in names) + ".")(f)


def output_option(f):
    """-o FILE (repeatable): the file suffix picks the format."""
    from ..render.formats import FORMATS

    kinds = "; ".join(f"{' '.join('.' + s for s in fmt.suffixes)} {fmt.name}"
                      for fmt in FORMATS.values() if fmt.suffixes)
    return click.option("-o", "--output", "outputs", multiple=True, metavar="FILE",
                        help=f"Also write to FILE; its suffix picks the format ({kinds}). "
                             "Repeatable; every file is written or none.")(f)


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
    from ..fold import HIDE

    names = tuple(h.strip() for h in (text or "").split(",") if h.strip())
    unknown = [h for h in names if h not in HIDE]
    if unknown:
        raise UsageError(f"--hide {','.join(unknown)}: choose from {', '.join(HIDE)}")
    return names


def write_outputs(trace, outputs: tuple[str, ...], steps_dir: str | None, **options) -> None:
    """Every -o file and the --steps folder, then what folding did as notes on stderr."""
    if not outputs and not steps_dir:
        return
    from ..render.formats import export_all

    for note in export_all(trace, outputs, steps=steps_dir, **options):
        click.echo(f"note: {note}", err=True)


def view_of(trace, fmt: str | None, **options):
    """The trace in format `fmt`, ready for `show` (table on a terminal, plain elsewhere)."""
    from ..render.console import is_terminal
    from ..render.formats import view

    return view(trace, fmt or ("table" if is_terminal() else "plain"), **options)


def show(shown) -> None:
    """Print what a format made: text as it is, renderables on the console."""
    from ..render.console import console

    if isinstance(shown, str):
        click.echo(shown, nl=not shown.endswith("\n"))
    else:
        console().print(shown)


def print_view(trace, fmt: str | None, **options) -> None:
    """The trace in format `fmt` on stdout."""
    show(view_of(trace, fmt, **options))


def drawing_options(f):
    """--depth --hide --budget --mode --colour --direction --dot --timeout: how a picture of a
    trace is drawn (each also a keyword of backtrace.export and Trace.to_graphviz)."""
    for option in reversed((
        click.option("--depth", type=click.IntRange(1), default=None,
                     help="Fold each module N levels deep, with all it holds, into one box "
                          "(default: the deepest that draws at most ~150 boxes)."),
        click.option("--hide", "hide", metavar="KINDS", default=None, callback=_hide_callback,
                     help="Leave out node kinds, comma-separated: accumulate (the AccumulateGrad "
                          "leaves: parameters and inputs that require grad), constants."),
        click.option("--budget", type=click.IntRange(1), default=None,
                     help="Most boxes to hand to dot; past it the graph is folded further "
                          "(default 1000)."),
        click.option("--mode", type=click.Choice(["backward", "forward"]), default="backward",
                     show_default=True, help="forward: values only; backward: gradients too."),
        click.option("--colour", "--color", "colour", type=click.Choice(["grad", "kind"]),
                     default=None, help="Fill nodes by gradient norm (one colour per decade, "
                                        "the same in every picture) or by kind (default: grad "
                                        "for tensors)."),
        click.option("--direction", type=click.Choice(["auto", "LR", "TB"]), default="auto",
                     show_default=True, help="LR: left to right; TB: top to bottom; auto: the "
                                             "one (and the folding depth) that fits a screen."),
        dot_option,
        click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
                     help="Give up on a picture after this many seconds in all: folding and "
                          "every layout it tries (default 60)."),
    )):
        f = option(f)
    return f


def _hide_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    return parse_hide(value)
