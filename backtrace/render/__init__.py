"""Renderers read a Trace, never an engine: rich renderables for the terminal (terminal, torch_table,
tables), small pure DOT functions (dot), the drawing front door (draw, layout, replay), and the one
format registry behind --format and -o (formats)."""
from __future__ import annotations

from typing import Any


def to_text(*renderables: Any, width: int = 120) -> str:
    """Rich renderables as plain text (no colour, no trailing spaces), for messages and reports."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, emoji=False,
                      highlight=False, soft_wrap=False)
    for r in renderables:
        console.print(r)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())
