"""`backtrace ops`: the op table with its derivative rules."""
from __future__ import annotations

import click


@click.command()
def ops() -> None:
    """List every operator and function with its local derivative rules.

    Each row is one entry of backtrace's op table, the same table the parser, the engines and
    the renderers read."""
    from rich import box
    from rich.table import Table

    from ..ops import CALL, CONSTANTS, OPS, operands
    from .output import console, is_terminal

    table = Table(title="backtrace ops", header_style="bold", box=box.ROUNDED if is_terminal() else None)
    for column in ("op", "written", "arity", "local derivatives", "meaning"):
        table.add_column(column, no_wrap=column != "meaning")
    for op in OPS.values():
        written = "  or  ".join([op.expression(*operands(op.arity)),
                                 *(f"{name}({', '.join(operands(op.arity))})" for name in op.spellings
                                   if op.kind != CALL)])
        rules = "\n".join(op.rule_text(slot) for slot in range(op.arity))
        table.add_row(op.name, written, str(op.arity), rules, op.doc)
    out = console()
    out.print(table)
    out.print("constants: " + ", ".join(f"{k} = {v!r}" for k, v in CONSTANTS.items()))
