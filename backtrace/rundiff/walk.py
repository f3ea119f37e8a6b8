"""Where two aligned runs start to differ.

Forward, in topological order: a node whose inputs agree but whose value does not is where the
forward pass changed ("value"). Backward, in execution order: a node whose upstream gradient
agrees, whose forward values agree, but which sends a different gradient has a different local
derivative ("local"); a node whose gradient differs though every aligned node feeding it agrees
got the difference from a region found in one run only (blamed at that region's boundary), or,
at a root, from the gradient the backward call started with ("gradient"). Anything downstream
of such a place only passes the difference on, and is not reported as a start."""
from __future__ import annotations

from typing import Any

from .align import Alignment, Region, op_of
from .measure import agree, distance, relative, size
from .report import Divergence


class Walk:
    """Both walks over one alignment; `divergences` in backward order once `run` has run."""

    def __init__(self, al: Alignment, rtol: float, atol: float,
                 names: tuple[str, str] = ("A", "B")) -> None:
        self.al, self.rtol, self.atol, self.names = al, rtol, atol, names
        self.a, self.b, self.pairs, self.back = al.a.trace, al.b.trace, al.pairs, al.back
        self.position = {n: k for k, n in enumerate(self.a.backward_order())}
        self.steps = ({s.node: s for s in self.a.steps}, {s.node: s for s in self.b.steps})
        self.clean: dict[str, bool] = {}  # forward values agree up to this node, where recorded
        self.edge: dict[tuple[str, int], bool | None] = {}  # (consumer, slot): contribution agrees
        self.divergences: list[Divergence] = []
        self.differences = 0
        self._blamed: set[int] = set()  # regions already reported

    def run(self) -> list[Divergence]:
        """Walk forward, then backward; the starts of every difference, in backward order."""
        for n in self.al.a.nodes():
            if n.id in self.pairs:
                self._forward(n.id, self.pairs[n.id])
        for x in self.a.backward_order():
            if x in self.pairs:
                self._backward(x, self.pairs[x])
        self.divergences.sort(key=lambda d: d.position)
        return self.divergences

    def _agree(self, u: Any, v: Any, unknown: bool = False) -> bool | None:
        found = agree(u, v, self.rtol, self.atol, unknown=unknown)
        if found is False:
            self.differences += 1
        return found

    # -- forward
    def _forward(self, x: str, y: str) -> None:
        inputs_ok, unseen = self._inputs(x, y)
        own = self._agree(self.a.node(x).value, self.b.node(y).value, unknown=True)
        if own is False and inputs_ok:
            va, vb = self.a.node(x).value, self.b.node(y).value
            if unseen:  # what came out of a region was not recorded: its consumer shows it
                for region in unseen:
                    self._region(region, "value", va, vb, x)
            else:
                data = any(self.al.a.is_const(i) for i in self.al.a.inputs(x))
                self._found(x, y, "value", va, vb, note="an input that needs no gradient (data) "
                            "is not recorded: it may differ" if data else "")
        self.clean[x] = inputs_ok and own is not False

    def _inputs(self, x: str, y: str) -> tuple[bool, list[Region]]:
        """Whether every input agrees (as far as recorded), and the regions feeding x whose
        outputs were not recorded."""
        ok, unseen = True, []
        for ia, ib in zip(self.al.a.inputs(x), self.al.b.inputs(y)):
            if self.al.a.is_const(ia) and self.al.b.is_const(ib):
                continue  # data that needs no gradient: not recorded, assumed the same
            if self.pairs.get(ia) == ib:
                ok = ok and self.clean.get(ia, True)
                continue
            region = self.al.region_of("a", ia) or self.al.region_of("b", ib)
            before_ok = region is None or self._region_clean(region)
            va = None if self.al.a.is_const(ia) else self.a.node(ia).value
            vb = None if self.al.b.is_const(ib) else self.b.node(ib).value
            same = self._agree(va, vb, unknown=True)
            if same is False and before_ok and region is not None:
                self._region(region, "value", va, vb, x)
            if same is None and before_ok and region is not None:
                unseen.append(region)
            ok = ok and same is not False and before_ok
        return ok, unseen

    def _region_clean(self, region: Region) -> bool:
        return all(self.clean.get(p, True) for p in region.producers)

    # -- backward
    def _backward(self, x: str, y: str) -> None:
        up = self._agree(self.a.node(x).grad, self.b.node(y).grad)
        bad = None
        for slot, target, ca, cb in self._edges(x, y):
            same = self._agree(ca, cb)
            self.edge[x, slot] = same
            if same is False and bad is None:
                bad = (slot, target, ca, cb)
        if up is not False and bad is not None and self.clean.get(x, True):
            slot, target, ca, cb = bad
            self._found(x, y, "local", ca, cb, slot=slot, input=target,
                        agreed=(("upstream", self.a.node(x).grad, self.b.node(y).grad),))
        elif up is False:
            self._upstream(x, y)

    def _edges(self, x: str, y: str) -> list[tuple[int, str, Any, Any]]:
        """(slot, input, contribution in A, in B) for each edge of x's step with one in y's."""
        sa, sb = self.steps[0].get(x), self.steps[1].get(y)
        if sa is None or sb is None:
            return []
        return [(ea.slot, self.al.a.source(ea.input), ea.contribution, eb.contribution)
                for ea, eb in zip(sa.edges, sb.edges)]

    def _upstream(self, x: str, y: str) -> None:
        """x's gradient differs: who sent the difference?"""
        feeds_a = self.al.a.consumers.get(x, [])
        feeds_b = self.al.b.consumers.get(y, [])
        aligned_a = {(c, s) for c, s in feeds_a if c in self.pairs}
        aligned_b = {(self.back[c], s) for c, s in feeds_b if c in self.back}
        if any(self.edge.get(e) is False for e in aligned_a):
            return  # an aligned consumer passed it on: the start is further up
        regions = {id(r): r for r in [self.al.region_of("a", c) for c, _ in feeds_a] +
                   [self.al.region_of("b", c) for c, _ in feeds_b] if r is not None}
        ga, gb = self.a.node(x).grad, self.b.node(y).grad
        if regions:
            for region in regions.values():
                if self._region_upstream_agrees(region) and self._region_clean(region):
                    self._region(region, "local", ga, gb, x)
            return
        if aligned_a != aligned_b or len(aligned_a) <= 1:  # a root, or fed differently
            self._found(x, y, "gradient", ga, gb, input=x, root=not feeds_a)
        # else: several consumers, each agreeing: only their sum differs (rounding), no start

    def _region_upstream_agrees(self, region: Region) -> bool:
        """Every gradient an aligned node sends into the region agrees."""
        inside_a, inside_b = set(region.a), set(region.b)
        for c in region.consumers:
            ins_a, ins_b = self.al.a.inputs(c), self.al.b.inputs(self.pairs[c])
            for slot, (ia, ib) in enumerate(zip(ins_a, ins_b)):
                if (ia in inside_a or ib in inside_b) and self.edge.get((c, slot)) is False:
                    return False
        return True

    # -- what is reported
    def _found(self, x: str, y: str, what: str, va: Any, vb: Any, slot: int | None = None,
               input: str = "", agreed: tuple = (), root: bool = False, note: str = "") -> None:
        node = self.a.node(x)
        delta, exact = distance(va, vb)
        self.divergences.append(Divergence(
            x, y, op_of(node), node.module, what, va, vb, relative(delta, size(va)), exact, slot,
            self._label(input), position=self.position.get(x, 0), op_b=op_of(self.b.node(y)),
            agreed=agreed, root=root, note=note))

    def _label(self, node_id: str) -> str:
        """A node of the first trace as a message names it: ``%10 linear``, with its id in the
        second trace when that differs (``%10 linear (B: %12)``)."""
        if not node_id:
            return ""
        node, other = self.a.node(node_id), self.pairs.get(node_id, node_id)
        text = node_id if node.kind == "input" else f"{node_id} {op_of(node)}"
        return text if other == node_id else f"{text} ({self.names[1]}: {other})"

    def _region(self, region: Region, what: str, va: Any, vb: Any, at: str) -> None:
        """Report a region found in one run only (or replaced), compared at its boundary."""
        if id(region) in self._blamed:
            return
        self._blamed.add(id(region))
        last_a = region.a[-1] if region.a else ""  # the region's output (forward order)
        last_b = region.b[-1] if region.b else ""
        node = self.a.node(last_a) if last_a else self.b.node(last_b)
        delta, exact = distance(va, vb)
        where = min((self.position[u] for u in region.a if u in self.position),
                    default=self.position.get(at, 0) + (0.5 if what == "value" else -0.5))
        ids = (tuple(_labels(self.a, region.a)), tuple(_labels(self.b, region.b)))
        self.divergences.append(Divergence(
            last_a, last_b, op_of(node), _module(self.a, region.a) or _module(self.b, region.b),
            what, va, vb, relative(delta, size(va)), exact, None, self._label(at), ids,
            position=where))


def _labels(trace: Any, ids: list[str]) -> list[str]:
    return [f"{i} {op_of(trace.node(i))}" for i in ids]


def _module(trace: Any, ids: list[str]) -> str:
    """The innermost module holding every node of a region."""
    paths = [trace.node(i).module.split(".") for i in ids if trace.node(i).kind == "op"]
    if not paths:
        return ""
    common = paths[0]
    for p in paths[1:]:
        k = next((k for k, (x, y) in enumerate(zip(common, p)) if x != y), min(len(common), len(p)))
        common = common[:k]
    return ".".join(common)

