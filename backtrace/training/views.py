"""What a user reads of training: watch's tables, loss curve, summary and charts, the report of
`backtrace train`, and `backtrace descend`'s step table and comparison. rich, matplotlib and the
text plots load inside the functions that draw, so importing this module loads none of them."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .optimizers import OPTIMIZERS
from .records import ParamRecord, StepRecord, Watched

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console
    from rich.table import Table

    from .descend import Descent

MAX_STEP_ROWS = 40  # longer runs show their first and last steps
MAX_ELEMENT_ROWS = 6  # a tensor variable with more elements is one row of norms per step
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


def _stepped_differs(steps: Sequence[StepRecord]) -> bool:
    """True when some step stepped with another gradient than backward produced (clipping)."""
    for s in steps:
        after = s.stepped_norm
        if after is not None and s.layers and not math.isclose(after, s.grad_norm, rel_tol=1e-6):
            return True
    return False


def _tail(w: Watched, last: int | None) -> list[StepRecord]:
    rows = list(w.steps)
    return rows if last is None else rows[-last:] if last else []


def steps_table(w: Watched, last: int | None = None, boxed: bool = False) -> Table:
    """A rich Table: step, epoch, batch, loss, lr, gradient norms, largest update/weight ratio.

    ‖∂L/∂W‖ is the whole gradient as backward produced it (after DDP's all-reduce, unscaled under
    GradScaler, before clipping); `stepped` (shown when clipping changed it) is what the optimizer
    stepped with; `scale` is GradScaler's."""
    from ..render.tables import table as make_table

    rows = _tail(w, last)
    stepped = _stepped_differs(rows)
    scaled = any(s.scale is not None for s in rows)
    heads = ("step", "epoch", "batch", "loss", "lr", "‖∂L/∂W‖", *(["stepped"] * stepped),
             *(["scale"] * scaled), "max ‖ΔW‖/‖W‖")
    table = make_table(heads, "table" if boxed else "plain", right=heads)
    for s in rows:
        ratio = "skipped" if s.skipped else _num(s.max_ratio)
        table.add_row(str(s.step), _opt(s.epoch), _opt(s.batch), _num(s.loss), _num(s.lr),
                      _num(s.grad_norm if s.layers else None),
                      *([_num(s.stepped_norm)] * stepped), *([_num(s.scale)] * scaled), ratio)
    return table


def _state_text(p: ParamRecord) -> str:
    """A parameter's optimizer state in a few words (a tensor by its norm: its shape is the
    parameter's)."""
    from ..values import TensorStats

    return ", ".join(f"{k} ‖·‖={v.norm:.3g}" if isinstance(v, TensorStats) else f"{k} {_num(v)}"
                     for k, v in p.state.items())


def layer_table(w: Watched, step: int = -1, boxed: bool = False, state: bool = True) -> Table:
    """A rich Table of one step, per parameter: gradients, zeros, update, ratio and (with
    `state`) the optimizer's state."""
    from ..render.tables import table as make_table

    s = w.steps[step]
    stepped = _stepped_differs([s])
    numbers = ("shape", "‖grad‖", *(["stepped"] * stepped), "zeros", "‖W‖", "‖ΔW‖", "‖ΔW‖/‖W‖")
    table = make_table(("parameter", *numbers, *(["optimizer state"] * state)),
                       "table" if boxed else "plain", right=numbers,
                       title=f"step {s.step}, per parameter")
    for p in s.params.values():
        zeros = "-" if p.zeros is None else f"{p.zeros:.0%}"
        table.add_row(p.name, "×".join(map(str, p.shape)) or "scalar", _num(p.backward_norm),
                      *([_num(p.grad_norm)] * stepped), zeros, _num(p.weight_norm),
                      _num(p.update_norm), _num(p.ratio), *([_state_text(p)] * state))
    return table


def state_lines(w: Watched, step: int = -1) -> str:
    """The optimizer state of one step, one line per parameter (for narrow terminals)."""
    s = w.steps[step]
    return "\n".join(f"{p.name}: {_state_text(p)}" for p in s.params.values() if p.state)


def ranks_table(w: Watched, last: int | None = None, boxed: bool = False) -> Table:
    """Each rank's loss and local gradient norm (before the all-reduce), side by side per step;
    past 4 ranks, the lowest and highest over the ranks."""
    from ..render.tables import table as make_table

    rows = [s for s in _tail(w, last) if s.ranks]
    size = len(rows[0].ranks) if rows else w.world_size
    if size <= 4:
        heads = ("step", *(f"loss r{k}" for k in range(size)), *(f"‖g‖ r{k}" for k in range(size)))
    else:
        heads = ("step", "loss min", "loss max", "‖g‖ min", "‖g‖ max")
    table = make_table(heads, "table" if boxed else "plain", right=heads,
                       title="per rank: the loss and the gradient norm of its own batch")
    for s in rows:
        losses, norms = [x[0] for x in s.ranks], [x[1] for x in s.ranks]
        if size <= 4:
            table.add_row(str(s.step), *map(_num, losses), *map(_num, norms))
        else:
            table.add_row(str(s.step), *(_num(f(v for v in vs if v is not None))
                                         if any(v is not None for v in vs) else "-"
                                         for vs in (losses, norms) for f in (min, max)))
    return table


def loss_curve(w: Watched, width: int = 60, height: int = 8) -> str:
    """The loss per step as plain text, over the whole run (the running summary)."""
    from .textplot import ascii_curve

    series = w.summary_data.loss
    points = [(f, v) for f, v in zip(series.first, series.values()) if v is not None]
    if not points:
        return "loss: none recorded (call .backward() on the loss, or w.loss(value))"
    label = "loss" if series.span == 1 else f"loss (mean of each {series.span} steps)"
    return ascii_curve([v for _, v in points], width, height, label=label, first=points[0][0],
                       last=series.last() if series.span > 1 else None)


def summary(w: Watched) -> str:
    """Accounting, steps and epochs seen, and every warning with how often it happened."""
    lines = [w.accounting] if w.accounting else []
    data = w.summary_data
    n, spe = w.step_count, w.steps_per_epoch
    if spe:
        full, rest = divmod(n, spe)
        lines.append(f"{n} steps = {full} epoch{'s' * (full != 1)} of {spe} steps"
                     + (f" + {rest} step{'s' * (rest != 1)}" if rest else ""))
    else:
        lines.append(f"{n} step{'s' * (n != 1)}")
    if data.skipped:
        lines.append(f"{data.skipped} of them skipped by GradScaler (inf/NaN in the scaled "
                     "gradients)")
    if data.first_loss is not None:
        lines.append(f"loss {data.first_loss:.4g} at the first step, {data.last_loss:.4g} at the "
                     "last" + (f", lowest {data.lowest_loss[1]:.4g} at step {data.lowest_loss[0]}"
                               if data.lowest_loss and n > len(w.steps) else ""))
    if n > len(w.steps):
        lines.append(f"the last {len(w.steps)} steps are kept in detail, every step in running "
                     "summaries (watch(window=N) keeps more)")
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

    loss = w.summary_data.loss
    return loss_curves({"loss": [_nan(v) for v in loss.values()]}, "Training loss",
                       steps=loss.first)  # numbered as the tables number them


def gradient_flow_figure(w: Watched) -> Figure:
    """A matplotlib Figure: per-layer gradient norm and update/weight ratio over the whole run."""
    from .plots import gradient_flow

    layers = w.summary_data.layers
    steps = next(iter(layers.values()))["grad"].first if layers else []
    grads = {layer: [_nan(v) for v in m["grad"].values()] for layer, m in layers.items()}
    ratios = {layer: [_nan(v) for v in m["ratio"].values()] for layer, m in layers.items()}
    return gradient_flow(steps, grads, ratios, layer_labels(w, list(layers)))


def layer_labels(w: Watched, layers: Sequence[str]) -> dict[str, str]:
    """Each layer's name with its module type, '0 (Linear)', when the model is known."""
    modules = dict(w.model.named_modules()) if hasattr(w.model, "named_modules") else {}
    return {layer: f"{layer} ({type(modules[layer]).__name__})" if layer in modules else layer
            for layer in layers}


# ---------------------------------------------------------------------- backtrace train

def print_report(out: Console, watches: Sequence[Watched], rows: int,
                 charts: dict[str, str | None]) -> None:
    """Per optimizer: step table (and each rank's, in a distributed job), the last step per
    parameter, the layer × step heatmap, loss curve, summary; then the charts (`charts`: kind ->
    path, kinds 'plot', 'flow', 'heatmap')."""
    from .heatmap import heatmap_figure, terminal_heatmap
    from .plots import save

    if not watches:
        out.print("the script made no optimizer step (backtrace train watches torch.optim "
                  "optimizers)")
        return
    draw = {"plot": loss_figure, "flow": gradient_flow_figure, "heatmap": heatmap_figure}
    many = len(watches) > 1
    for i, w in enumerate(watches, start=1):
        name = type(w.optimizer).__name__
        model = type(w.model).__name__ if w.model is not None and not isinstance(w.model, list) \
            else "its parameters"
        ranks = f", rank 0 of {w.world_size}" if w.world_size > 1 else ""
        out.print(f"\noptimizer {i}: {name} on {model}, {w.step_count} steps{ranks}",
                  highlight=False)
        if rows and w.steps:
            out.print(steps_table(w, last=rows))
            if any(s.ranks for s in w.steps):
                out.print(ranks_table(w, last=rows))
            wide = out.width >= 120  # the state column fits; else it goes below the table
            out.print(layer_table(w, state=wide))
            if not wide and state_lines(w):
                out.print(state_lines(w), highlight=False)
        if w.step_count > 1:
            out.print(terminal_heatmap(w, "rms"))
        out.print(loss_curve(w, width=max(10, min(60, out.width - 18))), highlight=False)
        out.print(summary(w), highlight=False)
        for kind, path in charts.items():
            if path and w.steps:
                target = Path(path)
                if many:
                    target = target.with_name(f"{target.stem}-{i}{target.suffix}")
                save(draw[kind](w), str(target))
                out.print(f"chart written to {target}")


# ---------------------------------------------------------------------- backtrace descend

def descent_heading(d: Descent) -> str:
    """'Gradient descent on FORMULA with OPTIMIZER, lr ..., N steps (x = 1 fixed)'."""
    from ..values import describe

    sched = f", {d.schedule} schedule" if d.schedule else ""
    fixed = ", ".join(f"{k} = {describe(v, listed=MAX_ELEMENT_ROWS)}" for k, v in d.fixed.items())
    return (f"Gradient descent on {d.graph.source.strip()} with {d.optimizer}, lr {d.lr:g}{sched}, "
            f"{len(d.steps)} steps" + (f" ({fixed} fixed)" if fixed else ""))


def _groups(d: Descent) -> list[tuple[str, list[str]]]:
    """(row label, element names) of each row: numbers and small tensors element by element, a
    tensor of more than MAX_ELEMENT_ROWS elements as one row of norms."""
    from ..values import shape_text

    by_var: dict[str, list[str]] = {}
    for n in d.start:
        by_var.setdefault(n.partition("[")[0], []).append(n)
    rows: list[tuple[str, list[str]]] = []
    for var, elems in by_var.items():
        if var in d.shapes and len(elems) > MAX_ELEMENT_ROWS:
            rows.append((f"{var} {shape_text(d.shapes[var])}", elems))
        else:
            rows.extend((e, [e]) for e in elems)
    return rows


def _cell(values, names: list[str]) -> str:
    """One number, or the norm of a summarised tensor's numbers."""
    from ..values import format_number as f

    if len(names) == 1:
        return f(values[names[0]])
    return "‖·‖=" + f(math.sqrt(math.fsum(values[n] ** 2 for n in names)))


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
    groups = _groups(d)
    blank = [""] * (len(heads) - 2)
    for i, (label, names) in enumerate(groups):
        table.add_row("0" if i == 0 else "", *([""] if scheduled else []), label,
                      _cell(d.start, names), _cell(d.start_grads, names),
                      *[""] * (len(shown) + 2), f(d.start_loss) if i == 0 else "")
    steps = d.steps
    rows = steps if len(steps) <= MAX_STEP_ROWS else steps[:MAX_STEP_ROWS // 2] + [None] + \
        steps[-MAX_STEP_ROWS // 4:]
    for s in rows:
        if s is None:
            table.add_row("…", f"{len(steps) - MAX_STEP_ROWS // 2 - MAX_STEP_ROWS // 4} more steps",
                          *blank)
            continue
        for i, (label, names) in enumerate(groups):
            deltas = {n: s.updates[n].delta for n in names}
            table.add_row(str(s.step) if i == 0 else "",
                          *([f(s.lr) if i == 0 else ""] if scheduled else []), label,
                          _cell(s.before, names), _cell(s.grads, names),
                          *[_cell({n: s.updates[n].parts[p] for n in names}, names) for p in shown],
                          _cell(deltas, names), _cell(s.after, names),
                          f(s.loss) if i == 0 else "")
    return table


def print_descent(out: Console, d: Descent, boxed: bool) -> None:
    """One run: heading, the optimizer's rule, the step table, a loss curve and the verdict."""
    from .textplot import ascii_curve

    out.print(descent_heading(d))
    out.print(f"  {OPTIMIZERS[d.optimizer][0]}")
    out.print(descent_table(d, boxed))
    out.print(ascii_curve(d.losses), highlight=False)
    from ..values import describe

    final = ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {describe(v, listed=12)}"
                      for k, v in d.tensors(d.final).items())
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
