"""Building a backtrace Trace from one backward call's recording: its nodes (with the inputs that
need no gradient), its steps in hook firing order, and its meta; one device sync resolves every
statistic."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ..traces import Edge, Step, Trace, TraceNode
from ..values import nonfinite
from . import batch as batches, compat, jacobians, sources
from .naming import snake
from .nodes import NodeInfo
from .recording import BackwardRecording, TooLarge


class Unbuilt:
    """A backward call's recording, kept until its Trace is first read (most traces of a long
    training run never are): building it, and the one transfer of its statistics, wait till then."""

    __slots__ = ("rec", "call", "create_graph", "retain_graph", "error", "failures")

    def __init__(self, rec: BackwardRecording, call: int, create_graph: bool, retain_graph: bool,
                 error: BaseException | None) -> None:
        self.rec, self.call = rec, call
        # as text: the exception's traceback would keep the frames and their tensors alive
        self.error = None if error is None else f"{type(error).__name__}: {error}"
        self.create_graph, self.retain_graph = create_graph, retain_graph
        self.failures = rec.failures + rec.batch.failures  # this call's, as they stand now
        rec.batch.failures.clear()

    def nonfinite(self) -> bool:
        """Whether a gradient of this call, or its output's value, holds inf or NaN (one
        transfer of the statistics; the Trace is not built)."""
        rec = self.rec
        root = rec.infos[rec.root_ids[0]]
        out = root.stamp.values.values() if root.stamp is not None else ()
        values = list(_walk_values([*rec.upstream.values(), *rec.downstream.values(),
                                    *rec.sums.values(), *out]))
        with compat.no_torch_function():
            batches.resolve([v for v in values if isinstance(v, batches.Pending)])
            return any(nonfinite(_finalize(v)) for v in values)

    def build(self) -> Trace:
        """The Trace of this call."""
        with compat.no_torch_function():
            return finish(self.rec, self.call, self.create_graph, self.retain_graph, self.error,
                          self.failures)


def finish(rec: BackwardRecording, call: int, create_graph: bool, retain_graph: bool,
           error: str | None, failures: list[str]) -> Trace:
    """Build the Trace; one device sync resolves every statistic."""
    infos = rec.infos
    pending = [x for x in _walk_values(_all_values(rec)) if isinstance(x, batches.Pending)]
    batches.resolve(pending)
    assembly = _Assembly(rec)
    nodes, steps = assembly.nodes(), assembly.steps()
    meta = {"level": rec.level, "call": call, "kind": rec.kind,
            "create_graph": create_graph, "retain_graph": retain_graph,
            "roots": tuple(infos[r].id for r in rec.root_ids),
            "torch": torch.__version__}
    if error is not None:
        meta["error"] = error
    if failures:
        meta["tracer_errors"] = tuple(failures)
    return Trace("torch", infos[rec.root_ids[0]].id, tuple(nodes), tuple(steps), meta)


def _all_values(rec: BackwardRecording) -> Iterator[Any]:
    """Every value the recording holds, before statistics are resolved."""
    for info in rec.infos:
        if info.stamp is not None:
            yield from info.stamp.values.values()
        yield info.variable_value
    for d in (rec.upstream, rec.downstream):
        yield from d.values()
    yield from rec.sums.values()


class _Assembly:
    """The nodes and steps of one recording's Trace."""

    def __init__(self, rec: BackwardRecording) -> None:
        self.rec, self.infos = rec, rec.infos
        self._node_modules: list[tuple[str, str]] | None = None

    def nodes(self) -> list[TraceNode]:
        """Every node, inputs before consumers; an input needing no gradient right before its
        consumer, shown in the consumer's module."""
        infos = self.infos
        nodes: list[TraceNode] = []
        for i, info in enumerate(infos):
            inputs = tuple(infos[c].id if c >= 0 else info.const_ids[slot]
                           for slot, (c, _) in enumerate(info.children))
            node = self._node(i, info, inputs)
            for slot, (c, _) in enumerate(info.children):
                if c < 0:  # an input that needs no gradient, shown in its consumer's module
                    nodes.append(TraceNode(info.const_ids[slot], "const", (), "", None, None,
                                           "const", {"note": "does not require grad",
                                                     "module": node.meta.get("module", ""),
                                                     "name": ""}))
            nodes.append(node)
        return nodes

    def _node(self, i: int, info: NodeInfo, inputs: tuple[str, ...]) -> TraceNode:
        """Node i as a TraceNode: op, value, gradient and what else is known (meta)."""
        rec = self.rec
        meta: dict[str, Any] = {"torch_type": info.torch_type}
        if info.kind == "input":
            op, module, value = "input", info.module, _finalize(info.variable_value)
            grad = self._leaf_grad(i)
        else:
            op, module, value = self._op(i, info, meta)
            grad = _finalize(_one(rec.upstream[i])) if i in rec.upstream else None
            opaque = jacobians.opaque(info)
            if opaque is not None:
                meta["opaque"] = opaque
            if i in rec.saved:
                meta["saved"] = rec.saved[i]
        meta["module"] = module
        meta["name"] = info.name
        if any(nr for _, nr in info.children):  # which output of a split, chunk, ... each slot reads
            meta["input_outputs"] = tuple(nr for _, nr in info.children)
        shapes = info.shapes if info.shapes is not None else self._shapes(i, info)
        if shapes is not None:
            meta["shapes"] = tuple(s for s, _ in shapes)
            meta["dtypes"] = tuple(d for _, d in shapes)
        expr = "input" if info.kind == "input" else f"{op}({', '.join(inputs)})"
        return TraceNode(info.id, op, inputs, expr, value, grad, info.kind, meta)

    def _shapes(self, i: int, info: NodeInfo) -> tuple | None:
        """(shape, dtype) of each forward output of an op node, from its recorded values or, for
        outputs the forward did not record, the gradients they received (which autograd checks
        against the outputs' shape and dtype); None when one is unknown."""
        values = info.stamp.values if info.stamp is not None else {}
        upstream = self.rec.upstream.get(i, ())
        count = max(len(upstream), max(values, default=-1) + 1)
        shapes = []
        for k in range(count):
            v = values.get(k)
            if v is None and k < len(upstream):
                v = upstream[k]
            if v is None:
                return None
            shapes.append((tuple(v.shape), compat.dtype_name(v.dtype)))
        return tuple(shapes) if shapes else None

    def _leaf_grad(self, i: int) -> Any:
        """A leaf's gradient: what reached it (under autograd.grad, its contributions summed)."""
        rec = self.rec
        if i in rec.upstream:
            return _finalize(_one(rec.upstream[i]))
        if i in rec.sums:
            return _finalize(rec.record(rec.sums[i]) if rec.level == "stats" else rec.sums[i])
        return None

    def _op(self, i: int, info: NodeInfo, meta: dict[str, Any]) -> tuple[str, str, Any]:
        """An op node's op, module and value, from its stamp or, unstamped, from its type."""
        stamp = info.stamp
        if stamp is None or not stamp.op:  # no call of ours made it: named by its type
            parent = self.infos[info.parent] if info.parent >= 0 else None
            if parent is not None and parent.stamp is not None and parent.stamp.op \
                    and not info.custom:  # a custom Function's node is no composite's inside
                meta["within"] = parent.stamp.op
            if stamp is None:
                module, source = self._inherited(i)
                if source:
                    meta["source"] = source
                return snake(info.torch_type), module, None
            if stamp.module_output is not None:
                meta["module_output"] = stamp.module_output
            if stamp.source:
                meta["source"] = sources.text(stamp.source)
            return snake(info.torch_type), stamp.module, None  # stamped with where it was made
        values = [stamp.values.get(k) for k in range(max(stamp.values, default=0) + 1)]
        if stamp.inplace:
            meta["inplace"] = True
        if stamp.module_output is not None:
            meta["module_output"] = stamp.module_output
        if stamp.source:
            meta["source"] = sources.text(stamp.source)
        return stamp.op, stamp.module, _finalize(_one(tuple(values)))

    def _inherited(self, i: int) -> tuple[str, str]:
        """An unstamped node (made inside a composite op) belongs to its consumer's module and
        source line."""
        if self._node_modules is None:
            modules = [("", "")] * len(self.infos)
            for k in range(len(self.infos) - 1, -1, -1):  # consumers come after their inputs
                x = self.infos[k]
                if x.stamp is not None:
                    modules[k] = (x.stamp.module, sources.text(x.stamp.source))
                elif x.parent >= 0:
                    modules[k] = modules[x.parent]
            self._node_modules = modules
        return self._node_modules[i]

    def steps(self) -> list[Step]:
        """One step per op node, in hook firing order."""
        infos, steps = self.infos, []
        for k, i in enumerate(x for x in self.rec.order if infos[x].kind != "input"):
            edges = self._edges(i)
            steps.append(Step(k, infos[i].id, _finalize(_one(self.rec.upstream.get(i, ()))), edges))
        return steps

    def _edges(self, i: int) -> tuple[Edge, ...]:
        """Node i's edges to its inputs: local Jacobian, rule and contribution per input slot."""
        rec, info = self.rec, self.infos[i]
        local = rec.local.get(i, ())
        if isinstance(local, TooLarge):
            local = local.described()
        down = rec.downstream.get(i, ())
        edges = []
        for slot, (c, _) in enumerate(info.children):
            contribution = _finalize(down[slot]) if slot < len(down) else None
            loc, rule = local[slot] if slot < len(local) else (None, "")
            if c < 0:
                note = "no gradient: input does not require grad"
                target = info.const_ids[slot]
            else:
                note = "" if contribution is not None else \
                    "not recorded" if rec.unread else "no gradient"  # meta, vmap: it did flow
                target = self.infos[c].id
            edges.append(Edge(slot, target, _finalize(loc), rule, contribution, note))
        return tuple(edges)


def _one(values: tuple) -> Any:
    """A single output slot as itself, several as a tuple."""
    if len(values) == 1:
        return values[0]
    return tuple(values) if values else None


def _walk_values(values: Iterable[Any]) -> Iterator[Any]:
    """The leaves of nested tuples, lists and dicts of values."""
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _walk_values(v)
        elif isinstance(v, dict):
            yield from _walk_values(v.values())
        else:
            yield v


def _finalize(v: Any) -> Any:
    """Placeholders to TensorStats, 1×1 Jacobians and 0-d tensors of small locals to floats."""
    if isinstance(v, batches.Pending):
        if v.row.numbers is None:
            batches.resolve([v])
        return v.stats()
    if isinstance(v, tuple):
        return tuple(_finalize(x) for x in v)
    if isinstance(v, torch.Tensor) and v.dim() == 2 and v.numel() == 1 and not v.requires_grad:
        return float(v.reshape(()).double().cpu())  # a 1×1 local Jacobian is a number
    return v
