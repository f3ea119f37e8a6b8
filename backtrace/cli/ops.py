"""`backtrace ops`: the op table with its derivative rules."""
from __future__ import annotations

import click


@click.command()
def ops() -> None:
    """List every operator and function with its local derivative rules.

    Each row is one entry of backtrace's op table, the same table the parser, the engines and
    the renderers read."""
    from ..render.ops_view import constants_line, ops_table
    from ..render.console import console, is_terminal

    out = console()
    out.print(ops_table("table" if is_terminal() else "plain"))
    out.print(constants_line(), highlight=False)
