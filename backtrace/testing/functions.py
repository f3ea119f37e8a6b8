"""`check_function`: every autograd node a function creates, re-run alone in float64, its backward's
vector-Jacobian product compared with central differences of its forward, input slot by slot."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..values import format_number
from .graphs import parameters
from .text import show, table

if TYPE_CHECKING:
    from ..torchcalls import Call


@dataclass(frozen=True)
class SlotCheck:
    """One input slot of one autograd node: its backward against finite differences."""

    order: int  # position in backward order (0 = nearest the output)
    node: str  # the autograd node's name, e.g. MyMulBackward or MulBackward0
    call: str  # the forward call that made it, e.g. MyMul.apply(x, y)
    slot: int | str
    input: str
    backward: Any  # what the node's backward returned for this slot (a float64 tensor)
    numeric: Any  # the finite-difference vector-Jacobian product
    max_delta: float
    where: tuple[int, ...] | None  # index of the worst element
    ok: bool
    error: str = ""
    upstream: str = ""  # the upstream gradient used, as text


@dataclass
class FunctionCheck:
    """What `check_function` compared: one row per (node, input slot), in backward order."""

    rows: list[SlotCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self, around: SlotCheck | None = None) -> str:
        """The rows as a plain table; with `around`, only the nodes next to that row."""
        rows = self.rows
        if around is not None:
            rows = [r for r in rows if abs(r.order - around.order) <= 1]
        return table(["", "#", "node", "call", "slot", "input", "backward", "numeric", "max |Δ|"],
                     [["→" if r is around else ("✗" if not r.ok else "✓"), str(r.order + 1),
                       r.node, r.call, str(r.slot), r.input, r.error or show(r.backward),
                       show(r.numeric), format_number(r.max_delta)] for r in rows])


@dataclass(frozen=True)
class _Numerics:
    """How each slot is checked: tolerances, the difference step, when to sample a direction."""

    rtol: float
    atol: float
    eps: float
    max_elements: int
    generator: Any  # a torch.Generator: the random upstream gradients and directions


def check_function(fn: Any, *example_inputs: Any, rtol: float = 1e-3, atol: float = 1e-5,
                   eps: float = 1e-6, seed: int = 0, max_elements: int = 256) -> FunctionCheck:
    """Check the backward of every autograd node `fn` creates against finite differences.

    `fn` is a custom `torch.autograd.Function` class, a function of tensors or an `nn.Module`.
    Each node found in the forward pass is re-run alone in float64 on the same inputs; its
    backward's vector-Jacobian product for a random upstream gradient is compared with central
    differences of its forward, input slot by input slot. Raises AssertionError naming the first
    wrong node in backward order; returns the table of every check otherwise."""
    import torch

    call, label, params = _callable(fn)
    inputs = [_as_float64_leaf(x) for x in example_inputs]
    names = {id(t): n for t, n in zip(inputs, params) if isinstance(t, torch.Tensor)}
    if isinstance(call, torch.nn.Module):
        names.update((id(p), n) for n, p in call.named_parameters())
    calls = _recorded_calls(call, inputs, label)
    _name_nodes(calls, names)
    numerics = _Numerics(rtol, atol, eps, max_elements, torch.Generator().manual_seed(seed))
    result = FunctionCheck()
    for order, c in enumerate(reversed(calls)):
        result.rows += c.check(order, names, numerics)
    bad = next((r for r in result.rows if not r.ok), None)
    if bad is not None:
        raise AssertionError(_failure(bad, result, rtol, atol))
    return result


def _callable(fn: Any) -> tuple[Callable[..., Any], str, list[str]]:
    """The thing to call, its name for messages, and its parameter names for the inputs."""
    import copy

    import torch

    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        params = parameters(fn.forward)[1:]  # drop ctx
        return fn.apply, f"{fn.__name__}.apply", list(params)
    if isinstance(fn, torch.nn.Module):
        module = copy.deepcopy(fn).double()  # finite differences need float64 parameters
        params = parameters(module.forward)
        return module, type(fn).__name__, list(params)
    if callable(fn):
        try:
            params = list(parameters(fn))
        except UsageError:
            params = []
        return fn, getattr(fn, "__name__", "fn"), params
    raise UsageError(f"check_function needs a function, an nn.Module or an autograd.Function, "
                     f"not {type(fn).__name__}")


def _recorded_calls(call: Callable[..., Any], inputs: list[Any], label: str) -> list[_Call]:
    """The forward's top-level calls that made an autograd node, in the order they ran."""
    import torch

    from ..torchcalls import TorchCalls

    seen: list[Call] = []
    # Ops inside a custom Function's forward are that Function's own business: its backward is
    # what gets checked, as one node.
    with TorchCalls(lambda c: None if c.inside else seen.append(c)):
        out = call(*inputs)
    if not any(isinstance(t, torch.Tensor) and t.grad_fn is not None for t in _flat(out)):
        raise UsageError(f"{label}'s output does not depend on any floating-point input, "
                         "so there is no backward to check")
    calls = [c for c in map(_Call.of, seen) if c.differentiable()]
    if not calls:
        raise UsageError(f"no autograd node of {label} could be re-run on its own")
    return calls


def _failure(bad: SlotCheck, result: FunctionCheck, rtol: float, atol: float) -> str:
    """The AssertionError's text: the first wrong node in backward order, its numbers, neighbours."""
    what = f"its backward raised {bad.error}" if bad.error else _worst_numbers(bad)
    return (f"backward of {bad.node} ({bad.call}) is wrong at input slot {bad.slot} ({bad.input}): "
            f"{what}; first wrong node in backward order (rtol={rtol:g}, atol={atol:g})\n"
            + result.table(around=bad))


def _worst_numbers(bad: SlotCheck) -> str:
    numeric, backward, at = bad.numeric, bad.backward, ""
    if bad.where is not None and hasattr(numeric, "shape") and numeric.numel() > 4:
        # A big tensor: the numbers of its worst element say more than two norms.
        numeric, backward = numeric[bad.where], backward[bad.where]
        at = f"at element {list(bad.where)}: "
    elif bad.where is not None:
        at = f"worst at element {list(bad.where)}: "
    return (f"{at}numeric {show(numeric)}, backward {show(backward)} "
            f"(upstream gradient {bad.upstream}; max |Δ| = {format_number(bad.max_delta)})")


def _as_float64_leaf(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().to(torch.float64).clone().requires_grad_(True)
    return x


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flat(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flat(item)]
    return [x]


def _is_diff(t: Any) -> bool:
    import torch
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad


def _first_node(out: Any) -> Any:
    """The autograd node of the first differentiable tensor in a call's output, or None."""
    return next((t.grad_fn for t in _flat(out) if _is_diff(t) and t.grad_fn is not None), None)


def _applied_function(call: Call) -> type:
    """The custom Function class that was applied.

    The recorder names the class that defines ``forward``, which for a subclass that inherits it
    (``SwappedMul(MyMul)``) is the parent; the output's node, set once apply has returned, knows
    the class applied (unless the forward handed back a tensor it did not make)."""
    applied = getattr(type(_first_node(call.out)), "_forward_cls", None)
    if isinstance(applied, type) and issubclass(applied, call.func):
        return applied
    return call.func


@dataclass
class _Call:
    """One recorded forward call: a torch function or a custom Function's apply."""

    func: Callable[..., Any]  # what re-runs it: the torch function, or the Function's apply
    label: str
    args: tuple
    kwargs: dict
    out: Any
    node: str = ""

    @classmethod
    def of(cls, call: Call) -> _Call:
        """A call as the recorder reported it, once the forward has returned."""
        if not call.custom:
            return cls(call.func, _func_label(call.func), call.args, call.kwargs, call.out)
        function = _applied_function(call)
        return cls(function.apply, f"{function.__name__}.apply", call.args, call.kwargs, call.out)

    def slots(self) -> list[tuple[int | str, Any]]:
        """(slot, tensor) for each differentiable tensor argument, nested lists flattened."""
        found: list[tuple[int | str, Any]] = []
        for i, a in enumerate(self.args):
            if isinstance(a, (list, tuple)):
                found += [(f"{i}[{j}]", t) for j, t in enumerate(a) if _is_diff(t)]
            elif _is_diff(a):
                found.append((i, a))
        found += [(k, v) for k, v in self.kwargs.items() if _is_diff(v)]
        return found

    def differentiable(self) -> bool:
        name = getattr(self.func, "__name__", "")
        in_place = name.endswith("_") and not name.startswith("__") or \
            name.startswith("__i") and name not in ("__index__", "__invert__")
        return not in_place and name not in ("__setitem__", "__get__") and bool(self.slots()) \
            and _first_node(self.out) is not None

    def text(self, names: dict[int, str]) -> str:
        """The call as a message shows it, tensors by name: ``MyMul.apply(x, y)``."""
        args = ", ".join(names.get(id(a), "…") if hasattr(a, "shape") else repr(a)
                         for a in self.args)
        return f"{self.label}({args})"

    def _rerun(self, replace: dict[int | str, Any]) -> list[Any]:
        """The call again with some slots' tensors replaced (by slot, so x*x has two); its
        floating-point outputs."""
        args = []
        for i, a in enumerate(self.args):
            if isinstance(a, (list, tuple)):
                a = type(a)(replace.get(f"{i}[{j}]", x) for j, x in enumerate(a))
            args.append(replace.get(i, a))
        kwargs = {k: replace.get(k, v) for k, v in self.kwargs.items()}
        out = self.func(*args, **kwargs)
        return [t for t in _flat(out) if hasattr(t, "is_floating_point") and t.is_floating_point()]

    def check(self, order: int, names: dict[int, str], num: _Numerics) -> list[SlotCheck]:
        """One row per differentiable input slot: this node's backward against differences."""
        import torch

        slots = self.slots()
        fresh = {slot: t.detach().clone().requires_grad_(True) for slot, t in slots}
        call = self.text(names)
        with torch.enable_grad():
            outs = [o for o in self._rerun(fresh) if o.requires_grad]
        ups = [torch.randn(o.shape, generator=num.generator, dtype=torch.float64).to(o.device)
               for o in outs]
        # A random upstream gradient, so a backward that forgets to multiply by it is caught too.
        upstream = show(ups[0]) if len(ups) == 1 and ups[0].numel() == 1 else "random"

        def row(slot: int | str, t: Any, *found: Any, error: str = "") -> SlotCheck:
            return SlotCheck(order, self.node, call, slot, names.get(id(t), "?"), *found, error,
                             upstream)

        try:
            analytic = torch.autograd.grad(outs, list(fresh.values()), ups, allow_unused=True)
        except Exception as exc:  # a user's backward may raise anything; report where
            return [row(slot, t, None, None, math.inf, None, False,
                        error=f"{type(exc).__name__}: {exc}") for slot, t in slots]
        return [row(slot, t, *self._compare(slot, leaf, g, ups, num))
                for (slot, t), leaf, g in zip(slots, fresh.values(), analytic)]

    def _compare(self, slot: int | str, leaf: Any, g: Any, ups: list[Any],
                 num: _Numerics) -> tuple[Any, Any, float, tuple[int, ...] | None, bool]:
        """(backward, numeric, max |Δ|, worst element, ok) for one slot."""
        import torch

        g = torch.zeros_like(leaf) if g is None else g.detach()
        base = leaf.detach()
        projected = functools.partial(self._projected, ups, slot)
        if base.numel() <= num.max_elements:
            return _elementwise(projected, base, g, num)
        return _directional(projected, base, g, num)

    def _projected(self, ups: list[Any], slot: int | str, x: Any) -> float:
        """⟨upstream, outputs⟩ with the slot's tensor replaced by x: what differences are taken of."""
        import torch

        with torch.no_grad():
            got = self._rerun({slot: x})
        return float(sum((u * o.to(torch.float64)).sum() for u, o in zip(ups, got)))


def _elementwise(projected: Callable[[Any], float], base: Any, g: Any,
                 num: _Numerics) -> tuple[Any, Any, float, tuple[int, ...] | None, bool]:
    import torch

    from ..compare import close

    numeric = torch.zeros_like(base)
    for i in range(base.numel()):  # one central difference per element
        e = torch.zeros_like(base)
        e.view(-1)[i] = num.eps
        numeric.view(-1)[i] = (projected(base + e) - projected(base - e)) / (2 * num.eps)
    diff = (g - numeric).abs()
    ok = close(g, numeric, num.rtol, num.atol)
    where = None
    if base.dim() and diff.numel():
        worst = torch.tensor(int(diff.view(-1).argmax()))
        where = tuple(int(k) for k in torch.unravel_index(worst, base.shape))
    return g, numeric, float(diff.max()) if diff.numel() else 0.0, where, ok


def _directional(projected: Callable[[Any], float], base: Any, g: Any,
                 num: _Numerics) -> tuple[float, float, float, None, bool]:
    import torch

    from ..compare import close

    # Too many elements for one difference each: compare along a random direction.
    u = torch.randn(base.shape, generator=num.generator, dtype=torch.float64)
    u = u.to(base.device)
    numeric = (projected(base + num.eps * u) - projected(base - num.eps * u)) / (2 * num.eps)
    backward = float((g * u).sum())
    return backward, numeric, abs(backward - numeric), None, close(backward, numeric, num.rtol,
                                                                   num.atol)


def _name_nodes(calls: list[_Call], names: dict[int, str]) -> None:
    """Name each call by its autograd node (MulBackward0, MulBackward0.1, ...) and its outputs."""
    seen: dict[str, int] = {}
    for c in calls:
        base = type(_first_node(c.out)).__name__
        k = seen.get(base, 0)
        seen[base] = k + 1
        c.node = base if k == 0 else f"{base}.{k}"
        outs = [t for t in _flat(c.out) if hasattr(t, "shape")]
        for j, t in enumerate(outs):
            names.setdefault(id(t), c.node if len(outs) == 1 else f"{c.node}[{j}]")


def _func_label(func: Any) -> str:
    name = getattr(func, "__name__", repr(func))
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    if owner is not None and hasattr(owner, "__name__") and owner.__name__ != "torch":
        return f"{owner.__name__.replace('TensorBase', 'Tensor')}.{name}"
    module = getattr(func, "__module__", "") or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    return f"torch.{name}" if module.startswith("torch") else name
