"""Backward replay: one picture per backward step (active node highlighted, gradients filled in as they
are computed, pending ones greyed), as SVG files or one self-contained HTML page with buttons and keys."""
from __future__ import annotations

import html
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LimitError
from ..files import write_atomic
from ..traces import Trace
from .draw import dot_source, prepare
from .layout import run_dot
from .options import Options

MAX_STEPS = 500  # a replay is for reading step by step; past this, fold or use --hide
_PROLOG = re.compile(rb"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


def frames(trace: Trace, opts: Options | None = None) -> list[bytes]:
    """SVG of the graph before the backward pass (frame 0) and after each step (1 ... N)."""
    o = opts or Options()
    return _frames(prepare(trace, o), o)


def _frames(drawn: Trace, o: Options) -> list[bytes]:
    count = len(drawn.steps)
    if count > MAX_STEPS:
        raise LimitError(f"the backward pass has {count:,} steps, more than a replay shows "
                         f"({MAX_STEPS}): fold the graph (--depth) or hide nodes (--hide)")
    sources = [dot_source(drawn, o, step=k) for k in range(count + 1)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # dot runs in parallel
        return list(pool.map(lambda s: run_dot(s, "svg", o.dot, o.timeout), sources))


def write_steps(trace: Trace, directory: str | os.PathLike, opts: Options | None = None) -> list[Path]:
    """Write step-000.svg (before backward) ... step-NNN.svg into `directory`; returns the paths."""
    o = opts or Options()
    return write_prepared_steps(prepare(trace, o), directory, o)


def write_prepared_steps(drawn: Trace, directory: str | os.PathLike, opts: Options) -> list[Path]:
    """`write_steps` for an already prepared trace."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, svg in enumerate(_frames(drawn, opts)):
        path = folder / f"step-{k:03d}.svg"
        write_atomic(path, svg)
        paths.append(path)
    for old in set(folder.glob("step-[0-9][0-9][0-9].svg")) - set(paths):
        old.unlink()  # frames of an earlier, longer replay would read as part of this one
    return paths


def inline_svg(svg: bytes) -> str:
    """An SVG document as an element to embed in HTML: the XML prolog and doctype removed."""
    return _PROLOG.sub(b"", svg, count=1).decode()


_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1em; }
header { position: sticky; top: 0; background: #fff; padding: .4em 0; border-bottom: 1px solid #ddd; }
button { font-size: 1em; margin-right: .3em; }
#counter { margin: 0 .8em; font-weight: bold; }
.frame svg { max-width: 100%; height: auto; }
.frame[hidden] { display: none; }
"""

_SCRIPT = """
(function () {
  var frames = document.querySelectorAll(".frame");
  var counter = document.getElementById("counter");
  var caption = document.getElementById("caption");
  var current = 0;
  function show(k) {
    current = Math.max(0, Math.min(frames.length - 1, k));
    for (var i = 0; i < frames.length; i++) { frames[i].hidden = i !== current; }
    counter.textContent = "step " + current + " of " + (frames.length - 1);
    caption.textContent = frames[current].getAttribute("data-caption");
    document.getElementById("prev").disabled = current === 0;
    document.getElementById("first").disabled = current === 0;
    document.getElementById("next").disabled = current === frames.length - 1;
    document.getElementById("last").disabled = current === frames.length - 1;
  }
  document.getElementById("first").onclick = function () { show(0); };
  document.getElementById("prev").onclick = function () { show(current - 1); };
  document.getElementById("next").onclick = function () { show(current + 1); };
  document.getElementById("last").onclick = function () { show(frames.length - 1); };
  document.addEventListener("keydown", function (e) {
    if (e.key === "ArrowRight" || e.key === "ArrowDown" || e.key === " ") { show(current + 1); }
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") { show(current - 1); }
    else if (e.key === "Home") { show(0); }
    else if (e.key === "End") { show(frames.length - 1); }
    else { return; }
    e.preventDefault();
  });
  show(0);
})();
"""


def replay_html(trace: Trace, opts: Options | None = None) -> str:
    """One HTML file, no network and no external scripts, stepping through the backward pass."""
    o = opts or Options()
    return replay_page(prepare(trace, o), o)


def replay_page(drawn: Trace, o: Options) -> str:
    """`replay_html` for an already prepared trace (its meta is the original's)."""
    from .dot import frame, replay_caption

    svgs = _frames(drawn, o)
    title = str(drawn.meta.get("formula") or drawn.meta.get("model") or drawn.output)
    sections = []
    for k, svg in enumerate(svgs):
        caption = html.escape(replay_caption(drawn, frame(drawn, k)), quote=True)
        sections.append(f'<section class="frame" data-step="{k}" data-caption="{caption}"'
                        f'{" hidden" if k else ""}>\n{inline_svg(svg)}\n</section>')
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>backtrace replay: {html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n<header>\n"
            '<button id="first" title="Home">⏮ first</button>'
            '<button id="prev" title="left arrow">◀ previous</button>'
            f'<span id="counter">step 0 of {len(svgs) - 1}</span>'
            '<button id="next" title="right arrow">next ▶</button>'
            '<button id="last" title="End">last ⏭</button>\n'
            f'<p id="caption"></p>\n</header>\n<main>\n' + "\n".join(sections)
            + f"\n</main>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")
