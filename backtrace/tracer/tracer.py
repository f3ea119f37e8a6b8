"""The tracer: records real PyTorch autograd, node by node, as backtrace Traces.

Forward: while a tracer is on, a torch-call recorder stamps each new autograd node with its op
name, module path and output value (tracer.stamping); global module hooks keep the module path.
Backward: ``Tensor.backward``, ``torch.autograd.backward`` and ``torch.autograd.grad`` are wrapped
while any tracer is on (one shared wrapper hands each call to the calling thread's tracers, so
tracers in several threads may exit in any order); right before each call the graph reachable
from the roots gets one post-hook per node (tracer.recording), and every handle is removed after
the call, also when it raises. The statistics the hooks asked for are reduced in batches
(tracer.batch) at the end of the call; the recording becomes a Trace (tracer.assemble) when it is
first read.
"""
from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import patches
from ..errors import NothingToTraceError, UsageError
from ..traces import Trace
from . import assemble, compat, distributed, holding
from .batch import Batch
from .naming import WeakNames
from .recording import BackwardRecording
from .stamping import Forward

LEVELS = ("stats", "full")
_KEY = "backtrace"  # our entries in Node.metadata: (_KEY, tracer token)
_tokens = iter(range(1, sys.maxsize))

# Where backward calls are intercepted (through backtrace.patches), and what kind of call each is.
_TARGETS = {"Tensor.backward": "backward", "autograd.backward": "backward", "autograd.grad": "grad"}

_MAX_ERRORS = 100


def _count(name: str, n: int | None) -> None:
    """Refuse anything but a positive integer or None for the count `name`."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UsageError(f"{name} must be a positive integer or None, got {n!r}")


class Tracer:
    """``with trace(...) as t``: one Trace per backward call in ``t.traces``; ``t.trace`` is the last."""

    def __init__(self, model: torch.nn.Module | None = None,
                 names: Mapping[str, torch.Tensor] | None = None, level: str = "stats",
                 local_max: int = 64, max_traces: int | None = None,
                 frame_names: bool = True, stop_after: int | None = None,
                 after_call: Callable[[Tracer], None] | None = None) -> None:
        if level not in LEVELS:
            raise UsageError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        if names is not None and not isinstance(names, Mapping):
            raise UsageError("names= takes a dict {name: tensor}")
        _count("max_traces", max_traces)
        _count("stop_after", stop_after)
        self.model, self.level, self.local_max = model, level, local_max
        self.max_traces, self.frame_names = max_traces, frame_names
        self.stop_after, self.after_call = stop_after, after_call
        self.names: dict[str, torch.Tensor] = dict(names or {})  # held only while on
        self._names_off: dict[str, weakref.ref] = {}  # between blocks: an intermediate's graph is freed
        self._traces: list[Trace | assemble.Unbuilt] = []  # built when first read
        self.calls = 0  # backward calls seen, traced or not
        self.other_threads = 0  # backward calls other threads made meanwhile (not traced)
        self.recorded = 0  # traces made, including those the max_traces window let go
        self.errors: list[str] = []  # what the forward stamping could not record (the first 100)
        self._token = next(_tokens)
        # by weak reference: a module built inside forward on every call is not kept
        self._modules = WeakNames()
        self._params = WeakNames()
        self._fsdp_names = distributed.Names(self._modules, self._params)  # FSDP2's unsharded
        self._patches: list[patches.Patch] = []
        self._forward: Forward | None = None  # the forward side, while on
        self._grad_enabled_at_entry = True
        self._thread = threading.get_ident()
        self._batch = Batch(self._thread)  # statistics waiting to be reduced
        self._local = threading.local()  # per thread: the backward call being traced, if any
        self._md_key = (_KEY, self._token)  # nested tracers each keep their own stamps

    # -- the context
    def __enter__(self) -> Tracer:
        if self._forward is not None:  # a second entry would orphan the first one's mode and hooks
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
        self._patches = [patches.patch(target, self._around(kind)) for target, kind in _TARGETS.items()]
        self._batch = Batch(self._thread)
        self._forward = Forward(self._md_key, self.level, self._batch, self._module_path,
                                self._paused, self._error)
        self._forward.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._forward is not None:
                self._forward.stop()
            self._batch.flush()  # the statistics of forward values no backward call read yet
        finally:  # whatever happens above, nothing of ours stays installed
            self._forward = None
            self._fsdp_names.stop()
            for p in self._patches:
                p.remove()
            self._patches = []
            self._names_off.update({k: weakref.ref(v) for k, v in self.names.items()})
            self.names = {}
            self._modules.clear()
            self._params.clear()
            holding.sweep()  # what the block dropped goes now (see holding)

    @property
    def traces(self) -> list[Trace]:
        """One Trace per recorded backward call, oldest first (each built when first read)."""
        for k, item in enumerate(self._traces):
            if isinstance(item, assemble.Unbuilt):
                self._traces[k] = item.build()
        return self._traces

    @property
    def trace(self) -> Trace:
        """The trace of the last backward call."""
        if not self._traces:
            raise NothingToTraceError(self._nothing_message())
        last = self._traces[-1]
        if isinstance(last, assemble.Unbuilt):
            self._traces[-1] = last = last.build()
        return last

    def _nothing_message(self) -> str:
        """Why there is no trace, with what to do about it."""
        if not self._grad_enabled_at_entry:
            return ("nothing traced: the tracer was entered under torch.no_grad(), so the forward "
                    "built no graph; trace with gradients enabled")
        return ("nothing traced: no backward call (loss.backward(), torch.autograd.backward or "
                "torch.autograd.grad) ran inside the tracer")

    def _paused(self) -> bool:
        """True while this thread runs a backward call of this tracer (traced or not)."""
        return getattr(self._local, "call", None) is not None

    def _error(self, message: str) -> None:
        """Note what the forward stamping could not record (the first _MAX_ERRORS)."""
        if len(self.errors) < _MAX_ERRORS:  # a failure repeated every step must not grow memory
            self.errors.append(message)

    # -- modules and names
    def _adopt(self, root: torch.nn.Module, prefix: str) -> str:
        """Know root's modules and parameters by their paths under prefix; returns root's name."""
        name = self._modules.add(root, prefix)
        for path, m in root.named_modules(prefix=prefix):
            self._modules.add(m, path)
        for path, p in root.named_parameters(prefix=prefix):
            self._params.add(p, path)
        self._fsdp_names.adopted(root)
        return name

    def _module_path(self, module: torch.nn.Module, parent: str | None) -> str:
        """The path of a module being entered; parent: the path of the running module, if any."""
        known = self._modules.get(module)
        if known is not None:
            return known
        if parent is not None:  # a child created on the fly: named by its type, under the parent
            path = f"{parent}.{type(module).__name__}" if parent else type(module).__name__
        else:  # a new top-level model: adopt it whole
            path = "" if not self._modules else type(module).__name__
        return self._adopt(module, path)

    # -- backward
    def _around(self, kind: str) -> Any:
        """The hook this tracer puts around one backward entry point (see backtrace.patches)."""
        tracer = self

        def traced(call: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != tracer._thread:
                return tracer._elsewhere(call, args, kwargs)
            if tracer._paused():
                return call(*args, **kwargs)  # inside a traced backward
            frame = sys._getframe(1)  # the user's frame: skip torch's, ours and other hooks'
            while frame is not None and frame.f_globals.get("__name__", "").startswith(
                    ("torch.", "backtrace.tracer", "backtrace.patches")):
                frame = frame.f_back
            try:
                return tracer._backward(call, kind, args, kwargs, frame)
            finally:
                del frame
                if tracer._forward is not None:  # nodes a backward call made are not the forward's
                    tracer._forward.skip()

        return traced

    def _elsewhere(self, original: Any, args: tuple, kwargs: dict) -> Any:
        """Another thread's backward call: untraced (tracers are per thread), counted once."""
        if self._paused():  # Tensor.backward -> autograd.backward: one call
            return original(*args, **kwargs)
        self.other_threads += 1
        self._local.call = "elsewhere"
        try:
            return original(*args, **kwargs)
        finally:
            self._local.call = None

    def _backward(self, original: Any, kind: str, args: tuple, kwargs: dict, frame: Any) -> Any:
        """One backward call: checked, recorded (unless past stop_after), run, kept as a Trace."""
        roots = _roots(args, kwargs)
        if roots is None or compat.is_compiling() or any(compat.is_fake(r) for r in roots):
            # GradientEdge roots (not traced), or torch.compile differentiating its own graph
            return original(*args, **kwargs)
        self.calls += 1
        with compat.no_torch_function():  # reading the roots is no call of the user's tensors
            self._check_roots(roots, kind)
        if self.stop_after is not None and self.recorded >= self.stop_after:
            return self._untraced(original, args, kwargs)
        try:
            recording, keep = self._prepare(roots, kind, frame if self.frame_names else None)
        except Exception as exc:  # cannot trace this call: run it untraced rather than break it
            self._error(f"backward call {self.calls}: {type(exc).__name__}: {exc}")
            return self._untraced(original, args, kwargs)
        del frame
        result = self._run(original, recording, args, kwargs)
        del keep  # the roots' gradient edges, held until the call has run (see _prepare)
        return result

    def _check_roots(self, roots: list[torch.Tensor], kind: str) -> None:
        """Refuse roots that do not require grad, saying why they might not."""
        for k, r in enumerate(roots):
            if not r.requires_grad:
                where = "the tensor" if len(roots) == 1 else f"output {k}"
                hint = ("gradients were disabled when the tracer was entered (torch.no_grad())"
                        if not self._grad_enabled_at_entry else
                        "it was computed under torch.no_grad() or from tensors that do not "
                        "require grad")
                raise NothingToTraceError(f"nothing to trace: {where} passed to {kind} does not "
                                          f"require grad ({hint})")

    def _untraced(self, original: Any, args: tuple, kwargs: dict) -> Any:
        """Run the call with this tracer out of the way."""
        self._local.call = "untraced"  # nested calls (Tensor.backward -> autograd.backward) pass too
        try:
            return original(*args, **kwargs)
        finally:
            self._local.call = None

    def _prepare(self, roots: list[torch.Tensor], kind: str,
                 frame: Any) -> tuple[BackwardRecording, list[Any]]:
        """The recording of this call, hooks in place, and the roots' gradient edges."""
        self._local.call = "building"  # get_gradient_edge runs torch functions: keep the mode out
        if distributed.world() is not None:  # (the script may have started its group meanwhile)
            self._batch.small = 0  # DDP all-reduces gradients in place in backward: none waits
        try:
            with compat.no_torch_function():
                # A leaf root's AccumulateGrad lives only while referenced: the caller keeps it,
                # outside anything a hook can reach, so the hooked node is the one backward runs.
                keep = [torch.autograd.graph.get_gradient_edge(r) for r in roots]
                self._settle([holding.hold(e.node) for e in keep])
                recording = BackwardRecording(roots, kind, frame, md_key=self._md_key,
                                              level=self.level, local_max=self.local_max,
                                              batch=self._batch, names=self.names,
                                              params=self._params)
            return recording, keep
        finally:
            self._local.call = None

    def _settle(self, roots: list[Any]) -> None:
        """File the roots (and what they reach) that no forward call of ours made."""
        if self._forward is not None:
            try:
                self._forward.settle(roots)
            except Exception as exc:  # only modules are missing then: trace the call all the same
                self._error(f"backward call {self.calls}: modules: {type(exc).__name__}: {exc}")

    def _run(self, original: Any, recording: BackwardRecording, args: tuple, kwargs: dict) -> Any:
        """Run the call with its hooks, then always remove them and keep what they recorded."""
        create_graph = bool(kwargs.get("create_graph", False))
        retain = kwargs.get("retain_graph")
        self._local.call = recording
        error: BaseException | None = None
        try:
            return original(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._local.call = None
            recording.remove_hooks()
            self._keep(recording, create_graph, retain, error)

    def _keep(self, recording: BackwardRecording, create_graph: bool, retain: Any,
              error: BaseException | None) -> None:
        """Keep the call's Trace; a failure to build it is noted, never raised into the user's call."""
        try:
            with compat.no_torch_function():
                self._batch.flush()  # statistics computed, the gradients they read let go
                kept: Trace | assemble.Unbuilt = assemble.Unbuilt(
                    recording, call=self.calls, create_graph=create_graph,
                    retain_graph=create_graph if retain is None else bool(retain), error=error)
                if error is None and distributed.world() is not None:
                    # rank, reduced or global gradients: read now, while they are the step's
                    kept = distributed.finish(kept.build(), self._params, self._modules,
                                              self.level, recording.kind)
        except Exception as exc:  # the call ran: only its trace is lost
            self._error(f"backward call {self.calls}: {type(exc).__name__}: {exc}")
            return
        self._traces.append(kept)
        self.recorded += 1
        if self.max_traces is not None and len(self._traces) > self.max_traces:
            del self._traces[0]  # a rolling window: the oldest goes, t.trace stays the newest
        if self.after_call is not None and error is None:
            self.after_call(self)  # may raise into the caller: `backtrace nan` stops so

    def last_nonfinite(self) -> bool:
        """Whether the last recorded backward call saw an inf or NaN gradient or output value
        (its statistics come to the host; its Trace is not built)."""
        if not self._traces:
            return False
        last = self._traces[-1]
        if isinstance(last, assemble.Unbuilt):
            return last.nonfinite()
        return last.nonfinite() is not None


def _roots(args: tuple, kwargs: dict) -> list[torch.Tensor] | None:
    """The tensors a backward call differentiates; None for roots given as GradientEdges."""
    first = args[0] if args else next(
        (kwargs[k] for k in ("self", "tensors", "outputs") if k in kwargs), ())
    items = [first] if isinstance(first, torch.Tensor) else list(first)
    if not all(isinstance(t, torch.Tensor) for t in items):
        return None
    return items


def trace(model: torch.nn.Module | None = None, names: Mapping[str, torch.Tensor] | None = None,
          level: str = "stats", local_max: int = 64, max_traces: int | None = None,
          frame_names: bool = True, stop_after: int | None = None,
          after_call: Callable[[Tracer], None] | None = None) -> Tracer:
    """Record every backward call made inside ``with trace(...) as t`` as a Trace in ``t.traces``.

    model: its parameters are named (``fc1.weight``) and its modules give each node a path.
    names: extra tensors to name (inputs, intermediates; held only inside the block). level:
    "stats" (shape, norm, mean, max |x|) or "full" (detached clones). local_max: largest local
    Jacobian (elements) computed exactly. max_traces: keep only the last this many traces (a
    rolling window, so a long training loop holds bounded memory). stop_after: record only the
    first this many backward calls; later ones run untraced, at no cost. after_call(tracer):
    called after each recorded backward call (what it raises reaches the caller of backward).
    """
    return Tracer(model, names, level, local_max, max_traces, frame_names, stop_after, after_call)
