"""The explain view as rich renderables: forward table, backward table, chain-rule derivations."""
from __future__ import annotations


from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from ..derive import Derivation, derivations, product
from ..traces import Step, Trace
from ..values import describe

BOXES = {"table": box.ROUNDED, "plain": None, "markdown": box.MARKDOWN}
MAX_ROWS = 200  # beyond this a table shows its head and says how much it left out
MAX_DERIVATION_NODES = 2_000  # path enumeration is for teaching-size graphs


fmt = describe  # a table cell: numbers short, tensors by shape and norm, None as a dash


class ExplainView:
    """Everything `backtrace explain` prints for one trace, in one of the styles of BOXES."""

    def __init__(self, trace: Trace, style: str = "table", upto: int | None = None) -> None:
        self.trace, self.style, self.upto = trace, style, upto

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.heading("Forward pass: values in topological order")
        yield forward_table(self.trace, BOXES[self.style])
        yield self.heading("Backward pass: upstream × local = contribution, in execution order")
        yield backward_table(self.trace, BOXES[self.style], self.upto)
        if self.upto is None:
            yield self.heading(f"Gradients of {self.trace.output} (chain rule along every path)")
            yield derivation_text(self.trace)

    def heading(self, text: str) -> Text:
        if self.style == "markdown":
            return Text(f"\n## {text}\n")
        return Text(f"\n{text}", style="bold")


def _table(title_box, *columns: str) -> Table:
    table = Table(box=title_box, show_edge=title_box is not None, pad_edge=title_box is not None,
                  header_style="bold")
    for c in columns:
        table.add_column(c, justify="right" if c in ("value", "upstream", "local", "contribution",
                                                    "gradient") else "left")
    return table


def forward_table(trace: Trace, style=box.ROUNDED) -> Table:
    """node | expression | value | gradient, in topological order."""
    table = _table(style, "node", "expression", "value", "gradient")
    nodes = trace.nodes
    for n in nodes[:MAX_ROWS]:
        name = Text(n.id, style="bold green" if n.id == trace.output else
                    "cyan" if n.kind == "input" else "")
        table.add_row(name, "input" if n.kind == "input" else n.expr, fmt(n.value), fmt(n.grad))
    if len(nodes) > MAX_ROWS:
        table.add_row("…", f"{len(nodes) - MAX_ROWS:,} more nodes", "", "")
    return table


def fan_in(trace: Trace, node_id: str) -> str:
    """'a + b' when several consumers send gradient to the node, else ''."""
    parts = [e.contribution for _, e in trace.consumers(node_id) if e.contribution is not None]
    return " + ".join(f"({fmt(p)})" for p in parts) if len(parts) > 1 else ""


def backward_table(trace: Trace, style=box.ROUNDED, upto: int | None = None) -> Table:
    """One row per edge: step, node, upstream, input, local rule, local, contribution."""
    table = _table(style, "step", "node", "upstream", "input", "local derivative", "local",
                   "contribution")
    steps = trace.steps
    shown = len(steps) if upto is None else upto
    big = len(trace.nodes) > MAX_DERIVATION_NODES
    for step in steps[: min(shown, MAX_ROWS)]:
        _step_rows(trace, table, step, big)
    if min(shown, len(steps)) > MAX_ROWS:
        table.add_row("…", f"{min(shown, len(steps)) - MAX_ROWS:,} more steps", *[""] * 5)
    return table


def _step_rows(trace: Trace, table: Table, step: Step, big: bool) -> None:
    up = fmt(step.upstream)
    summed = "" if big else fan_in(trace, step.node)
    if summed:
        up = f"{summed} = {up}"
    for k, e in enumerate(step.edges):
        rule = f"∂{step.node}/∂{e.input} = {e.rule}" if e.rule else ""
        contribution = fmt(e.contribution) if e.contribution is not None else e.note or "—"
        table.add_row(str(step.index + 1) if k == 0 else "", step.node if k == 0 else "",
                      up if k == 0 else "", e.input, rule, fmt(e.local), contribution)


def derivation_line(d: Derivation) -> str:
    """∂f/∂x = ∂f/∂q · ∂q/∂x = (-4) · (1) = -4, with a sum when several paths reach x."""
    head = f"∂{d.output}/∂{d.input}"
    if d.total_paths == 0:
        return f"{head} = 0 (no path from {d.input} to {d.output})"
    if not d.paths[0]:
        return f"{head} = 1"
    symbols = " + ".join(" · ".join(_factor(f) for f in p) for p in d.paths)
    numbers = " + ".join(" · ".join(f"({fmt(f.local)})" for f in p) for p in d.paths)
    more = ""
    if d.total_paths > len(d.paths):
        rest = d.total_paths - len(d.paths)
        more = f" + … ({rest:,} more path{'s' * (rest > 1)})"
    if len(d.paths) > 1 and not more:
        numbers += " = " + " + ".join(f"({fmt(product(p))})" for p in d.paths)
    return f"{head} = {symbols}{more} = {numbers}{more} = {fmt(d.grad)}"


def _factor(f) -> str:
    slot = f"[slot {f.slot}]" if f.repeated else ""
    return f"∂{f.node}/∂{f.input}{slot}"


def derivation_text(trace: Trace) -> Group | Text:
    """One derivation line per input."""
    if len(trace.nodes) > MAX_DERIVATION_NODES:
        lines = [f"∂{trace.output}/∂{k} = {fmt(v)}" for k, v in list(trace.grads.items())[:MAX_ROWS]]
        lines.append(f"(paths not listed: the graph has more than {MAX_DERIVATION_NODES:,} nodes)")
        return Text("\n".join(lines))
    return Group(*(Text(derivation_line(d)) for d in derivations(trace)))
