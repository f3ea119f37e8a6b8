"""Backward replay: one picture per backward step (active node highlighted, gradients filled in as they
are computed, pending ones greyed), as SVG files or one self-contained HTML page with buttons and keys.

Every frame has the same layout: the cells whose text changes get the width of their widest text
(backtrace.render.frames), so dot places each node where it placed it in every other frame."""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LimitError
from ..files import make_folder, write_atomic
from ..traces import Trace
from .draw import prepare
from .fit import direction_of
from .labels import markup
from .layout import run_dot
from .options import Options

MAX_STEPS = 500  # a replay is for reading step by step; past this, fold or use --hide
_PROLOG = re.compile(rb"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.S)


def frames(trace: Trace, opts: Options | None = None) -> list[bytes]:
    """SVG of the graph before the backward pass (frame 0) and after each step (1 ... N)."""
    o = opts or Options()
    return _frames(prepare(trace, o), o)


def _frames(drawn: Trace, o: Options, caption: bool = True) -> list[bytes]:
    from .dot import to_graphviz
    from .frames import replay_sizes

    count = len(drawn.steps)
    if count > MAX_STEPS:
        raise LimitError(f"the backward pass has {count:,} steps, more than a replay shows "
                         f"({MAX_STEPS}): fold the graph (--depth) or hide nodes (--hide)")
    sizes = replay_sizes(drawn)  # once: every frame's changing cells at their widest
    sources = [to_graphviz(drawn, o.mode, step=k, colour=o.colour, folding=False, sizes=sizes,
                           direction=direction_of(drawn, o), caption=caption).source
               for k in range(count + 1)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # dot runs in parallel
        return list(pool.map(lambda s: run_dot(s, "svg", o.dot, o.timeout), sources))


def write_steps(trace: Trace, directory: str | os.PathLike, opts: Options | None = None) -> list[Path]:
    """Write step-000.svg (before backward) ... step-NNN.svg into `directory`; returns the paths."""
    o = opts or Options()
    return write_prepared_steps(prepare(trace, o), directory, o)


def write_prepared_steps(drawn: Trace, directory: str | os.PathLike, opts: Options) -> list[Path]:
    """`write_steps` for an already prepared trace."""
    folder = make_folder(directory)
    paths = []
    for k, svg in enumerate(_frames(drawn, opts)):
        path = folder / f"step-{k:03d}.svg"
        write_atomic(path, svg)
        paths.append(path)
    for old in set(folder.glob("step-[0-9][0-9][0-9].svg")) - set(paths):
        old.unlink(missing_ok=True)  # frames of an earlier, longer replay would read as ours
    return paths


def inline_svg(svg: bytes) -> str:
    """An SVG document as an element to embed in HTML: the XML prolog and doctype removed."""
    return _PROLOG.sub(b"", svg, count=1).decode()


_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1em; }
header { position: sticky; top: 0; left: 0; background: #fff; padding: .4em 0;
         border-bottom: 1px solid #ddd; }
button { font-size: 1em; margin-right: .3em; display: inline-flex; align-items: center; gap: .3em; }
button svg { width: .8em; height: .8em; fill: currentColor; }
#counter { margin: 0 .8em; font-weight: bold; }
.frame { overflow-x: auto; }
.frame svg { max-width: 100%; height: auto; }
.frame[hidden] { display: none; }
"""
HIDDEN = ' hidden="hidden"'
READABLE = 0.8  # a frame shrinks to fit the window down to this scale (11-pt text: about 9 pt)
# Button icons drawn as SVG paths, so they show with any font (a font may lack ⏮ and ⏭).
_ICONS = {"first": "M2 2h2v12H2zM14 2v12L5 8z", "prev": "M12 2v12L3 8z",
          "next": "M4 2v12l9-6z", "last": "M12 2h2v12h-2zM2 2v12l9-6z"}


def _icon(name: str) -> str:
    return f'<svg viewBox="0 0 16 16" aria-hidden="true"><path d="{_ICONS[name]}"/></svg>'


def _readable(svg: str) -> str:
    """The frame's <svg> with a minimum width, so a wide graph scrolls instead of shrinking to
    unreadable text."""
    found = re.search(r'<svg width="([\d.]+)pt"', svg)
    if not found:
        return svg
    least = float(found.group(1)) * 4 / 3 * READABLE  # pt -> px
    return svg.replace("<svg ", f'<svg style="min-width: {least:.0f}px" ', 1)

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

    svgs = _frames(drawn, o, caption=False)  # the page prints each frame's caption above it
    title = str(drawn.meta.get("formula") or drawn.meta.get("model") or drawn.output)
    sections = []
    for k, svg in enumerate(svgs):
        caption = markup(replay_caption(drawn, frame(drawn, k)))
        sections.append(f'<section class="frame" data-step="{k}" data-caption="{caption}"'
                        f'{HIDDEN if k else ""}>\n{_readable(inline_svg(svg))}\n</section>')
    # Well-formed XML as well as HTML (every element closed, the script in CDATA), so XML tools
    # and the tests can read it.
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
            f"<title>backtrace replay: {markup(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n<header>\n"
            f'<button id="first" title="Home">{_icon("first")}first</button>'
            f'<button id="prev" title="left arrow">{_icon("prev")}previous</button>'
            f'<span id="counter">step 0 of {len(svgs) - 1}</span>'
            f'<button id="next" title="right arrow">next{_icon("next")}</button>'
            f'<button id="last" title="End">last{_icon("last")}</button>\n'
            f'<p id="caption"></p>\n</header>\n<main>\n' + "\n".join(sections)
            + f"\n</main>\n<script>//<![CDATA[{_SCRIPT}//]]></script>\n</body>\n</html>\n")
