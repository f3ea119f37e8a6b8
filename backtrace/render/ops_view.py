"""`backtrace ops`: the op table as a table, one row per op with its derivative rules."""
from __future__ import annotations

from rich.table import Table

from ..ops import CALL, CONSTANTS, OPS, operands
from . import tables


def ops_table(style: str = "plain") -> Table:
    """Every op: its name, how it is written, its arity, its local derivatives, what it means."""
    t = tables.table((tables.Col("op", no_wrap=True), "written",
                      tables.Col("arity", True, "number", drop=2),
                      tables.Col("local derivatives", no_wrap=True),
                      tables.Col("meaning", drop=1)), style, title="backtrace ops")
    for op in OPS.values():
        names = operands(op.arity)
        spelled = [f"{name}({', '.join(names)})" for name in op.spellings if op.kind != CALL]
        tables.add_row(t, op.name, "  or  ".join([op.expression(*names), *spelled]),
                       str(op.arity), "\n".join(op.rule_text(k) for k in range(op.arity)), op.doc)
    return t


def constants_line() -> str:
    """The named constants of the formula language, with their values."""
    return "constants: " + ", ".join(f"{k} = {v!r}" for k, v in CONSTANTS.items())


def show_ops(style: str | None = None) -> None:
    """Print what `backtrace ops` prints: every op with its derivative rules, and the constants."""
    from .console import console, is_terminal

    out = console()
    out.print(ops_table(style or ("table" if is_terminal() else "plain")))
    out.print(constants_line(), highlight=False)
