"""One backward call's recording: right before the call, the graph reachable from the roots is
walked and named and each node that runs code of its own gets one post-hook; the hooks record
the gradients that pass, the local Jacobians and the saved tensors. Hooks hold an integer index,
never a node, so nothing keeps the graph alive."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch.autograd.function import BackwardCFunction

from . import batch as batches, compat, distributed, holding, jacobians, naming, stats
from .nodes import NodeInfo


class TooLarge:
    """Local Jacobians too large to compute: the output element count and each input slot's
    (None for a slot that sent nothing)."""

    __slots__ = ("rows", "sizes")

    def __init__(self, rows: int, sizes: list[int | None]) -> None:
        self.rows, self.sizes = rows, sizes

    def described(self) -> tuple:
        """What jacobians.jacobians says of them: (None, "Jacobian R×C (not computed: ...)")."""
        return jacobians.not_computed(self.rows, self.sizes, "too large")


class BackwardRecording:
    """One backward call: the graph reachable from the roots, its hooks, and what they saw.

    md_key: the tracer's key of its stamps in Node.metadata; names and params name the nodes;
    frame: the user's frame, whose variables name leaves (or None); batch: where the statistics
    of what the hooks see wait to be reduced.
    """

    def __init__(self, roots: list[torch.Tensor], kind: str, frame: Any, *, md_key: tuple,
                 level: str, local_max: int, batch: batches.Batch, names: Mapping[str, torch.Tensor],
                 params: naming.WeakNames) -> None:
        self.kind, self.level, self.local_max, self.batch = kind, level, local_max, batch
        self.infos: list[NodeInfo] = []
        self.handles: list[Any] = []
        self.order: list[int] = []  # hook firing order
        self.upstream: dict[int, tuple] = {}
        self.downstream: dict[int, tuple] = {}
        self.local: dict[int, tuple] = {}
        self.saved: dict[int, Any] = {}
        self.sums: dict[int, Any] = {}  # leaf index -> summed contributions (torch.autograd.grad)
        self.sent: dict[tuple[int, int], tuple] = {}  # (consumer, slot) -> (tensor or key, record)
        self.failures: list[str] = []  # what the hooks could not record, by node
        self.unread: str | None = None  # why no value of this call can be read (meta, vmap)
        edges = [torch.autograd.graph.get_gradient_edge(r) for r in roots]
        self.root_ids = self._walk([e.node for e in edges], md_key)
        self.fan_in = self._fan_in(edges)  # how many edges feed each (node, output)
        naming.name_nodes(self.infos, names, params, frame)
        for info in self.infos:
            if info.torch_type == "AccumulateGrad":
                info.kind = "input"
                self._leaf(info, params)
            else:
                info.opaque = jacobians.opaque(info)
        hook = self._hook
        for i, info in enumerate(self.infos):
            # A leaf fed by one edge receives exactly what its producer sent (recorded there),
            # and under torch.autograd.grad leaves do not run at all: no hook needed.
            if info.kind != "input" or (kind == "backward" and self.fan_in.get((i, 0), 0) != 1):
                self.handles.append(info.node.register_hook(functools.partial(hook, i)))
        # Shapes come from the values recorded (see assemble); where there are none to record
        # (meta, vmap) they are read from the nodes now, while they are held.
        blind = any(compat.readable(r)[0] is None for r in roots)
        for info in self.infos:  # from here on no node is held: a hook finds its own node
            if blind and info.shapes is None:
                info.shapes = compat.output_metadata(info.node)
            info.node = None

    # -- before backward
    def _walk(self, roots: list[Any], md_key: tuple) -> list[int]:
        """Iterative DFS post-order from the roots: inputs before consumers, like a formula."""
        index: dict[Any, int] = {}
        infos = self.infos
        nexts: list[tuple] = []  # each node's next_functions, read once
        for root in roots:
            if root in index:
                continue
            first = root.next_functions
            stack = [(root, first, iter(first))]
            visiting = {root}
            while stack:
                node, nxt, it = stack[-1]
                for child, _ in it:
                    if child is not None and child not in index and child not in visiting:
                        visiting.add(child)
                        cn = child.next_functions
                        stack.append((child, cn, iter(cn)))
                        break
                else:
                    stack.pop()
                    visiting.discard(node)
                    index[node] = len(infos)
                    nexts.append(nxt)
                    # (output shapes come later, from the values and gradients recorded)
                    infos.append(NodeInfo(holding.hold(node), type(node).__name__,  # see holding
                                          node.metadata.get(md_key), (),
                                          custom=isinstance(node, BackwardCFunction)))
        self._link(index, nexts)
        return [index[r] for r in roots]

    def _link(self, index: dict[Any, int], nexts: list[tuple]) -> None:
        """Each node's children by index, and each child's first consumer as its parent."""
        infos = self.infos
        for k, (info, nxt) in enumerate(zip(infos, nexts)):
            info.children = children = tuple((index[c] if c is not None else -1, nr)
                                             for c, nr in nxt)
            for c, _ in children:
                if c >= 0 and infos[c].parent < 0:
                    infos[c].parent = k

    def _fan_in(self, edges: list[Any]) -> dict[tuple[int, int], int]:
        """How many edges feed each (node, output); a root's seeded output counts as shared."""
        fan_in: dict[tuple[int, int], int] = {}
        for info in self.infos:
            for edge in info.children:
                if edge[0] >= 0:
                    fan_in[edge] = fan_in.get(edge, 0) + 1
        for r, e in zip(self.root_ids, edges):  # the seed gradient arrives from outside
            fan_in[(r, e.output_nr)] = 2
        return fan_in

    def _leaf(self, info: NodeInfo, params: naming.WeakNames) -> None:
        """A leaf's value, shape and owning module, read from AccumulateGrad.variable."""
        try:
            variable = info.node.variable
            info.shapes = ((tuple(variable.shape), str(variable.dtype).removeprefix("torch.")),)
            param = params.get(variable)
            if param is not None:
                info.module = param.rpartition(".")[0]
            if not distributed.storage_freed(variable):  # FSDP2 frees it until backward
                info.variable_value = self.record(variable)
        except Exception as exc:  # recorded as missing, never raised into the user's backward
            self.failures.append(f"value of a leaf: {type(exc).__name__}: {exc}")

    # -- during backward
    def record(self, t: torch.Tensor | None) -> Any:
        """The recorded form of t at this recording's level (None stays None)."""
        if t is None:
            return None
        value = batches.recorded(t, self.level, self.batch)
        if value is None and self.unread is None:  # meta, vmap batches: said once per call
            self.unread = f"values not recorded: the tensors are {compat.readable(t)[1]}"
            self.failures.append(self.unread)
        return value

    def _hook(self, i: int, grad_inputs: tuple, grad_outputs: tuple) -> None:
        """The post-hook of node i (grad_inputs: what it sends to its inputs)."""
        try:
            with compat.no_torch_function():  # our own tensor work is not the user's: no modes
                self._on_node(i, grad_inputs, grad_outputs)
        except Exception as exc:  # a recording problem must never break the user's backward
            self.failures.append(f"{self.infos[i].id or i}: {type(exc).__name__}: {exc}")

    def _on_node(self, i: int, grad_inputs: tuple, grad_outputs: tuple) -> None:
        """Record what node i received and sent; for an op, its local Jacobians and saved tensors."""
        info = self.infos[i]
        self.order.append(i)
        upstream = self._upstream(i, grad_outputs)
        self.upstream[i] = upstream
        self.downstream[i] = self._downstream(info, grad_inputs, grad_outputs, upstream)
        if info.kind != "input":
            node = compat.current_node()  # the node running this hook; never stored
            self.local[i] = self._local(info, node, grad_inputs, grad_outputs)
            self.saved[i] = jacobians.saved(info, node)

    def _local(self, info: NodeInfo, node: Any, grad_inputs: tuple, grad_outputs: tuple) -> Any:
        """The node's local Jacobians; when they are plainly too large, only their sizes (the
        text is made when the Trace is built: most nodes of a real model are like that)."""
        if info.opaque is None and node is not None and all(g is not None for g in grad_outputs):
            rows = sum(g.numel() for g in grad_outputs)
            sizes = [None if g is None else g.numel() for g in grad_inputs]
            if rows * max((n for n in sizes if n is not None), default=0) > self.local_max:
                return TooLarge(rows, sizes)
        return jacobians.jacobians(info, node, grad_inputs, grad_outputs, self.local_max)

    def _upstream(self, i: int, grad_outputs: tuple) -> tuple:
        """The gradients that arrived at node i's outputs, recorded (or reused)."""
        # A gradient that came down a single edge is the producer's contribution, already
        # recorded, when it is still that very tensor (the same object, or for a large one that
        # is not held, the same memory, shape and version; a tensor hook that replaced it made a
        # new tensor while the old one was alive).
        upstream = []
        sent = self.sent
        for nr, g in enumerate(grad_outputs):
            s = sent.pop((i, nr), None)
            if s is not None and g is not None and (s[0] is g or (type(s[0]) is tuple
                                                            and s[0] == stats.key(g))):
                upstream.append(s[1])
            else:
                upstream.append(self.record(g))
        return tuple(upstream)

    def _downstream(self, info: NodeInfo, grad_inputs: tuple, grad_outputs: tuple,
                    upstream: tuple) -> tuple:
        """The contributions node sends to each input, recorded; a single edge's goes on ahead
        (to its leaf, the gradient it receives)."""
        downstream = []
        infos, fan_in, small = self.infos, self.fan_in, self.batch.small
        for edge, g in zip(info.children, grad_inputs):
            if g is None:
                downstream.append(None)
                continue
            rec = batches.same_memory(g, self.level, grad_outputs, upstream)
            if rec is None:
                rec = self.record(g)
            downstream.append(rec)
            c = edge[0]
            if c < 0:
                continue
            if fan_in.get(edge) == 1:
                if infos[c].kind == "input":
                    self.upstream[c] = (rec,)
                else:  # held already when small; a large one by its memory, not kept alive
                    self.sent[edge] = (g if g.numel() <= small else stats.key(g), rec)
            elif self.kind == "grad" and infos[c].kind == "input":
                self._sum_leaf(c, g)  # leaves do not run under torch.autograd.grad
        return tuple(downstream)

    def _sum_leaf(self, c: int, g: torch.Tensor) -> None:
        """Add a contribution to leaf c's sum (a leaf fed by several edges, under autograd.grad)."""
        g = compat.readable(g)[0]  # torch.func.grad: the plain tensor it wraps
        if g is None:
            return
        with torch.no_grad(), compat.no_transforms():
            prev = self.sums.get(c)
            self.sums[c] = g.detach().clone() if prev is None else prev + g

    def remove_hooks(self) -> None:
        """Remove every hook of this recording (after the call, also when it raised)."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
