"""Trace -> Graphviz DOT: the picture from the board, forward value on each wire, gradient below it.

Small pure functions build each piece (value text, node label, edge label, styles, legend);
`to_graphviz` assembles them. Torch traces are folded first (see `fold`), so big models stay readable.
"""
from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..values import format_number
from ..ops import OPS
from ..traces import Edge, Trace, TraceNode
from ..values import describe, nested_text, norm, numbers, shape_of

if TYPE_CHECKING:
    import graphviz

MODES = ("backward", "forward")
FONT = "Helvetica,Arial,sans-serif"
GRAD_COLOUR = "#c0392b"  # the backward pass: gradients, local derivatives, contributions
PENDING_COLOUR = "#9e9e9e"  # replay: gradients not computed yet
ACTIVE_FILL = "#fff176"  # replay: the node whose backward step runs now
KIND_FILL = {"input": "#dbeafe", "const": "#f1f1f1", "op": "#ffffff", "output": "#d1fae5",
             "module": "#ede9fe"}
KIND_SHAPE = {"input": "box", "const": "box", "op": "box", "output": "box", "module": "box3d"}
KIND_STYLE = {"input": "rounded,filled", "const": "rounded,filled,dashed", "op": "filled",
              "output": "filled,bold", "module": "filled"}
LISTED = 8  # a formula's tensors of up to this many elements show their numbers

# ColorBrewer YlOrRd: pale for vanishing gradients, deep red for exploding ones.
NORM_PALETTE = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c",
                "#bd0026", "#800026")


# ---------------------------------------------------------------- nodes

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
    return str(node.meta.get("torch_type") or node.op)


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


def node_label(node: TraceNode, grad: GradCell | None, ink: str | None = None) -> str:
    """An HTML-like label: name and op, the forward value, then the gradient (None: forward mode).

    ink: the gradient's text colour when the fill already encodes the gradient (else red)."""
    title = f'<TD ALIGN="LEFT"><B>{html.escape(node_title(node))}</B></TD>'
    symbol = op_symbol(node)
    title += f'<TD ALIGN="RIGHT">{html.escape(symbol)}</TD>' if symbol else "<TD></TD>"
    rows = [f"<TR>{title}</TR>"]
    if node.kind == "module":
        rows.append(_row("nodes", f"{node.meta.get('members', 0):,}"))
        if node.meta.get("repeat", 1) > 1:
            rows.append(_row("repeats", f"×{node.meta['repeat']}"))
    elif node.kind == "op" and node.expr and node.op in OPS and node.expr != node.id:
        rows.append(f'<TR><TD COLSPAN="2"><FONT POINT-SIZE="10">{html.escape(node.expr)}</FONT></TD></TR>')
    if node.value is not None:
        rows.append(_row("value", value_text(node.value)))
    if grad is not None:
        colour = PENDING_COLOUR if grad.pending else ink or GRAD_COLOUR
        rows.append(_row("grad", grad.text, colour))
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
            + "".join(rows) + "</TABLE>>")


def value_text(v: Any) -> str:
    """A node's value or gradient: a formula's small tensors with their numbers (4 digits)."""
    if isinstance(v, list) and len(numbers(v) or ()) <= LISTED:
        return nested_text(v, 4)
    return describe(v)


def _row(name: str, text: str, colour: str | None = None) -> str:
    cell = html.escape(text)
    if colour:
        cell = f'<FONT COLOR="{colour}">{cell}</FONT>'
    return f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{name}</FONT></TD><TD ALIGN="RIGHT">{cell}</TD></TR>'


def norm_colour(value: float | None, scale: tuple[float, float] | None) -> str | None:
    """A fill colour for a gradient norm on a log scale between scale's bounds (None: no colour)."""
    if value is None or scale is None or value <= 0 or not math.isfinite(value):
        return None
    lo, hi = (math.log10(b) for b in scale)
    t = 0.5 if hi <= lo else (math.log10(value) - lo) / (hi - lo)
    t = min(1.0, max(0.0, t))
    return NORM_PALETTE[min(len(NORM_PALETTE) - 1, int(t * len(NORM_PALETTE)))]


def norm_scale(trace: Trace) -> tuple[float, float] | None:
    """The smallest and largest positive finite gradient norm in the trace."""
    norms = [g for g in (norm(n.grad) for n in trace.nodes) if g and math.isfinite(g)]
    return (min(norms), max(norms)) if norms else None


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

def edge_label(value: Any, edge: Edge | None, upstream: Any, mode: str, tensors: bool,
               shown: bool = True) -> str:
    """Forward value on the wire; in backward mode, upstream × local = contribution below it."""
    forward = shape_of(value) if tensors else describe(value)
    lines = [html.escape(forward)] if value is not None else []
    if mode == "backward" and edge is not None:
        if edge.contribution is None:
            back = edge.note or "no gradient"
            colour = PENDING_COLOUR
        elif edge.local is not None and isinstance(edge.local, (int, float)):
            back = f"{describe(upstream)} × {describe(edge.local)} = {value_text(edge.contribution)}"
            colour = GRAD_COLOUR if shown else PENDING_COLOUR
        else:
            back = f"∂ {value_text(edge.contribution)}"
            colour = GRAD_COLOUR if shown else PENDING_COLOUR
        if not shown:
            back = "pending"
        lines.append(f'<FONT COLOR="{colour}">{html.escape(back)}</FONT>')
    if not lines:
        return ""
    return "<" + "<BR/>".join(lines) + ">"


def edge_style(active: bool = False, has_grad: bool = True) -> dict[str, str]:
    """Wires are black; the wires of the active replay step are thick and red."""
    style = {"color": "#333333", "fontsize": "10"}
    if not has_grad:
        style["style"] = "dashed"
    if active:
        style.update(color=GRAD_COLOUR, penwidth="2.5")
    return style


# ---------------------------------------------------------------- legend

def legend_label(mode: str, scale: tuple[float, float] | None, notes: Sequence[str] = (),
                 title: str = "") -> str:
    """The legend: title, node kinds, wire colours, the log-scale colour bar of gradient norms."""
    if scale is None:  # fills show the kind of node
        kinds = "".join(f'<TD BGCOLOR="{KIND_FILL[k]}" BORDER="1">{k}</TD>'
                        for k in ("input", "op", "const", "output"))
    else:  # fills show the gradient norm, so kinds are told by shape
        kinds = ('<TD COLSPAN="4" ALIGN="LEFT">rounded: inputs and parameters · 3-D: folded modules'
                 " · double border: output</TD>")
    rows = [f'<TR><TD COLSPAN="4" ALIGN="LEFT"><B>{html.escape(title)}</B></TD></TR>'] if title else []
    rows += [f"<TR>{kinds}</TR>",
             '<TR><TD COLSPAN="4" ALIGN="LEFT">on each wire: the forward value</TD></TR>']
    if mode == "backward":
        rows.append(f'<TR><TD COLSPAN="4" ALIGN="LEFT"><FONT COLOR="{GRAD_COLOUR}">'
                    "below it: upstream × local = contribution</FONT></TD></TR>")
    if scale is not None:
        bar = "".join(f'<TD BGCOLOR="{c}" WIDTH="14"> </TD>' for c in NORM_PALETTE)
        rows.append('<TR><TD COLSPAN="4"><TABLE BORDER="0" CELLSPACING="0" CELLPADDING="1"><TR>'
                    f'<TD>‖grad‖ {html.escape(format_number(scale[0]))}</TD>{bar}'
                    f'<TD>{html.escape(format_number(scale[1]))} (log scale)</TD></TR></TABLE></TD></TR>')
    for note in notes:
        rows.append(f'<TR><TD COLSPAN="4" ALIGN="LEFT">{html.escape(note)}</TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3">'
            + "".join(rows) + "</TABLE>>")


# ---------------------------------------------------------------- replay state

@dataclass
class Frame:
    """The backward pass after `done` steps: which node is active and what each node has received."""

    done: int
    active: str | None
    received: dict[str, list[Any]] = field(default_factory=dict)


def consumer_edges(trace: Trace) -> dict[str, list[tuple[int, Edge]]]:
    """node id -> (step index, edge) for every backward edge sending gradient into it."""
    into: dict[str, list[tuple[int, Edge]]] = defaultdict(list)
    for k, step in enumerate(trace.steps):
        for e in step.edges:
            into[e.input].append((k, e))
    return into


def frame(trace: Trace, done: int) -> Frame:
    """The state after the first `done` backward steps (0: only the output's seed gradient 1)."""
    active = trace.steps[done - 1].node if done > 0 else None
    received: dict[str, list[Any]] = defaultdict(list)
    for step in trace.steps[:done]:
        for e in step.edges:
            received[e.input].append(e.contribution)
    return Frame(done, active, received)


# ---------------------------------------------------------------- assembly

def dot_ids(nodes: Iterable[TraceNode]) -> dict[str, str]:
    """Stable DOT names n0, n1, ... so any trace id (%0, layers.0.fc) is safe."""
    return {n.id: f"n{i}" for i, n in enumerate(nodes)}


def step_edges(trace: Trace) -> dict[str, tuple[Any, dict[str, list[Edge]]]]:
    """node id -> (upstream, input id -> its backward edges in slot order)."""
    found: dict[str, tuple[Any, dict[str, list[Edge]]]] = {}
    for step in trace.steps:
        by_input: dict[str, list[Edge]] = defaultdict(list)
        for e in step.edges:
            by_input[e.input].append(e)
        found[step.node] = (step.upstream, by_input)
    return found


def to_graphviz(trace: Trace, mode: str = "backward", *, step: int | None = None,
                depth: int | None = None, hide: Iterable[str] = (), budget: int | None = None,
                colour: str | None = None, legend: bool = True,
                folding: bool = True) -> graphviz.Digraph:
    """The trace as a graphviz.Digraph: values on wires, gradients in red, a legend.

    step: draw the backward pass after that many steps (replay). depth/hide/budget: fold torch
    graphs (see backtrace.fold); folding=False draws every node as it is. colour: "grad"
    (by gradient norm, log scale) or "kind"."""
    import graphviz

    from ..fold import fold_if_needed

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if folding:
        trace = fold_if_needed(trace, depth, tuple(hide), budget)
    colour = colour or ("kind" if trace.formula_values else "grad")
    scale = norm_scale(trace) if colour == "grad" and mode == "backward" else None
    state = frame(trace, step) if step is not None else None
    into = consumer_edges(trace)
    ids = dot_ids(trace.nodes)

    g = graphviz.Digraph(name="backtrace", graph_attr={
        "rankdir": "LR", "fontname": FONT, "newrank": "true", "nodesep": "0.3", "ranksep": "0.5"},
        node_attr={"fontname": FONT, "fontsize": "11", "margin": "0.05,0.03"},
        edge_attr={"fontname": FONT, "fontsize": "10", "arrowsize": "0.7"})
    labels = trace.meta.get("fold", {}).get("clusters", {})
    emit_clusters(g, "", cluster_tree(trace), lambda n: _draw_node(
        n, trace, ids, state, into, mode, scale), labels)
    _emit_wires(g, trace, ids, state, mode)
    _caption(g, trace, state, mode, scale, legend)
    return g


def _emit_wires(g, trace: Trace, ids: dict[str, str], state: Frame | None, mode: str) -> None:
    """One wire per input slot (x*x has two), labelled with its value and backward product."""
    backward = step_edges(trace)
    done_step = {s.node: k for k, s in enumerate(trace.steps)}
    tensors = not trace.scalar
    for node in trace.nodes:
        upstream, by_input = backward.get(node.id, (None, {}))
        seen: dict[str, int] = defaultdict(int)
        for src in node.inputs:
            if src not in ids:
                continue
            k = seen[src]
            seen[src] += 1
            edges = by_input.get(src, [])
            edge = edges[k] if k < len(edges) else None
            shown = state is None or done_step.get(node.id, math.inf) < state.done
            active = state is not None and state.active == node.id
            label = edge_label(trace.node(src).value, edge, upstream, mode, tensors, shown)
            attrs = edge_style(active, edge is None or edge.contribution is not None)
            if label:
                attrs["label"] = label
            g.edge(ids[src], ids[node.id], **attrs)


def _caption(g, trace: Trace, state: Frame | None, mode: str, scale, legend: bool) -> None:
    """The legend (or just the title) as the graph's own label."""
    notes = list(trace.meta.get("fold", {}).get("notes", ()))
    if state is not None:
        notes.insert(0, replay_caption(trace, state))
    title = "; ".join(line.strip() for line in str(trace.meta.get("formula") or
                                                   trace.meta.get("model") or "").splitlines()
                      if line.strip())
    if legend:  # the graph's own label, under the picture, so it never pushes the graph aside
        g.attr(label=legend_label(mode, scale, notes, title), labelloc="b", labeljust="l")
    elif title:
        g.attr(label=plain(title), labelloc="t")


def replay_caption(trace: Trace, state: Frame) -> str:
    """'step 2 of 5: %0 sends its gradient to x, y' for the legend of a replay frame."""
    total = len(trace.steps)
    if state.active is None:
        return f"step 0 of {total}: seed ∂{trace.output}/∂{trace.output} = 1"
    step = trace.steps[state.done - 1]
    targets = ", ".join(dict.fromkeys(e.input for e in step.edges if e.contribution is not None))
    return f"step {state.done} of {total}: {step.node} sends its gradient to {targets or 'nothing'}"


def _draw_node(node: TraceNode, trace: Trace, ids: dict[str, str], state: Frame | None,
               into: dict[str, list[tuple[int, Edge]]], mode: str, scale):
    """(DOT name, label, attributes) of one node, in the state of the replay frame if any."""
    node_role = role(trace, node)
    contributions = [e.contribution for _, e in into.get(node.id, ())]
    if mode == "forward":
        cell = None
    elif state is None or node.id == trace.output:  # the output's seed gradient is known at once
        cell = grad_cell(node, contributions)
    else:
        arrived = [e.contribution for k, e in into.get(node.id, ()) if k < state.done]
        complete = len(arrived) == len(contributions)
        cell = grad_cell(node, arrived, complete)
    fill = norm_colour(norm(node.grad), scale) if scale else None
    pending = cell is not None and cell.pending
    style = node_style(node_role, fill, state is not None and state.active == node.id, pending)
    ink = None
    if fill is not None:  # the fill shows the gradient: text in black, or white on the darkest reds
        ink = "#ffffff" if NORM_PALETTE.index(fill) >= len(NORM_PALETTE) - 3 else "#000000"
        style["fontcolor"] = ink
    style["tooltip"] = plain(node.expr or node.id)
    return ids[node.id], node_label(node, cell, ink), style


def plain(text: str) -> str:
    """User text for a plain DOT attribute: never read as an HTML label (<...>) or a \\N escape."""
    import graphviz

    return graphviz.escape(str(text))


def cluster_tree(trace: Trace) -> dict[str, list[TraceNode]]:
    """Module path -> the nodes drawn directly inside it ("" is the top level)."""
    tree: dict[str, list[TraceNode]] = defaultdict(list)
    tree[""]
    for n in trace.nodes:
        path = n.module
        tree[path].append(n)
        while path:  # make every ancestor exist so nesting has no gaps
            path = path.rpartition(".")[0]
            tree[path]
    return tree


def emit_clusters(g, path: str, tree: dict[str, list[TraceNode]], draw,
                  labels: dict[str, str] | None = None) -> None:
    """Draw the nodes of `path`, then each child module as a nested cluster (labels: overrides)."""
    for n in tree.get(path, ()):
        name, label, attrs = draw(n)
        g.node(name, label, **attrs)
    prefix = f"{path}." if path else ""
    children = sorted(p for p in tree if p.startswith(prefix) and p != path
                      and "." not in p[len(prefix):])
    for child in children:
        with g.subgraph(name=plain(f"cluster_{child}")) as sub:
            label = (labels or {}).get(child) or child.rpartition(".")[2]
            sub.attr(label=plain(label), style="rounded", color="#8e8e8e", fontsize="10",
                     tooltip=plain(child))
            emit_clusters(sub, child, tree, draw, labels)
