"""The pieces of a picture as small pure functions: node labels (name, op, value, gradient),
wire labels (forward value, upstream × local = contribution), styles, the colour scale and the legend.
`backtrace.render.dot` assembles them into a graph."""
from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ops import OPS
from ..traces import Edge, Trace, TraceNode
from ..values import describe, nested_text, numbers, shape_of

FONT = "Helvetica"
GRAD_COLOUR = "#c0392b"  # the backward pass: gradients, local derivatives, contributions
PENDING_COLOUR = "#9e9e9e"  # replay: gradients not computed yet
ACTIVE_FILL = "#fff176"  # replay: the node whose backward step runs now
KIND_FILL = {"input": "#dbeafe", "const": "#f1f1f1", "op": "#ffffff", "output": "#d1fae5",
             "module": "#ede9fe"}
KIND_SHAPE = {"input": "box", "const": "box", "op": "box", "output": "box", "module": "box3d"}
KIND_STYLE = {"input": "rounded,filled", "const": "rounded,filled,dashed", "op": "filled",
              "output": "filled,bold", "module": "filled"}
# ColorBrewer YlOrRd, one colour per decade of ‖gradient‖: below 1e-3 the palest (vanishing),
# 1 in the middle (healthy), from 1e3 on deep red (exploding, as backtrace.watch warns past 1000).
NORM_PALETTE = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c",
                "#bd0026", "#800026")
DECADES = (-4, 4)  # the palette spans 10**-4 (its first colour: anything below 1e-3) to 10**4
LISTED = 8  # a formula's tensors of up to this many elements show their numbers
LONG_NAME = 30  # characters of an op type name drawn in full; longer ones lose their middle


# ---------------------------------------------------------------- nodes

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """User text as a picture may show it: line breaks and tabs as spaces, other control
    characters (never valid in SVG) written out as \\x07."""
    return _CONTROL.sub(lambda m: " " if m.group() in "\n\r\t" else f"\\x{ord(m.group()):02x}",
                        str(text))


def markup(text: str) -> str:
    """User text inside an HTML-like label: cleaned, then &, <, > and quotes escaped (so `&#0;`
    stays those four characters, and no text ever becomes markup), and backslashes doubled:
    Graphviz expands \\N (node name) and \\G (graph name) inside HTML labels too."""
    return html.escape(clean(text)).replace("\\", "\\\\")


def plain(text: str) -> str:
    """User text for a plain DOT attribute (cluster labels, tooltips): cleaned, & escaped (Graphviz
    reads entities there too), backslashes doubled (no \\N or \\G expansion), never <...> HTML."""
    import graphviz

    return graphviz.escape(clean(text).replace("&", "&amp;"))


def role(trace: Trace, node: TraceNode) -> str:
    """input, const, op, output or module: decides the node's style."""
    if node.id == trace.output:
        return "output"
    return node.kind if node.kind in KIND_FILL else "op"


def op_symbol(node: TraceNode) -> str:
    """The op as drawn: + for add, the torch function or autograd node name otherwise."""
    if node.kind in ("input", "const"):
        return ""
    if node.kind == "module":
        return str(node.meta.get("module_type", ""))
    if node.op in OPS:
        return OPS[node.op].symbol
    return elide(str(node.meta.get("torch_type") or node.op), LONG_NAME)


def elide(text: str, limit: int) -> str:
    """Text of at most `limit` characters, its middle replaced by … (the ends tell names apart)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def node_title(node: TraceNode) -> str:
    """The name shown on top of a node: the user's name, a parameter's name or a module path."""
    if node.kind == "module":
        return node.meta.get("title", node.id)
    name = str(node.meta.get("name") or node.id)
    parent = node.module.rpartition(".")[0]
    # Inside its module's cluster a node needs no full path: layers.3.fc1.bias -> fc1.bias.
    return name[len(parent) + 1:] if parent and name.startswith(parent + ".") else name


@dataclass(frozen=True)
class GradCell:
    """What the gradient row of a node shows: text, and whether it is still pending (replay)."""

    text: str
    pending: bool = False


def grad_cell(node: TraceNode, contributions: Sequence[Any] | None = None,
              complete: bool = True) -> GradCell:
    """The node's gradient; a fan-in shows its sum, '(a) + (b) = c'; in replay, what arrived so far."""
    if node.grad is None and not any(c is not None for c in contributions or ()):
        return GradCell("no gradient" if node.kind == "const" else "—", pending=True)  # greyed
    if node.kind == "module":
        runs = node.meta.get("instances")
        if runs:  # a repeated block: the first and the last instance's output gradient
            first, last = runs[0], runs[-1]
            return GradCell(f"out {describe(first['grad_out'])} ({first['path'].rpartition('.')[2]})"
                            f" … {describe(last['grad_out'])} ({last['path'].rpartition('.')[2]})")
        grad_in = node.meta.get("grad_in")  # None: only statistics of several contributions
        return GradCell(f"in {'?' if grad_in is None else describe(grad_in)}  out {describe(node.grad)}")
    parts = [c for c in (contributions or ()) if c is not None]
    if not complete:
        if not parts:
            return GradCell("pending", pending=True)
        return GradCell(" + ".join(f"({describe(p)})" for p in parts) + " + …", pending=True)
    text = value_text(node.grad)
    if len(parts) > 1 and all(isinstance(p, (int, float)) for p in parts):
        text = " + ".join(f"({describe(p)})" for p in parts) + f" = {text}"
    return GradCell(text)


def node_label(node: TraceNode, grad: GradCell | None, ink: str | None = None,
               grad_width: int | None = None) -> str:
    """An HTML-like label: name and op, the forward value, then the gradient (None: forward mode).

    ink: the gradient's text colour when the fill already encodes the gradient (else red);
    grad_width: the gradient cell's fixed width (replay frames)."""
    title = f'<TD ALIGN="LEFT" COLSPAN="2"><B>{markup(node_title(node))}</B></TD>'
    symbol = op_symbol(node)
    title += f'<TD ALIGN="RIGHT">{markup(symbol)}</TD>' if symbol else "<TD></TD>"
    rows = [f"<TR>{title}</TR>"]
    if node.kind == "module":
        rows.append(_row("nodes", f"{node.meta.get('members', 0):,}"))
        if node.meta.get("repeat", 1) > 1:
            rows.append(_row("repeats", f"×{node.meta['repeat']}"))
    elif node.kind == "op" and node.expr and node.op in OPS and node.expr != node.id:
        rows.append(f'<TR><TD COLSPAN="3"><FONT POINT-SIZE="10">{markup(node.expr)}</FONT></TD></TR>')
    if node.value is not None:
        rows.append(_row("value", value_text(node.value)))
    if grad is not None:
        colour = PENDING_COLOUR if grad.pending else ink or GRAD_COLOUR
        rows.append(_row("grad", grad.text, colour, grad_width))
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
            + "".join(rows) + "</TABLE>>")


def value_text(v: Any) -> str:
    """A node's value or gradient: a formula's small tensors with their numbers (4 digits)."""
    if isinstance(v, list) and len(numbers(v) or ()) <= LISTED:
        return nested_text(v, 4)
    return describe(v)


def _row(name: str, text: str, colour: str | None = None, width: int | None = None) -> str:
    """A row 'name   value', the value right-aligned, a gap between them whatever the font."""
    cell = markup(text)
    if colour:
        cell = f'<FONT COLOR="{colour}">{cell}</FONT>'
    fixed = f' WIDTH="{width}"' if width else ""
    return (f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{name}</FONT></TD><TD WIDTH="6"></TD>'
            f'<TD ALIGN="RIGHT"{fixed}>{cell}</TD></TR>')


def norm_colour(value: float | None) -> str | None:
    """The fill for a gradient norm: one colour per decade on a fixed scale (see DECADES), so the
    same colour means the same norm in every picture (None: no norm to show)."""
    if value is None or value <= 0 or not math.isfinite(value):
        return None
    k = math.floor(math.log10(value)) - DECADES[0]
    return NORM_PALETTE[min(len(NORM_PALETTE) - 1, max(0, k))]


def decade_labels() -> list[str]:
    """What each colour of NORM_PALETTE stands for: '<1e-3', '1e-3', ..., '≥1e4'."""
    first = DECADES[0]
    names = [_power(first + k) for k in range(len(NORM_PALETTE))]
    return [f"<{names[1]}", *names[1:-1], f"≥{names[-1]}"]


def _power(k: int) -> str:
    return {-2: "0.01", -1: "0.1", 0: "1", 1: "10", 2: "100"}.get(k, f"1e{k}")


def node_style(node_role: str, fill: str | None = None, active: bool = False,
               pending: bool = False) -> dict[str, str]:
    """Shape, fill and border of a node by its role; replay adds active and pending looks."""
    style = {"shape": KIND_SHAPE[node_role], "style": KIND_STYLE[node_role],
             "fillcolor": fill or KIND_FILL[node_role], "color": "#333333"}
    if node_role == "output":
        style["peripheries"] = "2"
    if pending:
        style["color"] = PENDING_COLOUR
    if active:
        style.update(fillcolor=ACTIVE_FILL, penwidth="3", color=GRAD_COLOUR)
    return style


# ---------------------------------------------------------------- edges

def wire_back(edge: Edge, upstream: Any, tensors: bool) -> tuple[str, str]:
    """The backward line of a wire and its colour: upstream × local = contribution, ∂ and the
    contribution for Jacobians, or why there is no gradient."""
    if edge.contribution is None:
        return ("no gradient" if tensors else edge.note or "no gradient"), PENDING_COLOUR
    if edge.local is not None and isinstance(edge.local, (int, float)):
        text = f"{describe(upstream)} × {describe(edge.local)} = {value_text(edge.contribution)}"
        return text, GRAD_COLOUR
    return f"∂ {value_text(edge.contribution)}", GRAD_COLOUR


def edge_label(value: Any, edge: Edge | None, upstream: Any, mode: str, tensors: bool,
               shown: bool = True, width: int | None = None, align: str = "CENTER") -> str:
    """Forward value on the wire; in backward mode, upstream × local = contribution below it
    (`shown` False: still pending, in a replay). width: the backward line's fixed width, its
    text aligned by `align` (LEFT beside a vertical wire)."""
    forward = shape_of(value) if tensors else describe(value)
    lines = [markup(forward)] if value is not None else []
    if mode == "backward" and edge is not None:
        back, colour = wire_back(edge, upstream, tensors)
        if not shown and edge.contribution is not None:
            back, colour = "pending", PENDING_COLOUR
        lines.append(f'<FONT COLOR="{colour}">{markup(back)}</FONT>')
    if not lines:
        return ""
    if width is None:
        return "<" + "<BR/>".join(lines) + ">"
    cells = [f'<TR><TD ALIGN="{align}">{line}</TD></TR>' for line in lines[:-1]]
    cells.append(f'<TR><TD ALIGN="{align}" WIDTH="{width}">{lines[-1]}</TD></TR>')  # it changes
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">' \
        + "".join(cells) + "</TABLE>>"


def edge_style(active: bool = False, has_grad: bool = True) -> dict[str, str]:
    """Wires are black; the wires of the active replay step are thick and red."""
    style = {"color": "#333333", "fontsize": "10"}
    if not has_grad:
        style["style"] = "dashed"
    if active:
        style.update(color=GRAD_COLOUR, penwidth="2.5")
    return style


# ---------------------------------------------------------------- legend

def legend_label(mode: str, by_grad: bool, notes: Sequence[str] = (), title: str = "",
                 tensors: bool = False, folded: bool = False, note_width: int | None = None) -> str:
    """The legend: title, node kinds, what the wires carry, the colour bar of gradient norms, notes
    (note_width: their fixed width, so a replay frame's caption never moves the picture)."""
    if not by_grad:  # fills show the kind of node
        kinds = "".join(f'<TD BGCOLOR="{KIND_FILL[k]}" BORDER="1">{k}</TD>'
                        for k in ("input", "op", "const", "output"))
    else:  # fills show the gradient norm, so kinds are told by shape
        shapes = ["rounded: inputs and parameters", *(["3-D: folded modules"] if folded else []),
                  "double border: output"]
        kinds = f'<TD COLSPAN="4" ALIGN="LEFT">{" · ".join(shapes)}</TD>'
    rows = [f'<TR><TD COLSPAN="4" ALIGN="LEFT"><B>{markup(title)}</B></TD></TR>'] if title else []
    rows += [f"<TR>{kinds}</TR>", _legend_row("on each wire: the shape of the forward value"
                                              if tensors else "on each wire: the forward value")]
    if mode == "backward":
        back = ("below it, after ∂: the gradient sent back along it (upstream × local Jacobian)"
                if tensors else "below it: upstream × local = contribution")
        rows.append(_legend_row(back, GRAD_COLOUR))
    if by_grad:
        bar = "".join(f'<TD BGCOLOR="{c}" WIDTH="30"> </TD>' for c in NORM_PALETTE)
        ticks = "".join(f'<TD><FONT POINT-SIZE="9">{markup(t)}</FONT></TD>'
                        for t in decade_labels())
        rows.append(_legend_row("fill: ‖gradient‖, one colour per decade, the same in every "
                                "picture: pale vanishing, deep red exploding"))
        rows.append('<TR><TD COLSPAN="4" ALIGN="LEFT"><TABLE BORDER="0" CELLSPACING="0" '
                    f'CELLPADDING="1"><TR>{bar}</TR><TR>{ticks}</TR></TABLE></TD></TR>')
    rows += [_legend_row(note, width=note_width) for note in notes]
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3">'
            + "".join(rows) + "</TABLE>>")


def _legend_row(text: str, colour: str | None = None, width: int | None = None) -> str:
    cell = markup(text)
    if colour:
        cell = f'<FONT COLOR="{colour}">{cell}</FONT>'
    fixed = f' WIDTH="{width}"' if width else ""
    return f'<TR><TD COLSPAN="4" ALIGN="LEFT"{fixed}>{cell}</TD></TR>'
