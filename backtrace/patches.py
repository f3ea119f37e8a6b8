"""The one registry of patches to torch's backward entry points: ``Tensor.backward``,
``torch.autograd.backward`` and ``torch.autograd.grad`` (and ``torch.amp.GradScaler.step``, where
`watch` learns the loss scale and sees the steps the scaler skips).

The tracer, `watch` and `backtrace train` add a hook here instead of assigning to torch. While any
hook is on, each patched target holds one wrapper of ours that runs its hooks around the original
call, the newest outermost. Hooks may be removed in any order: the others keep working, and the last
one removed puts back exactly the function that was there before (unless someone patched over us
meanwhile: then theirs stays, and ours, with no hooks left, passes calls straight through).
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

TARGETS = ("Tensor.backward", "autograd.backward", "autograd.grad", "GradScaler.step")

# around(call, *args, **kwargs) -> result: a hook runs the call (or not) and returns its result.
Around = Callable[..., Any]

_lock = threading.Lock()
_hooks: dict[str, list[Around]] = {t: [] for t in TARGETS}
_installed: dict[str, tuple[Any, Any]] = {}  # target -> (the original, our wrapper)


def _place(target: str) -> tuple[Any, str]:
    import torch

    owner, attr = target.split(".")
    if owner == "GradScaler":
        return torch.amp.GradScaler, attr
    return {"Tensor": torch.Tensor, "autograd": torch.autograd}[owner], attr


def _wrapper(target: str, original: Any) -> Any:
    @functools.wraps(original)
    def patched(*args: Any, **kwargs: Any) -> Any:
        call = original
        # A wrapper left under someone else's patch passes straight through once it is replaced.
        live = _installed.get(target, (None, None))[1] is patched
        for around in tuple(_hooks[target]) if live else ():  # a copy: others may remove one
            call = functools.partial(around, call)
        return call(*args, **kwargs)

    return patched


class Patch:
    """One hook on one target; `remove()` takes it off (idempotent)."""

    def __init__(self, target: str, around: Around) -> None:
        self.target, self.around = target, around

    def remove(self) -> None:
        """Take this hook off; the last hook of a target restores the original function."""
        with _lock:
            hooks = _hooks[self.target]
            if self.around in hooks:
                hooks.remove(self.around)
            if not hooks and self.target in _installed:
                original, wrapper = _installed.pop(self.target)
                owner, attr = _place(self.target)
                if getattr(owner, attr) is wrapper:
                    setattr(owner, attr, original)


def patch(target: str, around: Around) -> Patch:
    """Run `around(call, *args, **kwargs)` around every call of `target` (one of TARGETS)."""
    if target not in _hooks:
        raise ValueError(f"cannot patch {target!r}: choose from {', '.join(TARGETS)}")
    with _lock:
        if target not in _installed:
            owner, attr = _place(target)
            original = getattr(owner, attr)
            wrapper = _wrapper(target, original)
            _installed[target] = (original, wrapper)
            setattr(owner, attr, wrapper)
        _hooks[target].append(around)
    return Patch(target, around)


def active() -> dict[str, int]:
    """How many hooks each target has now (for tests and diagnostics)."""
    return {t: len(h) for t, h in _hooks.items() if h}
