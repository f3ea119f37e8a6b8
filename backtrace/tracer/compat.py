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


def output_metadata(node: Any) -> tuple[tuple[tuple[int, ...], str], ...] | None:
    """(shape, dtype) of each forward output of `node`, from its input metadata; None if unknown."""
    try:
        return tuple((tuple(m.shape), dtype_name(m.dtype)) for m in node._input_metadata)
    except (AttributeError, RuntimeError, TypeError):
        return None


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


def next_sequence_nr() -> int:
    """The creation number the next autograd node made in this thread gets; -1 when unknown."""
    try:
        return int(torch._C._autograd._get_sequence_nr())
    except (AttributeError, RuntimeError, TypeError):
        return -1


def _functorch() -> Any:
    try:
        return torch._C._functorch
    except AttributeError:
        return None


def readable(t: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """The tensor holding t's numbers, or None and why they cannot be read.

    A torch.func.grad (or jvp) wrapper is read through to the tensor it wraps; vmap batches,
    meta and fake tensors, nested and quantized tensors and subclasses that keep no storage of
    their own (``__torch_dispatch__`` wrappers) have no numbers to read.
    """
    ft = _functorch()
    try:
        if ft is not None and ft.is_legacy_batchedtensor(t):
            return None, "batched by vmap (torch.autograd.functional, vectorize=True)"
        while ft is not None and ft.is_functorch_wrapped_tensor(t):
            if ft.is_batchedtensor(t):
                return None, "batched by torch.func.vmap"
            if ft.is_functionaltensor(t):
                return None, "a functionalized tensor"
            t = ft.get_unwrapped(t)
        if t.is_meta:
            return None, "on the meta device (no data)"
        if t.is_nested or t.is_quantized:
            return None, "a nested tensor" if t.is_nested else "a quantized tensor"
        kind = type(t)
        if kind is not torch.Tensor and kind.__torch_dispatch__ is not torch.Tensor.__torch_dispatch__:
            return None, f"a {kind.__name__} (a tensor subclass without storage of its own)"
        return t, ""
    except (AttributeError, RuntimeError, TypeError, NotImplementedError) as exc:
        return None, f"unreadable ({type(exc).__name__})"


def plain(t: torch.Tensor) -> bool:
    """True when t's memory can be read directly (its data pointer means something)."""
    return t.layout == torch.strided and readable(t)[0] is t


def no_transforms():
    """A context in which torch.func transforms do not wrap what ops return (the tracer's own
    reads of values inside torch.func.grad must give plain tensors)."""
    try:
        return torch._C._DisableFuncTorch()
    except AttributeError:
        import contextlib

        return contextlib.nullcontext()
