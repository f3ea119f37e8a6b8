"""What a user reads of training: watch's tables, loss curve, summary and charts, the report of
`backtrace train`, and `backtrace descend`'s step table and comparison. rich, matplotlib and the
text plots load inside the functions that draw, so importing this module loads none of them."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .optimizers import OPTIMIZERS
from .records import Watched

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console
    from rich.table import Table

    from .descend import Descent

MAX_STEP_ROWS = 40  # longer runs show their first and last steps
HEADS = {"step": "lr·m̂/(√v̂+ε)"}  # column titles of optimizer quantities, where the key is not one


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


# ---------------------------------------------------------------------- watch

def accounting(w: Watched) -> str | None:
    """'1000 samples, batch 100 -> 10 steps per epoch' with what that means."""
    spe = w.steps_per_epoch
    if spe is None:
        return None
    n, b = w.dataset_size, w.batch_size
    last = n - (spe - 1) * b
    tail = "" if last == b else f"; the last batch has {last} sample{'s' * (last != 1)}"
    return (f"{n} samples, batch {b} -> {spe} step{'s' * (spe != 1)} per epoch (each step "
            f"processes {min(b, n)} samples and updates the weights once{tail}; after {spe} "
            f"step{'s' * (spe != 1)} every sample has been seen once = 1 epoch)")


def steps_table(w: Watched, last: int | None = None, boxed: bool = False) -> Table:
    """A rich Table: step, epoch, batch, loss, lr, gradient norm, largest update/weight ratio."""
    from ..render.tables import table as make_table

    heads = ("step", "epoch", "batch", "loss", "lr", "‖∂L/∂W‖", "max ‖ΔW‖/‖W‖")
    table = make_table(heads, "table" if boxed else "plain", right=heads)
    rows = w.steps if last is None else w.steps[-last:]
    for s in rows:
        ratio = max((p.ratio for p in s.params.values()), default=0.0)
        table.add_row(str(s.step), _opt(s.epoch), _opt(s.batch), _num(s.loss), _num(s.lr),
                      _num(s.grad_norm), _num(ratio))
    return table


def layer_table(w: Watched, step: int = -1, boxed: bool = False) -> Table:
    """A rich Table of one step, per parameter: gradient, update, ratio, optimizer state."""
    from ..render.tables import table as make_table
    from ..values import TensorStats

    s = w.steps[step]
    table = make_table(("parameter", "shape", "‖grad‖", "‖W‖", "‖ΔW‖", "‖ΔW‖/‖W‖",
                        "optimizer state"), "table" if boxed else "plain",
                       right=("shape", "‖grad‖", "‖W‖", "‖ΔW‖", "‖ΔW‖/‖W‖"),
                       title=f"step {s.step}, per parameter")
    for p in s.params.values():
        state = ", ".join(f"{k} {v}" if isinstance(v, TensorStats) else f"{k} {_num(v)}"
                          for k, v in p.state.items())
        table.add_row(p.name, "×".join(map(str, p.shape)) or "scalar", _num(p.grad_norm),
                      _num(p.weight_norm), _num(p.update_norm), _num(p.ratio), state)
    return table


def loss_curve(w: Watched, width: int = 60, height: int = 8) -> str:
    """The loss per step as plain text."""
    from .textplot import ascii_curve

    values = [s.loss for s in w.steps if s.loss is not None]
    if not values:
        return "loss: none recorded (call .backward() on the loss, or w.loss(value))"
    first = next(s.step for s in w.steps if s.loss is not None)
    return ascii_curve(values, width, height, first=first)


def summary(w: Watched) -> str:
    """Accounting, steps and epochs seen, and every warning with how often it happened."""
    lines = [w.accounting] if w.accounting else []
    n, spe = len(w.steps), w.steps_per_epoch
    if spe:
        full, rest = divmod(n, spe)
        lines.append(f"{n} steps = {full} epoch{'s' * (full != 1)} of {spe} steps"
                     + (f" + {rest} step{'s' * (rest != 1)}" if rest else ""))
    else:
        lines.append(f"{n} step{'s' * (n != 1)}")
    done = [s.loss for s in w.steps if s.loss is not None]
    if done:
        lines.append(f"loss {done[0]:.4g} at the first step, {done[-1]:.4g} at the last")
    if not w.warnings:
        lines.append("no warnings")
    for f in w.warnings:
        times = w.counts[(f.kind, f.layer)]
        lines.append(f"warning: {f.message}" + (f" (and at {times - 1} more step"
                                                f"{'s' * (times > 2)})" if times > 1 else ""))
    return "\n".join(lines)


def loss_figure(w: Watched) -> Figure:
    """A matplotlib Figure of the loss per step."""
    from .plots import loss_curves

    return loss_curves({"loss": [_nan(s.loss) for s in w.steps]}, "Training loss",
                       steps=[s.step for s in w.steps])  # numbered as the tables number them


def gradient_flow_figure(w: Watched) -> Figure:
    """A matplotlib Figure: per-layer gradient norm and update/weight ratio at each step."""
    from .plots import gradient_flow

    layers = list(dict.fromkeys(w.layer_of.values()))
    steps = [s.step for s in w.steps]
    grads = {layer: [_nan(s.layers.get(layer)) for s in w.steps] for layer in layers}
    ratios = {}
    for layer in layers:
        names = [n for n, lay in w.layer_of.items() if lay == layer]
        ratios[layer] = [max(s.params[n].ratio for n in names) for s in w.steps]
    return gradient_flow(steps, grads, ratios, layer_labels(w, layers))


def layer_labels(w: Watched, layers: Sequence[str]) -> dict[str, str]:
    """Each layer's name with its module type, '0 (Linear)', when the model is known."""
    modules = dict(w.model.named_modules()) if hasattr(w.model, "named_modules") else {}
    return {layer: f"{layer} ({type(modules[layer]).__name__})" if layer in modules else layer
            for layer in layers}


# ---------------------------------------------------------------------- backtrace train

def print_report(out: Console, watches: Sequence[Watched], rows: int, plot: str | None,
                 flow: str | None) -> None:
    """Per optimizer: step table, last step per parameter, loss curve, summary; then the charts."""
    from .plots import save

    if not watches:
        out.print("the script made no optimizer step (backtrace train watches torch.optim "
                  "optimizers)")
        return
    many = len(watches) > 1
    for i, w in enumerate(watches, start=1):
        name = type(w.optimizer).__name__
        model = type(w.model).__name__ if w.model is not None and not isinstance(w.model, list) \
            else "its parameters"
        out.print(f"\noptimizer {i}: {name} on {model}, {len(w.steps)} steps", highlight=False)
        if rows and w.steps:
            out.print(steps_table(w, last=rows))
            out.print(layer_table(w))
        out.print(loss_curve(w), highlight=False)
        out.print(summary(w), highlight=False)
        for path, draw in ((plot, loss_figure), (flow, gradient_flow_figure)):
            if path and w.steps:
                target = Path(path)
                if many:
                    target = target.with_name(f"{target.stem}-{i}{target.suffix}")
                save(draw(w), str(target))
                out.print(f"chart written to {target}")


# ---------------------------------------------------------------------- backtrace descend

def descent_heading(d: Descent) -> str:
    """'Gradient descent on FORMULA with OPTIMIZER, lr ..., N steps (x = 1 fixed)'."""
    sched = f", {d.schedule} schedule" if d.schedule else ""
    fixed = ", ".join(f"{k} = {v:g}" for k, v in d.fixed.items())
    return (f"Gradient descent on {d.graph.source.strip()} with {d.optimizer}, lr {d.lr:g}{sched}, "
            f"{len(d.steps)} steps" + (f" ({fixed} fixed)" if fixed else ""))


def descent_table(d: Descent, boxed: bool) -> Table:
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


def print_descent(out: Console, d: Descent, boxed: bool) -> None:
    """One run: heading, the optimizer's rule, the step table, a loss curve and the verdict."""
    from .textplot import ascii_curve

    out.print(descent_heading(d))
    out.print(f"  {OPTIMIZERS[d.optimizer][0]}")
    out.print(descent_table(d, boxed))
    out.print(ascii_curve(d.losses), highlight=False)
    final = ", ".join(f"{k} = {v:.6g}" for k, v in d.final.items())
    out.print(f"Result: {final}, loss {d.final_loss:.6g}: {d.verdict}: {d.verdict.reason}",
              highlight=False)


def comparison_table(runs: Sequence[Descent], boxed: bool) -> Table:
    """One row per run: its start, end, final loss and verdict."""
    from ..render.tables import table as make_table

    table = make_table(("run", "start", "end", "final loss", "verdict", "why"),
                       "table" if boxed else "plain", right=("final loss",))
    for r in runs:
        table.add_row(r.label, ", ".join(f"{k} = {v:g}" for k, v in r.start.items()),
                      ", ".join(f"{k} = {v:.6g}" for k, v in r.final.items()),
                      f"{r.final_loss:.6g}", str(r.verdict), r.verdict.reason)
    return table


def print_comparison(out: Console, runs: Sequence[Descent], boxed: bool) -> None:
    """Several runs: what varies, a small loss curve per run, and the comparison table."""
    from .textplot import ascii_curve

    first = runs[0]
    what = "learning rates" if len({r.lr for r in runs}) > 1 else \
        "optimizers" if len({r.optimizer for r in runs}) > 1 else "starts"
    out.print(f"Comparing {what} on {first.graph.source.strip()}, {len(first.steps)} steps each"
              if len({len(r.steps) for r in runs}) == 1 else
              f"Comparing {what} on {first.graph.source.strip()}")
    for r in runs:
        out.print(ascii_curve(r.losses, height=5, label=f"{r.label}: loss"), highlight=False)
    out.print(comparison_table(runs, boxed))
