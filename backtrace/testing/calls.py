"""The forward calls `check_function` re-runs: each top-level torch call or custom Function apply
that made an autograd node, recorded with what it was given and the node it made at that moment
(an in-place op later changes a tensor's node), and which graph nodes no recorded call made."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..torchcalls import Call

Key = tuple[int, int]  # a tensor as it was at one moment: (id, in-place version)


def flat(x: Any) -> list[Any]:
    """The leaves of nested lists, tuples and dicts."""
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in flat(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in flat(item)]
    return [x]


def is_diff(t: Any) -> bool:
    """A floating-point tensor that requires grad."""
    import torch
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad


def key(t: Any) -> Key:
    """The tensor as it is now: an in-place op makes the same object a new value."""
    from ..tracer.compat import version
    return id(t), version(t)


def in_place(func: Any, args: tuple, kwargs: dict) -> bool:
    """True for torch calls that change their first argument (``relu_``, ``__iadd__``, ``x[i] = v``,
    ``F.relu(x, inplace=True)``)."""
    name = getattr(func, "__name__", "")
    if name == "__setitem__":
        return True
    if name.startswith("__"):
        return name.startswith("__i") and name not in ("__index__", "__invert__", "__init__",
                                                       "__iter__")
    if name.endswith("_"):
        return True
    if "inplace" in kwargs:
        return bool(kwargs["inplace"])
    if (getattr(func, "__module__", "") or "").startswith("torch.nn.functional"):
        import inspect
        try:  # F.relu(x, True): the flag given by position
            return bool(inspect.signature(func).bind(*args).arguments.get("inplace", False))
        except (TypeError, ValueError):
            return False
    return False


def function_class(fn: Any) -> type | None:
    """The autograd.Function subclass `fn` is, or whose ``apply`` it is (``MyFn.apply``, an alias)."""
    import torch

    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        return fn
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function) \
            and getattr(fn, "__name__", "") == "apply":
        return owner
    return None


def _applied_function(call: Call) -> type:
    """The custom Function class that was applied (the output's node knows it, when the forward
    made its output: a subclass may inherit its parent's forward)."""
    node = next((t.grad_fn for t in flat(call.out) if is_diff(t) and t.grad_fn is not None), None)
    applied = getattr(type(node), "_forward_cls", None)
    if isinstance(applied, type) and issubclass(applied, call.func):
        return applied
    return call.func


@dataclass
class RecordedCall:
    """One forward call as it was made: a torch function, or a custom Function's apply."""

    func: Callable[..., Any]  # what re-runs it: the torch function, or the Function's apply
    label: str
    args: tuple
    kwargs: dict
    out: Any
    function: type | None = None  # the custom Function class, for an apply
    before: Any = None  # an in-place call: its target as it was before the call (a copy)
    in_keys: list[Key] = field(default_factory=list)  # each slot's tensor when the call was made
    in_nodes: list[Any] = field(default_factory=list)  # and its autograd node then
    out_keys: list[Key] = field(default_factory=list)  # each output tensor after the call
    out_nodes: list[Any] = field(default_factory=list)  # the nodes the call made
    node: str = ""  # the name of its node in messages (MulBackward0, MulBackward0.1, ...)

    @classmethod
    def of(cls, call: Call, before: tuple[Any, Any, Key] | None, label: str) -> RecordedCall:
        """The call as the recorder reported it, right after it was made."""
        if call.custom:
            function = _applied_function(call)
            made = cls(function.apply, f"{function.__name__}.apply", call.args, call.kwargs,
                       call.out, function)
        else:
            made = cls(call.func, label, call.args, call.kwargs, call.out)
            if before is not None:
                made.before, before_node, before_key = before
        slots = made.slots()
        made.in_keys = [key(t) for _, t in slots]
        made.in_nodes = [t.grad_fn for _, t in slots]
        if made.before is not None:  # slot 0 is the target as it was, not as the call left it
            made.in_keys[0], made.in_nodes[0] = before_key, before_node
        if call.custom:  # inside its forward: the outputs get their node when apply returns
            made.out_keys = [key(t) for t in flat(call.out) if hasattr(t, "is_floating_point")]
            return made
        outs = [t for t in flat(call.out) if is_diff(t)]
        if made.before is not None and not any(t is call.args[0] for t in outs):
            outs.insert(0, call.args[0])  # x[i] = v returns nothing: the target is the output
        made.out_keys = [key(t) for t in outs]
        made.out_nodes = [t.grad_fn for t in outs if t.grad_fn is not None]
        return made

    def slots(self) -> list[tuple[int | str, Any]]:
        """(slot, tensor) for each differentiable tensor argument, nested lists flattened; an
        in-place call's target as it was before the call."""
        found: list[tuple[int | str, Any]] = []
        for i, a in enumerate(self.args):
            if i == 0 and self.before is not None:
                a = self.before
            if isinstance(a, (list, tuple)):
                found += [(f"{i}[{j}]", t) for j, t in enumerate(a) if is_diff(t)]
            elif is_diff(a):
                found.append((i, a))
        found += [(k, v) for k, v in self.kwargs.items() if is_diff(v)]
        return found

    def differentiable(self) -> bool:
        """True when the call made an autograd node from a differentiable input."""
        if not self.slots():
            return False
        if self.function is not None:  # its node may wrap an input it returned (view_as)
            return True
        return bool(self.out_nodes)

    def rerun(self, replace: dict[int | str, Any]) -> list[Any]:
        """The call again with some slots' tensors replaced (by slot, so x*x has two); its
        floating-point outputs. An in-place call is redone on a copy of its target."""
        args = []
        for i, a in enumerate(self.args):
            if i == 0 and self.before is not None:
                a = replace.get(0, self.before).clone()  # never change the caller's tensor
            elif isinstance(a, (list, tuple)):
                a = type(a)(replace.get(f"{i}[{j}]", x) for j, x in enumerate(a))
            else:
                a = replace.get(i, a)
            args.append(a)
        kwargs = {k: replace.get(k, v) for k, v in self.kwargs.items()}
        out = self.func(*args, **kwargs)
        if self.before is not None:
            out = args[0]  # what an in-place call changed
        return [t for t in flat(out) if hasattr(t, "is_floating_point") and t.is_floating_point()]


def record(call: Callable[..., Any], inputs: list[Any], label: Callable[[Any], str]) -> tuple[
        Any, list[RecordedCall]]:
    """Run `call(*inputs)` recording its top-level calls; returns its output and the calls."""
    from ..torchcalls import TorchCalls

    class Recorder(TorchCalls):
        """Keeps, for an in-place call, a copy of its target (and the target's node) first."""

        def __init__(self) -> None:
            super().__init__(self.seen)
            self.calls: list[RecordedCall] = []
            self.targets: list[tuple[Any, Any, Key] | None] = []  # per call running now

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            target = args[0] if args and hasattr(args[0], "grad_fn") and \
                in_place(func, args, kwargs) else None
            self.targets.append(None if target is None else (
                target.detach().clone().requires_grad_(target.requires_grad), target.grad_fn,
                key(target)))
            try:
                return super().__torch_function__(func, types, args, kwargs)
            finally:
                self.targets.pop()

        def seen(self, c: Call) -> None:
            # Ops inside a custom Function's forward are its own business: its backward is what
            # gets checked, as one node.
            if not c.inside:
                before = self.targets[-1] if self.targets and not c.custom else None
                self.calls.append(RecordedCall.of(c, before, label(c.func)))

    recorder = Recorder()
    with recorder:
        out = call(*inputs)
    return out, [c for c in recorder.calls if c.differentiable()]


def graph_nodes(out: Any) -> Iterator[Any]:
    """Every autograd node reachable from out's tensors, each once (an explicit-stack walk)."""
    stack = [t.grad_fn for t in flat(out) if is_diff(t) and t.grad_fn is not None]
    seen = {id(n) for n in stack}
    while stack:
        node = stack.pop()
        yield node
        for nxt, _ in node.next_functions:
            if nxt is not None and id(nxt) not in seen:
                seen.add(id(nxt))
                stack.append(nxt)


def unchecked(out: Any, calls: list[RecordedCall]) -> list[Any]:
    """The nodes of out's graph that no recorded call made (leaves' AccumulateGrad aside).

    A call made the nodes from its own down to its inputs' nodes (a composite such as
    F.cross_entropy makes several); a custom Function made the nodes of its class."""
    made: set[int] = set()
    outputs = {id(n) for c in calls for n in c.out_nodes}
    custom = tuple(c.function for c in calls if c.function is not None)
    for c in calls:
        stop = {id(n) for n in c.in_nodes if n is not None}
        stack = [n for n in c.out_nodes if id(n) not in made]
        while stack:
            node = stack.pop()
            made.add(id(node))
            stack += [n for n, _ in node.next_functions if n is not None and id(n) not in made
                      and id(n) not in stop and id(n) not in outputs]
    found = []
    for node in graph_nodes(out):
        kind = getattr(type(node), "_forward_cls", None)
        if id(node) in made or type(node).__name__ == "AccumulateGrad" or \
                (isinstance(kind, type) and custom and issubclass(kind, custom)):
            continue
        found.append(node)
    return found
