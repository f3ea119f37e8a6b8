"""Big torch graphs made readable: cluster by module path, fold modules above a depth into one box
(with the gradient norms at its boundary), draw repeated blocks once (×12), hide node kinds, and keep
the picture under a node budget. The result is again a Trace, so every renderer can draw it."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import LimitError, UsageError
from .repeats import HIDE, Merge, VisibleGraph, compact_indices, find_merges, path_depth, visible_graph
from .traces import Edge, Step, Trace, TraceNode
from .values import is_tensor, norm

__all__ = ["DEFAULT_BUDGET", "DEFAULT_TARGET", "HIDE", "Folding", "compact_indices", "fold",
           "fold_if_needed", "needs_folding"]

DEFAULT_TARGET = 150  # the default depth is the deepest that draws at most this many boxes
DEFAULT_BUDGET = 1000  # past this, fold further rather than hand dot a graph it cannot lay out


def box_path(module: str, depth: int) -> str | None:
    """The depth-`depth` module a node with this module path folds into, or None when shallower."""
    comps = module.split(".") if module else []
    return ".".join(comps[:depth]) if len(comps) >= depth else None


def combine(norms: Iterable[float | None]) -> float | None:
    """The norm of several gradients taken together: sqrt of the sum of squares (None: unknown)."""
    total = 0.0
    for n in norms:
        if n is None:
            return None
        total += n * n
    return math.sqrt(total)


def needs_folding(trace: Trace, depth: int | None, hide: Sequence[str], budget: int) -> bool:
    """True when the trace has modules to cluster, nodes to hide, or more nodes than the budget."""
    if hide or depth is not None or len(trace.nodes) > budget:
        return True
    return "fold" not in trace.meta and any(n.module for n in trace.nodes)


def fold_if_needed(trace: Trace, depth: int | None = None, hide: Sequence[str] = (),
                   budget: int | None = None) -> Trace:
    """`fold` when the trace has modules to cluster, kinds to hide or too many nodes; else itself."""
    budget = DEFAULT_BUDGET if budget is None else budget
    if not needs_folding(trace, depth, hide, budget):
        return trace
    return fold(trace, depth=depth, hide=hide, budget=budget)


@dataclass
class Layout:
    """The graph folded at one depth: which element each node is drawn as."""

    depth: int
    element_of: dict[str, str]
    order: list[str]  # element ids in drawing order
    box_members: dict[str, list[str]]  # box id -> the node ids folded into it (representative)
    merges: list[Merge]
    owner: dict[str, dict[int, int]] = field(default_factory=dict)  # node -> {merge: instance}

    def crossing(self, u: str, v: str) -> bool:
        """True when u and v lie in different instances of one merged group (the chain between
        blocks, not drawn: the representative stands for every instance)."""
        mine, theirs = self.owner.get(u), self.owner.get(v)
        if not mine or not theirs:
            return False
        return any(theirs.get(m, k) != k for m, k in mine.items())


def box_id(path: str) -> str:
    """Element id of a folded module: brackets keep it apart from node ids."""
    return f"[{path}]"


def layout(g: VisibleGraph, depth: int, merges: list[Merge]) -> Layout:
    """Fold every module at `depth` into a box and draw each repeated instance once."""
    applied = [m for m in merges if m.depth <= depth]
    alias: dict[str, str] = {}
    owner: dict[str, dict[int, int]] = defaultdict(dict)
    for k, m in enumerate(applied):  # outer merges first, so nested aliases compose
        alias.update(m.alias)
        for node_id, instance in m.instance_of.items():
            owner[node_id][k] = instance

    def resolve(i: str) -> str:
        while i in alias:
            i = alias[i]
        return i

    element_of: dict[str, str] = {}
    order: dict[str, None] = {}  # insertion-ordered set
    box_members: dict[str, list[str]] = defaultdict(list)
    for n in g.nodes:
        rep = resolve(n.id)
        path = box_path(g.by_id[rep].module, depth)
        element = box_id(path) if path is not None else rep
        element_of[n.id] = element
        if rep == n.id:  # other instances of a merged block are drawn by their representative
            order[element] = None
            if path is not None:
                box_members[element].append(n.id)
    return Layout(depth, element_of, list(order), dict(box_members), applied, dict(owner))


def boundary_norms(g: VisibleGraph, members: Sequence[str]) -> tuple[float | None, float | None, list[str]]:
    """(input gradient norm, output gradient norm, output node ids) at the boundary of a node set."""
    inside = set(members)
    outs = [u for u in members if u == g.trace.output
            or any(c not in inside for c in g.consumers.get(u, ()))]
    ext = list(dict.fromkeys(x for u in members for x in g.inputs[u] if x not in inside))
    grad_out = combine(norm(g.by_id[u].grad) for u in outs)
    grad_in = combine(_in_grad(g, x, inside) for x in ext)
    return grad_in, grad_out, outs


def _in_grad(g: VisibleGraph, x: str, inside: set[str]) -> float | None:
    """The norm of the gradient the node set sends into external input x."""
    node = g.by_id.get(x)
    if node is None or node.grad is None:
        return 0.0
    if all(c in inside for c in g.consumers.get(x, ())):
        return norm(node.grad)
    sent = [e.contribution for c in g.consumers.get(x, ()) if c in inside and c in g.steps
            for e in g.steps[c].edges if e.input == x and e.contribution is not None]
    if len(sent) == 1:
        return norm(sent[0])
    if sent and all(isinstance(s, (int, float)) or is_tensor(s) for s in sent):
        total = sent[0]
        for s in sent[1:]:
            total = total + s
        return norm(total)
    return None  # only statistics of several contributions: their sum's norm is unknown


class Folding:
    """A trace made ready to fold at any depth: hidden kinds removed and repeated blocks found once."""

    def __init__(self, trace: Trace, hide: Sequence[str] = (), budget: int = DEFAULT_BUDGET) -> None:
        self.g = visible_graph(trace, hide)
        self.budget = budget
        self.max_depth = max((path_depth(n.module) for n in self.g.nodes), default=0)
        self.merges = find_merges(self.g)

    def at(self, depth: int) -> Layout:
        """The layout at `depth` (max_depth + 1 folds nothing)."""
        return layout(self.g, min(depth, self.max_depth + 1), self.merges)

    def choices(self, target: int = DEFAULT_TARGET) -> Iterator[Trace]:
        """The default folding (the deepest with at most `target` boxes), then each shallower one."""
        depth = self.max_depth + 1
        lay = self.at(depth)
        while len(lay.order) > target and depth > 1:
            depth -= 1
            lay = self.at(depth)
        while True:
            notes = []
            if self.max_depth and lay.depth <= self.max_depth:
                notes.append(f"folded at depth {lay.depth} of {self.max_depth} ({len(lay.order):,} "
                             f"boxes from {len(self.g.nodes):,} nodes; --depth N to change)")
            yield self.trace(lay, notes)
            if lay.depth <= 1:
                return
            lay = self.at(lay.depth - 1)

    def trace(self, lay: Layout, notes: list[str]) -> Trace:
        """The folded Trace of a layout, refused past the budget."""
        if len(lay.order) > self.budget:
            raise LimitError(f"the graph has {len(lay.order):,} boxes even folded, over the budget "
                             f"of {self.budget:,}, and no module structure left to fold: draw it "
                             "anyway with `backtrace render trace.json --budget N` (dot may take "
                             "minutes)")
        notes = notes + [f"{m.title}: {len(m.instances)} blocks of the same structure, drawn once "
                         f"(×{len(m.instances)})" for m in lay.merges]
        return _folded_trace(self.g, lay, notes, self.max_depth)


def fold(trace: Trace, depth: int | None = None, hide: Sequence[str] = (),
         budget: int = DEFAULT_BUDGET, target: int = DEFAULT_TARGET) -> Trace:
    """The trace with modules below `depth` folded into boxes (default: the deepest with at most
    `target` boxes), repeated blocks merged, `hide` kinds removed; folds further past `budget`."""
    if depth is not None and depth < 1:
        raise UsageError(f"--depth must be 1 or more, not {depth}")
    folding = Folding(trace, hide, budget)
    if depth is None:
        return next(folding.choices(target))
    lay = folding.at(depth)
    asked = len(lay.order)
    while len(lay.order) > budget and lay.depth > 1:
        lay = folding.at(lay.depth - 1)
    notes = []
    if lay.depth < min(depth, folding.max_depth + 1):
        notes.append(f"depth {depth} gives {asked:,} boxes, over the budget of {budget:,}: "
                     f"folded at depth {lay.depth} instead")
    return folding.trace(lay, notes)


def _folded_inputs(g: VisibleGraph, lay: Layout) -> dict[str, list[str]]:
    """Element -> the elements it takes input from (a box: each once, in order of first use)."""
    element_of = lay.element_of
    inputs: dict[str, dict[str, None]] = defaultdict(dict)
    ordered: dict[str, list[str]] = defaultdict(list)
    for n in g.nodes:
        v = element_of[n.id]
        own = v == n.id  # an unfolded node that is its own element keeps its inputs in order
        for u in g.inputs[n.id]:
            eu = element_of.get(u)
            if eu is None or eu == v or lay.crossing(u, n.id):
                continue
            if own:
                ordered[v].append(eu)
            elif eu not in inputs[v]:
                inputs[v][eu] = None
    return {**{v: list(ins) for v, ins in inputs.items()}, **ordered}


def _folded_trace(g: VisibleGraph, lay: Layout, notes: list[str], max_depth: int) -> Trace:
    element_of = lay.element_of
    merged = {m.representative: m for m in lay.merges}
    inputs = _folded_inputs(g, lay)
    nodes: list[TraceNode] = []
    for element in lay.order:
        if element in lay.box_members:
            nodes.append(_box(g, lay, element, inputs.get(element, []), merged))
        else:
            n = g.by_id[element]
            nodes.append(TraceNode(n.id, n.op, tuple(inputs.get(element, ())), n.expr, n.value,
                                   n.grad, n.kind, n.meta))
    steps = []
    for s in g.trace.steps:
        if element_of.get(s.node) != s.node:
            continue
        edges = tuple(Edge(e.slot, element_of[e.input], e.local, e.rule, e.contribution, e.note)
                      for e in s.edges if e.input in element_of
                      and element_of[e.input] != s.node and not lay.crossing(e.input, s.node))
        steps.append(Step(len(steps), s.node, s.upstream, edges, s.meta))
    clusters = {m.representative: f"{m.title} ×{len(m.instances)}" for m in lay.merges
                if m.depth < lay.depth}
    meta = {**g.trace.meta, "fold": {"depth": lay.depth, "max_depth": max_depth,
                                     "boxes": len(nodes), "nodes": len(g.nodes), "notes": notes,
                                     "clusters": clusters}}
    return Trace(g.trace.engine, element_of.get(g.trace.output, g.trace.output), tuple(nodes),
                 tuple(steps), meta)


def _box(g: VisibleGraph, lay: Layout, element: str, inputs: list[str], merged: dict[str, Merge]) -> TraceNode:
    members = lay.box_members[element]
    path = element[1:-1]
    merge = merged.get(path)
    instances = []
    if merge is not None:
        by_instance: list[list[str]] = [[] for _ in merge.instances]
        for node_id, k in merge.instance_of.items():
            by_instance[k].append(node_id)
        for p, ids in zip(merge.instances, by_instance):
            grad_in, grad_out, _ = boundary_norms(g, ids)
            instances.append({"path": p, "grad_in": grad_in, "grad_out": grad_out})
    grad_in, grad_out, outs = boundary_norms(g, members)
    value = g.by_id[outs[0]].value if len(outs) == 1 else None
    meta: dict[str, Any] = {"module": path.rpartition(".")[0], "path": path,
                            "title": f"{merge.title} ×{len(merge.instances)}" if merge else path,
                            "members": len(members), "grad_in": grad_in, "grad_out": grad_out,
                            "repeat": len(merge.instances) if merge else 1}
    if instances:
        meta["instances"] = instances
    return TraceNode(element, "module", tuple(inputs), path, value, grad_out, "module", meta)
