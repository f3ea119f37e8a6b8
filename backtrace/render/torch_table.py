"""Views of torch traces: the per-node backward table of `backtrace trace`, and the engine
cross-check section of `backtrace explain --engine both`. Values may be floats, TensorStats or tensors."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ..traces import Trace
from .terminal import BOXES, MAX_ROWS, _table
from ..values import describe


def short(v: Any) -> str:
    """A narrow cell: tensors and stats as [shape] ‖·‖ only, slots numbered."""
    return describe(v, slots=True)


def _local(e) -> str:
    """The local derivative: its numbers when small, else the Jacobian's size and why not."""
    if e.local is not None:
        return short(e.local)
    return e.rule.replace("Jacobian ", "J ").replace(" (not computed: too large)", " (too large)") \
        .replace("(not computed: ", "(")


def fmt(v: Any) -> str:
    """A cell: numbers short, stats and tensors as [shape] ‖·‖ max|·|, slots numbered."""
    return describe(v, absmax=True, slots=True)


def _label(trace: Trace, node_id: str) -> str:
    n = trace.node(node_id)
    name = n.meta.get("name")
    return f"{node_id} ({name})" if name and name != node_id else node_id


def _row(table: Table, *cells: str) -> None:
    """Add a row of plain text: '[scalar]' and friends are not rich markup."""
    table.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells))


class TorchTraceView:
    """`backtrace trace`: every backward step of one call, then the gradient of each named leaf."""

    def __init__(self, trace: Trace, style: str = "table", module: str | None = None) -> None:
        self.trace, self.style, self.module = trace, style, module

    def _wanted(self, node_id: str) -> bool:
        if self.module is None:
            return True
        path = self.trace.node(node_id).meta.get("module", "")
        return path == self.module or path.startswith(self.module + ".")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        trace, style = self.trace, BOXES[self.style]
        meta = trace.meta
        where = f", module {self.module}" if self.module is not None else ""
        yield self._heading(f"Backward call {meta.get('call', '?')} ({meta.get('kind', 'backward')}, "
                            f"level {meta.get('level', '?')}{where}): upstream → each input, "
                            f"in execution order")
        table = _table(style, "step", "node", "op", "module", "upstream", "input", "local",
                       "contribution")
        steps = [s for s in trace.steps if self._wanted(s.node)]
        for step in steps[:MAX_ROWS]:
            node = trace.node(step.node)
            op = node.op
            if not step.edges:
                _row(table, str(step.index + 1), _label(trace, step.node), op,
                              node.meta.get("module", ""), short(step.upstream), "—", "", "")
            for k, e in enumerate(step.edges):
                local = _local(e)
                contribution = short(e.contribution) if e.contribution is not None else \
                    "— (needs no grad)" if "does not require grad" in e.note else e.note or "—"
                first = k == 0
                _row(table, str(step.index + 1) if first else "",
                              _label(trace, step.node) if first else "", op if first else "",
                              node.meta.get("module", "") if first else "",
                              short(step.upstream) if first else "", _label(trace, e.input), local,
                              contribution)
        if len(steps) > MAX_ROWS:
            _row(table, "…", f"{len(steps) - MAX_ROWS:,} more steps", *[""] * 6)
        yield table
        grads = [(k, v) for k, v in trace.grads.items() if self._wanted(k)]
        yield self._heading(f"Gradients of {_label(trace, trace.output)} reaching each named leaf")
        leaves = _table(style, "leaf", "module", "value", "gradient")
        for k, v in grads[:MAX_ROWS]:
            node = trace.node(k)
            _row(leaves, k, node.meta.get("module", ""), fmt(node.value), fmt(v))
        if len(grads) > MAX_ROWS:
            _row(leaves, "…", f"{len(grads) - MAX_ROWS:,} more", "", "")
        yield leaves
        if "error" in meta:
            yield Text(f"backward raised: {meta['error']}", style="bold red")

    def _heading(self, text: str) -> Text:
        if self.style == "markdown":
            return Text(f"\n## {text}\n")
        return Text(f"\n{text}", style="bold")


class EngineCheck:
    """The torch engine's numbers beside the reference engine's (the CLI prints the verdict lines,
    unwrapped, after it)."""

    def __init__(self, reference: Trace | None, torch: Trace | None, verdicts: Sequence,
                 style: str = "table") -> None:
        self.reference, self.torch, self.verdicts, self.style = reference, torch, verdicts, style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from ..compare import delta

        ref, tor = self.reference, self.torch
        if ref is not None and tor is not None:
            heading = "Torch engine (float64): the same graph through PyTorch autograd"
            yield Text(f"\n## {heading}\n") if self.style == "markdown" else \
                Text(f"\n{heading}", style="bold")
            table: Table = _table(BOXES[self.style], "node", "torch node", "value", "gradient",
                                  "|Δ| value", "|Δ| gradient")
            for column in table.columns[2:]:
                column.justify = "right"
            for n in list(tor.nodes)[:MAX_ROWS]:
                r = ref.node(n.id)
                _row(table, n.id, n.meta.get("torch_type", "") or n.kind, fmt(n.value),
                              fmt(n.grad), fmt(delta(r.value, n.value)), fmt(delta(r.grad, n.grad)))
            if len(tor.nodes) > MAX_ROWS:
                _row(table, "…", f"{len(tor.nodes) - MAX_ROWS:,} more nodes", *[""] * 4)
            yield table
        if self.verdicts:
            yield Text("")
