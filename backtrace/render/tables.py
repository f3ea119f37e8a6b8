"""The one table preset every view uses, and the one backward-table builder.

`table(...)` makes a rich Table in a named style (boxed on a terminal, plain text, Markdown).
`backward_table(...)` lays out backward steps one row per edge from a tuple of `Column`s, so the
explain view, the torch trace view and the pytest failure report differ only in their columns.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from ..traces import Edge, Step, Trace

STYLES = {"table": box.ROUNDED, "plain": None, "markdown": box.MARKDOWN}
MAX_ROWS = 200  # beyond this a table shows its head and says how much it left out


def table(columns: Iterable[str], style: str = "plain", right: Collection[str] = (),
          **options: Any) -> Table:
    """A Table with these column headers in a style of STYLES; `right` columns are right-aligned."""
    frame = STYLES[style]
    t = Table(box=frame, show_edge=frame is not None, pad_edge=frame is not None,
              header_style="bold", **options)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left")
    return t


def add_row(t: Table, *cells: str | Text) -> None:
    """A row of plain text: '[scalar]' and friends are not rich markup."""
    t.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells))


@dataclass(frozen=True)
class Column:
    """One column of a backward table: its header and the text of a cell.

    `cell(trace, step, edge)` gets edge None for a step without edges; a column `per_step` shows
    only on the first row of each step."""

    name: str
    cell: Callable[[Trace, Step, Edge | None], str | Text]
    per_step: bool = False
    right: bool = False


def backward_table(trace: Trace, columns: Sequence[Column], style: str = "plain",
                   steps: Sequence[Step] | None = None, limit: int = MAX_ROWS,
                   text: bool = False) -> Table:
    """One row per edge of each step (the first `limit` steps), then a row saying what was left out.

    text: cells become Text (no markup), for views whose values may contain brackets."""
    steps = trace.steps if steps is None else steps
    t = table([c.name for c in columns], style, right={c.name for c in columns if c.right})
    put = (lambda *cells: add_row(t, *cells)) if text else t.add_row
    for step in steps[:limit]:
        for k, edge in enumerate(step.edges or (None,)):
            put(*("" if c.per_step and k else c.cell(trace, step, edge) for c in columns))
    if len(steps) > limit:
        put("…", f"{len(steps) - limit:,} more steps", *[""] * (len(columns) - 2))
    return t
