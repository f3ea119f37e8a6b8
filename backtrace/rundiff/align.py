"""Aligning two traces of the same model node by node: leaves by name (parameter names, named
inputs), operations by module path and op sequence; casts (autocast's ``to_copy``) are see-through,
and what is left over on either side is grouped into regions, paired when they sit between the
same aligned nodes (an eager block against its ``torch.compile`` node)."""
from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field

from ..errors import TraceMismatchError
from ..traces import Trace, TraceNode

CASTS = ("ToCopyBackward0",)  # dtype and device casts: the same value, in another precision
_WRAPPERS = ("_orig_mod",)  # module path segments of torch.compile's OptimizedModule


def clean_path(path: str) -> str:
    """A module path (or parameter name) without the segments wrappers add."""
    return ".".join(p for p in path.split(".") if p not in _WRAPPERS)


def is_cast(node: TraceNode) -> bool:
    """A node that only changes dtype or device (autocast's casts, ``.float()``, ``.to()``)."""
    return node.kind == "op" and len(node.inputs) == 1 and node.meta.get("torch_type") in CASTS


def op_of(node: TraceNode) -> str:
    """The node's op; a torch.compile region as one, whatever op the forward stamped it with."""
    return "compiled_function" if node.meta.get("opaque") == "torch.compile region" else node.op


def named(node: TraceNode) -> bool:
    """A leaf with a name of its own (a parameter, a names= tensor), not a fresh %k id."""
    return node.kind == "input" and not node.id.startswith("%")


@dataclass
class Side:
    """One trace as the alignment reads it: casts seen through, consumers of each node."""

    trace: Trace
    casts: set[str] = field(default_factory=set)
    consumers: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.casts = {n.id for n in self.trace.nodes if is_cast(n)}
        found: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for n in self.nodes():
            for slot, i in enumerate(n.inputs):
                found[self.source(i)].append((n.id, slot))
        self.consumers = dict(found)

    def nodes(self) -> list[TraceNode]:
        """The nodes that are compared: every node but casts and constants, in forward order."""
        return [n for n in self.trace.nodes if n.kind != "const" and n.id not in self.casts]

    def source(self, node_id: str) -> str:
        """The node a value comes from, casts seen through."""
        while node_id in self.casts:
            node_id = self.trace.node(node_id).inputs[0]
        return node_id

    def inputs(self, node_id: str) -> list[str]:
        """A node's inputs by slot, casts seen through."""
        return [self.source(i) for i in self.trace.node(node_id).inputs]

    def is_const(self, node_id: str) -> bool:
        return self.trace.node(node_id).kind == "const"


@dataclass
class Region:
    """Nodes of one run, or of both, that align with nothing, between the same aligned nodes."""

    a: list[str]  # ids in the first trace (empty: the first run goes straight through)
    b: list[str]
    producers: frozenset[str]  # aligned nodes feeding it (first trace's ids)
    consumers: frozenset[str]  # aligned nodes it feeds (first trace's ids)

    @property
    def paired(self) -> bool:
        """True when both runs have nodes here (compared at the boundary)."""
        return bool(self.a) and bool(self.b)


@dataclass
class Alignment:
    """Which node of the second trace is which node of the first."""

    a: Side
    b: Side
    pairs: dict[str, str]  # first trace id -> second trace id
    regions: list[Region]
    _index: dict = field(default_factory=dict, init=False, repr=False)  # (side, id) -> region

    @property
    def back(self) -> dict[str, str]:
        """Second trace id -> first trace id."""
        return {y: x for x, y in self.pairs.items()}

    def region_of(self, side: str, node_id: str) -> Region | None:
        """The region holding a node of one side ("a" or "b"), if it is in one."""
        if not self._index and self.regions:
            self._index.update(((s, u), r) for r in self.regions for s in ("a", "b")
                               for u in getattr(r, s))
        return self._index.get((side, node_id))


def align(a: Trace, b: Trace, names: tuple[str, str] = ("A", "B")) -> Alignment:
    """Align two traces of the same model; TraceMismatchError when they cannot be of one model."""
    if a.engine != b.engine:
        raise TraceMismatchError(f"{names[0]} is a {a.engine} trace and {names[1]} a {b.engine} "
                                 "trace: diff compares two runs of the same model")
    sa, sb = Side(a), Side(b)
    pairs = _leaves(sa, sb, names)
    for module, (xs, ys) in _by_module(sa, sb, pairs).items():
        keys_a, keys_b = [_key(n) for n in xs], [_key(n) for n in ys]
        blocks = difflib.SequenceMatcher(None, keys_a, keys_b, autojunk=False).get_matching_blocks()
        for i, j, size in blocks:
            pairs.update((xs[i + k].id, ys[j + k].id) for k in range(size))
    _refuse_strangers(sa, sb, pairs, names)
    regions = _regions(sa, sb, pairs)
    for r in regions:  # one node for one, between the same neighbours: the same node, edited
        if len(r.a) == len(r.b) == 1 and _arity(sa, r.a[0]) == _arity(sb, r.b[0]):
            pairs[r.a[0]] = r.b[0]
    if any(r.a[0] in pairs for r in regions if r.a):
        regions = _regions(sa, sb, pairs)
    return Alignment(sa, sb, pairs, regions)


def _arity(side: Side, node_id: str) -> tuple[str, int]:
    node = side.trace.node(node_id)
    return node.kind, len(node.inputs)


def _key(n: TraceNode) -> str:
    return "input" if n.kind == "input" else op_of(n)


def _leaves(sa: Side, sb: Side, names: tuple[str, str]) -> dict[str, str]:
    """Named leaves (parameters, names= tensors) by name, wrappers' path segments aside."""
    by_name = {clean_path(n.id): n.id for n in sb.nodes() if named(n)}
    return {n.id: by_name[clean_path(n.id)] for n in sa.nodes()
            if named(n) and clean_path(n.id) in by_name}


def _by_module(sa: Side, sb: Side, pairs: dict[str, str]) -> dict[str, tuple[list, list]]:
    """The nodes left to align, per module path, in forward order."""
    taken_b = set(pairs.values())
    groups: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for n in sa.nodes():
        if n.id not in pairs and not named(n):
            groups[clean_path(n.module)][0].append(n)
    for n in sb.nodes():
        if n.id not in taken_b and not named(n):
            groups[clean_path(n.module)][1].append(n)
    return groups


def _refuse_strangers(sa: Side, sb: Side, pairs: dict[str, str], names: tuple[str, str]) -> None:
    """One clear line when the traces cannot be of one model."""
    params_a = sorted(clean_path(n.id) for n in sa.nodes() if named(n))
    params_b = sorted(clean_path(n.id) for n in sb.nodes() if named(n))
    if params_a and params_b and not set(params_a) & set(params_b):
        raise TraceMismatchError(
            f"{names[0]} and {names[1]} are traces of different models: no parameter name in "
            f"common ({names[0]}: {_some(params_a)}; {names[1]}: {_some(params_b)})")
    ops_a = [n for n in sa.nodes() if n.kind == "op"]
    ops_b = [n for n in sb.nodes() if n.kind == "op"]
    matched = sum(1 for n in ops_a if n.id in pairs)
    if not (params_a and params_b) and matched * 2 < max(len(ops_a), len(ops_b)):
        raise TraceMismatchError(
            f"{names[0]} and {names[1]} are traces of different models: only {matched} of "
            f"{max(len(ops_a), len(ops_b))} operations align by module path and op")


def _some(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items)} in all)" if len(items) > n else "")


def _regions(sa: Side, sb: Side, pairs: dict[str, str]) -> list[Region]:
    """Connected groups of unaligned nodes per side, paired when their boundaries coincide."""
    back = {y: x for x, y in pairs.items()}
    found: dict[tuple[frozenset, frozenset], Region] = {}
    for side, own, to_a in (("a", sa, lambda i: i if i in pairs else None),
                            ("b", sb, lambda i: back.get(i))):
        for group in _groups(own, to_a):
            producers = frozenset(p for u in group for i in own.inputs(u)
                                  if (p := to_a(i)) is not None)
            consumers = frozenset(c for u in group for c_id, _ in own.consumers.get(u, ())
                                  if (c := to_a(c_id)) is not None)
            region = found.setdefault((producers, consumers),
                                       Region([], [], producers, consumers))
            getattr(region, side).extend(group)
    return list(found.values())


def _groups(side: Side, to_a) -> list[list[str]]:
    """The unaligned nodes of one side in connected groups (through unaligned neighbours)."""
    loose = [n.id for n in side.nodes() if to_a(n.id) is None]
    parent = {u: u for u in loose}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for u in loose:
        for i in side.inputs(u):
            if i in parent:
                parent[root(i)] = root(u)
    groups: dict[str, list[str]] = defaultdict(list)
    for u in loose:
        groups[root(u)].append(u)
    return list(groups.values())
