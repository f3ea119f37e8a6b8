"""Math functions that run on every engine: `backtrace.Value`, Python numbers and torch tensors.

    >>> from backtrace.math import tanh, exp
    >>> def f(x, y): return tanh(x * y) + exp(-x)

runs on floats, on `Value` (building a graph for the reference engine) and on torch tensors
(calling `torch.tanh`, ...), so one function can be checked on every engine. The functions are
generated from the op table (`backtrace.ops.FUNCTIONS`); torch is never imported here: a tensor
argument is recognised by its type, and torch is only looked up once a tensor has been seen.
"""
from __future__ import annotations

import builtins
import sys
from collections.abc import Callable
from typing import Any

from .ops import FUNCTIONS, Op
from .value import Value

__all__ = list(FUNCTIONS)


def _torch_module() -> Any:
    """torch if it is already imported (a tensor can only exist then), else None."""
    return sys.modules.get("torch")


def is_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch."""
    torch = _torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def _on_torch(op: Op, args: tuple, extra: tuple = ()) -> Any:
    torch = sys.modules["torch"]
    # Some torch functions (maximum, minimum) take tensors only: a number joins in the dtype and
    # device of the first tensor argument, which is what torch's own promotion would give it.
    like = builtins.next(a for a in args if isinstance(a, torch.Tensor))
    args = tuple(a if isinstance(a, torch.Tensor) else
                 torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in args)
    kwargs = {**dict(op.torch_kwargs), **{name: v for (name, _), v in zip(op.params, extra)}}
    return op.torch_function()(*args, **kwargs)


def _function(op: Op) -> Callable[..., Any]:
    most = op.arity + len(op.params)

    def function(*args: Any) -> Any:
        if not op.arity <= len(args) <= most:
            counts = f"{op.arity}" if most == op.arity else f"{op.arity} or {most}"
            raise TypeError(f"{op.name}() takes {counts} argument{'s' * (most > 1)}, "
                            f"got {len(args)}")
        if op.tensor_only:
            if builtins.any(is_tensor(a) for a in args[:op.arity]):
                return _on_torch(op, args[:op.arity], args[op.arity:])
            raise TypeError(f"{op.name}() takes torch tensors here; on backtrace's own engine "
                            f"write it in a formula: backtrace.explain('{op.name}(x)', x=[1, 2])")
        if builtins.any(isinstance(a, Value) for a in args):
            if builtins.any(is_tensor(a) for a in args):
                raise TypeError(f"{op.name}(): cannot mix backtrace.Value and torch tensors")
            out = getattr(Value, op.name)(*args)  # the Value method of the same op-table row
            if out is NotImplemented:
                raise TypeError(f"{op.name}(): unsupported argument types "
                                f"{', '.join(type(a).__name__ for a in args)}")
            return out
        if builtins.any(is_tensor(a) for a in args):
            return _on_torch(op, args)
        return op.forward(*args)

    function.__name__ = function.__qualname__ = op.name
    where = "on torch tensors" if op.tensor_only else "on Values, numbers and tensors"
    function.__doc__ = f"{op.doc} {where}; " + ", ".join(op.rule_text(slot)
                                                          for slot in range(op.arity))
    function.__module__ = __name__
    return function


# exp, log, sqrt, ..., clamp, sum, mean, softmax, ...: one per op-table function.
globals().update({name: _function(op) for name, op in FUNCTIONS.items()})
