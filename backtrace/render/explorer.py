"""The interactive explorer: one self-contained HTML page (no network, no external script) that lays
out a trace in the browser, folds and unfolds its modules in place, finds nodes by name, shows each
node's statistics and the contribution of each edge, and replays the backward pass step by step.

The page is the data (one JSON blob, see `explorer_data.page_data`), the vendored Graphviz
(WebAssembly, `assets/viz-global.js`, licence in `assets/LICENSE-viz.txt`) and the page's own
scripts in `assets/`. A side panel is one `@panel` here (its data, if any) plus one script that
calls `BT.panel({...})`: see `assets/panels.js`.
"""
from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from ..errors import UsageError
from ..traces import Trace
from .explorer_data import page_data
from .options import Options

# The vendored layout engine, the page's scripts in the order they build on each other (the
# scripts of registered panels go between BEFORE and AFTER), and its style sheet.
LIBRARY = "viz-global.js"
BEFORE = ("model.js", "labels.js", "view.js", "minimap.js", "panels.js")
AFTER = ("replay.js", "app.js")
STYLE = "explorer.css"
MODES = ("explore", "replay")


@dataclass(frozen=True)
class Panel:
    """A side panel of the page: its script (an asset registering it) and the data it reads."""

    name: str
    script: str
    data: Callable[[Trace, Options], Any] | None = None


PANELS: dict[str, Panel] = {}


def panel(name: str, script: str) -> Callable:
    """Register a side panel beyond the built-in ones (inspector, gradients, keys, in panels.js;
    the debugging reports at the end of this module, the watch's Training tab in training):
    `script` is an asset calling BT.panel({id: name, ...}); the decorated function's result, if
    any, is in the page at `data.panels[name]`."""
    def add(make: Callable[[Trace, Options], Any] | None) -> Callable | None:
        PANELS[name] = Panel(name, script, make)
        return make
    return add


@cache
def asset(name: str) -> str:
    """The text of a file in backtrace/render/assets (shipped in the wheel)."""
    return (files("backtrace.render") / "assets" / name).read_text(encoding="utf-8")


def script_text(source: str) -> str:
    """JavaScript safe inside <script>: no `</script` or `<!--` can end or confuse the element."""
    return source.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def json_text(data: Any) -> str:
    """JSON for a <script type="application/json"> element: every '<' escaped, so no text of the
    trace (a formula, a module name) can close the element."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def explorer_html(trace: Trace, opts: Options | None = None, start: str = "explore") -> str:
    """The explorer page of `trace` (an unfolded trace: the page folds it itself), opening in
    mode `start`: "explore" or "replay"."""
    if start not in MODES:
        raise UsageError(f"start must be one of {', '.join(MODES)}, not {start!r}")
    o = opts or Options()
    data = {**page_data(trace, o), "start": start}
    made = {p.name: p.data(trace, o) for p in PANELS.values() if p.data is not None}
    data["panels"] = {name: d for name, d in made.items() if d is not None}  # None: no tab
    scripts = [LIBRARY, *BEFORE, *dict.fromkeys(p.script for p in PANELS.values()), *AFTER]
    code = "\n".join(f"<script>{script_text(asset(s))}</script>" for s in scripts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>backtrace: {html.escape(data['title'])}</title>\n"
        f"<style>{asset(STYLE)}</style>\n</head>\n<body>\n"
        '<noscript>This page needs JavaScript to lay out the graph.</noscript>\n'
        f'<script type="application/json" id="backtrace-data">{json_text(data)}</script>\n'
        f"{code}\n</body>\n</html>\n")


# -- the debugging reports, each a tab of its own when the page's trace has one
REPORT_COLUMNS = 40  # the side panel's width in characters of its 11px monospace text


@panel("nan", "reports.js")
def _nonfinite(trace: Trace, opts: Options) -> dict[str, Any] | None:
    """Where the first inf or NaN starts (Trace.nonfinite), as the terminal prints it."""
    from ..nonfinite import lines

    report = trace.nonfinite()
    if report is None:
        return None
    forward = report.first_forward
    return {"lines": lines(report, width=REPORT_COLUMNS), "culprit": report.culprit.node, "cause": report.culprit.cause,
            "forward": forward.node if forward is not None else None,
            "propagators": list(report.propagators)}


@panel("diff", "reports.js")
def _diff(trace: Trace, opts: Options) -> dict[str, Any] | None:
    """Two runs compared (backtrace diff A B -o page.html puts the report in B's meta)."""
    return trace.meta.get("diff")
