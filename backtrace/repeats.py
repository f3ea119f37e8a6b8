"""What folding works on: the visible graph of a trace (hidden kinds removed, their inputs wired to
their consumers) and its repeated blocks, numbered sibling modules of the same structure
(layers.0 ... layers.11), found in one pass over each node per numbered module around it."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import UsageError
from .traces import Step, Trace, TraceNode
from .values import shape_of


# --hide choices: name -> which nodes it removes (their inputs are wired to their consumers).
HIDE: dict[str, Callable[[TraceNode], bool]] = {
    "accumulate": lambda n: "AccumulateGrad" in (n.op, n.meta.get("torch_type")),
    "constants": lambda n: n.kind == "const",
}

def numbered(part: str) -> bool:
    """A module path part that is an index: ASCII digits only ('²' is a digit to str.isdigit,
    and a ModuleDict key may be one, but it is no index)."""
    return part.isascii() and part.isdigit()


def path_depth(path: str) -> int:
    """encoder.layers.0 -> 3; "" -> 0."""
    return path.count(".") + 1 if path else 0


def compact_indices(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass
class Merge:
    """Sibling module instances with the same structure, drawn once as one of them."""

    parent: str
    instances: list[str]  # paths, by index
    alias: dict[str, str]  # node id in another instance -> the node drawn for it in the representative
    instance_of: dict[str, int]  # node id -> index into instances
    rep: int = 0  # the instance drawn

    @property
    def representative(self) -> str:
        return self.instances[self.rep]

    @property
    def depth(self) -> int:
        return path_depth(self.instances[0])

    @property
    def title(self) -> str:
        stem = self.instances[0].rpartition(".")[2]
        indices = [int(p.rpartition(".")[2]) for p in self.instances]
        head = f"{self.parent}." if self.parent else ""
        return f"{head}{{{compact_indices(indices)}}}" if numbered(stem) else head + stem


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


EXTERNAL = -1  # the structural id of an input from outside a module instance


def structure(g: VisibleGraph, members: list[TraceNode], prefix: str,
              table: dict[tuple, int]) -> tuple[tuple[int, ...], list[tuple[int, TraceNode]]]:
    """A module instance's structure, independent of node order: every node gets an id for its op,
    kind, relative module path, shape and the ids of its inputs (interned in `table`, shared by the
    instances compared). Constants, and nodes fed only from outside when the instance has leaves of
    its own (the first block's input needs no gradient, the others' do), are left out: blocks that
    differ only at their boundary still count as the same. Returns (sorted ids, (id, node) kept)."""
    inside = {n.id for n in members}
    anchored: dict[str, bool] = {}
    has_leaves = any(n.kind == "input" for n in members)
    ids: dict[str, int] = {}
    kept: list[tuple[int, TraceNode]] = []
    for n in members:  # topological order: inputs first
        ins = [i for i in g.inputs[n.id] if i in inside]
        anchored[n.id] = n.kind == "input" or any(anchored[i] for i in ins)
        if n.kind == "const" or (has_leaves and not anchored[n.id]):
            continue
        shape = "" if n.value is None or isinstance(n.value, (int, float)) else shape_of(n.value)
        key = (n.op, n.kind, n.module[len(prefix):], shape,
               tuple(ids.get(i, EXTERNAL) for i in g.inputs[n.id]))
        ids[n.id] = table.setdefault(key, len(table))
        kept.append((ids[n.id], n))
    return tuple(sorted(ids.values())), kept


def _members(g: VisibleGraph) -> dict[str, list[TraceNode]]:
    """Every numbered module path (layers.3, layers.3.mlp.0) -> the nodes inside it, in order."""
    members: dict[str, list[TraceNode]] = defaultdict(list)
    for n in g.nodes:
        comps = n.module.split(".") if n.module else []
        for k in range(1, len(comps) + 1):
            if numbered(comps[k - 1]):
                members[".".join(comps[:k])].append(n)
    return members


def find_merges(g: VisibleGraph) -> list[Merge]:
    """Groups of numbered sibling modules (layers.0 ... layers.11) with the same structure, outer
    groups first; each node is visited once per numbered module around it, so this is linear."""
    members = _members(g)
    families: dict[str, list[str]] = defaultdict(list)
    for path in members:
        families[path.rpartition(".")[0]].append(path)
    merges: list[Merge] = []
    removed: set[str] = set()
    for parent in sorted(families, key=lambda p: (path_depth(p), p)):
        comps = parent.split(".")
        if any(".".join(comps[:k]) in removed for k in range(1, len(comps) + 1)):
            continue  # inside an instance already drawn by its representative
        paths = sorted(families[parent], key=lambda p: int(p.rpartition(".")[2]))
        table: dict[tuple, int] = {}
        groups: dict[tuple, list[tuple[str, list]]] = {}
        for p in paths:
            sig, kept = structure(g, members[p], p + ".", table)
            groups.setdefault(sig, []).append((p, kept))
        for same in groups.values():
            if len(same) > 1:
                merges.append(_merge(g, parent, same, members))
                removed.update(p for k, (p, _) in enumerate(same) if k != merges[-1].rep)
    return merges


def _merge(g: VisibleGraph, parent: str, same: list[tuple[str, list]],
           members: dict[str, list[TraceNode]]) -> Merge:
    """The merge of instances of one structure: the biggest is drawn, the others' nodes alias to
    its nodes of the same structural id (a node it lacks, to the node its gradient reaches next)."""
    rep = max(range(len(same)), key=lambda k: (len(members[same[k][0]]), -k))
    by_id: dict[int, list[str]] = defaultdict(list)
    for sid, n in same[rep][1]:
        by_id[sid].append(n.id)
    alias: dict[str, str] = {}
    instance_of: dict[str, int] = {n.id: rep for n in members[same[rep][0]]}
    for k, (path, kept) in enumerate(same):
        if k == rep:
            continue
        seen: dict[int, int] = defaultdict(int)
        for sid, n in kept:
            alias[n.id] = by_id[sid][seen[sid]]
            seen[sid] += 1
        inside = members[path]
        for n in reversed(inside):  # the rest: drawn as the first consumer that has a counterpart
            instance_of[n.id] = k
            if n.id not in alias:
                alias[n.id] = next((alias[c] for c in g.consumers.get(n.id, ())
                                    if instance_of.get(c) == k and c in alias),
                                   by_id[min(by_id)][0] if by_id else members[same[rep][0]][0].id)
    return Merge(parent, [p for p, _ in same], alias, instance_of, rep)
