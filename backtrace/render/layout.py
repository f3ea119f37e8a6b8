"""Laying out DOT with a Graphviz binary: the embedded graphviz-pure engine by default, a system
Graphviz on request (`BACKTRACE_DOT=/path/to/dot` or --dot), a timeout, and PDF through a system dot
or CairoSVG."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..errors import RenderError, UsageError

EMBEDDED = "graphviz-pure"
DEFAULT_TIMEOUT = 60.0  # seconds; a layout that takes longer is reported, not waited for
PDF_HELP = ("PDF needs a system Graphviz (e.g. `apt-get install graphviz`, then BACKTRACE_DOT=$(which dot) "
            "or --dot PATH) or CairoSVG (`pip install 'backtrace[pdf]'`); or write .svg/.png")


def embedded_binary() -> Path | None:
    """The graphviz-pure binary installed beside this Python (the venv may not be on PATH)."""
    name = EMBEDDED + (".exe" if sys.platform == "win32" else "")
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(EMBEDDED)
    return Path(found) if found else None


def system_binary() -> Path | None:
    """A system Graphviz: $BACKTRACE_DOT if set, else `dot` on PATH."""
    chosen = os.environ.get("BACKTRACE_DOT")
    if chosen:
        return _checked(chosen)
    found = shutil.which("dot")
    return Path(found) if found else None


def _checked(path: str | os.PathLike) -> Path:
    resolved = shutil.which(str(path))
    if resolved is None:
        raise UsageError(f"no executable Graphviz at {path} (from --dot or BACKTRACE_DOT)")
    return Path(resolved)


def choose_binary(dot: str | os.PathLike | None = None) -> Path:
    """The binary to lay out with: `dot` if given, else $BACKTRACE_DOT, else the embedded engine."""
    if dot:
        return _checked(dot)
    if os.environ.get("BACKTRACE_DOT"):
        return _checked(os.environ["BACKTRACE_DOT"])
    binary = embedded_binary()
    if binary is None:
        raise RenderError("the embedded Graphviz engine (graphviz-pure) is not installed: "
                          "`pip install graphviz-pure`, or set BACKTRACE_DOT=/path/to/dot")
    return binary


def use(dot: str | os.PathLike | None = None) -> Path:
    """Point the `graphviz` package at our binary too, so Digraph.pipe() and Jupyter use it."""
    import graphviz.backend.dot_command as dot_command

    binary = choose_binary(dot)
    dot_command.DOT_BINARY = binary
    return binary


def run_dot(source: str, fmt: str, dot: str | os.PathLike | None = None,
            timeout: float = DEFAULT_TIMEOUT, total: float | None = None) -> bytes:
    """Lay out DOT `source` and return it rendered as `fmt` (svg, png, pdf, ...) within `timeout`
    seconds (total: the whole render's timeout this is what is left of, for the message)."""
    binary = use(dot)
    return _run(binary, source, fmt, timeout, total)


def _run(binary: Path, source: str, fmt: str, timeout: float, total: float | None = None) -> bytes:
    try:
        proc = subprocess.run([str(binary), "-Kdot", f"-T{fmt}"], input=source.encode(),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz took longer than {total or timeout:g} s to lay out the graph: "
                          "fold it (--depth, --hide) or raise --timeout") from None
    except OSError as exc:
        raise RenderError(f"cannot run Graphviz {binary}: {exc.strerror or exc}") from None
    if proc.returncode != 0 or not proc.stdout:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = lines[-1] if lines else f"exit code {proc.returncode}"
        raise RenderError(f"Graphviz ({binary.name}) failed to render {fmt}: {detail}")
    return proc.stdout


def render_pdf(source: str, dot: str | os.PathLike | None = None,
               timeout: float = DEFAULT_TIMEOUT, total: float | None = None) -> bytes:
    """PDF: a system dot when one is chosen or on PATH, else the embedded SVG through CairoSVG."""
    system = _checked(dot) if dot else system_binary()
    if system is not None:
        return _run(system, source, "pdf", timeout, total)
    svg = run_dot(source, "svg", timeout=timeout, total=total)
    try:
        import cairosvg
    except (ImportError, OSError):  # OSError: cairocffi found no libcairo
        raise RenderError(f"cannot write PDF: {PDF_HELP}") from None
    return cairosvg.svg2pdf(bytestring=svg)
