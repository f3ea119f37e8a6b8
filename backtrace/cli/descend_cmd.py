"""`backtrace descend`: gradient descent on a formula, one visible update at a time."""
from __future__ import annotations

import math

import click

from ..errors import UsageError
from ..training.optimizers import OPTIMIZERS, SCHEDULES
from .options import file_option, parse_values, read_formula, seed_option

_EPILOG = (
    "\b\nEvery input given a start value is optimized; --fix NAME keeps it constant, --fix NAME=V\n"
    "gives it a value too. Optimizers:\n"
    + "".join(f"  {k:9} {h}\n" for k, (h, _) in OPTIMIZERS.items())
    + "\b\nSchedules:\n"
    + "".join(f"  {k:9} {h}\n" for k, (h, _) in SCHEDULES.items() if k != "constant")
    + "\b\nExamples:\n"
    '  backtrace descend "L=(w-3)**2" --w 0 --lr 0.1\n'
    '  backtrace descend "L=(w-3)**2" --w 0 --steps 200 --compare-lr 0.0001,0.01,10\n'
    '  backtrace descend "L=x**4 - 3*x**2 + x" --x 0 --lr 0.01 --starts -2,0,3 --plot minima.svg\n'
    '  backtrace descend "L=(x-1)**2 + 10*(y+x)**2" --x -2 --y 2 --compare sgd,adam --plot path.png\n'
    '  backtrace descend "L=(w*x-y)**2" --w 0 --fix x=2 --fix y=6\n'
    '  backtrace descend "L = mean((x @ W + b - t)**2)" --x "[[1, 2], [3, 4], [5, 6]]" \\\n'
    '      --t "[[1, 0], [0, 1], [1, 1]]" --W "randn(2, 2)" --b "randn(2)" --fix x --fix t --lr 0.01\n'
    "\b\nTensors (--W \"[[1, 2], [3, 4]]\", \"randn(2, 2)\") are optimized element by element, each\n"
    "element a row of the step table (W[0,1]); a tensor of more than 6 elements is summarised.\n"
    "\b\nVerdicts: converged (the loss flattened out), too slow (still falling), diverged (the loss\n"
    "rose above its start or overflowed; the step where that happened is named)."
)


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or not all(map(math.isfinite, values)):
        raise UsageError(f"{what} must be comma-separated finite numbers, got {text!r}")
    return values


@click.command(epilog=_EPILOG,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("formula", required=False)
@click.argument("values", nargs=-1, type=click.UNPROCESSED)
@file_option
@seed_option
@click.option("--lr", type=float, default=0.1, show_default=True, help="Learning rate α.")
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="Number of updates.")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="sgd", show_default=True)
@click.option("--schedule", type=click.Choice([k for k in SCHEDULES if k != "constant"]),
              default=None, help="Learning-rate schedule (default: constant).")
@click.option("--fix", "fixes", multiple=True, metavar="NAME[=V]",
              help="Keep input NAME constant instead of optimizing it. Repeatable.")
@click.option("--compare-lr", metavar="LR,LR,...", help="Run once per learning rate and compare.")
@click.option("--compare", metavar="OPT,OPT,...", help="Run once per optimizer and compare.")
@click.option("--starts", metavar="X,X,...",
              help="Run once per start value of the (single) optimized variable: local minima.")
@click.option("--plot", metavar="FILE", help="Also draw a chart into FILE (.svg or .png).")
def descend(formula: str | None, values: tuple[str, ...], formula_file: str | None, seed: int,
            lr: float, steps: int, optimizer: str,
            schedule: str | None, fixes: tuple[str, ...], compare_lr: str | None,
            compare: str | None, starts: str | None, plot: str | None) -> None:
    """Run gradient descent on FORMULA, W = W - α·∂L/∂W, and show every update.

    Prints a step table (each variable, its gradient, the update the optimizer applied, the new
    value, the loss), a loss curve and a verdict: converged, too slow, or diverged."""
    from ..parser import parse
    from ..training.descend import descend_runs
    from ..training.views import print_comparison, print_descent
    from ..render.console import console, is_terminal

    formula, values = read_formula(formula, formula_file, values)
    start, fixed = _inputs(values, fixes, seed)
    if plot:
        from ..training.plots import check_suffix
        check_suffix(plot)
    if sum(x is not None for x in (compare_lr, compare, starts)) > 1:
        raise UsageError("use one of --compare-lr, --compare and --starts at a time")
    graph = parse(formula)
    out = console()
    runs = descend_runs(graph, start, fixed, lr=lr, steps=steps, optimizer=optimizer,
                        schedule=schedule, **_variants(start, compare_lr, compare, starts))
    if compare_lr or compare or starts:
        print_comparison(out, runs, is_terminal())
    else:
        print_descent(out, runs[0], is_terminal())
    if plot:
        from ..training.plots import descent_figure, save
        save(descent_figure(runs), plot)
        out.print(f"chart written to {plot}")


def _inputs(values: tuple[str, ...], fixes: tuple[str, ...], seed: int = 0) -> tuple[dict, dict]:
    """(start values of the optimized inputs, values of the fixed ones) from --NAME V and --fix."""
    start = parse_values(values, seed)
    fixed = {}
    for item in fixes:
        name, _, text = item.partition("=")
        if text:
            fixed[name] = parse_values((f"{name}={text}",), seed + 1)[name]
        elif name in start:
            fixed[name] = start.pop(name)
        else:
            raise UsageError(f"--fix {name} needs a value: give --{name} V or --fix {name}=V")
    return start, fixed


def _variants(start: dict, compare_lr: str | None, compare: str | None,
              starts: str | None) -> dict:
    """descend_runs' lrs, optimizers or starts, parsed from --compare-lr, --compare or --starts."""
    if compare_lr:
        return {"lrs": _numbers(compare_lr, "--compare-lr")}
    if compare:
        names = [n.strip() for n in compare.split(",") if n.strip()]
        bad = [n for n in names if n not in OPTIMIZERS]
        if bad or not names:
            raise UsageError(f"--compare takes optimizers from {', '.join(OPTIMIZERS)}, got {compare!r}")
        return {"optimizers": names}
    if starts:
        if len(start) != 1:
            raise UsageError("--starts needs exactly one optimized variable (fix the others with --fix)")
        return {"starts": _numbers(starts, "--starts")}
    return {}
