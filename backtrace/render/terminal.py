"""The explain view as rich renderables: forward table, backward table, chain-rule derivations."""
from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.text import Text

from ..derive import Derivation, derivations, product
from ..traces import Edge, Step, Trace
from ..values import describe
from . import tables
from .tables import MAX_ROWS, FitTable

MAX_DERIVATION_NODES = 2_000  # path enumeration is for teaching-size graphs


fmt = describe  # a table cell: numbers short, tensors by shape and norm, None as a dash


class ExplainView:
    """Everything `backtrace explain` prints for one trace, in one of the styles of STYLES."""

    def __init__(self, trace: Trace, style: str = "table", upto: int | None = None) -> None:
        self.trace, self.style, self.upto = trace, style, upto

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.trace.scalar:  # a tensor formula: matrices, rules with shapes
            yield from tensor_sections(self.trace, self.style, self.upto, options.max_width)
            return
        yield heading("Forward pass: values in topological order", self.style)
        yield forward_table(self.trace, self.style, self.upto)
        yield heading("Backward pass: upstream × local = contribution, in execution order",
                      self.style)
        if self.upto == 0:
            out = self.trace.output
            yield Text(f"no step yet: the output's seed gradient ∂{out}/∂{out} = 1")
        else:
            yield backward_table(self.trace, self.style, self.upto)
        if self.upto is None:
            yield heading(f"Gradients of {self.trace.output} (chain rule along every path)",
                          self.style)
            yield derivation_text(self.trace, self.style)


def tensor_sections(trace: Trace, style: str, upto: int | None, width: int) -> RenderResult:
    """The explain view of a tensor formula, fitted to `width` columns."""
    from . import tensor_view

    yield heading("Forward pass: values in topological order", style)
    yield tensor_view.forward_table(trace, style, width)
    yield heading("Backward pass: upstream × local = contribution, in execution order", style)
    yield tensor_view.backward_table(trace, style, width, upto)
    if upto is None:
        yield heading(f"Gradients of {trace.output}: the rule into each input, with shapes", style)
        yield tensor_view.gradients(trace, style, width)


def heading(text: str, style: str) -> Text:
    """A section heading: bold, or a Markdown heading."""
    if style == "markdown":
        return Text(f"\n## {text}\n")
    return Text(f"\n{text}", style="bold")


def known_grads(trace: Trace, upto: int) -> set[str]:
    """The nodes whose gradient is complete after the first `upto` backward steps: the output (its
    seed) and every node all of whose consumers have sent theirs."""
    last: dict[str, int] = {}
    for k, step in enumerate(trace.steps):
        for e in step.edges:
            last[e.input] = k
    return {n.id for n in trace.nodes if n.id == trace.output or last.get(n.id, upto) < upto}


def forward_table(trace: Trace, style: str = "table", upto: int | None = None) -> FitTable:
    """node | expression | value | gradient, in topological order (after `upto` backward steps,
    gradients not computed yet read 'pending')."""
    known = None if upto is None else known_grads(trace, upto)
    table = tables.table((tables.Col("node", kind="name"), "expression",
                          tables.Col("value", True, "number"), tables.Col("gradient", True, "number")),
                         style)
    nodes = trace.nodes
    for n in nodes[:MAX_ROWS]:
        name = Text(n.id, style="bold green" if n.id == trace.output else
                    "cyan" if n.kind == "input" else "")
        grad = fmt(n.grad) if known is None or n.id in known or n.grad is None else "pending"
        table.add_row(name, "input" if n.kind == "input" else n.expr, fmt(n.value), grad)
    if len(nodes) > MAX_ROWS:
        table.add_row("…", f"{len(nodes) - MAX_ROWS:,} more nodes", "", "")
    return table


def fan_in(trace: Trace, node_id: str) -> str:
    """'a + b' when several consumers send gradient to the node, else ''."""
    parts = [e.contribution for _, e in trace.consumers(node_id) if e.contribution is not None]
    return " + ".join(f"({fmt(p)})" for p in parts) if len(parts) > 1 else ""


def _upstream(trace: Trace, step: Step, edge: Edge | None) -> str:
    up = fmt(step.upstream)
    summed = "" if len(trace.nodes) > MAX_DERIVATION_NODES else fan_in(trace, step.node)
    return f"{summed} = {up}" if summed else up


def _rule(trace: Trace, step: Step, e: Edge | None) -> str:
    return f"∂{step.node}/∂{e.input} = {e.rule}" if e is not None and e.rule else ""


def _contribution(trace: Trace, step: Step, e: Edge | None) -> str:
    if e is None:
        return "—"
    return fmt(e.contribution) if e.contribution is not None else e.note or "—"


# The explain view's backward table: the chain rule of each edge, as the board shows it.
COLUMNS = (
    tables.Column("step", lambda t, s, e: str(s.index + 1), per_step=True),
    tables.Column("node", lambda t, s, e: s.node, per_step=True, kind="name"),
    tables.Column("upstream", _upstream, per_step=True, right=True),
    tables.Column("input", lambda t, s, e: e.input if e is not None else "—", kind="name"),
    tables.Column("local derivative", _rule),
    tables.Column("local", lambda t, s, e: fmt(e.local) if e is not None else "", right=True),
    tables.Column("contribution", _contribution, right=True),
)


def backward_table(trace: Trace, style: str = "table", upto: int | None = None) -> FitTable:
    """One row per edge: step, node, upstream, input, local rule, local, contribution."""
    steps = trace.steps if upto is None else trace.steps[:upto]
    return tables.backward_table(trace, COLUMNS, style, steps)


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


def derivation_text(trace: Trace, style: str = "plain") -> Group | Text:
    """One derivation line per input (in Markdown, one list item each, as code: * is not emphasis)."""
    if len(trace.nodes) > MAX_DERIVATION_NODES:
        lines = [f"∂{trace.output}/∂{k} = {fmt(v)}" for k, v in list(trace.grads.items())[:MAX_ROWS]]
        note = f"(paths not listed: the graph has more than {MAX_DERIVATION_NODES:,} nodes)"
    else:
        lines, note = [derivation_line(d) for d in derivations(trace)], ""
    if style == "markdown":
        return Text("\n".join([*(f"- `{line}`" for line in lines), *([f"\n{note}"] if note else [])]))
    return Group(*(Text(line) for line in [*lines, *([note] if note else [])]))
