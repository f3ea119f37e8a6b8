"""`backtrace descend`: gradient descent on a formula, one visible update at a time."""
from __future__ import annotations

import math

import click

from ..errors import UsageError
from ..training.optimizers import OPTIMIZERS, SCHEDULES
from .options import parse_values

MAX_STEP_ROWS = 40  # longer runs show their first and last steps
HEADS = {"step": "lr·m̂/(√v̂+ε)"}  # column titles of optimizer quantities, where the key is not one

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
@click.argument("formula")
@click.argument("values", nargs=-1, type=click.UNPROCESSED)
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
def descend(formula: str, values: tuple[str, ...], lr: float, steps: int, optimizer: str,
            schedule: str | None, fixes: tuple[str, ...], compare_lr: str | None,
            compare: str | None, starts: str | None, plot: str | None) -> None:
    """Run gradient descent on FORMULA, W = W - α·∂L/∂W, and show every update.

    Prints a step table (each variable, its gradient, the update the optimizer applied, the new
    value, the loss), a loss curve and a verdict: converged, too slow, or diverged."""
    from ..parser import parse
    from ..training.descend import descend as run_descent
    from .output import console

    start = parse_values(values)
    fixed = {}
    for item in fixes:
        name, _, text = item.partition("=")
        if text:
            fixed[name] = parse_values((f"{name}={text}",))[name]
        elif name in start:
            fixed[name] = start.pop(name)
        else:
            raise UsageError(f"--fix {name} needs a value: give --{name} V or --fix {name}=V")
    if plot:
        from ..training.plots import check_suffix
        check_suffix(plot)
    if sum(x is not None for x in (compare_lr, compare, starts)) > 1:
        raise UsageError("use one of --compare-lr, --compare and --starts at a time")
    graph = parse(formula)
    out = console()
    kwargs = dict(fixed=fixed, lr=lr, steps=steps, optimizer=optimizer, schedule=schedule)
    if compare_lr:
        runs = [run_descent(graph, start, **{**kwargs, "lr": r}, label=f"lr={r:g}")
                for r in _numbers(compare_lr, "--compare-lr")]
    elif compare:
        names = [n.strip() for n in compare.split(",") if n.strip()]
        bad = [n for n in names if n not in OPTIMIZERS]
        if bad or not names:
            raise UsageError(f"--compare takes optimizers from {', '.join(OPTIMIZERS)}, got {compare!r}")
        runs = [run_descent(graph, start, **{**kwargs, "optimizer": n}, label=n) for n in names]
    elif starts:
        if len(start) != 1:
            raise UsageError("--starts needs exactly one optimized variable (fix the others with --fix)")
        (var,) = start
        runs = [run_descent(graph, {var: x}, **kwargs, label=f"{var}={x:g}")
                for x in _numbers(starts, "--starts")]
    else:
        runs = [run_descent(graph, start, **kwargs)]
        _print_single(out, runs[0])
    if len(runs) > 1 or compare_lr or compare or starts:
        _print_comparison(out, runs)
    if plot:
        from ..training.plots import descent_figure, save
        save(descent_figure(runs), plot)
        out.print(f"chart written to {plot}")


def _heading(d) -> str:
    sched = f", {d.schedule} schedule" if d.schedule else ""
    fixed = ", ".join(f"{k} = {v:g}" for k, v in d.fixed.items())
    return (f"Gradient descent on {d.graph.source.strip()} with {d.optimizer}, lr {d.lr:g}{sched}, "
            f"{len(d.steps)} steps" + (f" ({fixed} fixed)" if fixed else ""))


def step_table(d, boxed: bool):
    """One row per (step, variable): value, gradient, optimizer quantities, update, new value, loss."""
    from ..render.tables import table as make_table
    from ..values import format_number as f

    parts = list(d.steps[0].updates[next(iter(d.start))].parts) if d.steps else []
    shown = [p for p in parts if p not in ("m", "v")]
    scheduled = d.schedule is not None
    heads = ["step", *(["lr"] if scheduled else []), "var", "value", "gradient",
             *[HEADS.get(p, p) for p in shown], "update", "new value", "loss"]
    table = make_table(heads, "table" if boxed else "plain", right=set(heads) - {"var"})
    names = list(d.start)
    blank = [""] * (len(heads) - 2)
    table.add_row("0", *([""] if scheduled else []), names[0], f(d.start[names[0]]),
                  f(d.start_grads[names[0]]), *[""] * (len(shown) + 2), f(d.start_loss))
    for n in names[1:]:
        table.add_row("", *([""] if scheduled else []), n, f(d.start[n]), f(d.start_grads[n]),
                      *[""] * (len(shown) + 3))
    steps = d.steps
    rows = steps if len(steps) <= MAX_STEP_ROWS else steps[:MAX_STEP_ROWS // 2] + [None] + \
        steps[-MAX_STEP_ROWS // 4:]
    for s in rows:
        if s is None:
            table.add_row("…", f"{len(steps) - MAX_STEP_ROWS // 2 - MAX_STEP_ROWS // 4} more steps",
                          *blank)
            continue
        for i, n in enumerate(names):
            u = s.updates[n]
            table.add_row(str(s.step) if i == 0 else "",
                          *([f(s.lr) if i == 0 else ""] if scheduled else []), n, f(s.before[n]),
                          f(s.grads[n]), *[f(u.parts[p]) for p in shown], f(u.delta), f(s.after[n]),
                          f(s.loss) if i == 0 else "")
    return table


def _print_single(out, d) -> None:
    from ..training.textplot import ascii_curve
    from .output import is_terminal

    out.print(_heading(d))
    out.print(f"  {OPTIMIZERS[d.optimizer][0]}")
    out.print(step_table(d, is_terminal()))
    out.print(ascii_curve(d.losses), highlight=False)
    final = ", ".join(f"{k} = {v:.6g}" for k, v in d.final.items())
    out.print(f"Result: {final}, loss {d.final_loss:.6g}: {d.verdict}: {d.verdict.reason}",
              highlight=False)


def _print_comparison(out, runs) -> None:
    from ..render.tables import table as make_table
    from ..training.textplot import ascii_curve
    from .output import is_terminal

    first = runs[0]
    what = "learning rates" if len({r.lr for r in runs}) > 1 else \
        "optimizers" if len({r.optimizer for r in runs}) > 1 else "starts"
    out.print(f"Comparing {what} on {first.graph.source.strip()}, {len(first.steps)} steps each"
              if len({len(r.steps) for r in runs}) == 1 else
              f"Comparing {what} on {first.graph.source.strip()}")
    for r in runs:
        out.print(ascii_curve(r.losses, height=5, label=f"{r.label}: loss"), highlight=False)
    boxed = is_terminal()
    table = make_table(("run", "start", "end", "final loss", "verdict", "why"),
                       "table" if boxed else "plain", right=("final loss",))
    for r in runs:
        table.add_row(r.label, ", ".join(f"{k} = {v:g}" for k, v in r.start.items()),
                      ", ".join(f"{k} = {v:.6g}" for k, v in r.final.items()),
                      f"{r.final_loss:.6g}", str(r.verdict), r.verdict.reason)
    out.print(table)
