"""Renderers read a Trace, never an engine. `FORMATS` is the registry behind `--format`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..traces import Trace

# name -> (one-line help, function(trace) -> a rich renderable or a str)
FORMATS: dict[str, tuple[str, Callable[[Trace], Any]]] = {}


def register(name: str, help: str) -> Callable:
    """Add a `--format` choice."""
    def add(fn: Callable[[Trace], Any]) -> Callable[[Trace], Any]:
        FORMATS[name] = (help, fn)
        return fn
    return add


def to_text(*renderables: Any, width: int = 120) -> str:
    """Rich renderables as plain text (no colour, no trailing spaces), for messages and reports."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, emoji=False,
                      highlight=False, soft_wrap=False)
    for r in renderables:
        console.print(r)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def render(trace: Trace, fmt: str) -> Any:
    """The trace in the named format."""
    return FORMATS[fmt][1](trace)


@register("table", "tables with borders and colour (the default on a terminal)")
def _table(trace: Trace) -> Any:
    from .terminal import ExplainView
    return ExplainView(trace, "table")


@register("plain", "the same tables as plain text (the default when not on a terminal)")
def _plain(trace: Trace) -> Any:
    from .terminal import ExplainView
    return ExplainView(trace, "plain")


@register("markdown", "Markdown pipe tables, for notes and course pages")
def _markdown(trace: Trace) -> Any:
    from .terminal import ExplainView
    return ExplainView(trace, "markdown")


@register("json", 'the whole trace as JSON (schema backtrace.trace/1, with "value" and "grads")')
def _json(trace: Trace) -> str:
    return trace.to_json()
