"""The one format registry: name -> file suffixes -> how the trace is made into that format.

`--format`, the suffixes `-o` understands, `backtrace trace`'s outputs and the help texts all read
FORMATS, so a new format is one `@register(...)` here. A format makes a rich renderable (the
terminal views), text or bytes; `export` writes any of them to a file.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import check_folder, check_writable, write_atomic
from ..traces import Trace
from .options import Options

@dataclass(frozen=True)
class Format:
    """One output format: its name, help line, file suffixes and maker."""

    name: str
    help: str
    suffixes: tuple[str, ...]
    make: Callable[[Trace, Options], Any]  # a rich renderable, str or bytes
    printable: bool  # can go to standard output (--format)
    drawn: bool  # made from the trace as drawn (folded once by draw.prepare), not the trace itself


FORMATS: dict[str, Format] = {}


def register(name: str, help: str, suffixes: Sequence[str] = (), printable: bool = False,
             drawn: bool = False) -> Callable:
    """Add a format: `--format NAME` when printable, `-o FILE.SUFFIX` for each suffix; `drawn`
    makers get the folded trace a picture shows."""
    def add(make: Callable[[Trace, Options], Any]) -> Callable[[Trace, Options], Any]:
        FORMATS[name] = Format(name, help, tuple(suffixes), make, printable, drawn)
        return make
    return add


def printable() -> list[str]:
    """The names `--format` offers."""
    return [f.name for f in FORMATS.values() if f.printable]


def suffixes() -> list[str]:
    """Every suffix `-o` understands, e.g. ['.json', '.svg', ...]."""
    return [f".{s}" for f in FORMATS.values() for s in f.suffixes]


def by_suffix(path: str | os.PathLike) -> Format:
    """The format a file name asks for, or a UsageError listing the known suffixes."""
    suffix = Path(path).suffix.lower().lstrip(".")
    for f in FORMATS.values():
        if suffix in f.suffixes:
            return f
    raise UsageError(f"cannot tell the format of {path}: use one of {', '.join(suffixes())}")


def view(trace: Trace, name: str, opts: Options | None = None, **options: Any) -> Any:
    """The trace in the named format, ready to print (a rich renderable or text)."""
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}: choose from {', '.join(FORMATS)}")
    f, o = FORMATS[name], Options.of(opts, **options).start()
    return f.make(_prepare(trace, o) if f.drawn else trace, o)


def show(trace: Any, name: str | None = None, opts: Options | None = None,
         **options: Any) -> None:
    """Print a trace in the named format, as the command line does (default: table on a
    terminal, plain text elsewhere). Given `backtrace.crosscheck.crosscheck(...)`'s result, print
    what `backtrace explain` prints: the trace, the engines side by side, the verdicts."""
    from .console import console, is_terminal

    name = name or ("table" if is_terminal() else "plain")
    checked = trace if hasattr(trace, "verdicts") and hasattr(trace, "reference") else None
    shown = view(checked.trace if checked else trace, name, opts, **options)
    out = console()
    if isinstance(shown, (str, bytes)):
        text = shown.decode() if isinstance(shown, bytes) else shown
        out.file.write(text if text.endswith("\n") else text + "\n")
    else:
        out.print(shown)
    if checked is not None and name in ("table", "plain", "markdown"):
        from .torch_table import EngineCheck

        if checked.torch is not None and checked.reference is not None:
            out.print(EngineCheck(checked.reference, checked.torch, checked.verdicts, name))
        for verdict in checked.verdicts:  # whole lines, never wrapped: they are grepped
            out.file.write(verdict.line() + "\n")


def _prepare(trace: Trace, opts: Options) -> Trace:
    from .draw import prepare
    return prepare(trace, opts)


def _file_data(made: Any) -> bytes | str:
    """What a format made, as the bytes or text of a file (renderables as plain text)."""
    if isinstance(made, (bytes, str)):
        return made
    from . import to_text
    from .console import PIPE_WIDTH

    return to_text(made, width=PIPE_WIDTH) + "\n"


def export(trace: Trace, path: str | os.PathLike | None = None, opts: Options | None = None,
           steps: str | os.PathLike | None = None, **options: Any) -> Path | None:
    """Write `trace` to `path` in the format its suffix names, atomically (and the replay's
    frames into folder `steps`); options as `Options`, the flags of `backtrace render`."""
    export_all(trace, [path] if path is not None else [], steps=steps, opts=opts, **options)
    return Path(path) if path is not None else None


def export_all(trace: Trace, paths: Sequence[str | os.PathLike], steps: str | os.PathLike | None = None,
               opts: Options | None = None, **options: Any) -> list[str]:
    """Write every file (and the replay frames into folder `steps`) or none: every format is
    checked and made before the first file is written. Returns what folding did, one line each."""
    o = Options.of(opts, **options).start()
    chosen = [(Path(p), by_suffix(p)) for p in paths]
    for path, _ in chosen:  # a write that would fail fails now, before any file is written
        check_writable(path)
    if steps:
        check_folder(steps)
    drawn = _prepare(trace, o) if steps or any(f.drawn for _, f in chosen) else None
    made = [(path, _file_data(f.make(drawn if f.drawn else trace, o))) for path, f in chosen]
    for path, data in made:
        write_atomic(path, data)
    if steps:
        from .replay import write_prepared_steps
        write_prepared_steps(drawn, steps, o)
    from .draw import notes

    return notes(drawn) if drawn is not None else []


def _explain_or_torch(trace: Trace, style: str, opts: Options) -> Any:
    """The tables of a trace: the chain-rule view for formulas (numbers, or tensors as nested
    lists), the per-node view for models."""
    if trace.formula_values:
        from .terminal import ExplainView
        return ExplainView(trace, style)
    from .torch_table import TorchTraceView
    return TorchTraceView(trace, style, opts.module)


@register("table", "tables with borders and colour (the default on a terminal)", printable=True)
def _table(trace: Trace, opts: Options) -> Any:
    return _explain_or_torch(trace, "table", opts)


@register("plain", "the same tables as plain text (the default when not on a terminal)",
          suffixes=("txt",), printable=True)
def _plain(trace: Trace, opts: Options) -> Any:
    return _explain_or_torch(trace, "plain", opts)


@register("markdown", "Markdown pipe tables, for notes and course pages", suffixes=("md",),
          printable=True)
def _markdown(trace: Trace, opts: Options) -> str:
    from . import to_text
    from .console import PIPE_WIDTH

    # Text, not a renderable: a terminal's width must never wrap a Markdown table row.
    return to_text(_explain_or_torch(trace, "markdown", opts), width=PIPE_WIDTH) + "\n"


@register("json", 'the whole trace as JSON (schema backtrace.trace/1, with "value" and "grads")',
          suffixes=("json",), printable=True)
def _json(trace: Trace, opts: Options) -> str:
    return trace.to_json() + "\n"


@register("dot", "the graph as Graphviz DOT source", suffixes=("dot", "gv"), printable=True,
          drawn=True)
def _dot(drawn: Trace, opts: Options) -> str:
    from .draw import draw_prepared
    return draw_prepared(drawn, "dot", opts)


def _picture(fmt: str) -> Callable[[Trace, Options], bytes | str]:
    def make(drawn: Trace, opts: Options) -> bytes | str:
        from .draw import draw_prepared
        return draw_prepared(drawn, fmt, opts)
    return make


register("svg", "the graph as an SVG picture", suffixes=("svg",), drawn=True)(_picture("svg"))
register("png", "the graph as a PNG picture", suffixes=("png",), drawn=True)(_picture("png"))
register("pdf", "the graph as a PDF (a system Graphviz or CairoSVG)", suffixes=("pdf",),
         drawn=True)(_picture("pdf"))


@register("html", "one self-contained page to explore the graph: fold and unfold modules, search, "
          "inspect each node and edge, replay the backward pass", suffixes=("html", "htm"))
def _html(trace: Trace, opts: Options) -> str:
    from .explorer import explorer_html  # the page folds the trace itself, in the browser
    return explorer_html(trace, opts)
