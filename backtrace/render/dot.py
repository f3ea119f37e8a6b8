"""Trace -> Graphviz DOT: the picture from the board, forward value on each wire, gradient below it.

The pieces come from `labels` (node and wire labels, styles, legend) and `frames` (replay state);
`to_graphviz` assembles them. Torch traces are folded first (see `fold`), so big models stay readable.
"""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..traces import Edge, Trace, TraceNode
from ..values import norm
from .frames import (Frame, ReplaySizes, consumer_edges, frame, replay_caption, replay_sizes,
                     wires)
from .labels import (ACTIVE_FILL, FONT, GRAD_COLOUR, KIND_FILL, NORM_PALETTE, PENDING_COLOUR,
                     edge_label, edge_style, grad_cell, legend_label, node_label, node_style,
                     norm_colour, plain, role)

if TYPE_CHECKING:
    import graphviz

__all__ = ["ACTIVE_FILL", "GRAD_COLOUR", "KIND_FILL", "NORM_PALETTE", "PENDING_COLOUR", "Frame",
           "consumer_edges", "edge_label", "frame", "grad_cell", "legend_label", "node_label",
           "norm_colour", "replay_caption", "to_graphviz"]

MODES = ("backward", "forward")
RANKSEP = {"LR": "0.5", "TB": "0.3"}  # inches between ranks: edge labels sit between LR ranks


def dot_ids(nodes: Iterable[TraceNode]) -> dict[str, str]:
    """Stable DOT names n0, n1, ... so any trace id (%0, layers.0.fc) is safe."""
    return {n.id: f"n{i}" for i, n in enumerate(nodes)}


def to_graphviz(trace: Trace, mode: str = "backward", *, step: int | None = None,
                depth: int | None = None, hide: Iterable[str] = (), budget: int | None = None,
                colour: str | None = None, legend: bool = True, folding: bool = True,
                direction: str = "LR", sizes: ReplaySizes | None = None,
                caption: bool = True) -> graphviz.Digraph:
    """The trace as a graphviz.Digraph: values on wires, gradients in red, a legend.

    step: draw the backward pass after that many steps (replay; its changing cells get the widths
    of `sizes`, measured once per replay, so every frame has the same layout; caption: say in the
    legend what the step did). depth/hide/budget: fold torch graphs (see backtrace.fold);
    folding=False draws every node as it is. colour: "grad" (by gradient norm, one colour per
    decade) or "kind". direction: LR (left to right) or TB (top down)."""
    from ..fold import fold_if_needed

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if folding:
        trace = fold_if_needed(trace, depth, tuple(hide), budget)
    colour = colour or ("kind" if trace.formula_values else "grad")
    by_grad = colour == "grad" and mode == "backward"
    state = frame(trace, step) if step is not None else None
    if state is not None and sizes is None:
        sizes = replay_sizes(trace)
    into = consumer_edges(trace)
    ids = dot_ids(trace.nodes)

    g = digraph_class()(name="backtrace", graph_attr={
        "rankdir": direction, "fontname": FONT, "fontsize": "11", "newrank": "true",
        "nodesep": "0.3", "ranksep": RANKSEP[direction]},
        node_attr={"fontname": FONT, "fontsize": "11", "margin": "0.05,0.03"},
        edge_attr={"fontname": FONT, "fontsize": "10", "arrowsize": "0.7"})
    labels = trace.meta.get("fold", {}).get("clusters", {})
    emit_clusters(g, trace, lambda n: _draw_node(
        n, trace, ids, state, into, mode, by_grad, sizes), labels)
    _emit_wires(g, trace, ids, state, mode, sizes, "LEFT" if direction == "TB" else "CENTER")
    _caption(g, trace, state if caption else None, mode, by_grad, legend, sizes)
    return g


@functools.cache
def digraph_class() -> type:
    """graphviz.Digraph whose pipe() and render() run quietly by default: graphviz-pure warns on
    every run that it measures non-ASCII text (∂ × ‖) as spaces, which our labels leave room for
    (the picture tests check every label fits its box), and in a notebook that warning would be
    printed under every picture. Failures still raise with Graphviz's message."""
    import graphviz

    class Digraph(graphviz.Digraph):
        def pipe(self, *args: Any, quiet: bool = True, **kwargs: Any):
            return super().pipe(*args, quiet=quiet, **kwargs)

        def render(self, *args: Any, quiet: bool = True, **kwargs: Any):
            return super().render(*args, quiet=quiet, **kwargs)

    return Digraph


def _emit_wires(g, trace: Trace, ids: dict[str, str], state: Frame | None, mode: str,
                sizes: ReplaySizes | None, align: str) -> None:
    """One wire per input slot (x*x has two), labelled with its value and backward product."""
    upstream_of = {s.node: s.upstream for s in trace.steps}
    done_step = {s.node: k for k, s in enumerate(trace.steps)}
    tensors = not trace.scalar
    for w in wires(trace):
        shown = state is None or done_step.get(w.node.id, math.inf) < state.done
        active = state is not None and state.active == w.node.id
        value = wire_value(w.src, w.node, w.slot, w.edge, upstream_of.get(w.src.id))
        width = sizes.wire.get((w.node.id, w.slot)) if sizes is not None else None
        label = edge_label(value, w.edge, w.upstream, mode, tensors, shown, width, align)
        attrs = edge_style(active, w.edge is None or w.edge.contribution is not None)
        if label:
            attrs["label"] = label
        g.edge(ids[w.src.id], ids[w.node.id], **attrs)


def wire_value(src: TraceNode, consumer: TraceNode, slot: int, edge: Edge | None,
               src_upstream: Any) -> Any:
    """The forward value on one wire: from a node with several outputs (split, chunk), only the
    output this input slot reads (the tracer's meta "input_outputs"; in older traces, the output
    whose gradient is exactly what the wire sends back), else every output."""
    value = src.value
    if not isinstance(value, tuple):
        return value
    outputs = consumer.meta.get("input_outputs")
    if isinstance(outputs, (tuple, list)) and slot < len(outputs) \
            and isinstance(outputs[slot], int) and 0 <= outputs[slot] < len(value):
        return value[outputs[slot]]
    if edge is not None and edge.contribution is not None and isinstance(src_upstream, tuple):
        same = [k for k, u in enumerate(src_upstream) if u is not None and _same(u, edge.contribution)]
        if len(same) == 1 and same[0] < len(value):
            return value[same[0]]
    return value


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # tensors of several elements
        return False


def _caption(g, trace: Trace, state: Frame | None, mode: str, by_grad: bool, legend: bool,
             sizes: ReplaySizes | None) -> None:
    """The legend (or just the title) as the graph's own label."""
    notes = list(trace.meta.get("fold", {}).get("notes", ()))
    if state is not None:
        notes.insert(0, replay_caption(trace, state))
    title = "; ".join(line.strip() for line in str(trace.meta.get("formula") or
                                                   trace.meta.get("model") or "").splitlines()
                      if line.strip())
    if legend:  # the graph's own label, under the picture, so it never pushes the graph aside
        folded = any(n.kind == "module" for n in trace.nodes)
        g.attr(label=legend_label(mode, by_grad, notes, title, not trace.scalar, folded,
                                  sizes.caption if sizes is not None else None),
               labelloc="b", labeljust="l")
    elif title:
        g.attr(label=plain(title), labelloc="t")


def _draw_node(node: TraceNode, trace: Trace, ids: dict[str, str], state: Frame | None,
               into: dict[str, list[tuple[int, Edge]]], mode: str, by_grad: bool,
               sizes: ReplaySizes | None):
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
    fill = norm_colour(norm(node.grad)) if by_grad else None
    pending = cell is not None and cell.pending
    style = node_style(node_role, fill, state is not None and state.active == node.id, pending)
    ink = None
    if fill is not None:  # the fill shows the gradient: text in black, or white on the darkest reds
        ink = "#ffffff" if NORM_PALETTE.index(fill) >= len(NORM_PALETTE) - 3 else "#000000"
        style["fontcolor"] = ink
    style["tooltip"] = plain(node.expr or node.id)
    width = sizes.grad.get(node.id) if sizes is not None else None
    return ids[node.id], node_label(node, cell, ink, width), style


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


def emit_clusters(g, trace: Trace, draw, labels: dict[str, str] | None = None) -> None:
    """Each node inside the cluster of its module path, clusters nested as the modules are
    (labels: overrides), built without recursion: a module path may be thousands deep."""
    import graphviz

    tree = cluster_tree(trace)
    children: dict[str, list[str]] = defaultdict(list)
    for path in tree:
        if path:
            children[path.rpartition(".")[0]].append(path)
    graphs = {"": g}
    order = [""]
    for path in order:  # breadth first: parents before children
        for child in sorted(children.get(path, ())):
            sub = graphviz.Digraph(name=f"cluster_{len(order)}")  # any module path is safe
            label = (labels or {}).get(child) or child.rpartition(".")[2]
            sub.attr(label=plain(label), style="rounded", color="#8e8e8e", fontsize="10",
                     tooltip=plain(child))
            graphs[child] = sub
            order.append(child)
    for path in order:
        for n in tree[path]:
            name, label, attrs = draw(n)
            graphs[path].node(name, label, **attrs)
    position = {p: k for k, p in enumerate(order)}
    for path in sorted(order[1:], key=lambda p: (-p.count("."), position[p])):  # deepest first
        graphs[path.rpartition(".")[0]].subgraph(graphs[path])
