"""The tracer: records real PyTorch autograd, node by node, as backtrace Traces.

Forward: a TorchFunctionMode stamps each new autograd node (through the public ``Node.metadata``)
with its op name, module path and output value; global module hooks keep the module path.
Backward: ``Tensor.backward``, ``torch.autograd.backward`` and ``torch.autograd.grad`` are wrapped
while any tracer is on (one shared wrapper hands each call to the calling thread's tracers, so
tracers in several threads may exit in any order); right before each call the graph reachable
from the roots gets one post-hook per node, and every handle is removed after the call, also when
it raises. Hooks hold an integer index, never a node, so nothing keeps the graph alive.
"""
from __future__ import annotations

import functools
import re
import sys
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd.function import BackwardCFunction
from torch.overrides import TorchFunctionMode

from .. import patches
from ..errors import NothingToTraceError, UsageError
from ..traces import Edge, Step, Trace, TraceNode

from . import compat, stats

LEVELS = ("stats", "full")
_KEY = "backtrace"  # our entries in Node.metadata: (_KEY, tracer token)
_tokens = iter(range(1, sys.maxsize))


@dataclass
class _Stamp:
    """What the forward pass tells us about one autograd node."""

    op: str
    module: str
    saved_hooks: bool  # created under saved_tensors_hooks (checkpoint): saved tensors are off limits
    inplace: bool = False
    values: dict = field(default_factory=dict)  # output_nr -> value (stats placeholder or tensor)
    module_output: str | None = None


def _snake(name: str) -> str:
    """LogSoftmaxBackward0 -> log_softmax: a readable op name for nodes the forward did not stamp."""
    base = re.sub(r"Backward\d*$", "", name) or name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base).lower()


def _op_name(func: Any) -> tuple[str, bool]:
    """The op's name and whether it works in place: Tensor.__iadd__ -> ('add_', True)."""
    name = getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name == "setitem":
            return name, True
        if name.startswith("i") and name[1:] in _INPLACE_DUNDERS:
            return _ALIASES.get(name[1:], name[1:]) + "_", True
        if name.startswith("r") and name[1:] in _REFLECTED:
            name = name[1:]
        name = _ALIASES.get(name, name)
    return name, name.endswith("_") and not name.endswith("__")


_INPLACE_DUNDERS = {"add", "sub", "mul", "div", "truediv", "floordiv", "pow", "matmul", "and", "or",
                    "xor"}
_REFLECTED = {"add", "sub", "mul", "div", "truediv", "floordiv", "pow", "matmul"}
_ALIASES = {"truediv": "div", "floordiv": "floor_divide"}


def _tensors(out: Any):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                yield o


def _shape(shape) -> str:
    return "×".join(map(str, shape)) or "scalar"


class _Mode(TorchFunctionMode):
    """Stamps every autograd node the forward creates with its op, module and value."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tracer = self.tracer
        if tracer._paused() or tracer._mode is not self or compat.is_compiling():
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if torch.is_grad_enabled():
            try:
                # x[i] = v returns None: the tensor it changed is the op's output
                made = args[:1] if out is None and func is torch.Tensor.__setitem__ else out
                tracer._stamp(func, made, args)
            except Exception as exc:  # recording must never break the user's forward
                tracer._error(f"forward {getattr(func, '__name__', func)}: "
                              f"{type(exc).__name__}: {exc}")
        return out


# Where backward calls are intercepted (through backtrace.patches), and what kind of call each is.
_TARGETS = {"Tensor.backward": "backward", "autograd.backward": "backward", "autograd.grad": "grad"}


_MAX_ERRORS = 100


def _remember(table: dict[int, tuple[weakref.ref, str]], obj: Any, name: str) -> None:
    """Know obj by name while it lives; its entry goes when it is freed (so its id can be reused)."""
    key = id(obj)
    if key not in table:
        table[key] = (weakref.ref(obj, lambda _, table=table, key=key: table.pop(key, None)), name)


def _count(name: str, n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UsageError(f"{name} must be a positive integer or None, got {n!r}")


class Tracer:
    """``with trace(...) as t``: one Trace per backward call in ``t.traces``; ``t.trace`` is the last."""

    def __init__(self, model: torch.nn.Module | None = None,
                 names: Mapping[str, torch.Tensor] | None = None, level: str = "stats",
                 local_max: int = 64, max_traces: int | None = None,
                 frame_names: bool = True, stop_after: int | None = None) -> None:
        if level not in LEVELS:
            raise UsageError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        if names is not None and not isinstance(names, Mapping):
            raise UsageError("names= takes a dict {name: tensor}")
        _count("max_traces", max_traces)
        _count("stop_after", stop_after)
        self.model, self.level, self.local_max = model, level, local_max
        self.max_traces, self.frame_names = max_traces, frame_names
        self.stop_after = stop_after
        self.names: dict[str, torch.Tensor] = dict(names or {})  # held only while on
        self._names_off: dict[str, weakref.ref] = {}  # between blocks: an intermediate's graph is freed
        self.traces: list[Trace] = []
        self.calls = 0  # backward calls seen, traced or not
        self.recorded = 0  # traces made, including those the max_traces window let go
        self.errors: list[str] = []  # what the forward stamping could not record (the first 100)
        self._token = next(_tokens)
        # id -> (weak reference, name): a module built inside forward on every call is not kept
        self._modules: dict[int, tuple[weakref.ref, str]] = {}
        self._params: dict[int, tuple[weakref.ref, str]] = {}
        self._stack: list[str] = []
        self._handles: list[Any] = []
        self._patches: list[patches.Patch] = []
        self._mode: _Mode | None = None
        self._grad_enabled_at_entry = True
        self._hidden: int | None = None  # module depth at which our mode was taken off the stack
        self._thread = threading.get_ident()
        self._local = threading.local()  # per thread: the backward call being traced, if any
        self._md_key = (_KEY, self._token)  # nested tracers each keep their own stamps

    # -- the context
    def __enter__(self) -> Tracer:
        from torch.nn.modules import module as nn_module

        if self._mode is not None:  # a second entry would orphan the first one's mode and hooks
            raise UsageError("this tracer is already on; nest a new backtrace.trace(...) instead")
        for name, ref in self._names_off.items():
            if (v := ref()) is not None:
                self.names.setdefault(name, v)
        self._names_off.clear()
        self._grad_enabled_at_entry = torch.is_grad_enabled()
        self._thread = threading.get_ident()  # the thread whose forward and backward are traced
        if self.model is not None:
            self._adopt(self.model, "")
        for name, t in self.names.items():
            if not isinstance(t, torch.Tensor):
                raise UsageError(f"names[{name!r}] is a {type(t).__name__}, not a tensor")
        self._handles = [
            nn_module.register_module_forward_pre_hook(self._module_enter),
            nn_module.register_module_forward_hook(self._module_exit, always_call=True),
        ]
        self._patches = [patches.patch(target, self._around(kind)) for target, kind in _TARGETS.items()]
        self._mode = _Mode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._mode is not None:
                compat.exit_mode(self._mode)
        finally:  # whatever happens above, nothing of ours stays installed
            self._mode, self._hidden = None, None
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            for p in self._patches:
                p.remove()
            self._patches = []
            self._names_off.update({k: weakref.ref(v) for k, v in self.names.items()})
            self.names = {}
            self._modules.clear()
            self._params.clear()
            self._stack.clear()

    @property
    def trace(self) -> Trace:
        """The trace of the last backward call."""
        if not self.traces:
            raise NothingToTraceError(self._nothing_message())
        return self.traces[-1]

    def _nothing_message(self) -> str:
        if not self._grad_enabled_at_entry:
            return ("nothing traced: the tracer was entered under torch.no_grad(), so the forward "
                    "built no graph; trace with gradients enabled")
        return ("nothing traced: no backward call (loss.backward(), torch.autograd.backward or "
                "torch.autograd.grad) ran inside the tracer")

    def _paused(self) -> bool:
        return getattr(self._local, "call", None) is not None

    def _error(self, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:  # a failure repeated every step must not grow memory
            self.errors.append(message)

    # -- modules and names
    def _adopt(self, root: torch.nn.Module, prefix: str) -> None:
        for name, m in root.named_modules(prefix=prefix):
            _remember(self._modules, m, name)
        for name, p in root.named_parameters(prefix=prefix):
            _remember(self._params, p, name)

    def _module_path(self, module: torch.nn.Module) -> str:
        known = self._modules.get(id(module))
        if known is not None and known[0]() is module:
            return known[1]
        if self._stack:  # a child created on the fly: name it by its attribute in the parent
            parent = self._stack[-1]
            path = f"{parent}.{type(module).__name__}" if parent else type(module).__name__
        else:  # a new top-level model: adopt it whole
            path = "" if not self._modules else type(module).__name__
        self._adopt(module, path)
        return self._modules[id(module)][1]

    def _module_enter(self, module: torch.nn.Module, args: Any) -> None:
        if self._paused() or compat.is_compiling() or threading.get_ident() != self._thread:
            return
        self._stack.append(self._module_path(module))
        if self._hidden is None and self._mode is not None and not torch.is_grad_enabled():
            # Without gradients nothing is recorded, and an active torch-function mode would turn
            # off fused inference paths (nn.TransformerEncoderLayer, nn.MultiheadAttention) and
            # change the outputs in the last bit: step aside until this module returns.
            compat.exit_mode(self._mode)
            self._hidden = len(self._stack)

    def _module_exit(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._paused() or compat.is_compiling() or threading.get_ident() != self._thread:
            return
        if not self._stack:
            return
        path = self._stack.pop()
        if self._hidden is not None and len(self._stack) < self._hidden:
            self._hidden = None
            if self._mode is not None:
                self._mode.__enter__()
        for t in _tensors(output):
            node = t.grad_fn
            if node is not None:
                stamp = node.metadata.get(self._md_key)
                if stamp is not None and stamp.module_output is None:
                    stamp.module_output = path

    # -- forward
    def _value(self, t: torch.Tensor) -> Any:
        """The recorded form of a tensor: a TensorStats placeholder (stats) or a detached clone (full)."""
        cpu = t.device.type == "cpu" and threading.get_ident() == self._thread
        with torch.no_grad(), stats.one_thread(cpu):
            if self.level == "full":
                return t.detach().clone()
            return stats.Pending(stats.stats_vector(t), tuple(t.shape), str(t.dtype).removeprefix("torch."))

    def _same_memory(self, t: torch.Tensor, others, records) -> Any:
        """The record of a live tensor holding exactly t's elements (a view of it), if any.

        Statistics ignore element order, so a transpose or reshape of a recorded tensor reuses its
        record; both tensors are alive here, so equal memory means equal contents.
        """
        if self.level != "stats" or not stats.dense(t):
            return None
        ptr, n, version = t.data_ptr(), t.numel(), compat.version(t)
        for o, rec in zip(others, records):
            if isinstance(rec, stats.Pending) and o is not None and o.data_ptr() == ptr \
                    and o.numel() == n and o.dtype == t.dtype and o.device == t.device \
                    and compat.version(o) == version and stats.dense(o):
                return stats.Pending(rec.vec, tuple(t.shape), rec.dtype, rec.stats)
        return None

    def _stamp(self, func: Any, out: Any, args: tuple = ()) -> None:
        if threading.get_ident() != self._thread:
            return
        for t in _tensors(out):
            if type(t) is not torch.Tensor:  # fake/functional tensors of torch.compile, subclasses
                continue
            node = t.grad_fn
            if node is None:
                continue
            md = node.metadata
            stamp = md.get(self._md_key)
            if stamp is None:
                op, inplace = _op_name(func)
                stamp = _Stamp(op, self._stack[-1] if self._stack else "",
                               compat.saved_tensor_hooks_active(), inplace)
                md[self._md_key] = stamp
            elif t.output_nr in stamp.values:
                continue  # an op that returned an existing tensor unchanged
            if t.output_nr not in stamp.values:
                stamp.values[t.output_nr] = self._forward_value(t, args)

    def _forward_value(self, t: torch.Tensor, args: tuple) -> Any:
        """A new output's value; a view of a recorded input (view, transpose) reuses its record."""
        if self.level == "stats":
            inputs = [a for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None]
            records = []
            for a in inputs:
                stamp = a.grad_fn.metadata.get(self._md_key)
                records.append(stamp.values.get(a.output_nr) if stamp is not None else None)
            hit = self._same_memory(t, inputs, records)
            if hit is not None:
                return hit
        return self._value(t)

    # -- backward
    def _around(self, kind: str) -> Any:
        """The hook this tracer puts around one backward entry point (see backtrace.patches)."""
        tracer = self

        def traced(call: Any, *args: Any, **kwargs: Any) -> Any:
            if tracer._paused() or threading.get_ident() != tracer._thread:
                return call(*args, **kwargs)  # another thread's, or inside a traced backward
            frame = sys._getframe(1)  # the user's frame: skip torch's, ours and other hooks'
            while frame is not None and frame.f_globals.get("__name__", "").startswith(
                    ("torch.", "backtrace.tracer", "backtrace.patches")):
                frame = frame.f_back
            try:
                return tracer._backward(call, kind, args, kwargs, frame)
            finally:
                del frame

        return traced

    def _backward(self, original: Any, kind: str, args: tuple, kwargs: dict, frame: Any) -> Any:
        roots = _roots(args, kwargs)
        if roots is None or compat.is_compiling() or any(compat.is_fake(r) for r in roots):
            # GradientEdge roots (not traced), or torch.compile differentiating its own graph
            return original(*args, **kwargs)
        self.calls += 1
        for k, r in enumerate(roots):
            if not r.requires_grad:
                where = "the tensor" if len(roots) == 1 else f"output {k}"
                hint = ("gradients were disabled when the tracer was entered (torch.no_grad())"
                        if not self._grad_enabled_at_entry else
                        "it was computed under torch.no_grad() or from tensors that do not "
                        "require grad")
                raise NothingToTraceError(f"nothing to trace: {where} passed to {kind} does not "
                                          f"require grad ({hint})")
        if self.stop_after is not None and self.recorded >= self.stop_after:
            self._local.call = "untraced"  # nested calls (Tensor.backward -> autograd.backward) pass too
            try:
                return original(*args, **kwargs)
            finally:
                self._local.call = None
        create_graph = bool(kwargs.get("create_graph", False))
        retain = kwargs.get("retain_graph")
        self._local.call = "building"  # get_gradient_edge runs torch functions: keep the mode out
        try:
            with compat.no_torch_function():
                # A leaf root's AccumulateGrad lives only while referenced: keep it here, outside
                # anything a hook can reach, so the hooked node is the one backward runs.
                keep = [torch.autograd.graph.get_gradient_edge(r) for r in roots]  # noqa: F841
                recorder = _Recorder(self, roots, kind, frame if self.frame_names else None)
        except Exception as exc:  # cannot trace this call: run it untraced rather than break it
            self._error(f"backward call {self.calls}: {type(exc).__name__}: {exc}")
            self._local.call = "untraced"
            try:
                return original(*args, **kwargs)
            finally:
                self._local.call = None
        finally:
            if self._local.call == "building":
                self._local.call = None
        del frame
        self._local.call = recorder
        error: BaseException | None = None
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._local.call = None
            recorder.remove_hooks()
            with compat.no_torch_function():
                trace = recorder.finish(call=self.calls, create_graph=create_graph,
                                        retain_graph=create_graph if retain is None
                                        else bool(retain), error=error)
            self.traces.append(trace)
            self.recorded += 1
            if self.max_traces is not None and len(self.traces) > self.max_traces:
                del self.traces[0]  # a rolling window: the oldest goes, t.trace stays the newest
        return result


def _roots(args: tuple, kwargs: dict) -> list[torch.Tensor] | None:
    """The tensors a backward call differentiates; None for roots given as GradientEdges."""
    first = args[0] if args else next(
        (kwargs[k] for k in ("self", "tensors", "outputs") if k in kwargs), ())
    items = [first] if isinstance(first, torch.Tensor) else list(first)
    if not all(isinstance(t, torch.Tensor) for t in items):
        return None
    return items


@dataclass
class _Info:
    """Everything known about one graph node before backward runs."""

    node: Any
    torch_type: str
    stamp: _Stamp | None
    children: tuple  # ((child index or -1, output_nr), ...) in input-slot order
    id: str = ""
    kind: str = "op"
    name: str = ""
    variable_value: Any = None
    parent: int = -1
    const_ids: dict = field(default_factory=dict)  # input slot -> id of a leaf needing no grad
    custom: bool = False  # a custom autograd.Function's node
    shapes: Any = None  # (shape, dtype) per output
    module: str = ""  # leaves: the module owning the parameter


class _Recorder:
    """One backward call: the graph reachable from the roots, its hooks, and what they saw."""

    def __init__(self, tracer: Tracer, roots: list[torch.Tensor], kind: str, frame: Any) -> None:
        self.tracer, self.kind, self.level = tracer, kind, tracer.level
        self.infos: list[_Info] = []
        self.handles: list[Any] = []
        self.order: list[int] = []  # hook firing order
        self.upstream: dict[int, tuple] = {}
        self.downstream: dict[int, tuple] = {}
        self.local: dict[int, tuple] = {}
        self.saved: dict[int, Any] = {}
        self.sums: dict[int, Any] = {}  # leaf index -> summed contributions (torch.autograd.grad)
        self.sent: dict[tuple[int, int], tuple] = {}  # (consumer, slot) -> (tensor key, record)
        self._node_modules: list[str] | None = None
        self.failures: list[str] = []  # what the hooks could not record, by node
        edges = [torch.autograd.graph.get_gradient_edge(r) for r in roots]
        self.root_ids = self._walk([e.node for e in edges])
        self.fan_in: dict[tuple[int, int], int] = {}  # how many edges feed each (node, output)
        for info in self.infos:
            for c, nr in info.children:
                if c >= 0:
                    self.fan_in[(c, nr)] = self.fan_in.get((c, nr), 0) + 1
        for r, e in zip(self.root_ids, edges):  # the seed gradient arrives from outside
            self.fan_in[(r, e.output_nr)] = 2
        self._name(frame)
        for i, info in enumerate(self.infos):
            self.handles.append(info.node.register_hook(functools.partial(self._hook, i)))
        for info in self.infos:  # from here on no node is held: a hook finds its own node
            info.node = None

    # -- before backward
    def _walk(self, roots: list[Any]) -> list[int]:
        """Iterative DFS post-order from the roots: inputs before consumers, like a formula."""
        index: dict[Any, int] = {}
        infos = self.infos
        for root in roots:
            if root in index:
                continue
            stack = [(root, iter(root.next_functions), -1)]
            visiting = {root}
            while stack:
                node, it, parent = stack[-1]
                for child, _ in it:
                    if child is not None and child not in index and child not in visiting:
                        visiting.add(child)
                        stack.append((child, iter(child.next_functions), len(stack) - 1))
                        break
                else:
                    stack.pop()
                    visiting.discard(node)
                    md = node.metadata
                    stamp = md.get(self.tracer._md_key)
                    index[node] = len(infos)
                    infos.append(_Info(node, type(node).__name__, stamp, (),
                                       custom=isinstance(node, BackwardCFunction),
                                       shapes=compat.output_metadata(node)))
        for info in infos:
            info.children = tuple((index[c] if c is not None else -1, nr)
                                  for c, nr in info.node.next_functions)
            for c, _ in info.children:
                if c >= 0 and infos[c].parent < 0:
                    infos[c].parent = index[info.node]
        return [index[r] for r in roots]

    def _name(self, frame: Any) -> None:
        """Ids: names= keys, parameter names, variable names for leaves, then %0, %1, ..."""
        tracer, infos = self.tracer, self.infos
        by_node = {id(info.node): i for i, info in enumerate(infos)}
        given: dict[int, dict[int, str]] = {}  # info index -> output_nr -> name
        used: set[str] = set()

        def note(t: torch.Tensor, name: str, as_id: bool) -> None:
            if not isinstance(t, torch.Tensor) or not t.requires_grad:
                return
            edge = torch.autograd.graph.get_gradient_edge(t)
            i = by_node.get(id(edge.node))
            if i is None:
                return
            given.setdefault(i, {}).setdefault(edge.output_nr, name)
            info = infos[i]
            if as_id and not info.id and name not in used:  # ids stay unique: first name wins
                info.id = name
                used.add(name)

        for name, t in tracer.names.items():
            note(t, name, True)
        for ref, name in list(tracer._params.values()):
            p = ref()
            if p is not None:
                note(p, name, True)
        if frame is not None:
            for name, v in compat.frame_tensors(frame):
                if not name.startswith("_"):
                    note(v, name, v.grad_fn is None)  # leaves take the variable's name as id
        taken = {info.id for info in infos if info.id}
        for i, names in given.items():
            infos[i].name = ", ".join(names[k] for k in sorted(names))
        # In-place ops: every earlier version of a named tensor carries the name too.
        for i, info in enumerate(infos):
            if info.name and info.stamp is not None and info.stamp.inplace:
                j, name = i, info.name
                while infos[j].stamp is not None and infos[j].stamp.inplace and infos[j].children:
                    j = infos[j].children[0][0]
                    if j < 0 or infos[j].name:
                        break
                    infos[j].name = name
        counter = 0

        def fresh() -> str:
            nonlocal counter
            while f"%{counter}" in taken:
                counter += 1
            counter += 1
            return f"%{counter - 1}"

        for info in infos:
            if info.torch_type == "AccumulateGrad":
                info.kind = "input"
                self._leaf(info)
            for slot, (c, _) in enumerate(info.children):
                if c < 0:
                    info.const_ids[slot] = fresh()
            if not info.id:
                info.id = fresh()

    def _leaf(self, info: _Info) -> None:
        """A leaf's value, shape and owning module, read from AccumulateGrad.variable."""
        try:
            variable = info.node.variable
            info.shapes = ((tuple(variable.shape), str(variable.dtype).removeprefix("torch.")),)
            param = self.tracer._params.get(id(variable))
            if param is not None and param[0]() is variable:
                info.module = param[1].rpartition(".")[0]
            info.variable_value = self.tracer._value(variable)
        except Exception as exc:  # recorded as missing, never raised into the user's backward
            self.failures.append(f"value of a leaf: {type(exc).__name__}: {exc}")

    # -- during backward
    def _record(self, t: torch.Tensor | None) -> Any:
        return None if t is None else self.tracer._value(t)

    def _hook(self, i: int, grad_inputs: tuple, grad_outputs: tuple) -> None:
        try:
            with compat.no_torch_function():  # our own tensor work is not the user's: no modes
                self._on_node(i, grad_inputs, grad_outputs)
        except Exception as exc:  # a recording problem must never break the user's backward
            self.failures.append(f"{self.infos[i].id or i}: {type(exc).__name__}: {exc}")

    def _on_node(self, i: int, grad_inputs: tuple, grad_outputs: tuple) -> None:
        info = self.infos[i]
        self.order.append(i)
        # Upstream: a gradient that came down a single edge is the producer's contribution,
        # already recorded, when it is still that very tensor (same memory, shape and version; a
        # tensor hook that replaced it made a new tensor while the old one was alive).
        upstream = []
        for nr, g in enumerate(grad_outputs):
            sent = self.sent.pop((i, nr), None)
            same = sent is not None and g is not None and sent[0] is not None \
                and sent[0] == stats.key(g)
            upstream.append(sent[1] if same else self._record(g))
        self.upstream[i] = tuple(upstream)
        downstream = []
        for (c, nr), g in zip(info.children, grad_inputs):
            rec = None if g is None else self.tracer._same_memory(g, grad_outputs, upstream)
            if rec is None:
                rec = self._record(g)
            downstream.append(rec)
            if g is not None and c >= 0 and self.fan_in.get((c, nr)) == 1:
                self.sent[(c, nr)] = (stats.key(g), rec)
        self.downstream[i] = tuple(downstream)
        if self.kind == "grad":  # leaves do not run under torch.autograd.grad: sum what reaches them
            with torch.no_grad():
                for (c, _), g in zip(info.children, grad_inputs):
                    if c >= 0 and g is not None and self.infos[c].kind == "input":
                        prev = self.sums.get(c)
                        self.sums[c] = g.detach().clone() if prev is None else prev + g
        if info.kind != "input":
            node = compat.current_node()  # the node running this hook; never stored
            self.local[i] = self._jacobians(info, node, grad_inputs, grad_outputs)
            self.saved[i] = self._saved(info, node)

    def _jacobians(self, info: _Info, node: Any, grad_inputs: tuple, grad_outputs: tuple) -> tuple:
        """Each input slot's local Jacobian (rows: output elements), or a reason it is not computed."""
        rows_total = sum(g.numel() for g in grad_outputs if g is not None)
        sizes = [g.numel() if g is not None else 0 for g in grad_inputs]
        reason = self._opaque(info)
        if reason is None and node is None:
            reason = "the running node is unknown"
        if reason is None and any(g is None for g in grad_outputs):
            reason = "an output of this node received no gradient"
        if reason is None and rows_total * max(sizes, default=0) > self.tracer.local_max:
            reason = "too large"
        if reason is not None:
            return tuple((None, f"Jacobian {rows_total}×{n} (not computed: {reason})"
                          if g is not None else "") for n, g in zip(sizes, grad_inputs))
        rows: list[list[torch.Tensor]] = [[] for _ in grad_inputs]
        try:
            with torch.no_grad():
                for j, g in enumerate(grad_outputs):
                    for e in range(g.numel()):
                        basis = [x.new_zeros(x.shape) for x in grad_outputs]
                        basis[j].view(-1)[e] = 1
                        got = node(*basis)
                        got = got if isinstance(got, tuple) else (got,)
                        for slot, r in enumerate(got):
                            if slot < len(rows):
                                want = grad_inputs[slot]
                                if r is not None and want is not None and r.shape != want.shape:
                                    r = r.sum_to_size(want.shape)  # as the engine does (broadcast)
                                rows[slot].append(r.reshape(-1) if r is not None else None)
        except Exception as exc:  # e.g. saved tensors a checkpoint lets the node unpack only once
            why = f"the node cannot be re-run: {type(exc).__name__}"
            return tuple((None, f"Jacobian {rows_total}×{n} (not computed: {why})"
                          if g is not None else "") for n, g in zip(sizes, grad_inputs))
        out = []
        for slot, n in enumerate(sizes):
            if grad_inputs[slot] is None or any(r is None for r in rows[slot]):
                out.append((None, ""))
            else:
                out.append((torch.stack(rows[slot]), f"Jacobian {rows_total}×{n}"))
        return tuple(out)

    def _opaque(self, info: _Info) -> str | None:
        if "CompiledFunction" in info.torch_type:
            return "torch.compile region"
        if info.stamp is not None and info.stamp.saved_hooks:
            return "saved tensors under checkpoint hooks"
        if info.custom:
            return "custom autograd.Function"
        return None

    def _saved(self, info: _Info, node: Any) -> Any:
        if info.custom:
            return "custom autograd.Function: ctx.saved_tensors not read"
        if node is None:
            return "unavailable (the running node is unknown)"
        if info.stamp is not None and info.stamp.saved_hooks:
            return "unavailable (saved-tensor hooks, e.g. torch.utils.checkpoint)"
        described = {}
        for attr in compat.saved_tensor_names(node):
            if attr.startswith("_saved_") and not attr.startswith("_raw"):
                try:
                    v = compat.read_saved(node, attr)
                except Exception:  # freed, or a checkpointed tensor already unpacked once
                    described[attr[7:]] = "unavailable"
                    continue
                if isinstance(v, torch.Tensor) or (isinstance(v, (tuple, list)) and v
                                                   and isinstance(v[0], torch.Tensor)):
                    described[attr[7:]] = _describe(v)
        return described

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    # -- after backward
    def finish(self, call: int, create_graph: bool, retain_graph: bool,
               error: BaseException | None) -> Trace:
        """Build the Trace; one device sync resolves every statistic."""
        infos, order = self.infos, self.order
        pending = [x for x in _walk_values(self._all_values()) if isinstance(x, stats.Pending)]
        stats.resolve(pending)
        fix = _finalize
        nodes: list[TraceNode] = []
        for i, info in enumerate(infos):
            inputs = tuple(infos[c].id if c >= 0 else info.const_ids[slot]
                           for slot, (c, _) in enumerate(info.children))
            node = self._node(i, info, inputs, fix)
            for slot, (c, _) in enumerate(info.children):
                if c < 0:  # an input that needs no gradient, shown in its consumer's module
                    nodes.append(TraceNode(info.const_ids[slot], "const", (), "", None, None,
                                           "const", {"note": "does not require grad",
                                                     "module": node.meta.get("module", ""),
                                                     "name": ""}))
            nodes.append(node)
        steps = []
        for k, i in enumerate(x for x in order if infos[x].kind != "input"):
            info = infos[i]
            local = self.local.get(i, ())
            down = self.downstream.get(i, ())
            edges = []
            for slot, (c, _) in enumerate(info.children):
                contribution = fix(down[slot]) if slot < len(down) else None
                loc, rule = local[slot] if slot < len(local) else (None, "")
                if c < 0:
                    note = "no gradient: input does not require grad"
                    target = info.const_ids[slot]
                else:
                    note = "" if contribution is not None else "no gradient"
                    target = infos[c].id
                edges.append(Edge(slot, target, fix(loc), rule, contribution, note))
            up = self.upstream.get(i, ())
            steps.append(Step(k, info.id, fix(_one(up)), tuple(edges)))
        meta = {"level": self.level, "call": call, "kind": self.kind,
                "create_graph": create_graph, "retain_graph": retain_graph,
                "roots": tuple(infos[r].id for r in self.root_ids),
                "torch": torch.__version__}
        if error is not None:
            meta["error"] = f"{type(error).__name__}: {error}"
        if self.failures:
            meta["tracer_errors"] = tuple(self.failures)
        return Trace("torch", infos[self.root_ids[0]].id, tuple(nodes), tuple(steps), meta)

    def _all_values(self):
        for info in self.infos:
            if info.stamp is not None:
                yield from info.stamp.values.values()
            yield info.variable_value
        for d in (self.upstream, self.downstream):
            yield from d.values()
        yield from self.sums.values()

    def _node(self, i: int, info: _Info, inputs: tuple[str, ...], fix) -> TraceNode:
        stamp = info.stamp
        meta: dict[str, Any] = {"torch_type": info.torch_type}
        shapes = info.shapes
        if info.kind == "input":
            op = "input"
            value = fix(info.variable_value)
            module = info.module
            if i in self.upstream:
                grad = fix(_one(self.upstream[i]))
            elif i in self.sums:
                grad = fix(self._record(self.sums[i]) if self.level == "stats" else self.sums[i])
            else:
                grad = None
        else:
            if stamp is not None:
                op, module = stamp.op, stamp.module
                values = [stamp.values.get(k) for k in range(max(stamp.values, default=0) + 1)]
                value = fix(_one(tuple(values)))
                if stamp.inplace:
                    meta["inplace"] = True
                if stamp.module_output is not None:
                    meta["module_output"] = stamp.module_output
            else:
                op, value = _snake(info.torch_type), None
                module = self._inherited_module(i)
                parent = self.infos[info.parent] if info.parent >= 0 else None
                if parent is not None and parent.stamp is not None:
                    meta["within"] = parent.stamp.op
            grad = fix(_one(self.upstream[i])) if i in self.upstream else None
            opaque = self._opaque(info)
            if opaque is not None:
                meta["opaque"] = opaque
            if i in self.saved:
                meta["saved"] = self.saved[i]
        meta["module"] = module
        meta["name"] = info.name
        if shapes is not None:
            meta["shapes"] = tuple(s for s, _ in shapes)
            meta["dtypes"] = tuple(d for _, d in shapes)
        expr = "input" if info.kind == "input" else f"{op}({', '.join(inputs)})"
        return TraceNode(info.id, op, inputs, expr, value, grad, info.kind, meta)

    def _inherited_module(self, i: int) -> str:
        """An unstamped node (made inside a composite op) belongs to its consumer's module."""
        if self._node_modules is None:
            modules = [""] * len(self.infos)
            for k in range(len(self.infos) - 1, -1, -1):  # consumers come after their inputs
                x = self.infos[k]
                if x.stamp is not None:
                    modules[k] = x.stamp.module
                elif x.parent >= 0:
                    modules[k] = modules[x.parent]
            self._node_modules = modules
        return self._node_modules[i]


def _one(values: tuple) -> Any:
    """A single output slot as itself, several as a tuple."""
    if len(values) == 1:
        return values[0]
    return tuple(values) if values else None


def _walk_values(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _walk_values(v)
        elif isinstance(v, dict):
            yield from _walk_values(v.values())
        else:
            yield v


def _finalize(v: Any) -> Any:
    """Placeholders to TensorStats, 1×1 Jacobians and 0-d tensors of small locals to floats."""
    if isinstance(v, stats.Pending):
        if v.stats is None:
            stats.resolve([v])
        return v.stats
    if isinstance(v, tuple):
        return tuple(_finalize(x) for x in v)
    if isinstance(v, torch.Tensor) and v.dim() == 2 and v.numel() == 1 and not v.requires_grad:
        return float(v.reshape(()).double().cpu())  # a 1×1 local Jacobian is a number
    return v


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"[{_shape(v.shape)}] {str(v.dtype).removeprefix('torch.')}"
    if isinstance(v, (tuple, list)) and v and isinstance(v[0], torch.Tensor):
        return ", ".join(_describe(x) for x in v)
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def trace(model: torch.nn.Module | None = None, names: Mapping[str, torch.Tensor] | None = None,
          level: str = "stats", local_max: int = 64, max_traces: int | None = None,
          frame_names: bool = True, stop_after: int | None = None) -> Tracer:
    """Record every backward call made inside ``with trace(...) as t`` as a Trace in ``t.traces``.

    model: its parameters are named (``fc1.weight``) and its modules give each node a path.
    names: extra tensors to name (inputs, intermediates; held only inside the block). level:
    "stats" (shape, norm, mean, max |x|) or "full" (detached clones). local_max: largest local
    Jacobian (elements) computed exactly. max_traces: keep only the last this many traces (a rolling window, so a long training
    loop holds bounded memory). stop_after: record only the first this many backward calls; later
    ones run untraced, at no cost.
    """
    return Tracer(model, names, level, local_max, max_traces, frame_names, stop_after)
