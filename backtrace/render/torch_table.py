"""Views of torch traces: the per-node backward table of `backtrace trace`, and the engine
cross-check section of `backtrace explain --engine both`. Values may be floats, TensorStats or tensors."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from ..errors import UsageError
from ..traces import Edge, Step, Trace
from ..values import describe
from . import tables
from .tables import MAX_ROWS
from .terminal import heading


def short(v: Any) -> str:
    """A narrow cell: tensors and stats as [shape] ‖·‖ only, slots numbered."""
    return describe(v, slots=True)


def local_text(e: Edge) -> str:
    """The local derivative: its numbers when small, else a dash (`not_computed` says why, once)."""
    return short(e.local) if e.local is not None else "—"


def not_computed(steps: Sequence[Step]) -> str:
    """One line for every local derivative the table leaves out, instead of one per row:
    'local: 41 of 45 Jacobians not computed (more entries than the tracer's local_max; up to
    128×128): ...'."""
    edges = [e for s in steps for e in s.edges if e.contribution is not None or e.local is not None]
    missing = [e for e in edges if e.local is None]
    if not missing:
        return ""
    sizes = [tuple(int(d) for d in m.groups()) for m in
             (re.search(r"(\d+)×(\d+)", e.rule) for e in missing) if m]
    biggest = max(sizes, key=lambda s: s[0] * s[1], default=None)
    why = "more entries than the tracer's local_max" if any("too large" in e.rule for e in missing) \
        else "see edge.rule"
    upto = f"; up to {biggest[0]}×{biggest[1]}" if biggest else ""
    return (f"local: {len(missing):,} of {len(edges):,} Jacobians not computed ({why}{upto}): "
            "backtrace.trace(local_max=N) computes bigger ones")


def fmt(v: Any) -> str:
    """A cell: numbers short, stats and tensors as [shape] ‖·‖ max|·|, slots numbered."""
    return describe(v, absmax=True, slots=True)


def label(trace: Trace, node_id: str) -> str:
    """A node's id with its variable or parameter name: '%5 (logits)'."""
    n = trace.node(node_id)
    name = n.meta.get("name")
    return f"{node_id} ({name})" if name and name != node_id else node_id


def _contribution(trace: Trace, step: Step, e: Edge | None) -> str:
    if e is None:
        return ""
    if e.contribution is not None:
        return short(e.contribution)
    return "— (needs no grad)" if "does not require grad" in e.note else e.note or "—"


# `backtrace trace`: every backward step of a real model, by module. On a narrow terminal the
# local derivatives go first, then the module, then the op (drop).
COLUMNS = (
    tables.Column("step", lambda t, s, e: str(s.index + 1), per_step=True),
    tables.Column("node", lambda t, s, e: label(t, s.node), per_step=True, kind="name"),
    tables.Column("op", lambda t, s, e: t.node(s.node).op, per_step=True, kind="name", drop=1),
    tables.Column("module", lambda t, s, e: t.node(s.node).module, per_step=True, kind="name",
                  drop=2),
    tables.Column("upstream", lambda t, s, e: short(s.upstream), per_step=True, right=True),
    tables.Column("input", lambda t, s, e: label(t, e.input) if e is not None else "—",
                  kind="name"),
    tables.Column("local", lambda t, s, e: local_text(e) if e is not None else "", right=True,
                  drop=3),
    tables.Column("contribution", _contribution, right=True),
)


class TorchTraceView:
    """`backtrace trace`: every backward step of one call, then the gradient of each named leaf."""

    def __init__(self, trace: Trace, style: str = "table", module: str | None = None) -> None:
        self.trace, self.style, self.module = trace, style, module
        if module is not None and not any(self._wanted(n.id) for n in trace.nodes):
            modules = sorted({n.module for n in trace.nodes} - {""})
            raise UsageError(f"no node in module {module!r} (modules: {', '.join(modules) or 'none'})")

    def _wanted(self, node_id: str) -> bool:
        if self.module is None:
            return True
        path = self.trace.node(node_id).module
        return path == self.module or path.startswith(self.module + ".")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        trace, style = self.trace, self.style
        meta = trace.meta
        where = f", module {self.module}" if self.module is not None else ""
        yield heading(f"Backward call {meta.get('call', '?')} ({meta.get('kind', 'backward')}, "
                      f"level {meta.get('level', '?')}{where}): upstream → each input, "
                      f"in execution order", style)
        steps = [s for s in trace.steps if self._wanted(s.node)]
        missing = not_computed(steps)
        edges = [e for s in steps for e in s.edges]
        computed = sum(e.local is not None for e in edges)
        # A column mostly of dashes says less than the one line under the table.
        columns = COLUMNS if computed * 2 >= len(edges) else \
            tuple(c for c in COLUMNS if c.name != "local")
        yield tables.backward_table(trace, columns, style, steps)
        if missing:
            yield Text(missing, style="dim")
        grads = [(k, v) for k, v in trace.grads.items() if self._wanted(k)]
        yield heading(f"Gradients of {label(trace, trace.output)} reaching each named leaf", style)
        leaves = tables.table((tables.Col("leaf", kind="name"),
                               tables.Col("module", kind="name", drop=1),
                               tables.Col("value", True, "number"),
                               tables.Col("gradient", True, "number")), style)
        for k, v in grads[:MAX_ROWS]:
            node = trace.node(k)
            tables.add_row(leaves, k, node.module, fmt(node.value), fmt(v))
        if len(grads) > MAX_ROWS:
            tables.add_row(leaves, "…", f"{len(grads) - MAX_ROWS:,} more", "", "")
        yield leaves
        if "error" in meta:
            yield Text(f"backward raised: {meta['error']}", style="bold red")


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
            yield heading("Torch engine (float64): the same graph through PyTorch autograd",
                          self.style)
            table = tables.table((tables.Col("node", kind="name"),
                                  tables.Col("torch node", kind="name", drop=1),
                                  *(tables.Col(h, True, "number") for h in
                                    ("value", "gradient", "|Δ| value", "|Δ| gradient"))),
                                 self.style)
            for n in list(tor.nodes)[:MAX_ROWS]:
                r = ref.node(n.id)
                tables.add_row(table, n.id, n.meta.get("torch_type", "") or n.kind, fmt(n.value),
                               fmt(n.grad), fmt(delta(r.value, n.value)), fmt(delta(r.grad, n.grad)))
            if len(tor.nodes) > MAX_ROWS:
                tables.add_row(table, "…", f"{len(tor.nodes) - MAX_ROWS:,} more nodes", *[""] * 4)
            yield table
        if self.verdicts:
            yield Text("")
