"""The one recorder of torch calls made by the user's code: every torch function, and every custom
``torch.autograd.Function`` however it is applied (``MyFn.apply``, an alias taken earlier, inside a
module), each reported once to a callback.

Torch functions are seen through a TorchFunctionMode. Custom Functions are invisible to such a mode,
but torch's ``Function.apply`` looks ``cls.forward`` up on the class at every call, so while the
recorder is on, the ``forward`` of every user-defined Function subclass is wrapped (and restored
after, also when the block raises): the callback then gets the class as `func`. Ops inside a custom
forward are that Function's own business and are reported with ``inside=True``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode


@dataclass(slots=True)
class Call:
    """One recorded call: the torch function (or the custom Function class) and what it was given."""

    func: Any
    args: tuple
    kwargs: dict
    out: Any
    inside: bool = False  # made inside a custom Function's forward
    custom: bool = False  # func is a torch.autograd.Function subclass


def user_functions() -> list[type]:
    """Every torch.autograd.Function subclass defined outside torch (an explicit-stack walk)."""
    found, stack = [], [torch.autograd.Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if not sub.__module__.startswith("torch"):
                found.append(sub)
    return found


_INHERITED = object()  # marks a class whose forward came from a parent


class TorchCalls(TorchFunctionMode):
    """``with TorchCalls(on_call): ...`` calls ``on_call(call)`` after every torch call inside.

    on_call's exceptions are the caller's to handle (the tracer catches its own); `functions=False`
    leaves custom Functions unwrapped; `before(func, args, kwargs)`, if given, runs before each
    torch call (the tracer tells the nodes a call makes from those made between calls, and copies
    what an in-place op is about to change)."""

    def __init__(self, on_call: Callable[[Call], None], functions: bool = True,
                 before: Callable[[Any, tuple, dict], None] | None = None) -> None:
        super().__init__()
        self.on_call, self.functions, self.before = on_call, functions, before
        self.depth = 0  # > 0 inside a custom Function's forward
        self._restore: list[tuple[type, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.before is not None:
            self.before(func, args, kwargs)
        out = func(*args, **kwargs)
        # No copies of args and kwargs: this runs on every torch call while the recorder is on.
        self.on_call(Call(func, args, kwargs, out, self.depth > 0))
        return out

    def __enter__(self) -> TorchCalls:
        if self.functions:
            # Each class gets a wrapper of its own, also one that inherits forward, so the call
            # names the class applied; the functions are read before any class is wrapped.
            classes = [(cls, cls.__dict__.get("forward", _INHERITED), cls.forward)
                       for cls in user_functions()]
            for cls, own, fn in classes:
                cls.forward = staticmethod(self._forward(cls, fn))
                self._restore.append((cls, own))
        try:
            return super().__enter__()
        except BaseException:
            self._unwrap()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._unwrap()

    def _unwrap(self) -> None:
        for cls, own in reversed(self._restore):
            if own is _INHERITED:
                del cls.forward
            else:
                cls.forward = own
        self._restore.clear()

    def _forward(self, cls: type, fn: Callable[..., Any]) -> Callable[..., Any]:
        recorder = self

        @functools.wraps(fn)  # keeps the signature: apply binds setup_context-style arguments by it
        def forward(*args: Any, **kwargs: Any) -> Any:
            recorder.depth += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                recorder.depth -= 1
            # Old-style forwards take ctx first; setup_context-style ones take the inputs alone.
            inputs = args[1:] if args and isinstance(args[0], torch.autograd.function.FunctionCtx) \
                else args
            recorder.on_call(Call(cls, tuple(inputs), dict(kwargs), out, inside=recorder.depth > 0,
                                  custom=True))
            return out

        return forward
