"""Every private torch attribute the tracer touches, in one place, each with a safe fallback.

When a torch release renames one of these, this is the only file to change; every function here
degrades to "unknown" rather than failing.
"""
from __future__ import annotations

import sys
from typing import Any

import torch

_SAVED_NAMES: dict[type, tuple[str, ...]] = {}


def sequence_nr(node: Any) -> int:
    """The node's creation number (autograd runs higher numbers first); -1 when unknown."""
    try:
        return int(node._sequence_nr())
    except (AttributeError, RuntimeError):
        return -1


_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32 (cached: this runs for every recorded tensor)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def storage_address(t: torch.Tensor) -> int:
    """Where t's storage starts (shared by every view of it), from its own attributes."""
    return t.data_ptr() - t.storage_offset() * t.element_size()


def is_view(t: torch.Tensor) -> bool:
    """True when t is a view of another tensor's memory (False if unknown)."""
    try:
        return t._is_view()
    except (AttributeError, RuntimeError):
        return False


def saved_tensor_names(node: Any) -> tuple[str, ...]:
    """Names of the node's saved tensors (``_saved_self``, ``_saved_result`` ...), cached per node
    type: those with a ``_raw_saved_`` twin (a SavedVariable); sizes, dims and flags have none."""
    kind = type(node)
    names = _SAVED_NAMES.get(kind)
    if names is None:
        found = set(dir(node))
        names = tuple(a for a in sorted(found) if a.startswith("_saved_")
                      and "_raw" + a in found)
        _SAVED_NAMES[kind] = names
    return names


def read_saved(node: Any, name: str) -> Any:
    """Unpack one saved value (may raise if it was freed or belongs to a checkpointed region)."""
    return getattr(node, name)


def saved_tensor_hooks_active() -> bool:
    """True inside saved_tensors_hooks (e.g. torch.utils.checkpoint): saved tensors are not ours to read."""
    try:
        return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
    except (AttributeError, RuntimeError, TypeError):
        return False


def is_compiling() -> bool:
    """True while dynamo traces Python code: the tracer must stay out of the way."""
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # older torch
        return False


def frame_tensors(frame: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors bound to names in `frame`, without leaving references behind.

    On Python < 3.13 reading ``f_locals`` of a function frame stores a snapshot dict on the frame
    that keeps every local alive until the next read, so a tensor deleted later (and the graph it
    holds) would never be freed. Every read refreshes that snapshot first, so emptying it is safe.
    """
    import inspect

    local_vars = frame.f_locals
    found = [(k, v) for k, v in local_vars.items() if isinstance(v, torch.Tensor)]
    if sys.version_info < (3, 13) and frame.f_code.co_flags & inspect.CO_OPTIMIZED \
            and local_vars is not frame.f_globals:
        local_vars.clear()
    return found


def version(t: torch.Tensor) -> int:
    """The tensor's in-place modification counter (autograd sums gradients in place)."""
    try:
        return t._version
    except (AttributeError, RuntimeError):
        return -1


def is_fake(t: torch.Tensor) -> bool:
    """True for the fake and functional tensors torch.compile traces with (they are not ours)."""
    if type(t) is torch.Tensor or type(t) is torch.nn.Parameter:
        return False
    try:
        from torch._subclasses.fake_tensor import is_fake as fake

        return bool(fake(t)) or "Functional" in type(t).__name__
    except (ImportError, AttributeError, RuntimeError):
        return False


def no_torch_function():
    """A context in which torch functions skip every mode and subclass override (ours included)."""
    try:
        return torch._C.DisableTorchFunction()
    except AttributeError:
        import contextlib

        return contextlib.nullcontext()


def current_node() -> Any:
    """The autograd node whose hook is running (so hooks need not hold nodes); None if unknown."""
    try:
        return torch._C._current_autograd_node()
    except (AttributeError, RuntimeError):
        return None


def exit_mode(mode: Any) -> None:
    """Take `mode` off this thread's torch-function mode stack, also when modes entered after it
    are still on (tracers exited out of order): those stay, in their order."""
    try:
        above = []
        while torch._C._len_torch_function_stack() > 0:
            top = torch._C._pop_torch_function_stack()
            if top is mode:
                break
            above.append(top)
        for m in reversed(above):
            torch._C._push_on_torch_function_stack(m)
    except AttributeError:  # these names moved: the public exit (pops the top)
        mode.__exit__(None, None, None)
