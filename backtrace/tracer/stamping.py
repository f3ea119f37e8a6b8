"""Forward stamping: while a tracer is on, each new autograd node is stamped (through the public
``Node.metadata``) with its op name, module path and output value, by a torch-call recorder
(backtrace.torchcalls); global module hooks keep the module path.

A node's module is the module that was running when the node was made. Nodes made between the
torch calls we see (custom ``autograd.Function``s however they are applied, ``torch.compile``
regions) are filed by their creation number: `Made` remembers which module ran for every recent
number, and such a node is stamped with its module as soon as a stamped node (through the insides
of its call), a module's output or a backward root reaches it. The insides of a composite op
belong to the call that made them (tracer.assemble files them with their consumer).
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ..torchcalls import Call, TorchCalls
from . import batch as batches, compat, holding, sources
from .naming import op_name
from .nodes import Stamp


def tensors(out: Any) -> Iterator[torch.Tensor]:
    """The tensors an op returned: the tensor itself, or those in a returned tuple or list."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                yield o


def _ignore(call: Call) -> None:
    """What a stopped tracer's mode does with a call (should one be left on a stack): nothing."""


class Made:
    """Which module ran when each recent node of this thread was made, by creation number.

    Numbers below `next` are sorted: stamped, made inside a torch call we saw (filed with that
    call's node), `open` (made between calls, by something we do not see: waiting to be filed)
    or not the forward's (a backward call made them). `call` is the first number of the call
    running now. At most LIMIT numbers stay open; module runs older than the oldest are let go.
    """

    LIMIT = 4096

    def __init__(self, path: str) -> None:
        n = compat.next_sequence_nr()
        self.known = n >= 0  # torch without creation numbers: every node is filed by its consumer
        self.starts, self.paths = [n], [path]  # from creation number starts[k] on, paths[k] ran
        self.next = self.call = n
        self.open: set[int] = set()

    def enter(self, path: str) -> None:
        """From now on nodes are made under `path` (a module starts, or returns to its parent)."""
        n = compat.next_sequence_nr()
        if self.starts[-1] == n:  # nothing was made under the previous path
            self.paths[-1] = path
        elif not self.open and n == self.next:  # nothing waits to be filed: start afresh
            self.starts[:], self.paths[:] = [n], [path]
        else:
            self.starts.append(n)
            self.paths.append(path)

    def catch_up(self) -> None:
        """Open every number made since the last look (made between calls)."""
        n = compat.next_sequence_nr()
        if n > self.next:
            self.open.update(range(max(self.next, n - self.LIMIT), n))
            if len(self.open) > self.LIMIT:  # never reached (e.g. unused outputs): forget the oldest
                self.open = set(sorted(self.open)[-self.LIMIT // 2:])
            self.next = n
            self._prune()
        self.call = n

    def skip(self) -> None:
        """Numbers made until now are sorted without being opened (a call's own, a backward's)."""
        self.next = max(self.next, compat.next_sequence_nr())

    def claim(self, seq: int) -> str | None:
        """The module of the open node `seq`, which is then no longer open; None if not open."""
        if seq not in self.open:
            return None
        self.open.discard(seq)
        path = self.paths[max(bisect.bisect_right(self.starts, seq) - 1, 0)]
        if not self.open:
            self._prune()
        return path

    def _prune(self) -> None:
        """Forget the module runs that ended before the oldest open number."""
        low = min(self.open, default=self.next)
        k = bisect.bisect_right(self.starts, low) - 1
        if k > 0:
            del self.starts[:k], self.paths[:k]


class Forward:
    """The forward side of one tracer, from `start()` to `stop()`: stamps every autograd node the
    forward creates with its op, module and value.

    md_key: this tracer's key in Node.metadata (nested tracers each keep their own stamps).
    module_path(module, parent path or None): the path of a module being entered.
    paused(): true while this thread runs a backward call of the tracer. error(message): where
    what cannot be recorded goes (recording must never break the user's forward).
    """

    def __init__(self, md_key: tuple, level: str, batch: batches.Batch,
                 module_path: Callable[[torch.nn.Module, str | None], str],
                 paused: Callable[[], bool], error: Callable[[str], None]) -> None:
        self.md_key, self.level, self.batch, self.thread = md_key, level, batch, batch.thread
        self.module_path, self.paused, self.error = module_path, paused, error
        self.stack: list[str] = []  # the paths of the modules running now, innermost last
        self.handles: list[Any] = []
        self.mode = TorchCalls(self._on_call, functions=False, before=self._before)
        self.on = False  # a mode left on a stack after stop() records nothing
        self.hidden: int | None = None  # module depth at which our mode was taken off the stack
        self.made = Made("")

    def start(self) -> None:
        """Install the module hooks and put the torch-call mode on this thread's stack."""
        from torch.nn.modules import module as nn_module

        self.handles = [
            nn_module.register_module_forward_pre_hook(self._module_enter),
            nn_module.register_module_forward_hook(self._module_exit, always_call=True),
        ]
        self.made = Made("")
        self.on = True
        self.mode.__enter__()

    def stop(self) -> None:
        """Take the mode off the stack (also from under modes entered later) and the hooks off."""
        self.on = False
        try:
            compat.exit_mode(self.mode)
        finally:  # whatever happens above, nothing of ours stays installed
            self.hidden = None
            self.mode.on_call = _ignore  # no cycle through the mode: the tracer is freed at once
            self.mode.before = None
            for handle in self.handles:
                handle.remove()
            self.handles.clear()
            self.stack.clear()

    # -- torch calls
    def _on_call(self, call: Call) -> None:
        """After each torch call: stamp what it made, unless this call is not ours to record."""
        if compat.is_compiling() or self.paused() or not self.on \
                or threading.get_ident() != self.thread:
            return  # torch.compile tracing our mode, a backward call, another thread
        try:
            if not torch.is_grad_enabled():
                return
            made = call.out
            if made is None and call.func is torch.Tensor.__setitem__:
                made = call.args[:1]  # x[i] = v returns None: the tensor it changed is the output
            with compat.no_torch_function():  # our reads of the user's tensors are not theirs
                nodes = self.stamp(call.func, made, call.args)
                if nodes:
                    self.settle(nodes, inside=self.made.call,
                                source=nodes[0].metadata[self.md_key].source)
        except Exception as exc:  # recording must never break the user's forward
            self.error(f"forward {getattr(call.func, '__name__', call.func)}: "
                       f"{type(exc).__name__}: {exc}")
        finally:
            self.made.skip()  # the nodes this call made are its own, filed with it

    def stamp(self, func: Any, out: Any, args: tuple = ()) -> list[Any]:
        """Stamp the nodes of out's tensors made by func (once per node, one value per output);
        returns the nodes newly stamped."""
        if threading.get_ident() != self.thread:
            return []
        new = []
        for t in tensors(out):
            if type(t) is not torch.Tensor:  # fake/functional tensors of torch.compile, subclasses
                continue
            node = holding.grad_fn(t)
            if node is None:
                continue
            md = node.metadata
            stamp = md.get(self.md_key)
            if stamp is None:
                op, inplace = op_name(func)
                stamp = Stamp(op, self.stack[-1] if self.stack else "",
                              compat.saved_tensor_hooks_active(), inplace, source=sources.caller())
                md[self.md_key] = stamp
                new.append(node)
            elif not stamp.op or t.output_nr in stamp.values:
                continue  # made by something else, or an op that returned a tensor unchanged
            stamp.values[t.output_nr] = self._value(t, args)
        return new

    def _before(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Before each torch call: file what was made between calls; in stats, protect what the
        batch holds from an in-place change the call is about to make."""
        self._call_starts()
        if self.level == "stats" and self.on:
            try:
                self.batch.before_call(func, args, kwargs)
            except Exception as exc:  # recording must never break the user's forward
                self.error(f"before {getattr(func, '__name__', func)}: {type(exc).__name__}: {exc}")

    def _call_starts(self) -> None:
        """Before each torch call: what was made since the last one was made between calls."""
        if compat.is_compiling():  # torch.compile tracing our mode: not a call of the forward
            return
        try:
            if self.on and self.made.known and threading.get_ident() == self.thread \
                    and not self.paused():
                self.made.catch_up()
        except Exception as exc:  # recording must never break the user's forward
            self.error(f"forward: creation numbers: {type(exc).__name__}: {exc}")

    def settle(self, nodes: Iterable[Any], inside: int | None = None,
               source: tuple[str, int] | None = None) -> None:
        """File the open nodes among `nodes` and those they reach under the modules that made them.

        inside: the first creation number of the call that made `nodes`; the walk goes through
        that call's own nodes (the insides of a composite op) to the open ones they consume.
        source: the line of the call that made `nodes`, given to the nodes filed (their own line
        is not seen; their first consumer's is the nearest we know)."""
        made = self.made
        if not made.known:
            return
        if inside is None:  # between calls: what was made since the last one is open now
            made.catch_up()
        if not made.open:
            return
        stack = [n for n in nodes if n is not None]
        for node in stack:
            self._file(node, source=source)
        low, high = (made.next, made.next) if inside is None else (inside, compat.next_sequence_nr())
        while stack and made.open:
            for child, _ in holding.children(stack.pop()):
                if child is None:
                    continue
                seq = compat.sequence_nr(child)
                if self._file(child, seq, source) or low <= seq < high:
                    stack.append(child)

    def _file(self, node: Any, seq: int | None = None,
              source: tuple[str, int] | None = None) -> bool:
        """Stamp an open node with the module it was made in; False if it is not open."""
        path = self.made.claim(compat.sequence_nr(node) if seq is None else seq)
        if path is None:
            return False
        md = node.metadata
        if md.get(self.md_key) is None:
            md[self.md_key] = Stamp("", path, compat.saved_tensor_hooks_active(), source=source)
        return True

    def _value(self, t: torch.Tensor, args: tuple) -> Any:
        """A new output's value; a view of a recorded input (view, transpose) reuses its record."""
        if self.level == "stats" and compat.is_view(t):  # only a view shares an input's memory
            inputs = [a for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None]
            records = []
            for a in inputs:
                stamp = holding.grad_fn(a).metadata.get(self.md_key)
                records.append(stamp.values.get(a.output_nr) if stamp is not None else None)
            hit = batches.same_memory(t, self.level, inputs, records)
            if hit is not None:
                return hit
        return batches.recorded(t, self.level, self.batch, forward=True)

    def skip(self) -> None:
        """Nodes made until now by a backward call are not the forward's."""
        self.made.skip()

    # -- modules
    def _ours(self) -> bool:
        """True for the traced forward's module calls (not a backward's, compile's, thread's)."""
        return not (self.paused() or compat.is_compiling() or threading.get_ident() != self.thread)

    def _module_enter(self, module: torch.nn.Module, args: Any) -> None:
        """Push the module's path; under no_grad, take the mode off until the module returns."""
        if not self._ours():
            return
        try:
            path = self.module_path(module, self.stack[-1] if self.stack else None)
        except Exception as exc:  # recording must never break the user's forward
            self.error(f"forward {type(module).__name__}: {type(exc).__name__}: {exc}")
            path = type(module).__name__
        self.stack.append(path)
        self.made.enter(path)
        if self.hidden is None and self.on and not torch.is_grad_enabled():
            # Without gradients nothing is recorded, and an active torch-function mode would turn
            # off fused inference paths (nn.TransformerEncoderLayer, nn.MultiheadAttention) and
            # change the outputs in the last bit: step aside until this module returns.
            compat.exit_mode(self.mode)
            self.hidden = len(self.stack)

    def _module_exit(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """Pop the module's path (the mode back if it stepped aside) and mark its outputs."""
        if not self._ours() or not self.stack:
            return
        path = self.stack.pop()
        if self.hidden is not None and len(self.stack) < self.hidden:
            self.hidden = None
            if self.on:
                self.mode.__enter__()
        try:
            with compat.no_torch_function():
                self._outputs(path, output)
        except Exception as exc:  # recording must never break the user's forward
            self.error(f"forward {path or type(module).__name__}: {type(exc).__name__}: {exc}")
        self.made.enter(self.stack[-1] if self.stack else "")

    def _outputs(self, path: str, output: Any) -> None:
        """File a module's outputs made by calls we did not see; mark every output's node."""
        if not torch.is_grad_enabled() or not self.on:
            return
        nodes = [holding.grad_fn(t) for t in tensors(output) if type(t) is torch.Tensor]
        nodes = [n for n in nodes if n is not None]
        self.settle(nodes)
        for node in nodes:
            stamp = node.metadata.get(self.md_key)
            if stamp is not None and stamp.module_output is None:
                stamp.module_output = path
