"""The explain view of a tensor formula: small tensors printed as matrices, larger ones (or ones
too wide for the terminal) summarised by shape, norm, min and max; rules and derivations with
shapes, ``∂L/∂W1 [3×4] = xᵀ [3×1] · ∂L/∂%0 [1×4]``. Markdown gets every cell on one line.
"""
from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any

from ..derive import TensorDerivation, tensor_derivations
from ..traces import Edge, Step, Trace
from ..values import format_number, nested_shape, nested_text, norm, numbers, shape_text
from . import tables
from .tables import MAX_ROWS

if TYPE_CHECKING:
    from rich.console import Group
    from rich.text import Text

MAX_MATRIX_ROWS = 8  # taller tensors are summarised
NARROW = 90  # below this many columns the backward table leaves the upstream column out


def num(v: float) -> str:
    """A matrix entry: four significant digits (the JSON keeps every digit)."""
    text = f"{v:.4g}"
    return "0" if text == "-0" else text


def summary(v: Any) -> str:
    """'[3×4] ‖·‖=1.234 min -0.8 max 1.2'."""
    xs = numbers(v) or [0.0]
    size = math.sqrt(math.fsum(x * x for x in xs))
    return f"{shape_text(nested_shape(v))} ‖·‖={num(size)} min {num(min(xs))} max {num(max(xs))}"


def matrix_lines(v: Any, width: int) -> list[str] | None:
    """A vector (wrapped at `width`) or a matrix with aligned columns, as lines; None when it
    does not fit in `width` columns and MAX_MATRIX_ROWS lines, or has more than two axes."""
    shape = nested_shape(v)
    if len(shape) == 1:
        lines = textwrap.wrap(", ".join(map(num, v)), max(width - 2, 1), break_long_words=False)
        lines = [("[" if k == 0 else " ") + line for k, line in enumerate(lines)]
        lines[-1] += "]"
    elif len(shape) == 2:
        cells = [[num(x) for x in row] for row in v]
        widths = [max(len(row[j]) for row in cells) for j in range(shape[1])]
        rows = [", ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        lines = [("[[" if k == 0 else " [") + r + ("]]" if k == len(rows) - 1 else "],")
                 for k, r in enumerate(rows)]
    else:
        return None
    if len(lines) > MAX_MATRIX_ROWS or max(map(len, lines)) > width:
        return None
    return lines


def tensor_text(v: Any, width: int, one_line: bool = False) -> str:
    """A value in at most `width` columns: numbers short, tensors as matrices or summarised."""
    if not isinstance(v, list):
        return format_number(v) if v is not None else "—"
    if one_line:  # Markdown: the numbers when they fit, else the shortest summary that does
        lines = matrix_lines(v, 10**6)
        text = nested_text(v, 4) if lines else ""
        if lines and len(text) <= width:
            return text
        full, short = summary(v), f"{shape_text(nested_shape(v))} ‖·‖={num(norm(v) or 0.0)}"
        return full if len(full) <= width else min((text, short), key=lambda t: len(t) or 10**6)
    lines = matrix_lines(v, width)
    if lines is not None:
        return "\n".join(lines)
    full = summary(v)
    return full if len(full) <= width else f"{shape_text(nested_shape(v))} ‖·‖={num(norm(v) or 0.0)}"


def _shape(v: Any) -> str:
    return shape_text(nested_shape(v)) if v is not None else ""


def forward_table(trace: Trace, style: str, width: int):
    """node | expression | shape | value."""
    from rich.text import Text

    one_line = style == "markdown"
    nodes = trace.nodes[:MAX_ROWS]
    fixed = sum(max(len(c) for c in col) for col in (
        ["node", *(n.id for n in nodes)], ["expression", *(n.expr[:30] for n in nodes)],
        ["shape", *(_shape(n.value) for n in nodes)]))
    budget = max(20, width - fixed - 13)
    table = tables.table(("node", "expression", "shape", "value"), style, right=("shape",))
    for n in nodes:
        name = Text(n.id, style="bold green" if n.id == trace.output else
                    "cyan" if n.kind == "input" else "")
        table.add_row(name, Text("input" if n.kind == "input" else n.expr), Text(_shape(n.value)),
                      Text(tensor_text(n.value, budget, one_line)))
    if len(trace.nodes) > MAX_ROWS:
        table.add_row("…", f"{len(trace.nodes) - MAX_ROWS:,} more nodes", "", "")
    return table


def _upstream_cell(width: int):
    from rich.text import Text

    def cell(trace: Trace, step: Step, edge: Edge | None) -> Text:
        senders = sum(e.contribution is not None for _, e in trace.consumers(step.node))
        head = f"∂{trace.output}/∂{step.node} {_shape(step.upstream)}"
        if senders > 1:
            head += f", the sum of {senders}"
        return Text(f"{head}\n{tensor_text(step.upstream, width)}")
    return cell


def _edge_cell(width: int):
    from rich.text import Text

    def cell(trace: Trace, step: Step, e: Edge | None) -> Text:
        if e is None:
            return Text("—")
        head = f"∂{trace.output}/∂{e.input} = {e.rule}"
        if e.contribution is None:
            return Text(f"∂{trace.output}/∂{e.input}: none ({e.note})" if e.note else head)
        local = e.local
        shown = local is not None and any(x != 1.0 for x in numbers(local) or ())
        lines = [head]
        if shown:
            lines.append("local " + tensor_text(local, width - 6).replace("\n", "\n      "))
        lines.append("= " + tensor_text(e.contribution, width - 2).replace("\n", "\n  "))
        return Text("\n".join(lines))
    return cell


def backward_table(trace: Trace, style: str, width: int, upto: int | None = None):
    """One row per edge: step, node, upstream (with its numbers), input, and the edge's rule,
    local factor and contribution. Markdown, one line per cell, leaves the upstream out (it is
    the sum of the contributions sent to the node, in earlier rows) and gives the rule and the
    contribution a column each."""
    steps = trace.steps if upto is None else trace.steps[:upto]
    names = [s.node for s in steps[:MAX_ROWS]]
    inputs = [f"{e.input} {_shape(trace.node(e.input).value)}" for s in steps[:MAX_ROWS]
              for e in s.edges]
    fixed = 4 + max(map(len, ["node", *names])) + max(map(len, ["input", *inputs])) + 16
    room = max(16, width - fixed)
    head = (tables.Column("step", lambda t, s, e: str(s.index + 1), per_step=True),
            tables.Column("node", lambda t, s, e: s.node, per_step=True))
    where = tables.Column("input", lambda t, s, e: (f"{e.input} {_shape(t.node(e.input).value)}"
                                                    if e is not None else "—"))
    if style == "markdown":
        rules = [len(_rule(trace, e)) for s in steps[:MAX_ROWS] for e in s.edges]
        rest = max(20, room - max(rules, default=20) - 3)
        columns = (*head, where, tables.Column("local derivative", lambda t, s, e: _rule(t, e)),
                   tables.Column("contribution", lambda t, s, e: _contribution(e, rest)))
        # Markdown cells never wrap (tables.FitTable): the rule and the numbers keep one line each.
        return tables.backward_table(trace, columns, style, steps, text=True)
    if width < NARROW:  # the upstream is the sum of the contributions above: room for the rule
        columns = (*head, where, tables.Column("rule · local = contribution",
                                               _edge_cell(max(16, room - 2))))
    else:
        columns = (*head, tables.Column("upstream", _upstream_cell(max(14, room * 2 // 5)),
                                        per_step=True),
                   where, tables.Column("local derivative · local = contribution",
                                        _edge_cell(max(24, room * 3 // 5))))
    return tables.backward_table(trace, columns, style, steps, text=True)


def _rule(trace: Trace, e: Edge | None) -> str:
    return f"∂{trace.output}/∂{e.input} = {e.rule}" if e is not None else "—"


def _contribution(e: Edge | None, width: int) -> str:
    if e is None:
        return "—"
    if e.contribution is None:
        return "none"
    return tensor_text(e.contribution, width, one_line=True)


def derivation_lines(d: TensorDerivation, width: int, one_line: bool) -> list[str]:
    """'∂L/∂W1 [3×4] = xᵀ [3×1] · ∂L/∂%0 [1×4]' and the gradient's numbers below it."""
    head = f"∂{d.output}/∂{d.input} {_shape(d.grad)}"
    if not d.terms:
        why = "; ".join(d.notes) or f"no path from {d.input} to {d.output}"
        return [f"∂{d.output}/∂{d.input}: none ({why})"]
    rule = " + ".join(f"({t})" if len(d.terms) > 1 else t for t in d.terms)
    value = tensor_text(d.grad, 10**6 if one_line else width - 4, one_line)  # prose may wrap
    return [f"{head} = {rule}", "  = " + value.replace("\n", "\n    ")]


def gradients(trace: Trace, style: str, width: int) -> Group:
    """One derivation per input, each with the gradient as a matrix (or summarised)."""
    from rich.console import Group
    from rich.text import Text

    one_line = style == "markdown"
    parts = []
    for d in tensor_derivations(trace)[:MAX_ROWS]:
        lines = derivation_lines(d, width, one_line)
        parts.append(Text("\n".join(lines) + ("\n" if style == "markdown" else "")))
    return Group(*parts)
