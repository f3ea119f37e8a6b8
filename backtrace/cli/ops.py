"""`backtrace ops`: the op table with its derivative rules."""
from __future__ import annotations

import click


@click.command()
def ops() -> None:
    """List every operator and function with its local derivative rules.

    Each row is one entry of backtrace's op table, the same table the parser, the engines and
    the renderers read."""
    from ..render.ops_view import show_ops

    show_ops()
