"""Big torch graphs made readable: cluster by module path, fold modules above a depth into one box
(with the gradient norms at its boundary), draw repeated blocks once (×12), hide node kinds, and keep
the picture under a node budget. The result is again a Trace, so every renderer can draw it."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import LimitError, UsageError
from .traces import Edge, Step, Trace, TraceNode
from .values import is_tensor, norm, shape_of

DEFAULT_TARGET = 150  # the default depth is the deepest that draws at most this many boxes
DEFAULT_BUDGET = 1000  # past this, fold further rather than hand dot a graph it cannot lay out

# --hide choices: name -> which nodes it removes (their inputs are wired to their consumers).
HIDE: dict[str, Callable[[TraceNode], bool]] = {
    "accumulate": lambda n: "AccumulateGrad" in (n.op, n.meta.get("torch_type")),
    "constants": lambda n: n.kind == "const",
}


def path_depth(path: str) -> int:
    """encoder.layers.0 -> 3; "" -> 0."""
    return path.count(".") + 1 if path else 0


def box_path(module: str, depth: int) -> str | None:
    """The depth-`depth` module a node with this module path folds into, or None when shallower."""
    comps = module.split(".") if module else []
    return ".".join(comps[:depth]) if len(comps) >= depth else None


def compact_indices(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


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
class Merge:
    """Sibling module instances with the same structure, drawn once as their first instance."""

    parent: str
    instances: list[str]  # paths, the representative first
    alias: dict[str, str]  # node id in a later instance -> the same node in the representative
    instance_of: dict[str, int]  # node id -> index into instances

    @property
    def depth(self) -> int:
        return path_depth(self.instances[0])

    @property
    def title(self) -> str:
        stem = self.instances[0].rpartition(".")[2]
        indices = [int(p.rpartition(".")[2]) for p in self.instances]
        head = f"{self.parent}." if self.parent else ""
        return f"{head}{{{compact_indices(indices)}}}" if stem.isdigit() else head + stem


@dataclass
class VisibleGraph:
    """The visible graph: hidden nodes removed and bridged, consumers indexed."""

    trace: Trace
    nodes: list[TraceNode]
    inputs: dict[str, tuple[str, ...]]
    consumers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_id: dict[str, TraceNode] = field(default_factory=dict)
    steps: dict[str, Step] = field(default_factory=dict)


def visible_graph(trace: Trace, hide: Sequence[str]) -> VisibleGraph:
    """Remove the hidden kinds of node, wiring each one's inputs to its consumers."""
    unknown = [h for h in hide if h not in HIDE]
    if unknown:
        raise UsageError(f"cannot hide {', '.join(unknown)}: choose from {', '.join(HIDE)}")
    preds = [HIDE[h] for h in hide]
    resolved: dict[str, tuple[str, ...]] = {}
    nodes, inputs = [], {}
    for n in trace.nodes:  # topological, so a hidden node's inputs are resolved before it
        ins = tuple(x for i in n.inputs for x in resolved.get(i, (i,)))
        if n.id != trace.output and any(p(n) for p in preds):
            resolved[n.id] = tuple(dict.fromkeys(ins))
        else:
            nodes.append(n)
            inputs[n.id] = ins
    g = VisibleGraph(trace, nodes, inputs)
    g.by_id = {n.id: n for n in nodes}
    for n in nodes:
        for i in dict.fromkeys(inputs[n.id]):
            g.consumers[i].append(n.id)
    g.steps = {s.node: s for s in trace.steps}
    return g


def signature(g: VisibleGraph, members: list[TraceNode], prefix: str) -> tuple:
    """The structure of a module instance: ops, relative module paths, wiring and shapes."""
    pos = {n.id: k for k, n in enumerate(members)}
    return tuple((n.op, n.kind, n.module[len(prefix):],
                  "" if n.value is None or isinstance(n.value, (int, float)) else shape_of(n.value),
                  tuple(pos.get(i, -1) for i in g.inputs[n.id])) for n in members)


def find_merges(g: VisibleGraph) -> list[Merge]:
    """Groups of numbered sibling modules (layers.0 ... layers.11) with identical structure."""
    members: dict[str, list[TraceNode]] = defaultdict(list)
    for n in g.nodes:
        comps = n.module.split(".") if n.module else []
        for k in range(1, len(comps) + 1):
            if comps[k - 1].isdigit():
                members[".".join(comps[:k])].append(n)
    merges: list[Merge] = []
    removed: set[str] = set()
    families: dict[str, list[str]] = defaultdict(list)
    for path in members:
        families[path.rpartition(".")[0]].append(path)
    for parent in sorted(families, key=lambda p: (path_depth(p), p)):
        if any(parent == r or parent.startswith(r + ".") for r in removed):
            continue  # inside an instance already drawn by its representative
        paths = sorted(families[parent], key=lambda p: int(p.rpartition(".")[2]))
        groups: dict[tuple, list[str]] = {}
        for p in paths:
            groups.setdefault(signature(g, members[p], p), []).append(p)
        for same in groups.values():
            if len(same) < 2:
                continue
            rep = [n.id for n in members[same[0]]]
            alias, instance_of = {}, {i: 0 for i in rep}
            for k, p in enumerate(same[1:], 1):
                for n, r in zip(members[p], rep):
                    alias[n.id] = r
                    instance_of[n.id] = k
            merges.append(Merge(parent, same, alias, instance_of))
            removed.update(same[1:])
    return merges


@dataclass
class Layout:
    """The graph folded at one depth: which element each node is drawn as."""

    depth: int
    element_of: dict[str, str]
    order: list[str]  # element ids in drawing order
    box_members: dict[str, list[str]]  # box id -> the node ids folded into it (representative)
    merges: list[Merge]


def box_id(path: str) -> str:
    """Element id of a folded module: brackets keep it apart from node ids."""
    return f"[{path}]"


def layout(g: VisibleGraph, depth: int, merges: list[Merge]) -> Layout:
    """Fold every module at `depth` into a box and draw each repeated instance once."""
    applied = [m for m in merges if m.depth <= depth]
    alias: dict[str, str] = {}
    for m in applied:  # outer merges first, so nested aliases compose
        alias.update(m.alias)

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
        if rep == n.id:  # later instances of a merged block are drawn by their representative
            order[element] = None
            if path is not None:
                box_members[element].append(n.id)
    return Layout(depth, element_of, list(order), dict(box_members), applied)


def crossing(merges: Sequence[Merge], u: str, v: str) -> bool:
    """True when u and v lie in different instances of one merged group (the chain between blocks)."""
    for m in merges:
        a, b = m.instance_of.get(u), m.instance_of.get(v)
        if a is not None and b is not None and a != b:
            return True
    return False


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


def fold(trace: Trace, depth: int | None = None, hide: Sequence[str] = (),
         budget: int = DEFAULT_BUDGET, target: int = DEFAULT_TARGET) -> Trace:
    """The trace with modules below `depth` folded into boxes (default: the deepest with at most
    `target` boxes), repeated blocks merged, `hide` kinds removed; folds further past `budget`."""
    g = visible_graph(trace, hide)
    max_depth = max((path_depth(n.module) for n in g.nodes), default=0)
    merges = find_merges(g)
    notes: list[str] = []
    candidates = range(1, max_depth + 2)  # max_depth + 1 folds nothing
    if depth is None:
        for d in reversed(candidates):
            lay = layout(g, d, merges)
            if len(lay.order) <= target:
                break
        if max_depth and lay.depth <= max_depth:
            notes.append(f"folded at depth {lay.depth} of {max_depth} "
                         f"({len(lay.order):,} boxes from {len(g.nodes):,} nodes; --depth N to change)")
    else:
        if depth < 1:
            raise UsageError(f"--depth must be 1 or more, not {depth}")
        lay = layout(g, min(depth, max_depth + 1), merges)
        asked = len(lay.order)
        while len(lay.order) > budget and lay.depth > 1:
            lay = layout(g, lay.depth - 1, merges)
        if lay.depth < min(depth, max_depth + 1):
            notes.append(f"depth {depth} gives {asked:,} boxes, over the budget of {budget:,}: "
                         f"folded at depth {lay.depth} instead")
    if len(lay.order) > budget:
        raise LimitError(f"the graph has {len(lay.order):,} boxes even folded, over the budget of "
                         f"{budget:,}, and no module structure left to fold: draw it anyway with "
                         "`backtrace render trace.json --budget N` (dot may take minutes)")
    for m in lay.merges:
        notes.append(f"{m.title}: {len(m.instances)} blocks of the same structure, drawn once (×"
                     f"{len(m.instances)})")
    return _folded_trace(g, lay, notes, max_depth)


def _folded_trace(g: VisibleGraph, lay: Layout, notes: list[str], max_depth: int) -> Trace:
    element_of = lay.element_of
    merged_title = {m.instances[0]: m for m in lay.merges}
    inputs: dict[str, list[str]] = defaultdict(list)
    for n in g.nodes:
        v = element_of[n.id]
        own = v == n.id  # an unfolded node that is its own element keeps its inputs in order
        for u in g.inputs[n.id]:
            eu = element_of.get(u)
            if eu is None or eu == v or crossing(lay.merges, u, n.id):
                continue
            if own or eu not in inputs[v]:
                inputs[v].append(eu)
    nodes: list[TraceNode] = []
    for element in lay.order:
        if element in lay.box_members:
            nodes.append(_box(g, lay, element, inputs[element], merged_title))
        else:
            n = g.by_id[element]
            nodes.append(TraceNode(n.id, n.op, tuple(inputs[element]), n.expr, n.value, n.grad,
                                   n.kind, n.meta))
    steps = []
    for s in g.trace.steps:
        if element_of.get(s.node) != s.node:
            continue
        edges = tuple(Edge(e.slot, element_of[e.input], e.local, e.rule, e.contribution, e.note)
                      for e in s.edges if e.input in element_of
                      and element_of[e.input] != s.node and not crossing(lay.merges, e.input, s.node))
        steps.append(Step(len(steps), s.node, s.upstream, edges, s.meta))
    clusters = {m.instances[0]: f"{m.title} ×{len(m.instances)}" for m in lay.merges
                if path_depth(m.instances[0]) < lay.depth}
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
        for p in merge.instances:
            ids = [n.id for n in g.nodes if n.module == p or n.module.startswith(p + ".")]
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
