"""The one table preset every view uses, and the one backward-table builder.

`table(...)` makes a table in a named style (boxed on a terminal, plain text, Markdown) that fits
the width it is printed at: numbers are never cut, long names lose their middle (never so much
that two names read the same), text wraps at spaces, borders go, and optional columns go last.
`backward_table(...)` lays out backward steps one row per edge from a tuple of `Column`s, so the
explain view, the torch trace view and the pytest failure report differ only in their columns.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..traces import Edge, Step, Trace

STYLES = {"table": box.ROUNDED, "plain": None, "markdown": box.MARKDOWN}
MAX_ROWS = 200  # beyond this a table shows its head and says how much it left out
KINDS = ("text", "name", "number")  # how a column gives way: wraps, loses its middle, never
MIN_NAME = 14  # a name is not cut shorter than this (cross_entropy, AccumulateGrad stay whole)


def elide(text: str, width: int) -> str:
    """`text` in at most `width` cells. A dotted path keeps its last part, its numbers (h.0, h.1),
    then its next-to-last and first parts, each dropped run shown as …; other text loses its middle."""
    if cell_len(text) <= width or width < 3:
        return text
    parts = text.split(".")
    if len(parts) >= 2 and all(parts):
        n = len(parts)
        order = [n - 1, *(k for k in range(1, n - 1) if parts[k].isascii() and parts[k].isdigit()), n - 2, 0,
                 *range(1, n - 2)]
        kept: set[int] = set()
        for k in dict.fromkeys(order):
            trial = _path(parts, kept | {k})
            if cell_len(trial) <= width or not kept:
                kept.add(k)
        return _path(parts, kept)
    head = (width - 1) // 3  # names differ most at their end
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _path(parts: list[str], kept: set[int]) -> str:
    """The parts kept, joined by dots, each run of dropped parts as one …."""
    out, dropped = "", False
    for k, p in enumerate(parts):
        if k in kept:
            out += ("…" if dropped else "." if out else "") + p
            dropped = False
        else:
            dropped = True
    return out + ("…" if dropped else "")


def elide_distinct(texts: Iterable[str], width: int) -> dict[str, str]:
    """Each text elided to `width`, widened where that would make two different texts read alike."""
    texts = list(dict.fromkeys(texts))
    widths = dict.fromkeys(texts, width)
    while True:
        shown = {t: elide(t, widths[t]) for t in texts}
        groups: dict[str, list[str]] = defaultdict(list)
        for t, short in shown.items():
            groups[short].append(t)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:  # texts are distinct, so widening ends at the latest with each whole
            return shown
        for group in clashes:
            for t in group:
                widths[t] += 1


@dataclass
class Col:
    """A column of a table: its header, alignment, how it gives way, and when it may be left out
    (drop: 0 never; higher numbers go first)."""

    name: str
    right: bool = False
    kind: str = "text"
    drop: int = 0
    no_wrap: bool = False


class FitTable:
    """A table that fits the width it is printed at (see the module's docstring)."""

    def __init__(self, columns: Iterable[str | Col], style: str = "plain",
                 right: Collection[str] = (), title: str | None = None, **options: Any) -> None:
        self.columns = [c if isinstance(c, Col) else
                        Col(c, c in right, "number" if c in right else "text") for c in columns]
        self.style, self.title, self.options = style, title, options
        self.rows: list[tuple[Text, ...]] = []
        self.notes: list[str] = []  # printed under the table, e.g. which columns did not fit

    def add_row(self, *cells: str | Text) -> None:
        """A row of text: '[scalar]' and friends are never read as markup."""
        self.rows.append(tuple(c if isinstance(c, Text) else Text(str(c)) for c in cells))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.fit(options.max_width)

    def fit(self, width: int) -> Table | Group:
        """The rich Table for `width` cells (rows one under another when no table fits). Names
        and text give way first, numbers wrap at their spaces only after that; borders go
        before any column does, optional columns one by one after that."""
        if self.style == "markdown":  # data: never cut, | escaped so it stays one cell
            return self._build(list(range(len(self.columns))), self._natural(), "markdown")
        shown = list(range(len(self.columns)))
        styles = [self.style, "plain"] if self.style == "table" else ["plain"]
        while True:
            # Borders only while nothing wraps; then spaced columns (numbers wrapping if need
            # be); one space apart only after that.
            attempts = [(st, False) for st in styles if st != "plain"] + [
                ("plain", False), ("plain", True), ("tight", False), ("tight", True)]
            for style, numbers in attempts:
                widths = self._shrink(shown, width - _overhead(style, len(shown)), numbers)
                if widths is not None:
                    return self._build(shown, widths, style)
            styles = ["plain"]
            optional = [i for i in shown if self.columns[i].drop]
            if not optional:
                return self._stacked(shown)
            shown.remove(max(optional, key=lambda i: (self.columns[i].drop, i)))

    def _cells(self, i: int) -> list[Text]:
        return [r[i] for r in self.rows if i < len(r)]

    def _natural(self) -> list[int]:
        return [max([cell_len(c.name), *(max(map(cell_len, t.plain.split("\n"))) for t in
                                          self._cells(i))]) for i, c in enumerate(self.columns)]

    def _least(self) -> list[int]:
        """The narrowest each column may be: every word whole (a number is one word), a name
        MIN_NAME wide, a no_wrap column as wide as its widest cell."""
        least = []
        for i, (col, nat) in enumerate(zip(self.columns, self._natural())):
            header = max(map(cell_len, col.name.split()), default=1)
            if col.no_wrap:
                least.append(nat)
            elif col.kind == "name":  # as narrow as names stay apart
                short = elide_distinct((t.plain for t in self._cells(i)), max(MIN_NAME, header))
                least.append(min(nat, max([header, MIN_NAME, *map(cell_len, short.values())])))
            else:
                words = [cell_len(w) for t in self._cells(i) for w in t.plain.split()]
                least.append(min(nat, max([header, *words])))
        return least

    def _shrink(self, shown: list[int], room: int, numbers: bool) -> list[int] | None:
        """Widths for the shown columns within `room`, the widest giving way first; numbers keep
        their natural width unless `numbers` (None: they cannot fit)."""
        nat, least = self._natural(), list(self._least())
        if not numbers:
            for i in shown:
                if self.columns[i].kind == "number":
                    least[i] = nat[i]
        if sum(least[i] for i in shown) > room:
            return None
        lo, hi = 0, max((nat[i] for i in shown), default=0)
        while lo < hi:  # the largest cap on the giving columns that fits
            cap = (lo + hi + 1) // 2
            if sum(max(least[i], min(nat[i], cap)) for i in shown) <= room:
                lo = cap
            else:
                hi = cap - 1
        widths = list(nat)
        for i in shown:
            widths[i] = max(least[i], min(nat[i], lo))
        return widths

    def _build(self, shown: list[int], widths: list[int], style: str) -> Table:
        frame = STYLES.get(style)
        t = Table(box=frame, show_edge=frame is not None, pad_edge=frame is not None,
                  padding=(0, 1, 0, 0) if style == "tight" else (0, 1), header_style="bold",
                  title=self.title, **self.options)
        cells = {i: self._column_cells(i, widths[i], style) for i in shown}
        for i in shown:
            col = self.columns[i]
            width = max([widths[i], *(cell_len(c.plain) for c in cells[i]
                                      if col.kind == "name")], default=widths[i])
            t.add_column(_escape(col.name, style), justify="right" if col.right else "left",
                         width=None if style == "markdown" else width, overflow="fold",
                         no_wrap=col.no_wrap or col.kind == "name" or style == "markdown")
        for k in range(len(self.rows)):
            t.add_row(*(cells[i][k] if k < len(cells[i]) else Text("") for i in shown))
        return t

    def _column_cells(self, i: int, width: int, style: str) -> list[Text]:
        texts = [r[i] if i < len(r) else Text("") for r in self.rows]
        if style == "markdown":
            return [Text(_escape(t.plain, style), style=t.style) for t in texts]
        if self.columns[i].kind != "name":
            return texts
        short = elide_distinct((t.plain for t in texts), width)
        return [Text(short[t.plain], style=t.style) if short[t.plain] != t.plain else t
                for t in texts]


    def _stacked(self, shown: list[int]) -> Group:
        """Too narrow for any table: each row as its first cell, then its other cells, one
        'header  value' line each (values wrap under themselves)."""
        first, rest = shown[0], shown[1:]
        parts: list[Any] = [Text(self.title, style="bold")] if self.title else []
        for row in self.rows:
            cell = row[first] if first < len(row) else Text("")
            if cell.plain:
                parts.append(Text.assemble(cell, style="bold"))
            grid = Table.grid(padding=(0, 2), pad_edge=True)
            grid.add_column(no_wrap=True, style="dim")
            grid.add_column(overflow="fold")
            for i in rest:
                if i < len(row) and row[i].plain:
                    grid.add_row(self.columns[i].name, row[i])
            if grid.row_count:
                parts.append(grid)
        return Group(*parts)


def _escape(text: str, style: str) -> str:
    """A Markdown table cell keeps its | (`|Δ| value` is one header, not three)."""
    return text.replace("|", "\\|") if style == "markdown" else text


def _overhead(style: str, columns: int) -> int:
    """Cells a table's borders and padding take: boxed │ x │ y │, plain 'x  y', tight 'x y'."""
    if style == "table":
        return 3 * columns + 1
    return (1 if style == "tight" else 2) * max(columns - 1, 0)


def table(columns: Iterable[str | Col], style: str = "plain", right: Collection[str] = (),
          **options: Any) -> FitTable:
    """A table with these column headers in a style of STYLES; `right` columns are right-aligned
    numbers (never cut); the others wrap at spaces. Col(...) gives a column more to say."""
    return FitTable(columns, style, right, **options)


def add_row(t: FitTable, *cells: str | Text) -> None:
    """A row of plain text: '[scalar]' and friends are not rich markup."""
    t.add_row(*cells)


@dataclass(frozen=True)
class Column:
    """One column of a backward table: its header and the text of a cell.

    `cell(trace, step, edge)` gets edge None for a step without edges; a column `per_step` shows
    only on the first row of each step. kind and drop: as Col's."""

    name: str
    cell: Callable[[Trace, Step, Edge | None], str | Text]
    per_step: bool = False
    right: bool = False
    kind: str = ""  # "" : number when right-aligned, else text
    drop: int = 0

    def col(self) -> Col:
        return Col(self.name, self.right, self.kind or ("number" if self.right else "text"),
                   self.drop)


def backward_table(trace: Trace, columns: Sequence[Column], style: str = "plain",
                   steps: Sequence[Step] | None = None, limit: int = MAX_ROWS,
                   text: bool = False) -> FitTable:
    """One row per edge of each step (the first `limit` steps), then a row saying what was left out.

    text: kept for callers; cells are always text, never markup."""
    steps = trace.steps if steps is None else steps
    t = FitTable([c.col() for c in columns], style)
    for step in steps[:limit]:
        for k, edge in enumerate(step.edges or (None,)):
            t.add_row(*("" if c.per_step and k else c.cell(trace, step, edge) for c in columns))
    if len(steps) > limit:
        t.add_row("…", f"{len(steps) - limit:,} more steps", *[""] * (len(columns) - 2))
    return t
