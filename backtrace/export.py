"""`-o FILE` exports: the file suffix picks an exporter from this registry."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .files import write_atomic
from .traces import Trace

# suffix -> function(trace) -> bytes or str; the rendering issue adds svg, png, pdf, dot, html.
EXPORTS: dict[str, Callable[[Trace], bytes | str]] = {
    "json": lambda trace: trace.to_json() + "\n",
}


def _graph(fmt: str) -> Callable[[Trace], bytes | str]:
    """A Graphviz exporter; options come from backtrace.render.graphviz_run.options()."""
    def draw(trace: Trace) -> bytes | str:
        from .render.graphviz_run import render
        return render(trace, fmt)
    return draw


def _replay(trace: Trace) -> str:
    from .render.replay import replay_html
    return replay_html(trace)


EXPORTS.update({fmt: _graph(fmt) for fmt in ("svg", "png", "pdf", "dot")}, html=_replay)


def export(trace: Trace, path: str | Path) -> Path:
    """Render `trace` into `path`, in the format its suffix names, atomically."""
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in EXPORTS:
        known = ", ".join(f".{s}" for s in EXPORTS)
        raise UsageError(f"cannot tell the format of {target}: use one of {known}")
    write_atomic(target, EXPORTS[suffix](trace))
    return target
