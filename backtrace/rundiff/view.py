"""The diff report as a rich renderable: the verdict, the first divergence with its numbers, the
error per module and per parameter, what aligned with nothing. Boxed on a terminal, plain text or
Markdown elsewhere; every table goes through render.tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..values import describe, format_number, shape_text
from .measure import distance, relative, size
from .report import DiffReport, Divergence, percent

WIDTH = 80  # off a terminal the report is laid out for 80 columns


class DiffView:
    """``console.print(DiffView(report))``; `limit` rows per table (None: all)."""

    def __init__(self, report: DiffReport, style: str = "table", limit: int | None = 10) -> None:
        self.report, self.style, self.limit = report, style, limit

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        r = self.report
        yield Text(r.line(), style="bold red" if r.differ else "bold green")
        if r.first is not None:
            yield from self._first(r.first)
        if r.earlier is not None:
            yield self._heading("Below the tolerance, the differences start earlier")
            yield Text(f"{r.earlier.sentence(r.names)}: relative error "
                       f"{_error(r.earlier.rel_error, r.earlier.exact)}, which grows past the "
                       "tolerance further on.")
        others = r.divergences[1:]
        if others:
            yield self._heading(f"Other places where a difference starts ({len(others)})")
            for d in others[: self.limit]:
                yield Text(f"  {d.what}: {d.sentence(r.names)}")
            yield from self._more(len(others))
        narrow = options.max_width < 72  # leave out what matters least, not the names' ends
        yield from self._modules(narrow)
        yield from self._parameters(narrow)
        yield from self._alignment()

    def _heading(self, text: str) -> Any:
        from ..render.terminal import heading
        return heading(text, self.style)

    def _more(self, n: int) -> Any:
        from rich.text import Text
        if self.limit is not None and n > self.limit:
            yield Text(f"  … {n - self.limit} more (--limit 0 shows all)")

    def _first(self, d: Divergence) -> Any:
        from rich.text import Text

        from ..render.tables import add_row, table

        yield self._heading("First divergence in backward order")
        yield Text(d.sentence(self.report.names))
        t = table(("quantity", self.report.names[0], self.report.names[1], "rel. error"),
                  self.style, right=("rel. error",))
        for quantity, a, b in d.agreed:
            delta, exact = distance(a, b)
            err = relative(delta, size(a))
            add_row(t, quantity, _value(a), _value(b),
                    "agrees" if err == 0 else f"{_error(err, exact)} (within)")
        add_row(t, _quantity(d), _value(d.a), _value(d.b), _error(d.rel_error, d.exact))
        yield t

    def _modules(self, narrow: bool) -> Any:
        from ..render.tables import add_row, table

        r = self.report
        if not r.modules:
            return
        yield self._heading("Relative gradient error per module, largest first")
        norm = f"‖∂L/∂·‖ {r.names[0]}"
        columns = ("module", norm, "rel. error") if narrow else \
            ("module", "nodes", norm, "rel. error", "largest at")
        t = table(columns, self.style, right=("nodes", norm, "rel. error"))
        for m in _head(r.modules, self.limit):
            cells = {"module": m.module or "(top level)", "nodes": str(m.nodes),
                     norm: format_number(_g(m.norm_a)), "rel. error": _error(m.rel_error, m.exact),
                     "largest at": m.worst or "—"}
            add_row(t, *(cells[c] for c in columns))
        yield t
        yield from self._more(len(r.modules))

    def _parameters(self, narrow: bool) -> Any:
        from ..render.tables import add_row, table

        r = self.report
        if not r.parameters:
            return
        yield self._heading("Gradient of each parameter, largest error first")
        a, b = (f"‖grad‖ {n}" for n in r.names)
        columns = ("", "parameter", a, "rel. error") if narrow else \
            ("", "parameter", "shape", a, b, "rel. error")
        t = table(columns, self.style, right=(a, b, "rel. error"))
        for p in _head(r.parameters, self.limit):
            cells = {"": "✓" if p.ok else "✗", "parameter": p.name, "shape": shape_text(p.shape),
                     a: format_number(_g(p.norm_a)), b: format_number(_g(p.norm_b)),
                     "rel. error": _error(p.rel_error, p.exact)}
            add_row(t, *(cells[c] for c in columns))
        yield t
        yield from self._more(len(r.parameters))

    def _alignment(self) -> Any:
        from rich.text import Text

        r = self.report
        (na, nb), (ca, cb) = r.nodes, r.casts
        a, b = r.names
        casts = f"; casts seen through: {ca} in {a}, {cb} in {b}" if ca or cb else ""
        yield Text(f"\n{r.aligned} nodes aligned ({na} compared in {a}, {nb} in {b}){casts}.")
        for u in _head(r.unaligned, self.limit):
            if u.a and u.b:
                yield Text(f"  {a} has {_list(u.a)} where {b} has {_list(u.b)}")
            else:
                yield Text(f"  only in {a if u.a else b}: {_list(u.a or u.b)}")
        yield from self._more(len(r.unaligned))
        if not r.exact:
            yield Text("≥: a lower bound from the recorded statistics (norm, mean, max |x|); "
                       'trace with level="full" for exact errors.')


def _quantity(d: Divergence) -> str:
    if d.what == "local":
        return f"to {d.input}" if d.input else "sent"
    return "value" if d.what == "value" else "gradient"


def _value(v: Any) -> str:
    return describe(v, listed=3)


def _error(x: float, exact: bool) -> str:
    return percent(x) if exact or x == 0 else f"≥ {percent(x)}"


def _g(x: float) -> float:
    return float(f"{x:.4g}")


def _head(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def _list(items: tuple[str, ...], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def show(report: DiffReport, style: str | None = None, limit: int | None = 10) -> None:
    """Print the report: boxed on a terminal, plain text for 80 columns elsewhere."""
    from ..render import to_text
    from ..render.console import console, is_terminal

    style = style or ("table" if is_terminal() else "plain")
    view = DiffView(report, style, limit)
    if is_terminal():
        console().print(view)
    else:
        console().file.write(to_text(view, width=WIDTH) + "\n")


def explore(report: DiffReport, trace_b: Any, path: Any) -> Any:
    """Write the explorer page of run B's trace with the report in a Diff tab (its JSON and
    its text); returns the path."""
    from ..errors import UsageError
    from ..render import to_text
    from ..render.explorer import REPORT_COLUMNS
    from ..render.formats import FORMATS, export
    from ..traces import Trace

    if Path(path).suffix.lower().lstrip(".") not in FORMATS["html"].suffixes:  # .html, .htm
        raise UsageError(f"diff -o writes an explorer page: give a path ending in .html, not {path}")
    data = {**report.to_dict(), "text": to_text(DiffView(report, "plain", 10), width=REPORT_COLUMNS)}
    meta = {**trace_b.meta, "diff": data}
    return export(Trace(trace_b.engine, trace_b.output, trace_b.nodes, trace_b.steps, meta), path)
