"""Forward stamping: while a tracer is on, each new autograd node is stamped (through the public
``Node.metadata``) with its op name, module path and output value, by a torch-call recorder
(backtrace.torchcalls); global module hooks keep the module path."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..torchcalls import Call, TorchCalls
from . import batch as batches, compat, sources
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
        self.mode = TorchCalls(self._on_call, functions=False,  # the batch protects what it holds
                               before=batch.before_call if level == "stats" else None)
        self.on = False  # a mode left on a stack after stop() records nothing
        self.hidden: int | None = None  # module depth at which our mode was taken off the stack

    def start(self) -> None:
        """Install the module hooks and put the torch-call mode on this thread's stack."""
        from torch.nn.modules import module as nn_module

        self.handles = [
            nn_module.register_module_forward_pre_hook(self._module_enter),
            nn_module.register_module_forward_hook(self._module_exit, always_call=True),
        ]
        self.on = True
        self.mode.__enter__()

    def stop(self) -> None:
        """Take the mode off the stack (also from under modes entered later) and the hooks off."""
        self.on = False
        try:
            compat.exit_mode(self.mode)
        finally:  # whatever happens above, nothing of ours stays installed
            self.hidden = None
            for handle in self.handles:
                handle.remove()
            self.handles.clear()
            self.stack.clear()
            self.mode.on_call = _ignore  # no cycle through the mode: the tracer is freed at once
            self.mode.before = None

    # -- torch calls
    def _on_call(self, call: Call) -> None:
        """After each torch call: stamp what it made, unless this call is not ours to record."""
        if self.paused() or not self.on or compat.is_compiling() or not torch.is_grad_enabled():
            return
        try:
            made = call.out
            if made is None and call.func is torch.Tensor.__setitem__:
                made = call.args[:1]  # x[i] = v returns None: the tensor it changed is the output
            self.stamp(call.func, made, call.args)
        except Exception as exc:  # recording must never break the user's forward
            self.error(f"forward {getattr(call.func, '__name__', call.func)}: "
                       f"{type(exc).__name__}: {exc}")

    def stamp(self, func: Any, out: Any, args: tuple = ()) -> None:
        """Stamp the nodes of out's tensors made by func (once per node, one value per output)."""
        if threading.get_ident() != self.thread:
            return
        for t in tensors(out):
            if type(t) is not torch.Tensor:  # fake/functional tensors of torch.compile, subclasses
                continue
            node = t.grad_fn
            if node is None:
                continue
            md = node.metadata
            stamp = md.get(self.md_key)
            if stamp is None:
                op, inplace = op_name(func)
                stamp = Stamp(op, self.stack[-1] if self.stack else "",
                              compat.saved_tensor_hooks_active(), inplace, source=sources.caller())
                md[self.md_key] = stamp
            elif t.output_nr in stamp.values:
                continue  # an op that returned an existing tensor unchanged
            stamp.values[t.output_nr] = self._value(t, args)

    def _value(self, t: torch.Tensor, args: tuple) -> Any:
        """A new output's value; a view of a recorded input (view, transpose) reuses its record."""
        if self.level == "stats" and compat.is_view(t):  # only a view shares an input's memory
            inputs = [a for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None]
            records = []
            for a in inputs:
                stamp = a.grad_fn.metadata.get(self.md_key)
                records.append(stamp.values.get(a.output_nr) if stamp is not None else None)
            hit = batches.same_memory(t, self.level, inputs, records)
            if hit is not None:
                return hit
        return batches.recorded(t, self.level, self.batch, forward=True)

    # -- modules
    def _ours(self) -> bool:
        """True for the traced forward's module calls (not a backward's, compile's, thread's)."""
        return not (self.paused() or compat.is_compiling() or threading.get_ident() != self.thread)

    def _module_enter(self, module: torch.nn.Module, args: Any) -> None:
        """Push the module's path; under no_grad, take the mode off until the module returns."""
        if not self._ours():
            return
        self.stack.append(self.module_path(module, self.stack[-1] if self.stack else None))
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
        with compat.no_torch_function():  # reading grad_fn is not the user's torch call
            for t in tensors(output):
                node = t.grad_fn
                if node is not None:
                    stamp = node.metadata.get(self.md_key)
                    if stamp is not None and stamp.module_output is None:
                        stamp.module_output = path
